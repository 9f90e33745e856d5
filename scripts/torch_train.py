"""PyTorch training run of a baseline-family GPT on the CPU, with the settings, data order,
schedule and log lines of `pgolf-rt train` (and train_gpt.py): the "other implementation" for
loss curves and CPU training speed.

Same environment variables as `pgolf-rt train` (DATA_PATH, TOKENIZER_PATH, ITERATIONS,
WARMDOWN_ITERS, TRAIN_BATCH_TOKENS, TRAIN_SEQ_LEN, NUM_LAYERS, MODEL_DIM, NUM_HEADS,
NUM_KV_HEADS, MLP_MULT, VAL_LOSS_EVERY, TRAIN_LOG_EVERY, VAL_MAX_TOKENS, the learning rates,
SEED, GRAD_CLIP_NORM). Float32 eager model from scripts/torch_model.py; Muon in float32 (scripts/torch_optim.py).
Initialisation follows spec 3.2 (random streams differ from pgolf-rt's).

    DATA_PATH=../shared/data/text_sp1024 TOKENIZER_PATH=... venv/bin/python scripts/torch_train.py
"""

import contextlib
import glob
import math
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_model import GPT, GPTConfig  # noqa: E402
from torch_optim import Muon, param_groups  # noqa: E402
from torch_reference import build_luts, load_shard, target_bytes  # noqa: E402


def env(name, default, cast=str):
    v = os.environ.get(name)
    return default if v is None or v == "" else cast(v)


class TokenStream:
    """Shards in sorted order, sequential, wrapping (spec 1.4)."""

    def __init__(self, pattern):
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise SystemExit(f"no shards match {pattern}")
        self.idx, self.tokens, self.pos = 0, load_shard(self.files[0]), 0

    def take(self, n):
        out = []
        while n > 0:
            if self.pos >= len(self.tokens):
                self.idx = (self.idx + 1) % len(self.files)
                self.tokens, self.pos = load_shard(self.files[self.idx]), 0
                continue
            k = min(n, len(self.tokens) - self.pos)
            out.append(self.tokens[self.pos:self.pos + k])
            self.pos += k
            n -= k
        return np.concatenate(out).astype(np.int64)


def settings():
    """Every setting of a run, from the environment (same names and defaults as `pgolf-rt train`)."""
    s = SimpleNamespace()
    s.data = env("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    s.tok_path = env("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    s.iters = env("ITERATIONS", 20000, int)
    s.warmdown = env("WARMDOWN_ITERS", 1200, int)
    s.batch_tokens = env("TRAIN_BATCH_TOKENS", 524288, int)
    s.T = env("TRAIN_SEQ_LEN", 1024, int)
    s.accum = env("GRAD_ACCUM_STEPS", 8, int)
    s.val_every = env("VAL_LOSS_EVERY", 1000, int)
    s.log_every = env("TRAIN_LOG_EVERY", 200, int)
    s.val_max = env("VAL_MAX_TOKENS", 0, int)
    s.seed = env("SEED", 1337, int)
    d = env("MODEL_DIM", 512, int)
    s.mlp_mult = env("MLP_MULT", 2.0, float)
    s.cfg = GPTConfig(num_layers=env("NUM_LAYERS", 9, int), model_dim=d, num_heads=env("NUM_HEADS", 8, int),
                      num_kv_heads=env("NUM_KV_HEADS", 4, int), mlp_hidden=int(s.mlp_mult * d),
                      vocab=env("VOCAB_SIZE", 1024, int))
    s.tied_embed_init_std = env("TIED_EMBED_INIT_STD", 0.005, float)
    s.qk_gain_init = env("QK_GAIN_INIT", 1.5, float)
    s.base = {"matrix": env("MATRIX_LR", 0.04, float), "scalar": env("SCALAR_LR", 0.04, float),
              "embed": env("TIED_EMBED_LR", 0.05, float)}
    s.betas = (env("BETA1", 0.9, float), env("BETA2", 0.95, float))
    s.eps = env("ADAM_EPS", 1e-8, float)
    s.mu0, s.mu1, s.mu_w = (env("MUON_MOMENTUM_WARMUP_START", 0.85, float), env("MUON_MOMENTUM", 0.95, float),
                            env("MUON_MOMENTUM_WARMUP_STEPS", 500, int))
    s.grad_clip_norm = env("GRAD_CLIP_NORM", 0.0, float)  # baseline: none
    return s


def build_model(s):
    """Seeded model with the spec 3.2 initialisation (float32, on the CPU)."""
    torch.manual_seed(s.seed)
    model = GPT(s.cfg).float()
    with torch.no_grad():  # spec 3.2
        torch.nn.init.normal_(model.tok_emb.weight, std=s.tied_embed_init_std)
        for name, p in model.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                p.zero_()
            elif name.endswith("q_gain"):
                p.fill_(s.qk_gain_init)
    return model


def build_optimizers(model, s, ns=None, fused=None):
    """(Muon on the block matrices, Adam on the scalars, Adam on the embedding), as train_gpt.py groups them.
    Build them after the model is on its device. ns: Muon's orthogonalisation (default float32 NS5);
    fused: torch.optim.Adam(fused=...) (train_gpt.py: True on the GPU)."""
    mats, scalars, emb = param_groups(model)
    muon = Muon(mats, s.base["matrix"], 0.95, ns=ns)
    adam_s = torch.optim.Adam(scalars, lr=s.base["scalar"], betas=s.betas, eps=s.eps, fused=fused)
    adam_e = torch.optim.Adam(emb, lr=s.base["embed"], betas=s.betas, eps=s.eps, fused=fused)
    return SimpleNamespace(muon=muon, adam_s=adam_s, adam_e=adam_e, mats=mats)


def lr_mul(s, step):
    start = max(s.iters - s.warmdown, 0)
    return max((s.iters - step) / max(s.warmdown, 1), 0.0) if s.warmdown > 0 and start <= step < s.iters else 1.0


def train_step(model, opt, stream, s, step, loss_fn=None, device=None, autocast=None):
    """One optimizer step: GRAD_ACCUM_STEPS micro-steps of forward + backward on the next
    TRAIN_BATCH_TOKENS / GRAD_ACCUM_STEPS tokens each, optional global-norm clipping, the momentum
    warm-up and LR schedule, then Muon and the two Adams. Returns the mean train loss as a float64
    tensor on the device (read it only when needed: reading syncs the device).
    loss_fn(x, y) -> mean NLL (default model.nll(x, y).mean(), e.g. a torch.compile'd one);
    autocast: a context-manager factory around the forward/loss only (e.g. bf16 autocast)."""
    for o in (opt.adam_s, opt.adam_e):
        o.zero_grad(set_to_none=False)
    for p in opt.mats:
        p.grad = None
    local = s.batch_tokens // s.accum
    train_loss = torch.zeros((), dtype=torch.float64, device=device)
    for _ in range(s.accum):
        span = stream.take(local + 1)
        x = torch.from_numpy(span[:-1].reshape(-1, s.T))
        y = torch.from_numpy(span[1:].reshape(-1, s.T))
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            loss = loss_fn(x, y) if loss_fn is not None else model.nll(x, y).mean()
        (loss / s.accum).backward()
        train_loss += loss.detach().double() / s.accum
    if s.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip_norm)
    f = min(step / s.mu_w, 1.0) if s.mu_w > 0 else 1.0
    opt.muon.momentum = (1 - f) * s.mu0 + f * s.mu1
    m = lr_mul(s, step)
    opt.muon.lr = s.base["matrix"] * m
    for g in opt.adam_s.param_groups:
        g["lr"] = s.base["scalar"] * m
    for g in opt.adam_e.param_groups:
        g["lr"] = s.base["embed"] * m
    opt.muon.step()
    opt.adam_s.step()
    opt.adam_e.step()
    return train_loss


