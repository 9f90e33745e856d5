#!/usr/bin/env python3
"""PyTorch eager float32 CPU forward throughput for a parameter-golf artifact (default: the baseline 9L).

Input: the first `batch` standard windows (seq 1024) of the val shard. One measured run is a full forward to
per-token NLL (soft-capped logits + cross entropy), under torch.no_grad(). 2 warm-up runs, then the median of 5.

Prints, one per line:
    torch_version <version>
    torch_threads <n>
    torch_cpu_tokens_per_s <batch> <tokens/s>
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_model import load_artifact  # noqa: E402
from torch_reference import load_shard  # noqa: E402


def default_shared() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in (os.environ.get("PGOLF_SHARED"), os.path.join(repo, "shared"), os.path.join(repo, "..", "shared")):
        if cand and os.path.isdir(os.path.join(cand, "reference")):
            return os.path.abspath(cand)
    return os.path.join(repo, "..", "shared")


def main():
    shared = default_shared()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=os.path.join(shared, "reference", "baseline9L_int8_zlib.ptz"))
    ap.add_argument("--data", default=os.path.join(shared, "data", "text_sp1024", "fineweb_val_000000.bin"))
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch default)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, _ = load_artifact(args.artifact)
    toks = load_shard(args.data)
    T = args.seq_len
    print(f"torch_version {torch.__version__}")
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"# artifact {os.path.basename(args.artifact)}, seq {T}, float32 eager, warm-up {args.warmup}, "
          f"median of {args.runs}", file=sys.stderr)
    for b in (int(s) for s in args.batches.split(",")):
        xs = np.stack([toks[k * T:(k + 1) * T] for k in range(b)]).astype(np.int64)
        ys = np.stack([toks[k * T + 1:(k + 1) * T + 1] for k in range(b)]).astype(np.int64)
        x, y = torch.from_numpy(xs), torch.from_numpy(ys)
        times = []
        with torch.no_grad():
            for i in range(args.warmup + args.runs):
                t0 = time.perf_counter()
                nll = model.nll(x, y)
                dt = time.perf_counter() - t0
                if i >= args.warmup:
                    times.append(dt)
        med = statistics.median(times)
        print(f"# batch {b}: runs {', '.join(f'{t * 1e3:.0f}' for t in times)} ms, "
              f"mean nll {float(nll.mean()):.5f}", file=sys.stderr)
        print(f"torch_cpu_tokens_per_s {b} {b * T / med:.1f}", flush=True)


if __name__ == "__main__":
    main()
