"""The transformer encoder, its task heads and the attention mechanisms by name: the Python twin
of nn/encoder.h and nn/attention.h (the same structure, parameter names, defaults and fixed
settings), on longattn's Python operators.

A mechanism ("core") maps q, k, v [B, H, N, Dh] and a key mask [B, N] (bool, True = the key takes
part) to [B, H, N, Dh]; ``ATTENTIONS`` maps each name to a one-line description and a factory.
FastRPB (``longattn.nn.FastRPB``) is an add-on to any of them: ``out = core(q, k, v) + B v``.
"""
import dataclasses
import math

import torch
from torch import nn
import torch.nn.functional as F

from .._kernelized import kernelized_attention, random_features
from .._shatter import shatter_attention
from .._softmax import softmax_attention
from .dropout import Dropout
from .fast_rpb import FastRPB
from .shatter import ShatterPartition
from .yoso import YOSOAttention

__all__ = ["ATTENTIONS", "AttentionSpec", "MultiHeadAttention", "ModelConfig", "Encoder", "Classifier",
           "make_attention_core", "attention_names", "count_parameters"]

# The fixed settings of the approximate mechanisms, as in nn/attention.h.
FAVOR_FEATURES = 64  # favor, kernelized-rpe: random features per head


def yoso_hash_bits(max_len):
    """yoso, yoso-e: tau = round(log2 max_len) clamped to [4, 12], as nn/attention.h."""
    return min(12, max(4, round(math.log2(max(1, max_len)))))


YOSO_HASHES = 32     # yoso, yoso-c: m, with Hadamard hashing (the authors' layer)
YOSO_CONV_WINDOW = 33  # yoso-c: the depthwise convolution's window
SHATTER_PARTS = 4    # shatter: P value streams


@dataclasses.dataclass
class AttentionSpec:
    name: str = "softmax"
    dim: int = 64
    heads: int = 2
    max_len: int = 512
    fastrpb: str = "none"  # "none", "1d", "2d"
    height: int = 0
    width: int = 0
    seed: int = 0


def _central(bias, max_len, n, who):
    if n > max_len:
        raise ValueError(f"{who}: sequence of {n} tokens, but the bias covers {max_len}")
    return bias[:, max_len - n: max_len + n - 1]


class SoftmaxCore(nn.Module):
    """Exact softmax attention, optionally with a learned relative bias [H, 2M - 1] on the logits."""

    def __init__(self, spec, rel_bias):
        super().__init__()
        self.max_len = spec.max_len
        self.rel_bias = nn.Parameter(torch.zeros(spec.heads, 2 * spec.max_len - 1)) if rel_bias else None

    def forward(self, q, k, v, key_mask):
        b = None if self.rel_bias is None else _central(self.rel_bias, self.max_len, q.shape[2], "softmax-rpe").to(q.dtype)
        return softmax_attention(q, k, v, key_padding_mask=key_mask, rel_bias=b)


class KernelizedCore(nn.Module):
    """Kernelized attention with a named feature map: elu, sikf, or favor (a fixed orthogonal
    random projection per head from the layer's seed; q, k scaled by Dh^-1/4). With rel_bias,
    Luo et al.: a learned relative bias [H, 2M - 1] weights key j for query i by e^{b[j-i]}
    (kernelized_attention's rel_bias: the same feature maps, masking and eps)."""

    def __init__(self, spec, feature_map, rel_bias=False):
        super().__init__()
        self.feature_map = feature_map
        self.max_len = spec.max_len
        if feature_map == "favor":
            self.register_buffer("omega", random_features(FAVOR_FEATURES, spec.dim // spec.heads,
                                                          seed=spec.seed % (1 << 62), heads=spec.heads))
        else:
            self.omega = None
        self.rel_bias = nn.Parameter(torch.zeros(spec.heads, 2 * spec.max_len - 1)) if rel_bias else None

    def forward(self, q, k, v, key_mask):
        b = None
        if self.rel_bias is not None:
            b = _central(self.rel_bias, self.max_len, q.shape[2], "kernelized-rpe").to(q.dtype)
        if self.omega is None:
            return kernelized_attention(q, k, v, feature_map=self.feature_map, key_padding_mask=key_mask,
                                        rel_bias=b)
        s = q.shape[3] ** -0.25
        return kernelized_attention(q * s, k * s, v, feature_map="favor", key_padding_mask=key_mask,
                                    projection=self.omega.to(q.dtype), rel_bias=b)


def _yoso(spec, conv_window=None, expectation=False):
    """YOSO (LSH sampling), YOSO-C (plus a depthwise convolution of the values) or YOSO-E, output
    L2-normalised per row: longattn.nn.YOSOAttention itself, as the C++ registry registers
    nn::YOSOAttention (fresh hashes every training call, the fixed seed in eval)."""
    return YOSOAttention(spec.heads, yoso_hash_bits(spec.max_len), YOSO_HASHES, hashing="hadamard",
                         conv_window=conv_window, use_expectation=expectation, seed=spec.seed % (1 << 62))