def main():
    torch.set_num_threads(env("THREADS", torch.get_num_threads(), int))
    s = settings()
    cfg, T, iters = s.cfg, s.T, s.iters
    model = build_model(s)
    opt = build_optimizers(model, s)

    stream = TokenStream(os.path.join(s.data, "fineweb_train_*.bin"))
    val = np.concatenate([load_shard(f) for f in sorted(glob.glob(os.path.join(s.data, "fineweb_val_*.bin")))])
    if s.val_max:
        val = val[:s.val_max]
    n_val = (len(val) - 1) // T * T
    luts = build_luts(s.tok_path, cfg.vocab)
    print(f"model_params:{sum(p.numel() for p in model.parameters())}")
    print(f"torch:{torch.__version__} threads:{torch.get_num_threads()}")

    @torch.no_grad()
    def validate():
        nll, nbytes = 0.0, 0
        for a in range(0, n_val, 8 * T):
            e = min(a + 8 * T, n_val)
            x, y = val[a:e].reshape(-1, T), val[a + 1:e + 1].reshape(-1, T)
            nll += float(model.nll(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))).double().sum())
            nbytes += int(target_bytes(x, y, luts).sum())
        return nll / n_val, nll / math.log(2) / nbytes

    elapsed = 0.0
    for step in range(iters + 1):
        if step == iters or (s.val_every > 0 and step % s.val_every == 0):
            vl, vb = validate()
            print(f"step:{step}/{iters} val_loss:{vl:.4f} val_bpb:{vb:.4f} train_time:{elapsed:.0f}ms "
                  f"step_avg:{elapsed / max(step, 1):.2f}ms", flush=True)
        if step == iters:
            break
        t0 = time.perf_counter()
        train_loss = float(train_step(model, opt, stream, s, step))
        elapsed += (time.perf_counter() - t0) * 1e3
        n = step + 1
        if s.log_every > 0 and (n <= 10 or n % s.log_every == 0 or n == iters):
            print(f"step:{n}/{iters} train_loss:{train_loss:.4f} train_time:{elapsed:.0f}ms "
                  f"step_avg:{elapsed / n:.2f}ms", flush=True)


if __name__ == "__main__":
    main()
