"""The challenge's optimizers for the PyTorch references (spec 5.1): Muon with Newton-Schulz 5
in float32 (train_gpt.py runs it in bf16 on the GPU), and the parameter grouping of spec 3.4.
Shared by scripts/torch_train_reference.py (fixture) and scripts/torch_train.py (full runs)."""

import torch

CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")


def newton_schulz5(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g.float()
    x = x / (x.norm() + eps)
    transposed = g.size(0) > g.size(1)
    if transposed:
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * A @ A
        x = a * x + B @ x
    return x.T if transposed else x


class Muon:
    """ns: the orthogonalisation (default newton_schulz5 above, float32); scripts/torch_gpu_bench.py passes
    train_gpt.py's bf16 one (MUON_BF16=1) and/or a torch.compile'd one."""

    def __init__(self, params, lr, momentum, ns=None):
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.ns = newton_schulz5 if ns is None else ns
        self.bufs = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        for p, buf in zip(self.params, self.bufs):
            g = p.grad
            buf.mul_(self.momentum).add_(g)
            g = g.add(buf, alpha=self.momentum)  # nesterov
            o = self.ns(g)
            o = o * max(1, g.size(0) / g.size(1)) ** 0.5
            p.add_(o, alpha=-self.lr)




def param_groups(model):
    """(matrices -> Muon, scalars -> Adam, [tok_emb] -> Adam) as train_gpt.py groups them."""
    def is_matrix(n, p):
        return n.startswith("blocks.") and p.ndim == 2 and not any(c in n for c in CONTROL)

    named = list(model.named_parameters())
    mats = [p for n, p in named if is_matrix(n, p)]
    scalars = [p for n, p in named if n != "tok_emb.weight" and not is_matrix(n, p)]
    return mats, scalars, [model.tok_emb.weight]
