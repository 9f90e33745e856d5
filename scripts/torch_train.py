"""PyTorch training run of a baseline-family GPT on the CPU, with the settings, data order,
schedule and log lines of `pgolf-rt train` (and train_gpt.py): the "other implementation" for
loss curves and CPU training speed.

Same environment variables as `pgolf-rt train` (DATA_PATH, TOKENIZER_PATH, ITERATIONS,
WARMDOWN_ITERS, TRAIN_BATCH_TOKENS, TRAIN_SEQ_LEN, NUM_LAYERS, MODEL_DIM, NUM_HEADS,
NUM_KV_HEADS, MLP_MULT, VAL_LOSS_EVERY, TRAIN_LOG_EVERY, VAL_MAX_TOKENS, the learning rates,
SEED). Float32 eager model from scripts/torch_model.py; Muon in float32 (scripts/torch_optim.py).
Initialisation follows spec 3.2 (random streams differ from pgolf-rt's).

    DATA_PATH=../shared/data/text_sp1024 TOKENIZER_PATH=... venv/bin/python scripts/torch_train.py
"""

import glob
import math
import os
import sys
import time

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


def main():
    torch.set_num_threads(env("THREADS", torch.get_num_threads(), int))
    data = env("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    tok_path = env("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
    iters = env("ITERATIONS", 20000, int)
    warmdown = env("WARMDOWN_ITERS", 1200, int)
    batch_tokens = env("TRAIN_BATCH_TOKENS", 524288, int)
    T = env("TRAIN_SEQ_LEN", 1024, int)
    accum = env("GRAD_ACCUM_STEPS", 8, int)
    val_every = env("VAL_LOSS_EVERY", 1000, int)
    log_every = env("TRAIN_LOG_EVERY", 200, int)
    val_max = env("VAL_MAX_TOKENS", 0, int)
    torch.manual_seed(env("SEED", 1337, int))
    d = env("MODEL_DIM", 512, int)
    cfg = GPTConfig(num_layers=env("NUM_LAYERS", 9, int), model_dim=d, num_heads=env("NUM_HEADS", 8, int),
                    num_kv_heads=env("NUM_KV_HEADS", 4, int), mlp_hidden=int(env("MLP_MULT", 2.0, float) * d),
                    vocab=env("VOCAB_SIZE", 1024, int))
    model = GPT(cfg).float()
    with torch.no_grad():  # spec 3.2
        torch.nn.init.normal_(model.tok_emb.weight, std=env("TIED_EMBED_INIT_STD", 0.005, float))
        for name, p in model.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                p.zero_()
            elif name.endswith("q_gain"):
                p.fill_(env("QK_GAIN_INIT", 1.5, float))
    mats, scalars, emb = param_groups(model)
    base = {"matrix": env("MATRIX_LR", 0.04, float), "scalar": env("SCALAR_LR", 0.04, float),
            "embed": env("TIED_EMBED_LR", 0.05, float)}
    betas = (env("BETA1", 0.9, float), env("BETA2", 0.95, float))
    eps = env("ADAM_EPS", 1e-8, float)
    muon = Muon(mats, base["matrix"], 0.95)
    adam_s = torch.optim.Adam(scalars, lr=base["scalar"], betas=betas, eps=eps)
    adam_e = torch.optim.Adam(emb, lr=base["embed"], betas=betas, eps=eps)
    mu0, mu1, mu_w = (env("MUON_MOMENTUM_WARMUP_START", 0.85, float), env("MUON_MOMENTUM", 0.95, float),
                      env("MUON_MOMENTUM_WARMUP_STEPS", 500, int))

    stream = TokenStream(os.path.join(data, "fineweb_train_*.bin"))
    val = np.concatenate([load_shard(f) for f in sorted(glob.glob(os.path.join(data, "fineweb_val_*.bin")))])
    if val_max:
        val = val[:val_max]
    n_val = (len(val) - 1) // T * T
    luts = build_luts(tok_path, cfg.vocab)
    print(f"model_params:{sum(p.numel() for p in model.parameters())}")
    print(f"torch:{torch.__version__} threads:{torch.get_num_threads()}")

    @torch.no_grad()
    def validate():
        nll, nbytes = 0.0, 0
        for s in range(0, n_val, 8 * T):
            e = min(s + 8 * T, n_val)
            x, y = val[s:e].reshape(-1, T), val[s + 1:e + 1].reshape(-1, T)
            nll += float(model.nll(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))).double().sum())
            nbytes += int(target_bytes(x, y, luts).sum())
        return nll / n_val, nll / math.log(2) / nbytes

    def lr_mul(step):
        start = max(iters - warmdown, 0)
        return max((iters - step) / max(warmdown, 1), 0.0) if warmdown > 0 and start <= step < iters else 1.0

    elapsed = 0.0
    local = batch_tokens // accum
    for step in range(iters + 1):
        if step == iters or (val_every > 0 and step % val_every == 0):
            vl, vb = validate()
            print(f"step:{step}/{iters} val_loss:{vl:.4f} val_bpb:{vb:.4f} train_time:{elapsed:.0f}ms "
                  f"step_avg:{elapsed / max(step, 1):.2f}ms", flush=True)
        if step == iters:
            break
        t0 = time.perf_counter()
        for o in (adam_s, adam_e):
            o.zero_grad(set_to_none=False)
        for p in mats:
            p.grad = None
        train_loss = 0.0
        for _ in range(accum):
            span = stream.take(local + 1)
            x = torch.from_numpy(span[:-1].reshape(-1, T))
            y = torch.from_numpy(span[1:].reshape(-1, T))
            loss = model.nll(x, y).mean()
            (loss / accum).backward()
            train_loss += float(loss.detach()) / accum
        f = min(step / mu_w, 1.0) if mu_w > 0 else 1.0
        muon.momentum = (1 - f) * mu0 + f * mu1
        m = lr_mul(step)
        muon.lr = base["matrix"] * m
        for g in adam_s.param_groups:
            g["lr"] = base["scalar"] * m
        for g in adam_e.param_groups:
            g["lr"] = base["embed"] * m
        muon.step()
        adam_s.step()
        adam_e.step()
        elapsed += (time.perf_counter() - t0) * 1e3
        s = step + 1
        if log_every > 0 and (s <= 10 or s % log_every == 0 or s == iters):
            print(f"step:{s}/{iters} train_loss:{train_loss:.4f} train_time:{elapsed:.0f}ms "
                  f"step_avg:{elapsed / s:.2f}ms", flush=True)


if __name__ == "__main__":
    main()
