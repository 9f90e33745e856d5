"""Independent PyTorch reference for parameter-golf GPT models (float32, CPU, eager).

Written from shared/docs/pgolf-spec.md (sections 3, 4.1, 6.2, 6.3); not copied from train_gpt.py.
It is the "other implementation" the Rust runtime checks itself against.

    from torch_model import load_artifact
    model, info = load_artifact("shared/reference/baseline9L_int8_zlib.ptz")
    logits = model(ids)             # [B, T, V], post-softcap, float32
    nll = model.nll(ids, targets)   # [B, T], -ln p(target)
"""

from __future__ import annotations

import io
import lzma
import re
import zlib
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_hidden: int = 1024
    vocab: int = 1024
    rope_base: float = 10000.0
    softcap: float = 30.0
    activation: str = "relu2"  # "relu2" | "leaky_relu2" (slope 0.5, then squared)
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def num_encoder(self) -> int:
        return self.num_layers // 2

    @property
    def num_decoder(self) -> int:
        return self.num_layers - self.num_encoder

    @property
    def num_skips(self) -> int:
        return min(self.num_encoder, self.num_decoder)


def rms(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dim, no weight, eps = finfo(dtype).eps (F.rms_norm default)."""
    return F.rms_norm(x, (x.size(-1),))


def rope_tables(seq_len: int, head_dim: int, base: float, device=None):
    """cos/sin of shape [T, head_dim/2], computed in float32. Position counts from 0 in the window."""
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, dtype=torch.float32, device=device) * 2.0 / head_dim))
    pos = torch.arange(seq_len, dtype=torch.float32, device=device)
    ang = torch.outer(pos, inv_freq)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split (NeoX) pairing with the spec's sign convention:
    out = [x1*cos + x2*sin, -x1*sin + x2*cos]   (x: [B, H, T, D], cos/sin: [T, D/2])."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d, hd = cfg.model_dim, cfg.head_dim
        self.h, self.hkv, self.hd = cfg.num_heads, cfg.num_kv_heads, hd
        self.c_q = nn.Linear(d, cfg.num_heads * hd, bias=False)
        self.c_k = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.c_v = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        self.q_gain = nn.Parameter(torch.ones(cfg.num_heads))
        # False: GQA by repeat_interleave of K/V (the reference form). True: SDPA's enable_gqa=True (torch >= 2.5),
        # as train_gpt.py runs it on the GPU (flash attention reads the shared KV heads itself); same result.
        self.native_gqa = False

    def forward(self, u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = u.shape
        q = self.c_q(u).view(B, T, self.h, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.c_k(u).view(B, T, self.hkv, self.hd).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.c_v(u).view(B, T, self.hkv, self.hd).transpose(1, 2)
        q, k = rms(q), rms(k)  # QK-norm per head
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = q * self.q_gain[None, :, None, None]
        gqa = {}
        if self.hkv != self.h:  # GQA: query head h reads kv head h // (H / Hkv)
            if self.native_gqa:
                gqa = {"enable_gqa": True}
            else:
                rep = self.h // self.hkv
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)  # scale 1/sqrt(hd)
        y = y.transpose(1, 2).reshape(B, T, self.h * self.hd)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_hidden, bias=False)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.model_dim, bias=False)
        self.activation = cfg.activation

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = self.fc(u)
        if self.activation == "relu2":
            a = F.relu(a)
        elif self.activation == "leaky_relu2":
            a = F.leaky_relu(a, 0.5)
        else:
            raise ValueError(f"unknown activation {self.activation!r}")
        return self.proj(a.square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d = cfg.model_dim
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))

    def forward(self, x, x0, cos, sin):
        x = self.resid_mix[0] * x + self.resid_mix[1] * x0
        x = x + self.attn_scale * self.attn(rms(x), cos, sin)
        x = x + self.mlp_scale * self.mlp(rms(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.model_dim)
        self.skip_weights = nn.Parameter(torch.ones(cfg.num_skips, cfg.model_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.model_dim, cfg.vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (int64) -> soft-capped logits [B, T, V]."""
        cfg = self.cfg
        T = ids.size(1)
        cos, sin = rope_tables(T, cfg.head_dim, cfg.rope_base, ids.device)
        x = rms(self.tok_emb(ids))
        x0 = x
        skips = []
        for i in range(cfg.num_encoder):
            x = self.blocks[i](x, x0, cos, sin)
            skips.append(x)
        for j in range(cfg.num_decoder):
            if skips:  # LIFO: the first decoder block gets the last encoder block's output
                x = x + self.skip_weights[j] * skips.pop()
            x = self.blocks[cfg.num_encoder + j](x, x0, cos, sin)
        h = rms(x)
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        z = h @ w.t()
        return cfg.softcap * torch.tanh(z / cfg.softcap)

    def use_native_gqa(self, on: bool = True) -> "GPT":
        """Switch every attention layer to SDPA's own GQA (see Attention.native_gqa). Returns self."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.native_gqa = on
        return self

    def nll(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-position -ln p(target), shape [B, T], float32."""
        logits = self(ids)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)


# ----------------------------------------------------------------------------------------------
# Artifact loading (spec 6.2, 6.3)
# ----------------------------------------------------------------------------------------------

_DTYPES = {
    "float32": torch.float32, "torch.float32": torch.float32,
    "float16": torch.float16, "torch.float16": torch.float16,
    "bfloat16": torch.bfloat16, "torch.bfloat16": torch.bfloat16,
}