class ShatterCore(nn.Module):
    """Shatter: one head over all channels (the heads' q, k slices joined), the value channels
    split into P streams of dim / P over a learned soft partition of relative positions; the
    [B, N, dim / P] result is copied into the P slots the output projection reads."""

    def __init__(self, spec):
        super().__init__()
        if spec.dim % SHATTER_PARTS:
            raise ValueError(f"shatter: dim {spec.dim} is not a multiple of its {SHATTER_PARTS} parts")
        self.partition = ShatterPartition(SHATTER_PARTS, max_distance=max(2, spec.max_len))

    def forward(self, q, k, v, key_mask):
        B, H, N, Dh = q.shape
        D, P = H * Dh, SHATTER_PARTS

        def join(x):
            return x.transpose(1, 2).reshape(B, N, D)

        vs = join(v).view(B, N, P, D // P).transpose(1, 2)
        y = shatter_attention(join(q), join(k), vs, self.partition(N).to(q.dtype), key_padding_mask=key_mask)
        return y.repeat(1, 1, P).view(B, N, H, Dh).transpose(1, 2)


# name -> (description, factory(spec) -> core); names, descriptions and order as nn/attention.cpp
# (tests/python/test_registry.py compares the two registries).
ATTENTIONS = {
    "softmax": ("exact softmax attention", lambda s: SoftmaxCore(s, False)),
    "softmax-rpe": ("exact softmax attention with a learned relative-position bias per head",
                    lambda s: SoftmaxCore(s, True)),
    "linear": ("linear attention, elu(x)+1 features (Katharopoulos et al.)", lambda s: KernelizedCore(s, "elu")),
    "sikf": ("linear attention with the shift-invariant exp kernel (Zubkov & Gavrilov)",
             lambda s: KernelizedCore(s, "sikf")),
    "favor": ("Performer's FAVOR+: positive orthogonal random features, 64 per head",
              lambda s: KernelizedCore(s, "favor")),
    "kernelized-rpe": ("random-feature attention with a learned relative-position encoding (Luo et al.)",
                       lambda s: KernelizedCore(s, "favor", rel_bias=True)),
    "yoso": ("YOSO: LSH Bernoulli sampling, linear (Zeng et al.), normalised output", lambda s: _yoso(s)),
    "yoso-c": ("YOSO plus a depthwise convolution (window 33) of the values",
               lambda s: _yoso(s, conv_window=YOSO_CONV_WINDOW)),
    "yoso-e": ("YOSO-E: the expectation of YOSO, O(N^2)", lambda s: _yoso(s, expectation=True)),
    "shatter": ("Shatter: one head, 4 value streams over a soft partition of relative positions (Tian et al.)",
                ShatterCore),
}


def attention_names():
    return ", ".join(ATTENTIONS)


def make_attention_core(spec):
    if spec.name not in ATTENTIONS:
        raise ValueError(f"unknown attention '{spec.name}'; known: {attention_names()}")
    return ATTENTIONS[spec.name][1](spec)


class MultiHeadAttention(nn.Module):
    """Fused q/k/v projection, the named core, the optional FastRPB on v, output projection."""

    def __init__(self, spec):
        super().__init__()
        if spec.dim % spec.heads:
            raise ValueError(f"dim {spec.dim} is not a multiple of heads {spec.heads}")
        self.spec = spec
        self.qkv = nn.Linear(spec.dim, 3 * spec.dim)
        self.out = nn.Linear(spec.dim, spec.dim)
        self.core = make_attention_core(spec)
        if spec.fastrpb == "1d":
            self.fastrpb = FastRPB(spec.heads, spec.max_len)
        elif spec.fastrpb == "2d":
            self.fastrpb = FastRPB(spec.heads, max(spec.height, spec.width), two_d=True,
                                   height=spec.height, width=spec.width)
        elif spec.fastrpb == "none":
            self.fastrpb = None
        else:
            raise ValueError(f"fastrpb must be none, 1d or 2d, got '{spec.fastrpb}'")

    def forward(self, x, key_mask):
        B, N, _ = x.shape
        H = self.spec.heads
        q, k, v = self.qkv(x).view(B, N, 3, H, -1).permute(2, 0, 3, 1, 4)
        y = self.core(q, k, v, key_mask)
        if self.fastrpb is not None:
            y = y + self.fastrpb(v, key_mask)
        return self.out(y.transpose(1, 2).reshape(B, N, self.spec.dim))


@dataclasses.dataclass
class ModelConfig:
    vocab_size: int
    num_classes: int = 2
    max_len: int = 512  # longest sequence, CLS included
    layers: int = 2
    dim: int = 64
    heads: int = 2
    ffn: int = 128
    dropout: float = 0.1
    attention: str = "softmax"
    positions: str = "learned"  # "learned" or "none"
    pooling: str = "mean"       # "mean" or "cls" (position 0)
    fastrpb: str = "none"       # "none", "1d", "2d"
    height: int = 0
    width: int = 0
    paired: bool = False        # retrieval: two documents per example
    seed: int = 0
    embed_std: float = 1.0      # token embedding init std: 1 torch's default, 0.02 PyTorch-LRA's


def _full_mask(tokens, mask):
    """The key mask [B, N] bool; None means every token takes part."""
    if tokens.dim() != 2:
        raise ValueError(f"model: tokens must be [B, N], got shape {list(tokens.shape)}")
    if mask is None:
        return torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
    if mask.shape != tokens.shape or mask.dtype != torch.bool:
        raise ValueError(f"model: mask must be bool {list(tokens.shape)} like the tokens, "
                         f"got {mask.dtype} {list(mask.shape)}")
    return mask


class Encoder(nn.Module):
    """Token embedding, learned absolute positions (or none), pre-LayerNorm blocks
    x += drop(attn(LN(x))), x += drop(FFN(LN(x))) with a GELU FFN, a final LayerNorm."""

    def __init__(self, c):
        super().__init__()
        for name in ("layers", "dim", "heads", "ffn", "max_len"):
            if getattr(c, name) < 1:
                raise ValueError(f"model: {name} must be >= 1, got {getattr(c, name)}")
        if c.positions not in ("learned", "none"):
            raise ValueError(f"positions must be learned or none, got '{c.positions}'")
        self.c = c
        if not (c.embed_std > 0 and math.isfinite(c.embed_std)):
            raise ValueError(f"model: embed_std must be a finite number > 0, got {c.embed_std}")
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        if c.embed_std != 1.0:  # (1: torch's own initialisation, drawn above)
            with torch.no_grad():
                self.embed.weight.normal_(0.0, c.embed_std)
        self.positions = nn.Parameter(torch.randn(c.max_len, c.dim) * 0.02) if c.positions == "learned" else None
        self.attn_norms = nn.ModuleList()
        self.attns = nn.ModuleList()
        self.ffn_norms = nn.ModuleList()
        self.ffns = nn.ModuleList()
        for layer in range(c.layers):
            spec = AttentionSpec(c.attention, c.dim, c.heads, c.max_len, c.fastrpb, c.height, c.width,
                                 c.seed * 1000003 + layer)
            self.attn_norms.append(nn.LayerNorm(c.dim))
            self.attns.append(MultiHeadAttention(spec))
            self.ffn_norms.append(nn.LayerNorm(c.dim))
            self.ffns.append(nn.Sequential(nn.Linear(c.dim, c.ffn), nn.GELU(), Dropout(c.dropout),
                                           nn.Linear(c.ffn, c.dim)))
        self.final_norm = nn.LayerNorm(c.dim)
        self.drop = Dropout(c.dropout)

    def forward(self, tokens, mask=None):
        """tokens [B, N] int64, mask [B, N] bool (None: no padding) -> [B, N, dim]"""
        mask = _full_mask(tokens, mask)
        n = tokens.shape[1]
        if n > self.c.max_len:
            raise ValueError(f"model: sequence of {n} tokens, but the model was built for at most {self.c.max_len}")
        x = self.embed(tokens)
        if self.positions is not None:
            x = x + self.positions[:n]
        x = self.drop(x)
        for an, attn, fn, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns):
            x = x + self.drop(attn(an(x), mask))
            x = x + self.drop(ffn(fn(x)))
        return self.final_norm(x)


class Classifier(nn.Module):
    """CLS or masked-mean pooling, then an MLP; retrieval (paired): one shared encoder over both
    documents, the MLP reads [u, v, u*v, u-v] (as LRA)."""

    def __init__(self, c):
        super().__init__()
        if c.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be mean or cls, got '{c.pooling}'")
        self.c = c
        self.encoder = Encoder(c)
        self.head = nn.Sequential(nn.Linear(4 * c.dim if c.paired else c.dim, c.ffn), nn.ReLU(),
                                  nn.Linear(c.ffn, c.num_classes))

    def pool(self, h, mask):
        if self.c.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, tokens, mask=None, tokens2=None, mask2=None):
        """Logits [B, classes]; a mask None means no padding."""
        mask = _full_mask(tokens, mask)
        u = self.pool(self.encoder(tokens, mask), mask)
        if not self.c.paired:
            return self.head(u)
        if tokens2 is None:
            raise ValueError("retrieval model: the second documents are missing")
        mask2 = _full_mask(tokens2, mask2)
        v = self.pool(self.encoder(tokens2, mask2), mask2)
        return self.head(torch.cat([u, v, u * v, u - v], 1))


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())
