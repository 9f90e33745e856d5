#!/usr/bin/env python3
"""PyTorch side of the GPU benchmark: eval and training speed of PyTorch as the challenge runs it.

Every pgolf-rt GPU speed figure is reported as a ratio against this script's figure, measured on the same GPU
in the same run. On CUDA the defaults are the challenge's settings (train_gpt.py): bf16 autocast around the
forward and loss, torch.compile(dynamic=False, fullgraph=True), SDPA flash attention only with SDPA's own GQA,
TF32 matmuls for what autocast leaves in float32, fused Adam. On a CPU the defaults are float32 eager, so the
numbers can be checked against the float32 oracle (`pgolf-rt eval --backend cpu`). The model, windows, byte
accounting and training step are those of scripts/torch_model.py, torch_reference.py, torch_train.py and
torch_optim.py (imported, not copied). Nothing is downloaded.

Usage (from the repo root; S=../shared):

  # eval: standard (no --stride) or sliding (--stride 64) over the first N tokens of the val shard
  python3 scripts/torch_gpu_bench.py eval --artifact $S/reference/baseline9L_int8_zlib.ptz \\
      --data $S/data/text_sp1024/fineweb_val_000000.bin --tokenizer $S/data/tokenizers/pg_sp1024_bpe.model \\
      [--seq-len 1024] [--stride 64] [--max-tokens N] [--batch 32] [--device cuda|cpu] [--dtype bf16|f32] \\
      [--compile|--no-compile] [--repeat 1] [--pad-last] [--sliding-form once|reference]

  # train: optimizer steps of the real training step on fineweb_train_*.bin in DIR; model and batch from the
  # environment variables of torch_train.py / pgolf-rt train (NUM_LAYERS, MODEL_DIM, NUM_HEADS, NUM_KV_HEADS,
  # MLP_MULT, VOCAB_SIZE, TRAIN_SEQ_LEN, TRAIN_BATCH_TOKENS, GRAD_ACCUM_STEPS, MATRIX_LR, SCALAR_LR,
  # TIED_EMBED_LR, SEED, GRAD_CLIP_NORM, MUON_BF16, ...); defaults: the challenge baseline (9 layers, d 512,
  # 8 heads / 4 KV, MLP 2x, vocab 1024, tied, seq 1024, 524,288 tokens per step in 8 micro-steps)
  python3 scripts/torch_gpu_bench.py train --data-path $S/data/text_sp1024 [--steps 6] [--device cuda|cpu] \\
      [--dtype bf16|f32] [--compile|--no-compile] [--max-seconds 120]

Progress goes to stderr (flushed); the LAST line of stdout is one JSON object. A missing file, a data folder
without train shards or `--device cuda` without CUDA ends with one `torch_gpu_bench: error: ...` line on
stderr and exit status 2.

What is timed
  eval   The stream is the first --max-tokens tokens of the shard, truncated as `pgolf-rt eval` does (and as
         train_gpt.py loads the val split) to floor((N-1)/T)*T + 1 tokens. Windows: standard = non-overlapping
         windows of T; sliding = torch_reference.sliding_plan with stride S in the form `pgolf-rt eval` scores
         (each target once; --sliding-form reference keeps the challenge code's re-scoring of the tail).
         Before the clock: the windows, the mask of scored positions and the byte counts (they do not depend on
         the model) are built on the host and the windows copied to the device. One batch is run first, plus the
         shorter last batch when the batch size does not divide the windows (torch.compile compiles its graph
         per shape there): `warmup_seconds`. The timed pass is then every batch's forward,
         cross entropy and masked float64 NLL sum on the device, with one synchronize at the end.
         With --repeat R the pass runs R times and `seconds` is the median.
  train  Each step is train_step of torch_train.py: GRAD_ACCUM_STEPS micro-steps of (host tokens -> device,
         forward + mean NLL under autocast, backward of loss / accum), clipping if GRAD_CLIP_NORM > 0 (the
         baseline has none), Muon (Newton-Schulz of torch_optim.py in float32; MUON_BF16=1: train_gpt.py's bf16
         one; compiled too with --compile, as train_gpt.py does) and the two Adam groups. Master weights and
         optimizer state are float32. The device is synchronized at the end of every step.

JSON fields
  eval:  what "eval"; mode "standard"|"sliding"; stride (null for standard); seq_len; val_loss (mean nats per
         scored target); val_bpb (nll_sum / ln 2 / bytes); targets (scored targets = pgolf-rt's `tokens`);
         bytes (UTF-8 bytes of the scored targets); nll_sum; windows; batch; padded_windows (--pad-last);
         max_tokens; stream_tokens (after truncation); seconds (the timed pass; median over --repeat);
         pass_seconds (every pass); tokens_per_s (targets / seconds); warmup_seconds (the warm-up batches,
         compile included); load_seconds (artifact);
         setup_seconds (windows, bytes, upload); device; gpu (torch.cuda.get_device_name or null); dtype
         "bf16"|"f32"; compile (bool); native_gqa; sdpa "flash"|"auto"; tf32; sliding_form; torch (version);
         threads; artifact (path); config (architecture and num_params).
  train: what "train"; steps (completed); step_ms (per step); step_ms_median (median of the steps after the
         first 2, or of all when fewer than 3); first_step_ms; warmup_seconds (to the end of step 1, compile
         included); tokens_per_step; tokens_per_s (tokens_per_step / median step seconds); losses (mean train
         loss per step); stopped_early (true when --max-seconds cut the run short); max_seconds; total_seconds;
         peak_mem_gb (cuda); device; gpu; dtype; compile; native_gqa; sdpa; tf32; fused_adam; muon_bf16;
         grad_clip_norm; torch; threads; num_layers, model_dim, num_heads, num_kv_heads, mlp_mult, mlp_hidden,
         vocab_size, tie_embeddings, train_seq_len, train_batch_tokens, grad_accum_steps, matrix_lr, scalar_lr,
         tied_embed_lr, seed, num_params.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import load_artifact  # noqa: E402
from torch_optim import newton_schulz5  # noqa: E402
from torch_reference import build_luts, load_shard, sliding_plan, standard_plan, target_bytes, window_arrays  # noqa: E402
from torch_train import TokenStream, build_model, build_optimizers, settings, train_step  # noqa: E402

PROG = "torch_gpu_bench"


def log(msg: str) -> None:
    print(f"[{PROG}] {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def need_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        die(f"{what} not found: {path}")


# ----------------------------------------------------------------------------------------------
# Device and precision settings shared by both subcommands
# ----------------------------------------------------------------------------------------------


def resolve(args) -> None:
    """Fill in the device-dependent defaults and apply the global backend settings."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        die(f"--device cuda asked for, but torch {torch.__version__} sees no CUDA device")
    cuda = args.device == "cuda"
    if args.dtype is None:
        args.dtype = "bf16" if cuda else "f32"
    if args.compile is None:
        args.compile = cuda
    if args.native_gqa is None:  # train_gpt.py: F.scaled_dot_product_attention(..., enable_gqa=True)
        args.native_gqa = cuda
    if args.sdpa is None or not cuda:  # train_gpt.py enables the flash backend only; flash has no float32 kernel
        args.sdpa = "flash" if cuda and args.dtype == "bf16" else "auto"
    if args.sdpa == "flash" and args.dtype != "bf16":
        die("--sdpa flash needs --dtype bf16 (flash attention has no float32 kernel)")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tf32 = False
    if cuda:
        # train_gpt.py sets TF32 on; it only touches what autocast leaves in float32. The f32 figure stays
        # strict float32 (the precision of pgolf-rt's f32 path).
        args.tf32 = args.dtype == "bf16"
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        if args.sdpa == "flash":
            from torch.backends.cuda import (enable_cudnn_sdp, enable_flash_sdp, enable_math_sdp,
                                             enable_mem_efficient_sdp)
            enable_cudnn_sdp(False)
            enable_flash_sdp(True)
            enable_mem_efficient_sdp(False)
            enable_math_sdp(False)
    args.torch_device = torch.device(args.device)


