#!/usr/bin/env python3
"""Seed-submission fixtures: a tiny model of a public submission, written by its own code.

Imports a submission's `train_gpt.py` from the path given with `--code` (nothing of it is kept in
this repository), builds a small configuration of its own `GPT` class with the same features on,
trains it a few steps with its own Muon optimizer (and torch Adam for embeddings and control
tensors, as its `main()` groups them), exports it with its own quantizer and compressor, reads the
file back with its own loader into a fresh model built the way its eval builds one, and records
that model's per-position NLL on the first tokens of a val shard.

The reference forward runs in float32 on CPU: the weights are exactly those the submission's eval
holds (bf16 embedding tables included), the arithmetic is float32 instead of bf16 autocast, which
is what pgolf-rt's CPU engine computes.

    python scripts/seed_fixtures.py --pr 489 --code PR489/train_gpt.py \
        --val DATA/fineweb_val_000000.bin --train DATA/fineweb_train_000000.bin \
        --out runtime/tests/fixtures/seeds --name pr489_tiny

Writes `<name>.ptz` (the submission's own bytes) and `<name>.json`. With `--steps-only` it
reads the committed `<name>.ptz` back the same way and runs 4 training steps as the PR's `main()`
does (`<name>.steps.json`: see `pr_train_steps`). With `--grads-only` it
trains nothing: it reads the committed `<name>.ptz` back with the PR's loader and writes
`<name>.grads.json`, a fingerprint of the PR's float32 gradients of its own training loss on the
first val tokens (per tensor: the norm, the projection on a fixed direction, and the whole
gradient of small tensors), which `runtime/tests/seed_submissions.rs` checks pgolf-rt against.
"""

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import math
import sys
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

# Tiny configurations: same features as the submission, small widths. `mlp_mult` for the
# int5 preset of #687 is widened so that its MLP matrices exceed the 65,536-element threshold
# below which the submission's quantizer keeps a tensor as fp16 (the GPTQ int5/int6 path runs).
PRESETS = {
    ("489", "tiny"): dict(
        num_layers=4, model_dim=64, num_heads=2, num_kv_heads=1, mlp_mult=3,
        logit_softcap=15.0, rope_dims=16, bigram_hash_buckets=512, bigram_dim=32,
        qk_gain_init=1.0,
    ),
    # #581 (the #555 sidecar): 4 layers so that a site (layer 1) is an encoder layer, whose
    # sidecar output is what its U-Net skip carries; sites 1-3 are the last three layers.
    ("581", "tiny"): dict(
        num_layers=4, model_dim=64, num_heads=2, num_kv_heads=1, mlp_mult=3.0,
        logit_softcap=30.0, rope_dims=16, bigram_vocab_size=512, bigram_dim=32,
        ln_scale=True, sparse_start_layer=1, sparse_hidden_dim=16, qk_gain_init=1.5,
    ),
    ("687", "tiny"): dict(
        num_layers=4, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=3.5,
        logit_softcap=30.0, rope_dims=8, bigram_vocab_size=256, bigram_dim=16,
        xsa_last_n=4, ln_scale=True, ve_enabled=True, ve_dim=8, ve_layers="2,3",
        qk_gain_init=1.5,
    ),
    ("687", "int5"): dict(
        num_layers=2, model_dim=72, num_heads=2, num_kv_heads=1, mlp_mult=14.5,
        logit_softcap=30.0, rope_dims=16, bigram_vocab_size=128, bigram_dim=16,
        xsa_last_n=2, ln_scale=True, ve_enabled=True, ve_dim=16, ve_layers="1",
        qk_gain_init=1.5,
    ),
}


def import_pr(path: str):
    spec = importlib.util.spec_from_file_location("pr_train_gpt", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pr_train_gpt"] = mod
    spec.loader.exec_module(mod)
    return mod


def shim_attention(mod, pr: str):
    """#581's `_attend` casts q, k, v to bf16 for FlashAttention even in a float32 model; the
    shim runs the same causal SDPA (GQA as the PR's fallback does it) in the inputs' dtype, so
    the reference is float32 throughout, as pgolf-rt's CPU engine computes."""
    if pr != "581":
        return

    def attend(self, q, k, v):
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        if self.num_heads != self.num_kv_heads:
            r = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=True)
        return y.permute(0, 2, 1, 3).contiguous()

    mod.CausalSelfAttention._attend = attend