def decompress(blob: bytes) -> tuple[bytes, str]:
    """Detect the container by magic and decompress. Returns (raw torch.save bytes, codec name)."""
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        # The frame may not record its content size; stream it out.
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as r:
            return r.read(), "zstd"
    if blob[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(blob), "xz"
    if blob[:1] == b"\x78":
        return zlib.decompress(blob), "zlib"
    if blob[:2] == b"PK":
        return blob, "none"
    raise ValueError(f"unknown artifact container, magic {blob[:8].hex()}")


def _dequant_rows(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """W = q * s, s per row ([rows]) or one scalar (0-dim), in float32."""
    q = q.float()
    s = s.float()
    if s.ndim == 0:
        return q * s
    return q * s.view(-1, *([1] * (q.ndim - 1)))


# Template dtypes of the reference model (spec 3.2 / 6.3): the model is .bfloat16()'d, then linear
# weights and low-dim/control params are restored to fp32, so only tok_emb stays bf16.
def template_dtype(name: str) -> torch.dtype:
    return torch.bfloat16 if name == "tok_emb.weight" else torch.float32


def dequantize(obj: dict, emulate_template_dtypes: bool = True) -> tuple[dict, dict]:
    """Turn either artifact layout into a float32 state_dict.

    With emulate_template_dtypes, each tensor is first rounded to the dtype the reference model held
    it in (baseline: `dtypes` / `passthrough_orig_dtypes`; int6 layout: the template, i.e. bf16 for
    tok_emb, fp32 otherwise) and only then widened to float32, which is what PyTorch evaluated.
    Returns (state_dict, info) where info describes what was found."""
    sd: dict[str, torch.Tensor] = {}
    info: dict = {"tensors": {}}

    def put(name, w, stored, orig):
        info["tensors"][name] = {"stored": stored, "shape": list(w.shape), "as": str(orig).replace("torch.", "")}
        if emulate_template_dtypes and orig is not None:
            w = w.to(orig)
        sd[name] = w.float()

    if "__quant_format__" in obj or "quantized" in obj:
        info["layout"] = obj.get("__quant_format__", "int8 (no format tag)")
        for name, q in obj["quantized"].items():
            s = obj["scales"][name]
            orig = _DTYPES.get(str(obj["dtypes"][name]))
            put(name, _dequant_rows(q, s), f"int8 q + {str(s.dtype).replace('torch.', '')} scale{list(s.shape)}", orig)
        pod = obj.get("passthrough_orig_dtypes", {})
        for name, t in obj["passthrough"].items():
            orig = _DTYPES.get(str(pod[name])) if name in pod else t.dtype
            put(name, t, f"passthrough {str(t.dtype).replace('torch.', '')}", orig if t.is_floating_point() else None)
        return sd, info

    if "w" in obj and "m" in obj:
        w, m = obj["w"], obj["m"]
        info["layout"] = "w/m mixed (int6 lineage)"
        for name, kind in m.items():
            orig = template_dtype(name)
            if isinstance(kind, dict):
                q, s = w[name + ".q"], w[name + ".scale"]
                qmin, qmax = int(q.min()), int(q.max())
                put(name, _dequant_rows(q, s),
                    f"{kind.get('type')} q({str(q.dtype).replace('torch.', '')}, [{qmin},{qmax}]) + "
                    f"{str(s.dtype).replace('torch.', '')} scale{list(s.shape)}", orig)
            else:  # "passthrough" / "passthrough_ctrl"
                t = w[name]
                put(name, t, f"{kind} {str(t.dtype).replace('torch.', '')}", orig if t.is_floating_point() else None)
        return sd, info

    raise ValueError(f"unknown artifact layout, top-level keys {sorted(obj)[:10]}")


def infer_config(sd: dict, activation: str = "relu2") -> GPTConfig:
    """Architecture from tensor shapes."""
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    vocab, d = sd["tok_emb.weight"].shape
    heads = sd["blocks.0.attn.q_gain"].numel()
    hd = d // heads
    kv = sd["blocks.0.attn.c_k.weight"].shape[0] // hd
    hidden = sd["blocks.0.mlp.fc.weight"].shape[0]
    known = re.compile(r"^(tok_emb\.weight|skip_weights|lm_head\.weight|blocks\.\d+\.(attn\.(c_q|c_k|c_v|proj)\.weight|"
                       r"attn\.q_gain|mlp\.(fc|proj)\.weight|attn_scale|mlp_scale|resid_mix))$")
    extra = [k for k in sd if not known.match(k)]
    if extra:
        raise ValueError(f"state dict has tensors this baseline-architecture model does not know: {extra[:8]}")
    return GPTConfig(num_layers=layers, model_dim=d, num_heads=heads, num_kv_heads=kv, mlp_hidden=hidden,
                     vocab=vocab, activation=activation, tie_embeddings="lm_head.weight" not in sd)


def load_artifact(path: str, activation: str = "relu2", emulate_template_dtypes: bool = True):
    """Read a .ptz artifact -> (GPT in float32 eval mode, info dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    raw, codec = decompress(blob)
    obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    sd, info = dequantize(obj, emulate_template_dtypes)
    cfg = infer_config(sd, activation)
    model = GPT(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval().requires_grad_(False)
    info.update(codec=codec, compressed_bytes=len(blob), raw_bytes=len(raw), config=asdict(cfg),
                num_params=sum(p.numel() for p in model.parameters()))
    return model, info
