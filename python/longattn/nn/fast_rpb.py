"""FastRPB (Zubkov & Gavrilov, 2022): a learned relative positional bias on the values."""
import torch

from .._toeplitz import toeplitz_matmul, toeplitz_matmul_2d

__all__ = ["FastRPB"]


class FastRPB(torch.nn.Module):
    """B v for a learned Toeplitz (1-D) or separable 2-D bias B, per head; use as
    ``out = attention(q, k, v) + rpb(v)`` with any attention of the library.

    heads, max_len: per-head weights over offsets up to max_len - 1 (the longest image side in
    2-D). kind: "full" (2 max_len - 1 free weights, w_r != w_-r) or "symmetric" (max_len
    weights, w_r = w_|r|). A sequence of n < max_len tokens uses the central 2n - 1 offsets.
    two_d with height, width: an image flattened row by row, B[(a,b),(a',b')] = w[a'-a] +
    w_col[b'-b] (w_col = w unless separate_axes). causal (1-D): key j adds to output i only
    when j <= i. special_tokens: leading tokens (CLS) outside the bias (zero rows and columns);
    in 2-D the tokens before the grid are always outside. Initialised as the authors do:
    w_r = |r| 1e-5 U(0,1) + 1e-6 N(0,1). The C++ twin is longattn::nn::FastRPB.
    process_group (1-D, no special tokens): v is this rank's slice of a sequence sharded over
    the group (longattn.distributed's layout) and the product is sequence-parallel
    (longattn.distributed.toeplitz_matmul); torch.distributed.group.WORLD for the default group.
    """

    def __init__(self, heads, max_len, *, kind="full", two_d=False, height=0, width=0,
                 separate_axes=False, causal=False, special_tokens=0, process_group=None):
        super().__init__()
        for name, val in (("heads", heads), ("max_len", max_len)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"FastRPB: {name} must be an integer >= 1, got {val!r}")
        if not isinstance(special_tokens, int) or special_tokens < 0:
            raise ValueError(f"FastRPB: special_tokens must be an integer >= 0, got {special_tokens!r}")
        if process_group is not None and (two_d or special_tokens):
            raise ValueError("FastRPB: sequence-parallel (process_group) needs a 1-D sequence without "
                             f"special tokens; got two_d={two_d}, special_tokens={special_tokens}")
        self.process_group = process_group
        if kind not in ("full", "symmetric"):
            raise ValueError(f'FastRPB: kind must be "full" or "symmetric", got "{kind}"')
        if two_d and not (1 <= height <= max_len and 1 <= width <= max_len):
            raise ValueError(f"FastRPB 2-D needs 1 <= height, width <= max_len, got {height} x {width} "
                             f"with max_len {max_len}")
        if two_d and causal:
            raise ValueError("FastRPB: causal is for 1-D sequences only")
        self.heads, self.max_len, self.kind = heads, max_len, kind
        self.two_d, self.height, self.width = two_d, height, width
        self.causal, self.special_tokens = causal, special_tokens
        self.weights = torch.nn.Parameter(self._init(heads, max_len, kind))
        self.col_weights = (torch.nn.Parameter(self._init(heads, max_len, kind))
                            if two_d and separate_axes else None)

    @staticmethod
    def _init(heads, max_len, kind):
        r = torch.arange(max_len) if kind == "symmetric" else torch.arange(-(max_len - 1), max_len).abs()
        r = r.float()
        return r * 1e-5 * torch.rand(heads, r.numel()) + 1e-6 * torch.randn(heads, r.numel())

    def coefficients(self, n, rows=True):
        """[H, 2n - 1] coefficients over offsets -(n-1) .. n-1 (index r + n - 1)."""
        w = self.weights if rows or self.col_weights is None else self.col_weights
        M = self.max_len
        if n > M:
            raise ValueError(f"FastRPB: {n} positions, but the bias covers {M}")
        if self.kind == "full":
            return w[:, M - n: M + n - 1]
        return w[:, torch.arange(-(n - 1), n, device=w.device).abs()]

    def forward(self, v, key_padding_mask=None):
        """v [B, H, N, D] -> B v [B, H, N, D]; key_padding_mask [B, N] bool (True = takes part)."""
        if v.dim() != 4 or v.shape[1] != self.heads:
            raise ValueError(f"FastRPB: v must be [B, {self.heads}, N, D], got {list(v.shape)}")
        n = v.shape[2]
        if key_padding_mask is not None:
            # masked_fill, not a product: a masked token's garbage (NaN) must not reach the sum.
            v = v.masked_fill(~key_padding_mask[:, None, :, None], 0)
        if self.process_group is not None:
            from .. import distributed as ld
            N = ld.sequence_length(n, self.process_group)
            return ld.toeplitz_matmul(self.coefficients(N).to(v.dtype), v, causal=self.causal,
                                      group=self.process_group)
        lead = n - self.height * self.width if self.two_d else self.special_tokens
        if lead < 0 or (self.two_d and lead < self.special_tokens):
            raise ValueError(f"FastRPB: {n} tokens do not hold {self.special_tokens} special tokens and the grid")
        inner = v[:, :, lead:]
        if self.two_d:
            out = toeplitz_matmul_2d(self.coefficients(self.height).to(v.dtype),
                                     self.coefficients(self.width, rows=False).to(v.dtype), inner,
                                     height=self.height, width=self.width)
        else:
            out = toeplitz_matmul(self.coefficients(n - lead).to(v.dtype), inner, causal=self.causal)
        if lead == 0:
            return out
        return torch.cat([v.new_zeros(v.shape[0], v.shape[1], lead, v.shape[3]), out], dim=2)