def build(mod, pr: str, cfg: dict, hp):
    common = dict(
        vocab_size=1024, tie_embeddings=True, tied_embed_init_std=hp.tied_embed_init_std,
        rope_base=10000.0,
    )
    return mod.GPT(**common, **cfg)


def as_submission_dtypes(mod, model):
    """The dtype layout of the submission's models: bf16, CastedLinear and control params fp32."""
    model = model.bfloat16()
    for m in model.modules():
        if isinstance(m, mod.CastedLinear):
            m.float()
    mod.restore_low_dim_params_to_fp32(model)
    return model


def fill_zero_matrices(model, gen, std=0.02):
    """Zero-initialised matrices (output projections, BigramHash) would leave whole features
    untested (a zero table times a zero projection never gets a gradient): give them noise."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def train(mod, model, hp, tokens, steps: int, batch: int, seq: int):
    """A few steps with the submission's Muon for block matrices and Adam for the rest."""
    ctrl = tuple(mod.CONTROL_TENSOR_NAME_PATTERNS)
    embed, matrix, scalar = [], [], []
    for name, p in model.named_parameters():
        if name.endswith("embed.weight") or name == "tok_emb.weight":
            embed.append(p)
        elif name == "shared_sparse_scale":
            scalar.append(p)  # #581 puts the per-site scales with the scalars
        elif p.ndim == 2 and not any(c in name for c in ctrl):
            matrix.append(p)
        else:
            scalar.append(p)
    opts = [
        torch.optim.Adam(embed, lr=hp.tied_embed_lr, betas=(hp.beta1, hp.beta2), eps=hp.adam_eps),
        mod.Muon(matrix, lr=hp.matrix_lr, momentum=hp.muon_momentum,
                 backend_steps=hp.muon_backend_steps),
        torch.optim.Adam(scalar, lr=hp.scalar_lr, betas=(hp.beta1, hp.beta2), eps=hp.adam_eps),
    ]
    losses = []
    for step in range(steps):
        off = step * batch * seq
        chunk = tokens[off: off + batch * seq + 1].to(torch.int64)
        x = chunk[:-1].reshape(batch, seq)
        y = chunk[1:].reshape(batch, seq)
        loss = model(x, y)
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def export_489(mod, model, args):
    if args.keep_float_max_numel is not None:
        mod.INT8_KEEP_FLOAT_MAX_NUMEL = args.keep_float_max_numel
    obj, _ = mod.quantize_state_dict_int8(model.state_dict())
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zlib.compress(buf.getvalue(), level=9)


def load_489(mod, blob, fresh):
    state = torch.load(io.BytesIO(zlib.decompress(blob)), map_location="cpu")
    fresh.load_state_dict(mod.dequantize_state_dict_int8(state), strict=True)
    return fresh


