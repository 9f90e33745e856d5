#!/usr/bin/env python3
"""Check that a seed submission's own loader reads an artifact pgolf-rt wrote, and scores it as
pgolf-rt does.

    python scripts/check_seed_load.py --pr 581 --code PR581/train_gpt.py --preset tiny \
        --artifact final_model.int6.ptz --val DATA/fineweb_val_000000.bin \
        --seq 256 --tokens 4096 --expect-loss 6.63673998

Imports the PR's `train_gpt.py` (nothing of it is in this repository), builds the PR's `GPT` in
the configuration `scripts/seed_fixtures.py` names `--preset`, in the dtypes its eval uses, and
loads the artifact with the PR's own decompressor, dequantizer and `load_state_dict(strict=True)`
(a missing, extra or mis-shaped tensor fails here). Then it scores the first `--tokens` targets
of the val shard in windows of `--seq` with the PR's forward (float32, float32 RoPE, as
`seed_fixtures.py` does) and compares the mean NLL with `--expect-loss` (what `pgolf-rt eval
--json` reported as `val_loss` over the same tokens). Exits non-zero on any failure.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_fixtures as sf  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pr", required=True, choices=["489", "581", "687"])
    ap.add_argument("--code", required=True, help="the PR's train_gpt.py")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--val", required=True, help="a fineweb_val_*.bin shard (sp1024)")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--expect-loss", type=float, default=None)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    mod = sf.import_pr(args.code)
    sf.shim_attention(mod, args.pr)
    hp = mod.Hyperparameters()
    cfg = sf.PRESETS[(args.pr, args.preset)]
    fresh = sf.as_submission_dtypes(mod, sf.build(mod, args.pr, cfg, hp))
    template = {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
    blob = Path(args.artifact).read_bytes()
    loaders = {
        "489": lambda: sf.load_489(mod, blob, fresh),
        "581": lambda: sf.load_581(mod, blob, fresh, template),
        "687": lambda: sf.load_687(mod, blob, fresh, template),
    }
    model = loaders[args.pr]()
    print(f"PR #{args.pr}'s loader read {args.artifact} ({len(blob)} bytes) strictly: "
          f"{sum(p.numel() for p in model.parameters())} parameters")

    m32 = sf.as_fp32(model, rope_from=sf.build(mod, args.pr, cfg, hp)).eval()
    val = mod.load_data_shard(Path(args.val))
    n = args.tokens - args.tokens % args.seq
    toks = val[: n + 1].to(torch.int64)
    x = toks[:-1].reshape(-1, args.seq)
    y = toks[1:].reshape(-1)
    with torch.no_grad():
        logits = m32.forward_logits(x).reshape(-1, m32.tok_emb.weight.shape[0]).float()
        loss = float(F.cross_entropy(logits, y, reduction="mean"))
    print(f"PR forward: mean NLL {loss:.8f} over {n} targets in windows of {args.seq}")
    if args.expect_loss is not None:
        diff = abs(loss - args.expect_loss)
        print(f"pgolf-rt: {args.expect_loss:.8f}, difference {diff:.2e} (tolerance {args.tol:g})")
        if diff > args.tol:
            sys.exit(1)


if __name__ == "__main__":
    main()
