#!/usr/bin/env python3
"""Check that PyTorch reads an artifact the way pgolf-rt does.

Usage: python scripts/check_torch_load.py ARTIFACT [SUMMARY.tsv]

Decompresses ARTIFACT (zlib / zstd / xz / bare zip), runs
`torch.load(..., weights_only=True)`, dequantizes it the way the challenge scripts do
(int8_clean_per_row_v1, {"w","m"} or a plain state dict) and prints one line per tensor.
With SUMMARY.tsv (written by `PGOLF_ARTIFACT_DUMP=dir cargo test --test artifact_roundtrip`:
name, shape, dtype, sum, sum of squares, first values as pgolf-rt loaded them) it compares and
exits non-zero on any mismatch. Needs torch (and zstandard for zstd files).
"""
import io
import lzma
import sys
import zlib

import torch


def decompress(raw):
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    if raw[:2] == b"PK":
        return raw
    return zlib.decompress(raw)


BF16_TEMPLATE = {"tok_emb.weight", "shared_sparse.site_gate.weight", "shared_sparse.local.weight",
                 "shared_sparse_scale"}


def template_dtype(name):
    # Same rule as pgolf-rt's quant::template_dtype: nn.Embedding tables and the sidecar's
    # non-Linear parameters are bf16.
    bf16 = name in BF16_TEMPLATE or name.endswith(".embed.weight")
    return torch.bfloat16 if bf16 else torch.float32


def dequantize(obj):
    out = {}
    if isinstance(obj, dict) and obj.get("__quant_format__") == "int8_clean_per_row_v1":
        qmeta = obj.get("qmeta", {})
        orig = obj.get("passthrough_orig_dtypes", {})
        for name, q in obj["quantized"].items():
            dtype = getattr(torch, obj["dtypes"][name])
            s = obj["scales"][name]
            if qmeta.get(name, {}).get("scheme") == "per_row" or s.ndim > 0:
                s = s.to(dtype=torch.float32)
                out[name] = (q.float() * s.view(q.shape[0], *([1] * (q.ndim - 1)))).to(dtype=dtype)
            else:
                out[name] = (q.float() * float(s.item())).to(dtype=dtype)
        for name, t in obj["passthrough"].items():
            o = orig.get(name)
            out[name] = t.to(dtype=getattr(torch, o)) if isinstance(o, str) else t
        return out
    if isinstance(obj, dict) and set(obj.keys()) == {"w", "m"}:
        w, m = obj["w"], obj["m"]
        for name, info in m.items():
            if isinstance(info, str):
                t = w[name]
                out[name] = t.to(template_dtype(name)) if t.is_floating_point() else t
            else:
                q, s = w[name + ".q"], w[name + ".scale"]
                if s.ndim > 0:
                    deq = q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
                else:
                    deq = q.float() * float(s.item())
                out[name] = deq.to(template_dtype(name))
        return out
    return dict(obj)


def main():
    raw = open(sys.argv[1], "rb").read()
    obj = torch.load(io.BytesIO(decompress(raw)), weights_only=True, map_location="cpu")
    tensors = dequantize(obj)
    ours = {}
    if len(sys.argv) > 2:
        for line in open(sys.argv[2]):
            name, shape, dtype, s, sq, first = line.rstrip("\n").split("\t")
            ours[name] = (shape, dtype, float(s), float(sq), [float(x) for x in first.split(",") if x])
    names = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    bad = 0
    for name, t in tensors.items():
        v = t.double()
        s, sq = float(v.sum()), float((v * v).sum())
        print(f"{name}\t{list(t.shape)}\t{t.dtype}\tsum={s:.9g}\tsumsq={sq:.9g}")
        if ours:
            if name not in ours:
                print(f"  MISMATCH: {name} not reported by pgolf-rt")
                bad += 1
                continue
            shape, dtype, os_, osq, first = ours.pop(name)
            ok = shape.replace(" ", "") == str(list(t.shape)).replace(" ", "")
            ok &= names.get(dtype) == t.dtype
            ok &= abs(s - os_) <= 1e-9 * max(1.0, abs(s)) and abs(sq - osq) <= 1e-9 * max(1.0, abs(sq))
            # Our first values are shortest-repr f32 decimals: compare as f32.
            ok &= t.flatten()[: len(first)].float().tolist() == torch.tensor(first, dtype=torch.float32).tolist()
            if not ok:
                print(f"  MISMATCH: pgolf-rt says {shape} {dtype} sum={os_} sumsq={osq} first={first}")
                bad += 1
    for name in ours:
        print(f"MISMATCH: pgolf-rt reports {name}, torch does not")
        bad += 1
    if ours or len(sys.argv) > 2:
        print("OK: torch.load agrees with pgolf-rt" if bad == 0 else f"FAILED: {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