def export_581(mod, model):
    """#581's own serializer: its mixed int6 quantizer, `{"w","m"}`, zstd 22 (or zlib 9)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    result, meta = mod.mixed_quantize_int6(sd, {"mlp", "attn"})
    buf = io.BytesIO()
    torch.save({"w": result, "m": meta}, buf)
    raw = buf.getvalue()
    if mod._COMPRESSOR == "zstd":
        blob = mod.zstandard.ZstdCompressor(level=22).compress(raw)
    else:
        blob = zlib.compress(raw, 9)
    return blob, sd, meta


def load_581(mod, blob, fresh, template):
    raw = (mod.zstandard.ZstdDecompressor().decompress(blob) if mod._COMPRESSOR == "zstd"
           else zlib.decompress(blob))
    state = torch.load(io.BytesIO(raw), map_location="cpu")
    fresh.load_state_dict(mod.dequantize_mixed_int6(state["w"], state["m"], template), strict=True)
    return fresh


def export_687(mod, model, args, calib_tokens):
    import zstandard

    # The submission calibrates GPTQ with its own hook code on training sequences; its
    # TokenStream reads shards by glob, so the calibration shard is handed in as a pattern.
    hessians = mod.gptq_calibrate(model, args.train, torch.device("cpu"),
                                  n_samples=args.calib_samples, seq_len=args.seq)
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    # Magnitude pruning of the large matrices before quantisation, as the submission's main().
    for v in sd.values():
        if v.ndim == 2 and v.numel() > 65536:
            v[v.abs() < torch.quantile(v.abs().float(), args.prune_pct)] = 0.0
    result, meta = mod.mixed_quantize_int6_gptq(
        sd, {"mlp", "attn"}, hessians, num_layers=len(model.blocks), int6_last_n=args.int6_last_n)
    buf = io.BytesIO()
    torch.save({"w": result, "m": meta}, buf)
    return zstandard.ZstdCompressor(level=22).compress(buf.getvalue()), sd, meta


def load_687(mod, blob, fresh, template):
    import zstandard

    state = torch.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(blob)), map_location="cpu")
    fresh.load_state_dict(mod.dequantize_mixed_int6(state["w"], state["m"], template), strict=True)
    return fresh


def as_fp32(model, rope_from=None):
    """The model in float32, its RoPE caches dropped.

    The submissions' eval models are `.bfloat16()`, which also rounds each Rotary's `inv_freq`
    buffer to bf16 (only parameters are restored to fp32). With `rope_from` (a model never cast
    to bf16), its float32 `inv_freq` buffers are used instead: RoPE as pgolf-rt computes it."""
    m32 = model.float()
    for m in m32.modules():
        if hasattr(m, "inv_freq"):
            m._cos_cached = m._sin_cached = None
            m._seq_len_cached = 0
    if rope_from is not None:
        src = [m for m in rope_from.modules() if hasattr(m, "inv_freq")]
        dst = [m for m in m32.modules() if hasattr(m, "inv_freq")]
        for a, b in zip(src, dst, strict=True):
            b.inv_freq = a.inv_freq.clone()
    return m32


@torch.no_grad()
def per_position_nll(model, tokens, rope_from=None):
    """float32 forward of the loaded model's exact weights; NLL of token t+1 at position t."""
    m32 = as_fp32(model, rope_from).eval()
    x = tokens[:-1].to(torch.int64)[None]
    y = tokens[1:].to(torch.int64)
    logits = m32.forward_logits(x)[0].float()
    return F.cross_entropy(logits, y, reduction="none").tolist()


# Tensors up to this many values have their whole gradient recorded; larger ones a fingerprint.
GRAD_FULL_MAX = 512


def direction(n: int, k: int):
    """The fixed direction a gradient is projected on: `sin(0.37·i + k)` in float64 (tensor `k`
    of the state dict, element `i`); pgolf-rt's test computes the same."""
    import numpy as np
    return np.sin(0.37 * np.arange(n, dtype=np.float64) + k)


