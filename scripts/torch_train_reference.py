"""PyTorch reference for a few training steps of a tiny GPT: the fixture behind
runtime/tests/train_torch_parity.rs.

The model is scripts/torch_model.py (written from the spec, float32). The optimizers follow
shared/docs/pgolf-spec.md sections 5.1-5.3 as train_gpt.py runs them: Muon (Nesterov momentum,
Newton-Schulz 5 with (3.4445, -4.7750, 2.0315), update scaled by sqrt(max(1, rows/cols))) on the
2-D block matrices, torch.optim.Adam (betas 0.9/0.95, eps 1e-8) on the tied embedding and on the
control tensors, every learning rate times the schedule's multiplier, global-norm clipping.
Newton-Schulz runs in float32 here (train_gpt.py uses bf16 on the GPU) so the float32 Rust
oracle can be compared tightly.

    venv/bin/python scripts/torch_train_reference.py --out runtime/tests/fixtures/torch/train_steps.json
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_model import GPT, GPTConfig  # noqa: E402
from torch_optim import CONTROL, Muon, param_groups  # noqa: E402

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(1234)
    cfg = GPTConfig(num_layers=2, model_dim=16, num_heads=2, num_kv_heads=1, mlp_hidden=32, vocab=32)
    d = cfg.model_dim
    model = GPT(cfg).float()
    # Non-trivial initial weights everywhere (zero projections would hide the attention path).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("resid_mix"):
                p.copy_(torch.tensor(np.stack([1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d)]), dtype=torch.float32))
            elif any(c in name for c in CONTROL):
                p.copy_(torch.tensor(1 + 0.1 * rng.standard_normal(tuple(p.shape)), dtype=torch.float32))
            else:
                p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) / np.sqrt(p.shape[-1]), dtype=torch.float32))
    def dump(m):
        return {n: {"shape": list(p.shape), "values": [float(f"{v:.9g}") for v in p.detach().reshape(-1).tolist()]}
                for n, p in m.named_parameters()}

    init = dump(model)

    mats, scalars, emb = param_groups(model)
    base = {"matrix": 0.04, "scalar": 0.04, "embed": 0.05}
    muon = Muon(mats, base["matrix"], 0.95)
    adam_s = torch.optim.Adam(scalars, lr=base["scalar"], betas=(0.9, 0.95), eps=1e-8)
    adam_e = torch.optim.Adam(emb, lr=base["embed"], betas=(0.9, 0.95), eps=1e-8)
    clip = 1.0

    steps = []
    B, T = 2, 16
    for step in range(args.steps):
        lr_mul = [1.0, 1.0, 0.5, 0.25][step % 4]
        momentum = 0.85 + 0.1 * min(step / 3, 1.0)
        ids = rng.integers(0, cfg.vocab, size=(B, T + 1))
        x = torch.tensor(ids[:, :-1], dtype=torch.long)
        y = torch.tensor(ids[:, 1:], dtype=torch.long)
        for o in (adam_s, adam_e):
            o.zero_grad(set_to_none=False)
        for p in mats:
            p.grad = None
        loss = model.nll(x, y).mean()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        muon.lr, muon.momentum = base["matrix"] * lr_mul, momentum
        for g in adam_s.param_groups:
            g["lr"] = base["scalar"] * lr_mul
        for g in adam_e.param_groups:
            g["lr"] = base["embed"] * lr_mul
        muon.step()
        adam_s.step()
        adam_e.step()
        steps.append({"inputs": ids[:, :-1].reshape(-1).tolist(), "targets": ids[:, 1:].reshape(-1).tolist(),
                      "lr_mul": lr_mul, "momentum": momentum, "loss": float(loss.detach()), "grad_norm": float(norm)})
        print(f"step {step + 1}: loss {float(loss.detach()):.6f} grad_norm {float(norm):.6f}")
    final = dump(model)
    out = {"batch": B, "seq": T, "grad_clip_norm": clip, "lrs": base, "init": init, "steps": steps, "final": final,
           "torch": torch.__version__}
    with open(args.out, "w") as f:
        json.dump(out, f)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