def autocast_factory(args):
    """Context-manager factory for the forward/loss: bf16 autocast, or nothing for f32."""
    if args.dtype == "bf16":
        return lambda: torch.autocast(device_type=args.device, dtype=torch.bfloat16)
    return contextlib.nullcontext


def sync(args) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


def common_fields(args) -> dict:
    return {"device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "dtype": args.dtype, "compile": bool(args.compile), "native_gqa": bool(args.native_gqa),
            "sdpa": args.sdpa, "tf32": args.tf32, "torch": torch.__version__, "threads": torch.get_num_threads()}


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------


def cmd_eval(args) -> dict:
    need_file(args.artifact, "artifact")
    need_file(args.data, "shard")
    need_file(args.tokenizer, "tokenizer")
    resolve(args)
    dev = args.torch_device
    T = args.seq_len

    t0 = time.perf_counter()
    try:
        model, info = load_artifact(args.artifact, args.activation)
    except ImportError as e:  # e.g. zstandard for a zstd artifact
        die(f"loading {args.artifact}: {e}")
    model.use_native_gqa(args.native_gqa).to(dev)
    load_s = time.perf_counter() - t0
    log(f"{os.path.basename(args.artifact)}: {info['codec']} / {info['layout']}, {info['num_params']} params, "
        f"loaded in {load_s:.2f}s")

    t0 = time.perf_counter()
    toks = load_shard(args.data)
    if args.max_tokens:
        toks = toks[:args.max_tokens]
    if len(toks) < T + 1:
        die(f"{len(toks)} tokens are fewer than one window of {T} targets")
    toks = toks[:(len(toks) - 1) // T * T + 1]  # as pgolf-rt's truncate_for_eval / train_gpt.py (spec 1.2)
    if args.stride:
        if not 0 < args.stride <= T:
            die(f"--stride {args.stride} must be in 1..{T}")
        plan = sliding_plan(len(toks), T, args.stride, once=args.sliding_form == "once")
    else:
        plan = standard_plan(len(toks), T)
    try:
        luts = build_luts(args.tokenizer, model.cfg.vocab)
    except ImportError as e:
        die(f"byte tables need sentencepiece: {e}")
    xs, ys = window_arrays(toks, T, plan)
    scored = np.zeros(xs.shape, dtype=bool)
    for i, (_, wlen, lo) in enumerate(plan):
        scored[i, lo:wlen] = True
    n_bytes = int(target_bytes(xs, ys, luts)[scored].sum())
    targets = int(scored.sum())
    W = len(plan)
    # Shapes: full batches of B windows and, when B does not divide W, one shorter last batch, run at its own
    # size (as train_gpt.py's eval_val does; no padded work). With torch.compile(dynamic=False) that is a second
    # graph, compiled in the warm-up below, so the timed pass never compiles. --pad-last instead pads the last
    # batch with all-zero windows whose mask is 0 (they add nothing to the sums): one graph, a little extra work.
    B = min(args.batch, W)
    pad = (-W) % B if args.pad_last else 0
    if pad:
        xs = np.concatenate([xs, np.zeros((pad, T), dtype=xs.dtype)])
        ys = np.concatenate([ys, np.zeros((pad, T), dtype=ys.dtype)])
        scored = np.concatenate([scored, np.zeros((pad, T), dtype=bool)])
    spans = [(b0, min(b0 + B, W + pad)) for b0 in range(0, W + pad, B)]
    X = torch.from_numpy(xs).to(dev)
    Y = torch.from_numpy(ys).to(dev)
    M = torch.from_numpy(scored.astype(np.float32)).to(dev)
    sync(args)
    setup_s = time.perf_counter() - t0
    mode = "sliding" if args.stride else "standard"
    log(f"{mode} eval: {len(toks)} tokens, {W} windows of {T}{f' stride {args.stride}' if args.stride else ''}, "
        f"{targets} targets, {n_bytes} bytes; {len(spans)} batches of {B}; {args.device} {args.dtype} "
        f"compile={args.compile} native_gqa={args.native_gqa} sdpa={args.sdpa} tf32={args.tf32}")

    def batch_nll_sum(x, y, m):
        # per-position NLL (float32 out of cross entropy), masked to the scored positions, summed in float64
        return (model.nll(x, y) * m).sum(dtype=torch.float64)

    fn = torch.compile(batch_nll_sum, dynamic=False, fullgraph=True) if args.compile else batch_nll_sum
    autocast = autocast_factory(args)

    def run(spans_):
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for a, b in spans_:
            total += fn(X[a:b], Y[a:b], M[a:b])
        return total

    with torch.inference_mode(), autocast():
        sync(args)
        t0 = time.perf_counter()
        run(spans[:1] + ([spans[-1]] if spans[-1][1] - spans[-1][0] != B else []))  # each batch shape once
        sync(args)
        warmup_s = time.perf_counter() - t0
        log(f"warm-up: {warmup_s:.2f}s")
        times = []
        for r in range(max(args.repeat, 1)):
            sync(args)
            t0 = time.perf_counter()
            total = run(spans)
            sync(args)
            times.append(time.perf_counter() - t0)
            nll_sum = float(total)
            log(f"pass {r + 1}: {times[-1]:.4f}s ({targets / times[-1]:.0f} targets/s), "
                f"val_bpb {nll_sum / math.log(2) / n_bytes:.8f}")
    seconds = statistics.median(times)
    return {"what": "eval", "mode": mode, "stride": args.stride or None, "seq_len": T,
            "val_loss": nll_sum / targets, "val_bpb": nll_sum / math.log(2) / n_bytes, "targets": targets,
            "bytes": n_bytes, "nll_sum": nll_sum, "windows": W, "batch": B, "padded_windows": pad,
            "max_tokens": args.max_tokens, "stream_tokens": int(len(toks)), "seconds": seconds, "pass_seconds": times,
            "tokens_per_s": targets / seconds, "warmup_seconds": warmup_s, "load_seconds": load_s,
            "setup_seconds": setup_s, **common_fields(args),
            "sliding_form": args.sliding_form if args.stride else None, "artifact": args.artifact,
            "config": dict(info["config"], num_params=info["num_params"])}


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------


def cmd_train(args) -> dict:
    if not os.path.isdir(args.data_path):
        die(f"data folder not found: {args.data_path}")
    pattern = os.path.join(args.data_path, "fineweb_train_*.bin")
    if not glob.glob(pattern):
        die(f"no train shards match {pattern}")
    resolve(args)
    dev = args.torch_device
    s = settings()
    s.data = args.data_path
    cfg = s.cfg
    local = s.batch_tokens // s.accum
    if s.batch_tokens % s.accum or local % s.T or local == 0:
        die(f"TRAIN_BATCH_TOKENS={s.batch_tokens} must split into GRAD_ACCUM_STEPS={s.accum} micro-steps of whole "
            f"TRAIN_SEQ_LEN={s.T} sequences")
    muon_bf16 = os.environ.get("MUON_BF16", "0") not in ("", "0")

    model = build_model(s)  # seeded, spec 3.2 init, float32 on the CPU: same weights on every device
    model.use_native_gqa(args.native_gqa).to(dev).train()
    if muon_bf16:
        from torch_ns_bf16_reference import zeropower_via_newtonschulz5 as ns  # train_gpt.py's bf16 NS
    else:
        ns = newton_schulz5
    if args.compile:
        ns = torch.compile(ns)  # as train_gpt.py (default dynamic: one graph per matrix shape, then dynamic)
    fused = True if args.device == "cuda" else None  # train_gpt.py: Adam(fused=True)
    opt = build_optimizers(model, s, ns=ns, fused=fused)

    def loss_fn(x, y):
        return model.nll(x, y).mean()

    if args.compile:  # train_gpt.py: torch.compile(model, dynamic=False, fullgraph=True), loss inside
        loss_fn = torch.compile(loss_fn, dynamic=False, fullgraph=True)
    stream = TokenStream(pattern)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = local * s.accum
    log(f"train: {cfg.num_layers} layers, d {cfg.model_dim}, {cfg.num_heads} heads / {cfg.num_kv_heads} KV, "
        f"MLP {cfg.mlp_hidden}, vocab {cfg.vocab}, {n_params} params; {tokens_per_step} tokens/step = {s.accum} x "
        f"{local // s.T} x {s.T}; {args.device} {args.dtype} compile={args.compile} native_gqa={args.native_gqa} "
        f"sdpa={args.sdpa} tf32={args.tf32} fused_adam={bool(fused)} muon_bf16={muon_bf16} "
        f"clip={s.grad_clip_norm}")

    autocast = autocast_factory(args)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s, losses = [], []
    stopped_early = False
    sync(args)
    start = time.perf_counter()
    for step in range(args.steps):
        if step > 0:
            # Stop before a step that would end past --max-seconds (estimated by the last step's time; step 1
            # includes the compile, so step 2 always runs if the budget is not spent yet).
            est = step_s[-1] if step >= 2 else 0.0
            if time.perf_counter() - start + est > args.max_seconds:
                stopped_early = True
                log(f"stopping after {step} steps: --max-seconds {args.max_seconds} would be exceeded")
                break
        t0 = time.perf_counter()
        loss = train_step(model, opt, stream, s, step, loss_fn=loss_fn, device=dev, autocast=autocast)
        sync(args)
        step_s.append(time.perf_counter() - t0)
        losses.append(float(loss))
        log(f"step {step + 1}/{args.steps}: {step_s[-1] * 1e3:.1f} ms, train_loss {losses[-1]:.4f}")
    total_s = time.perf_counter() - start
    step_ms = [t * 1e3 for t in step_s]
    med = statistics.median(step_ms[2:] if len(step_ms) >= 3 else step_ms)
    return {"what": "train", "steps": len(step_ms), "step_ms": step_ms, "step_ms_median": med,
            "first_step_ms": step_ms[0], "warmup_seconds": step_s[0], "tokens_per_step": tokens_per_step,
            "tokens_per_s": tokens_per_step / (med / 1e3), "losses": losses, "stopped_early": stopped_early,
            "max_seconds": args.max_seconds, "total_seconds": total_s,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else None,
            **common_fields(args), "fused_adam": bool(fused), "muon_bf16": muon_bf16,
            "grad_clip_norm": s.grad_clip_norm, "num_layers": cfg.num_layers, "model_dim": cfg.model_dim,
            "num_heads": cfg.num_heads, "num_kv_heads": cfg.num_kv_heads, "mlp_mult": s.mlp_mult,
            "mlp_hidden": cfg.mlp_hidden, "vocab_size": cfg.vocab, "tie_embeddings": cfg.tie_embeddings,
            "train_seq_len": s.T, "train_batch_tokens": s.batch_tokens, "grad_accum_steps": s.accum,
            "matrix_lr": s.base["matrix"], "scalar_lr": s.base["scalar"], "tied_embed_lr": s.base["embed"],
            "seed": s.seed, "num_params": n_params}


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def device_args(p):
        p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
        p.add_argument("--dtype", choices=["bf16", "f32"], default=None,
                       help="bf16: bf16 autocast around the forward/loss (default on cuda); f32: none (default on cpu)")
        p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile (default: on for cuda, off for cpu)")
        p.add_argument("--native-gqa", action=argparse.BooleanOptionalAction, default=None,
                       help="SDPA enable_gqa=True as train_gpt.py (default on cuda) instead of repeat_interleave")
        p.add_argument("--sdpa", choices=["flash", "auto"], default=None,
                       help="flash: only the flash SDPA backend, as train_gpt.py (default for cuda bf16); "
                            "auto: PyTorch's choice")
        p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch default)")

    e = sub.add_parser("eval", help="standard or sliding-window eval of an artifact")
    e.add_argument("--artifact", required=True)
    e.add_argument("--data", required=True, help="val shard (fineweb_val_000000.bin)")
    e.add_argument("--tokenizer", required=True, help="sentencepiece .model (byte tables)")
    e.add_argument("--seq-len", type=int, default=1024)
    e.add_argument("--stride", type=int, default=None, help="sliding-window eval with this stride")
    e.add_argument("--sliding-form", choices=["once", "reference"], default="once",
                   help="once: each target scored once, as pgolf-rt eval (default); reference: the challenge "
                        "code's form (torch_reference.py), which re-scores the tail")
    e.add_argument("--max-tokens", type=int, default=None, help="only the first N tokens of the shard")
    e.add_argument("--batch", type=int, default=32, help="windows per forward")
    e.add_argument("--repeat", type=int, default=1, help="timed passes (seconds = median)")
    e.add_argument("--pad-last", action="store_true",
                   help="pad the last batch to --batch windows (masked out) instead of running it at its own size: "
                        "one compiled shape instead of two")
    e.add_argument("--activation", default="relu2", choices=["relu2", "leaky_relu2"])
    device_args(e)

    t = sub.add_parser("train", help="training steps (model and batch from the environment, as torch_train.py)")
    t.add_argument("--data-path", required=True, help="folder with fineweb_train_*.bin")
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--max-seconds", type=float, default=120.0,
                   help="stop before a step that would end past this many seconds from the start of step 1")
    device_args(t)

    args = ap.parse_args()
    result = cmd_eval(args) if args.cmd == "eval" else cmd_train(args)
    emit(result)


if __name__ == "__main__":
    main()