def grads_fingerprint(mod, model, tokens, batch: int, seq: int, rope_from):
    """The PR's training loss (`model(x, y)`, train mode, float32 with float32 RoPE) on `batch`
    windows of `seq` tokens and its gradient, summarised per state-dict tensor."""
    m32 = as_fp32(model, rope_from).train()
    m32.zero_grad(set_to_none=True)
    chunk = tokens[: batch * seq + 1].to(torch.int64)
    x, y = chunk[:-1].reshape(batch, seq), chunk[1:].reshape(batch, seq)
    loss = m32(x, y)
    loss.backward()
    out = []
    for k, (name, p) in enumerate(m32.named_parameters()):
        g = p.grad.detach().double().reshape(-1).numpy()
        r = direction(g.size, k)
        rec = dict(name=name, shape=list(p.shape), norm=float((g * g).sum() ** 0.5),
                   dot=float((g * r).sum()), dir_norm=float((r * r).sum() ** 0.5))
        if g.size <= GRAD_FULL_MAX:
            rec["grad"] = [float(f"{v:.9g}") for v in g]  # float32 values: 9 digits are exact
        out.append(rec)
    return dict(batch=batch, seq=seq, tokens=[int(t) for t in chunk], loss=float(loss.detach()),
                tensors=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pr", required=True, choices=["489", "581", "687"])
    ap.add_argument("--code", required=True, help="the PR's train_gpt.py")
    ap.add_argument("--commit", default="", help="the PR head commit the code came from")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--val", required=True, help="a fineweb_val_*.bin shard (sp1024)")
    ap.add_argument("--train", required=True, help="a fineweb_train_*.bin shard (sp1024)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--tokens", type=int, default=256, help="scored positions per window")
    ap.add_argument("--long-tokens", type=int, default=0,
                    help="also score one window this long (past #687's 1024-token NTK threshold)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--keep-float-max-numel", type=int, default=None,
                    help="#489: lower its fp16-passthrough threshold so small matrices go int8")
    ap.add_argument("--calib-samples", type=int, default=8)
    ap.add_argument("--prune-pct", type=float, default=0.03)
    ap.add_argument("--int6-last-n", type=int, default=0)
    ap.add_argument("--grads-only", action="store_true",
                    help="read the committed <name>.ptz back and write <name>.grads.json only")
    ap.add_argument("--steps-only", action="store_true",
                    help="read the committed <name>.ptz back and write <name>.steps.json only")
    ap.add_argument("--grad-batch", type=int, default=2)
    ap.add_argument("--grad-seq", type=int, default=64)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    mod = import_pr(args.code)
    shim_attention(mod, args.pr)
    hp = mod.Hyperparameters()
    cfg = PRESETS[(args.pr, args.preset)]

    out = Path(args.out)
    if args.grads_only:
        grads_only(mod, args, cfg, hp, out)
        return
    if args.steps_only:
        steps_only(mod, args, cfg, hp, out)
        return

    model = build(mod, args.pr, cfg, hp).float()
    fill_zero_matrices(model, gen)
    train_tokens = mod.load_data_shard(Path(args.train))
    losses = train(mod, model, hp, train_tokens, args.steps, args.batch, args.seq)
    model = as_submission_dtypes(mod, model)

    fresh = as_submission_dtypes(mod, build(mod, args.pr, cfg, hp))
    extra = {}
    if args.pr == "489":
        blob = export_489(mod, model, args)
        loaded = load_489(mod, blob, fresh)
        extra["keep_float_max_numel"] = mod.INT8_KEEP_FLOAT_MAX_NUMEL
        fmt = "int8_clean_per_row_v1 + zlib 9"
    elif args.pr == "581":
        blob, template, meta = export_581(mod, model)
        loaded = load_581(mod, blob, fresh, template)
        extra.update(quant_types=sorted({m if isinstance(m, str) else m["type"]
                                         for m in meta.values()}),
                     sparse_layers=list(loaded.sparse_layer_indices))
        fmt = "{w,m} mixed int6 + " + ("zstd 22" if mod._COMPRESSOR == "zstd" else "zlib 9")
    else:
        blob, template, meta = export_687(mod, model, args, train_tokens)
        loaded = load_687(mod, blob, fresh, template)
        extra.update(calib_samples=args.calib_samples, prune_pct=args.prune_pct,
                     int6_last_n=args.int6_last_n,
                     quant_types=sorted({m if isinstance(m, str) else m["type"] for m in meta.values()}))
        fmt = "{w,m} mixed int5/int6 GPTQ + zstd 22"

    val = mod.load_data_shard(Path(args.val))
    windows = []
    lengths = [args.tokens] + ([args.long_tokens] if args.long_tokens else [])
    for n in lengths:
        toks = val[: n + 1]
        nll = per_position_nll(loaded, toks)
        nll_fp32_rope = per_position_nll(loaded, toks, rope_from=build(mod, args.pr, cfg, hp))
        windows.append(dict(tokens=[int(t) for t in toks], nll=nll, mean_nll=sum(nll) / len(nll),
                            nll_fp32_rope=nll_fp32_rope,
                            mean_nll_fp32_rope=sum(nll_fp32_rope) / len(nll_fp32_rope)))
        loaded = as_submission_dtypes(mod, loaded)  # per_position_nll cast it to fp32

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.ptz").write_bytes(blob)
    code_sha = hashlib.sha256(Path(args.code).read_bytes()).hexdigest()
    hidden = int(cfg["mlp_mult"] * cfg["model_dim"])
    doc = dict(
        pr=int(args.pr), pr_commit=args.commit, code_sha256=code_sha, preset=args.preset,
        format=fmt, artifact_bytes=len(blob), seed=args.seed,
        init="the PR's init; all-zero matrices filled with N(0, 0.02^2)",
        train=dict(steps=args.steps, batch=args.batch, seq=args.seq, losses=losses,
                   optimizers="PR Muon (block matrices) + torch Adam (embeddings, control)"),
        config=dict(cfg, vocab_size=1024, mlp_hidden=hidden,
                    num_params=sum(p.numel() for p in loaded.parameters())),
        reference="PR loader + fresh PR GPT in the PR's eval dtypes; forward in float32 on CPU. "
                  "nll: as that model holds its weights and buffers (Rotary inv_freq bf16-rounded "
                  "by .bfloat16()); nll_fp32_rope: the same with float32 inv_freq",
        windows=windows, **extra,
    )
    (out / f"{args.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{args.name}: {len(blob)} bytes, mean nll {[round(w['mean_nll'], 4) for w in windows]}, "
          f"train losses {[round(l, 3) for l in losses]}")


def pr_groups(pr: str, model, ctrl):
    """The optimizer group of every parameter as the PR's `main()` assigns them: block matrices
    to Muon, block control tensors to the scalar Adam, then each PR's own rules for the modules
    outside the blocks (#489: the bigram table and projection to Muon; #581: the sidecar's 2-D
    parameters to Muon, the rest of it to the scalars; #687: the bigram and VE tables with
    `tok_emb`, their projections to Muon)."""
    g = {"tok_emb.weight": "embed"}
    for n, p in model.blocks.named_parameters():
        g[f"blocks.{n}"] = "matrix" if p.ndim == 2 and not any(c in n for c in ctrl) else "scalar"
    if getattr(model, "shared_sparse", None) is not None:
        for n, p in model.shared_sparse.named_parameters():
            mat = p.ndim == 2 and not any(c in n for c in ctrl)
            g[f"shared_sparse.{n}"] = "matrix" if mat else "scalar"
        g["shared_sparse_scale"] = "scalar"
    g["skip_weights"] = "scalar"
    g["smear.gate"] = "scalar"
    if model.bigram is not None:
        g["bigram.embed.weight"] = "matrix" if pr == "489" else "embed"
        if model.bigram.proj is not None:
            g["bigram.proj.weight"] = "matrix"
        g["bigram.scale"] = "scalar"
    if getattr(model, "ve_shared", None) is not None:
        g["ve_shared.embed.weight"] = "embed"
        if model.ve_shared.proj is not None:
            g["ve_shared.proj.weight"] = "matrix"
        g["ve_shared.scale"] = "scalar"
        for k in range(len(model.ve_layer_scales)):
            g[f"ve_layer_scales.{k}"] = "scalar"
    if model.lm_head is not None:
        g["lm_head.weight"] = "head"
    names = [n for n, _ in model.named_parameters()]
    assert sorted(g) == sorted(names), sorted(set(g) ^ set(names))
    return g


class _Fp32Torch:
    """`torch`, with `torch.bfloat16` read as float32 (for the PR's Muon buffer)."""

    def __init__(self, t):
        self._t = t

    def __getattr__(self, k):
        return self._t.float32 if k == "bfloat16" else getattr(self._t, k)


@contextlib.contextmanager
def muon_in_fp32(mod, on: bool):
    """While on: the PR's Muon runs in float32. Its `zeropower_via_newtonschulz5` is replaced by
    `torch_optim.newton_schulz5` (the same NS5, coefficients and order, in float32) and its bf16
    update buffer (`dtype=torch.bfloat16` in `Muon.step`) is float32. Bit-level bf16 rounding
    makes two runs of the PR's own bf16 Muon drift apart from 1e-7 differences in the weights
    (a few 1e-3 relative in 4 steps); float32 shows how exactly pgolf-rt follows the PR."""
    if not on:
        yield
        return
    from torch_optim import newton_schulz5

    saved = mod.torch, mod.zeropower_via_newtonschulz5
    mod.torch, mod.zeropower_via_newtonschulz5 = _Fp32Torch(torch), newton_schulz5
    try:
        yield
    finally:
        mod.torch, mod.zeropower_via_newtonschulz5 = saved


def pr_train_steps(mod, pr: str, model, hp, tokens, steps: int, batch: int, seq: int,
                   muon_bf16: bool = True):
    """`steps` training steps of `model` as the PR's `main()` runs them: its optimizers (its own
    Muon, with its bf16 Newton-Schulz and bf16 update buffer; torch Adam (#489) or AdamW with its
    decay (#581, #687), fused), its groups (`pr_groups`), its default hyper-parameters, its Muon
    momentum warm-up, its global-norm clipping; the learning-rate multiplier is 1 (warmdown is
    far). The model runs in float32 (float32 RoPE and attention)."""
    ctrl = tuple(mod.CONTROL_TENSOR_NAME_PATTERNS)
    groups = pr_groups(pr, model, ctrl)
    by = {k: [p for n, p in model.named_parameters() if groups[n] == k]
          for k in ("embed", "matrix", "scalar", "head")}
    adam_wd = 0.0 if pr == "489" else hp.adam_wd
    muon_wd = hp.weight_decay if pr == "489" else hp.muon_wd
    adam = torch.optim.Adam if pr == "489" else torch.optim.AdamW
    kw = dict(betas=(hp.beta1, hp.beta2), eps=hp.adam_eps, fused=True)
    if pr != "489":
        kw["weight_decay"] = adam_wd
    opts = [adam(by["embed"], lr=hp.tied_embed_lr, **kw),
            mod.Muon(by["matrix"], lr=hp.matrix_lr, momentum=hp.muon_momentum,
                     backend_steps=hp.muon_backend_steps, weight_decay=muon_wd),
            adam(by["scalar"], lr=hp.scalar_lr, **kw)]
    if by["head"]:
        opts.insert(1, torch.optim.Adam(by["head"], lr=hp.head_lr, betas=(hp.beta1, hp.beta2),
                                        eps=hp.adam_eps, fused=True))
    out = []
    for step in range(steps):
        off = step * batch * seq
        chunk = tokens[off: off + batch * seq + 1].to(torch.int64)
        x, y = chunk[:-1].reshape(batch, seq), chunk[1:].reshape(batch, seq)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        w = hp.muon_momentum_warmup_steps
        frac = min(step / w, 1.0) if w > 0 else 1.0
        momentum = (1 - frac) * hp.muon_momentum_warmup_start + frac * hp.muon_momentum
        for o in opts:
            if isinstance(o, mod.Muon):
                for grp in o.param_groups:
                    grp["momentum"] = momentum
        params = list(model.parameters())
        if hp.grad_clip_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, hp.grad_clip_norm)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        with muon_in_fp32(mod, not muon_bf16):
            for o in opts:
                o.step()
        out.append(dict(tokens=[int(t) for t in chunk], loss=float(loss.detach()),
                        grad_norm=float(norm), momentum=momentum))
    settings = dict(tied_embed_lr=hp.tied_embed_lr, matrix_lr=hp.matrix_lr, scalar_lr=hp.scalar_lr,
                    head_lr=hp.head_lr, beta1=hp.beta1, beta2=hp.beta2, adam_eps=hp.adam_eps,
                    adam_wd=adam_wd, muon_wd=muon_wd, muon_backend_steps=hp.muon_backend_steps,
                    grad_clip_norm=hp.grad_clip_norm, lr_mul=1.0, muon_bf16=muon_bf16)
    return out, settings, groups


