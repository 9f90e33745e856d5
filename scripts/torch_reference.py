#!/usr/bin/env python3
"""PyTorch float32 CPU reference evaluation of a parameter-golf artifact (spec 2.2-2.3, 7.1-7.2).

Examples (from the repo root, with venv/ created as in scripts/bench-cpu.sh):

  # fixture for the Rust engine (2 standard windows + 4 sliding windows), quick
  venv/bin/python scripts/torch_reference.py --artifact ../shared/reference/baseline9L_int8_zlib.ptz \
      --data ../shared/data/text_sp1024/fineweb_val_000000.bin \
      --tokenizer ../shared/data/tokenizers/pg_sp1024_bpe.model \
      --std-windows 0 --fixture runtime/tests/fixtures/torch/baseline9L_int8_zlib.json

  # full standard eval, appended to a results file keyed by artifact stem
  venv/bin/python scripts/torch_reference.py --artifact A --data SHARD --tokenizer MODEL \
      --record runtime/tests/fixtures/torch/full_standard_eval.json

Everything is float32, eager, no autocast. NLL/token/byte sums are accumulated in float64.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import load_artifact  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Data and byte accounting
# ----------------------------------------------------------------------------------------------


def load_shard(path: str) -> np.ndarray:
    h = np.fromfile(path, dtype="<i4", count=256)
    if h.size != 256 or h[0] != 20240520 or h[1] != 1:
        raise ValueError(f"{path}: bad shard header")
    n = int(h[2])
    if os.path.getsize(path) != 1024 + 2 * n:
        raise ValueError(f"{path}: size mismatch (header says {n} tokens)")
    return np.fromfile(path, dtype="<u2", count=n, offset=1024)


def build_luts(model_file: str, vocab: int):
    """Spec 2.2: (base_bytes int64, has_leading_space bool, is_boundary bool), length max(sp vocab, V)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_file)
    n = max(sp.vocab_size(), vocab)
    base = np.zeros(n, dtype=np.int64)
    space = np.zeros(n, dtype=bool)
    boundary = np.ones(n, dtype=bool)
    for i in range(sp.vocab_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, space, boundary


def target_bytes(x: np.ndarray, y: np.ndarray, luts) -> np.ndarray:
    base, space, boundary = luts
    return base[y] + (space[y] & ~boundary[x]).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def window_nll(model, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """xs, ys: [B, T] -> per-position NLL [B, T] (float32)."""
    x = torch.from_numpy(xs.astype(np.int64))
    y = torch.from_numpy(ys.astype(np.int64))
    return model.nll(x, y).numpy()


# Window plans: the one definition of which windows an eval runs and which of their positions it
# scores, shared by the evals below and scripts/torch_gpu_bench.py. A plan is a list of
# (start, wlen, lo): x = toks[start : start+wlen], y = toks[start+1 : start+wlen+1], both zero-padded
# to T, and positions [lo, wlen) are scored.


def standard_plan(n_tokens: int, T: int, n_windows=None) -> list:
    """Spec 7.1: consecutive non-overlapping windows of the stream truncated to a multiple of T (+1)."""
    total = (n_tokens - 1) // T
    n = total if n_windows is None else min(n_windows, total)
    return [(k * T, T, 0) for k in range(n)]


def sliding_plan(n_tokens: int, T: int, stride: int, n_windows=None, once: bool = False) -> list:
    """Spec 7.2 canonical form: starts 0, s, 2s, ... < N' = n_tokens - 1; window e = min(ws+T, N'); the first
    window scores all its positions, later windows their last min(stride, wlen). That is the challenge's
    code, which re-scores targets near the end of the stream. once=True: the clean form of `pgolf-rt eval`
    (runtime/src/eval/windows.rs): a window scores only targets no earlier window scored, and windows that
    would score none are dropped, so every target is scored exactly once (identical until the tail)."""
    n_targets = n_tokens - 1
    starts = list(range(0, n_targets, stride))
    if n_windows is not None:
        starts = starts[:n_windows]
    plan = []
    scored_to = 0  # once: targets [0, scored_to) are scored
    for ws in starts:
        e = min(ws + T, n_targets)
        wlen = e - ws
        lo = 0 if ws == 0 else wlen - min(stride, wlen)
        if once:
            if e <= scored_to:
                continue
            lo = max(lo, scored_to - ws)
            scored_to = e
        plan.append((ws, wlen, lo))
    return plan


def window_arrays(toks: np.ndarray, T: int, plan) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets [len(plan), T] (int64) of the plan's windows, zero-padded after wlen."""
    xs = np.zeros((len(plan), T), dtype=np.int64)
    ys = np.zeros((len(plan), T), dtype=np.int64)
    for i, (ws, wlen, _) in enumerate(plan):
        xs[i, :wlen] = toks[ws:ws + wlen]
        ys[i, :wlen] = toks[ws + 1:ws + wlen + 1]
    return xs, ys


def standard_eval(model, toks, luts, T, n_windows=None, batch=4, progress=False, per_position=False):
    """Spec 7.1 (standard_plan): every target of the first n windows scored once."""
    plan = standard_plan(len(toks), T, n_windows)
    n = len(plan)
    nll_sum = 0.0
    byte_sum = 0
    count = 0
    per_nll, per_bytes = [], []
    t0 = time.perf_counter()
    for b0 in range(0, n, batch):
        ks = range(b0, min(b0 + batch, n))
        xs, ys = window_arrays(toks, T, plan[b0:b0 + batch])
        nll = window_nll(model, xs, ys)
        by = target_bytes(xs, ys, luts)
        nll_sum += float(nll.astype(np.float64).sum())
        byte_sum += int(by.sum())
        count += nll.size
        if per_position:
            per_nll.append(nll)
            per_bytes.append(by)
        if progress and (b0 // batch) % 16 == 0:
            el = time.perf_counter() - t0
            done = b0 + len(ks)
            print(f"  standard {done}/{n} windows  {el:.0f}s  running bpb "
                  f"{nll_sum / math.log(2) / byte_sum:.6f}  eta {el / done * (n - done):.0f}s", file=sys.stderr, flush=True)
    res = {"windows": n, "seq_len": T, "tokens": count, "nll_sum": nll_sum, "bytes": byte_sum,
           "val_loss": nll_sum / count if count else None,
           "val_bpb": nll_sum / math.log(2) / byte_sum if byte_sum else None,
           "seconds": time.perf_counter() - t0}
    if per_position:
        res["per_nll"] = np.concatenate(per_nll) if per_nll else np.zeros((0, T))
        res["per_bytes"] = np.concatenate(per_bytes) if per_bytes else np.zeros((0, T))
    return res


def sliding_eval(model, toks, luts, T, stride, n_windows=None, batch=4):
    """Spec 7.2 canonical form (sliding_plan): window x = val[ws:e], e = min(ws+T, N'), zero-padded to T; the
    first window scores all its positions, later windows their last min(stride, wlen)."""
    plan = sliding_plan(len(toks), T, stride, n_windows)
    nll_sum, byte_sum, count = 0.0, 0, 0
    per_window = []
    t0 = time.perf_counter()
    for b0 in range(0, len(plan), batch):
        chunk = plan[b0:b0 + batch]
        xs, ys = window_arrays(toks, T, chunk)
        nll = window_nll(model, xs, ys)
        by = target_bytes(xs, ys, luts)
        for i, (ws, wlen, lo) in enumerate(chunk):
            s_nll = float(nll[i, lo:wlen].astype(np.float64).sum())
            s_by = int(by[i, lo:wlen].sum())
            nll_sum += s_nll
            byte_sum += s_by
            count += wlen - lo
            per_window.append({"start": ws, "scored": [lo, wlen], "nll_sum": s_nll, "bytes": s_by})
    return {"windows": len(plan), "seq_len": T, "stride": stride, "tokens": count, "nll_sum": nll_sum,
            "bytes": byte_sum, "val_loss": nll_sum / count if count else None,
            "val_bpb": nll_sum / math.log(2) / byte_sum if byte_sum else None,
            "seconds": time.perf_counter() - t0, "per_window": per_window}


# ----------------------------------------------------------------------------------------------
# Fixture
# ----------------------------------------------------------------------------------------------


def sig6(v: float) -> float:
    return float(f"{float(v):.6g}")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_fixture(model, info, toks, luts, args) -> dict:
    T = args.seq_len
    std = standard_eval(model, toks, luts, T, n_windows=2, batch=2, per_position=True)
    with torch.no_grad():
        logits = model(torch.from_numpy(toks[:T].astype(np.int64))[None])[0]
    positions = [p for p in (0, 1, 511, 1023) if p < T]
    sl = sliding_eval(model, toks, luts, T, args.stride, n_windows=4, batch=4)
    base, space, boundary = luts
    return {
        "about": "Independent PyTorch float32 CPU reference (scripts/torch_reference.py, scripts/torch_model.py) for "
                 "the Rust engine. NLL = -ln softmax(30*tanh(z/30))[target]. Windows are taken from the val shard "
                 "as in spec 7.1 / 7.2. Per-position values are rounded to 6 significant digits; sums are float64 "
                 "sums of the unrounded float32 per-position NLLs.",
        "artifact": os.path.basename(args.artifact),
        "artifact_sha256": sha256(args.artifact),
        "data": os.path.basename(args.data),
        "tokenizer": os.path.basename(args.tokenizer),
        "torch": torch.__version__,
        "dtype": "float32",
        "rms_norm_eps": float(torch.finfo(torch.float32).eps),
        "container": {"codec": info["codec"], "layout": info["layout"], "compressed_bytes": info["compressed_bytes"],
                      "torch_save_bytes": info["raw_bytes"]},
        "dequant": "W = q.float() * scale.float()[row]; then rounded to the recorded original dtype "
                   "(dtypes / passthrough_orig_dtypes: tok_emb -> bfloat16) and widened to float32",
        "config": dict(info["config"], num_params=info["num_params"]),
        "lut": {"sum_base_bytes": int(base.sum()), "leading_space_pieces": int(space.sum()),
                "boundary_ids": [int(i) for i in np.flatnonzero(boundary)]},
        "standard": {
            "seq_len": T,
            "windows": 2,
            "input_ids_head": [int(t) for t in toks[:16]],
            "nll_sum": std["nll_sum"],
            "tokens": std["tokens"],
            "bytes": std["bytes"],
            "val_loss": std["val_loss"],
            "val_bpb": std["val_bpb"],
            "per_position_nll": [[sig6(v) for v in row] for row in std["per_nll"]],
            "per_position_bytes": [[int(v) for v in row] for row in std["per_bytes"]],
            "window0_logits_first8": {str(p): [sig6(v) for v in logits[p, :8].tolist()] for p in positions},
        },
        "sliding": {k: sl[k] for k in ("seq_len", "stride", "windows", "tokens", "nll_sum", "bytes", "val_loss",
                                        "val_bpb", "per_window")},
    }


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--data", required=True, help="val shard (fineweb_val_000000.bin)")
    ap.add_argument("--tokenizer", required=True, help="sentencepiece .model for the byte LUT")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--std-windows", type=int, default=None,
                    help="standard eval on the first K windows only (default: all; 0 = skip)")
    ap.add_argument("--windows", type=int, default=0, help="sliding eval on the first N windows (0 = skip)")
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4, help="windows per forward")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--activation", default="relu2", choices=["relu2", "leaky_relu2"])
    ap.add_argument("--no-template-dtypes", action="store_true",
                    help="do not round dequantized tensors to their recorded original dtype (e.g. tok_emb bf16)")
    ap.add_argument("--out", help="write the summary JSON here")
    ap.add_argument("--record", help="merge the summary into this JSON file under the artifact stem")
    ap.add_argument("--fixture", help="write the Rust parity fixture JSON here")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t_load = time.perf_counter()
    model, info = load_artifact(args.artifact, args.activation, not args.no_template_dtypes)
    t_load = time.perf_counter() - t_load
    toks = load_shard(args.data)
    luts = build_luts(args.tokenizer, model.cfg.vocab)
    stem = os.path.splitext(os.path.basename(args.artifact))[0]
    print(f"{stem}: {info['codec']} / {info['layout']}, config {info['config']}, {info['num_params']} params, "
          f"loaded in {t_load:.2f}s; torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)

    if args.fixture:
        fx = make_fixture(model, info, toks, luts, args)
        os.makedirs(os.path.dirname(os.path.abspath(args.fixture)), exist_ok=True)
        with open(args.fixture, "w") as f:
            json.dump(fx, f, separators=(",", ":"))
            f.write("\n")
        s, w = fx["standard"], fx["sliding"]
        print(f"fixture {args.fixture} ({os.path.getsize(args.fixture)} bytes): standard 2 windows "
              f"nll {s['nll_sum']:.6f} bytes {s['bytes']} bpb {s['val_bpb']:.6f}; sliding {w['windows']} windows "
              f"tokens {w['tokens']} nll {w['nll_sum']:.6f} bytes {w['bytes']}", file=sys.stderr)

    summary = {"artifact": os.path.basename(args.artifact), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "dtype": "float32", "eager": True,
               "machine": platform.machine(), "load_seconds": t_load,
               "config": dict(info["config"], num_params=info["num_params"])}
    if args.std_windows != 0:
        t0 = time.perf_counter()
        std = standard_eval(model, toks, luts, args.seq_len, args.std_windows, args.batch, args.progress)
        std["wall_seconds"] = time.perf_counter() - t0
        summary["standard"] = std
        print(f"standard: {std['windows']} windows, {std['tokens']} targets, val_loss {std['val_loss']:.8f} "
              f"val_bpb {std['val_bpb']:.8f} bytes {std['bytes']} in {std['wall_seconds']:.1f}s "
              f"({std['tokens'] / std['wall_seconds']:.0f} tok/s)")
    if args.windows:
        sl = sliding_eval(model, toks, luts, args.seq_len, args.stride, args.windows, args.batch)
        sl.pop("per_window")
        summary["sliding"] = sl
        print(f"sliding: {sl['windows']} windows stride {args.stride}, {sl['tokens']} targets, val_loss "
              f"{sl['val_loss']:.8f} val_bpb {sl['val_bpb']:.8f} bytes {sl['bytes']} in {sl['seconds']:.1f}s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    if args.record:
        data = {}
        if os.path.exists(args.record):
            with open(args.record) as f:
                data = json.load(f)
        data[stem] = summary
        with open(args.record, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
