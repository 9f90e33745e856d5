"""Fixture for runtime/tests/muon_bf16.rs: train_gpt.py's bf16 Newton-Schulz on fixed matrices.

Usage: venv/bin/python scripts/torch_ns_bf16_reference.py runtime/tests/fixtures/torch/ns_bf16.json
"""
import json
import sys

import torch


def zeropower_via_newtonschulz5(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    # As in the challenge's train_gpt.py.
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()
    X /= X.norm() + eps
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if G.size(0) > G.size(1) else X


def main() -> None:
    out = []
    gen = torch.Generator().manual_seed(1234)
    for rows, cols in [(16, 8), (8, 24), (32, 32), (64, 16)]:
        g = torch.randn(rows, cols, generator=gen) * 0.01
        o = zeropower_via_newtonschulz5(g).float()
        out.append({"rows": rows, "cols": cols, "g": g.flatten().tolist(), "o": o.flatten().tolist()})
    with open(sys.argv[1], "w") as f:
        json.dump({"torch": torch.__version__, "cases": out}, f)


if __name__ == "__main__":
    main()