def fingerprint(model, full: bool = True):
    """Per state-dict tensor: the norm, the projection on `direction`, the whole tensor if small
    (and `full`)."""
    out = []
    for k, (name, p) in enumerate(model.named_parameters()):
        g = p.detach().double().reshape(-1).numpy()
        r = direction(g.size, k)
        rec = dict(name=name, norm=float((g * g).sum() ** 0.5), dot=float((g * r).sum()),
                   dir_norm=float((r * r).sum() ** 0.5))
        if full and g.size <= GRAD_FULL_MAX:
            rec["values"] = [float(f"{v:.9g}") for v in g]
        out.append(rec)
    return out


def load_committed(mod, args, cfg, hp, out: Path):
    blob = (out / f"{args.name}.ptz").read_bytes()
    fresh = as_submission_dtypes(mod, build(mod, args.pr, cfg, hp))
    template = {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
    if args.pr == "489":
        return blob, load_489(mod, blob, fresh)
    if args.pr == "581":
        return blob, load_581(mod, blob, fresh, template)
    return blob, load_687(mod, blob, fresh, template)


def steps_only(mod, args, cfg, hp, out: Path):
    """The committed artifact, read by the PR's loader, trained 4 steps as the PR trains: with
    its bf16 Muon, with a float32 Muon, and with its bf16 Muon from weights perturbed by 1e-7
    relative noise (how far the PR's own run moves from a difference that small)."""
    train = mod.load_data_shard(Path(args.train))
    runs = {}
    for label, bf16, eps in (("bf16", True, 0.0), ("fp32", False, 0.0), ("bf16_perturbed", True, 1e-7)):
        blob, loaded = load_committed(mod, args, cfg, hp, out)
        m32 = as_fp32(loaded, rope_from=build(mod, args.pr, cfg, hp)).train()
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m32.parameters():
                p.mul_(1 + eps * torch.randn(p.shape, generator=gen))
        steps, settings, groups = pr_train_steps(mod, args.pr, m32, hp, train, 4,
                                                 args.grad_batch, args.grad_seq, muon_bf16=bf16)
        runs[label] = dict(settings=settings, steps=steps, final=fingerprint(m32, full=eps == 0))
    doc = dict(pr=int(args.pr), pr_commit=args.commit, artifact=f"{args.name}.ptz",
               artifact_sha256=hashlib.sha256(blob).hexdigest(), batch=args.grad_batch,
               seq=args.grad_seq, groups=groups, runs=runs,
               reference="PR loader + fresh PR GPT, float32 (float32 RoPE and attention), "
                         "train mode; the PR's optimizers and groups as its main() builds them "
                         "(pr_train_steps); runs: its bf16 Muon, a float32 Muon (muon_in_fp32), "
                         "its bf16 Muon from weights times (1 + 1e-7 N(0,1)); final weights: norm, "
                         "dot with r_i = sin(0.37 i + k), all values of tensors up to "
                         "grad_full_max",
               grad_full_max=GRAD_FULL_MAX)
    (out / f"{args.name}.steps.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    for label, r in runs.items():
        print(f"{args.name} ({label}): 4 PR steps, losses {[round(s['loss'], 6) for s in r['steps']]}")


def grads_only(mod, args, cfg, hp, out: Path):
    """The committed artifact, read by the PR's loader into a fresh PR model, and the gradient
    fingerprint of the PR's own loss there."""
    blob = (out / f"{args.name}.ptz").read_bytes()
    fresh = as_submission_dtypes(mod, build(mod, args.pr, cfg, hp))
    template = {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
    if args.pr == "489":
        loaded = load_489(mod, blob, fresh)
    elif args.pr == "581":
        loaded = load_581(mod, blob, fresh, template)
    else:
        loaded = load_687(mod, blob, fresh, template)
    val = mod.load_data_shard(Path(args.val))
    doc = grads_fingerprint(mod, loaded, val, args.grad_batch, args.grad_seq,
                            rope_from=build(mod, args.pr, cfg, hp))
    doc.update(pr=int(args.pr), pr_commit=args.commit, artifact=f"{args.name}.ptz",
               artifact_sha256=hashlib.sha256(blob).hexdigest(),
               reference="PR loader + fresh PR GPT; its forward(x, y) in train mode, float32 "
                         "with float32 RoPE, on CPU; .backward(). norm = |g|, dot = g.r with "
                         "r_i = sin(0.37 i + k) for state-dict tensor k (float64)",
               grad_full_max=GRAD_FULL_MAX)
    (out / f"{args.name}.grads.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"{args.name}: grads of loss {doc['loss']:.6f} over {len(doc['tensors'])} tensors")


if __name__ == "__main__":
    main()
