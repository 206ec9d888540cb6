"""The YOSO attention layer of Zeng et al. (ICML 2021) on longattn's operators."""
import torch
from torch import nn
import torch.nn.functional as F

from .._seed import seed_bits
from .._yoso import yoso_attention, yoso_expectation

__all__ = ["YOSOAttention"]


class YOSOAttention(nn.Module):
    """YOSO attention over per-head q, k, v [B, H, N, D] (projections belong to the caller).

    As the authors' layer: ``X = normalize(YOSO(q, k, v))`` row-wise (L2; YOSO's weights do not
    sum to one, so the output scale is dropped), plus, with ``conv_window=w`` (the "YOSO-C"
    variant), a depthwise convolution of the masked values over the sequence,
    ``X += conv(v ⊙ mask)`` with kernel (w, 1), padding w // 2, no bias, one filter per head.

    Hashing: in training mode every call draws fresh hash functions (a new seed from a
    ``torch.Generator`` seeded with ``seed``), so successive steps see independent estimates;
    in eval mode every call uses ``seed`` itself, so evaluation is deterministic. The
    generator's state travels in ``state_dict()`` (as the module's extra state), so a model
    restored from a checkpoint goes on with the hashes an uninterrupted run would have drawn.
    ``use_expectation=True`` uses YOSO-E (O(N²), no hashing) instead.

    The backward through the LSH estimate is the paper's surrogate, not the true gradient
    (see ``longattn.yoso_attention``).
    """

    def __init__(self, num_heads, hash_bits, num_hashes=32, *, conv_window=None,
                 hashing="hadamard", backward="lsh", use_expectation=False, seed=0,
                 process_group=None):
        super().__init__()
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"YOSOAttention: num_heads must be an integer >= 1, got {num_heads!r}")
        # An even window would make the padded convolution one position longer than the sequence.
        if conv_window is not None and (not isinstance(conv_window, int) or conv_window < 1 or conv_window % 2 == 0):
            raise ValueError(f"YOSOAttention: conv_window must be None or an odd integer >= 1, got {conv_window!r}")
        if not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"YOSOAttention: seed must be an integer in [0, 2**64), got {seed!r}")
        if process_group is not None and (use_expectation or conv_window is not None or backward != "lsh"):
            raise ValueError("YOSOAttention: sequence-parallel (process_group) supports LSH YOSO with "
                             "backward='lsh' and no convolution; got use_expectation="
                             f"{use_expectation}, conv_window={conv_window}, backward={backward!r}")
        # Not None: q, k, v are this rank's slice of a sequence sharded over the group; every
        # rank must draw the same seeds (same seed, same number of calls).
        self.process_group = process_group
        self.num_heads = num_heads
        self.hash_bits = hash_bits
        self.num_hashes = num_hashes
        self.hashing = hashing
        self.backward = backward
        self.use_expectation = use_expectation
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self.conv = None
        if conv_window is not None:
            self.conv = nn.Conv2d(num_heads, num_heads, kernel_size=(conv_window, 1),
                                  padding=(conv_window // 2, 0), bias=False, groups=num_heads)

    def extra_repr(self):
        return (f"num_heads={self.num_heads}, hash_bits={self.hash_bits}, "
                f"num_hashes={self.num_hashes}, hashing={self.hashing!r}, "
                f"use_expectation={self.use_expectation}, seed={self.seed}")

    def get_extra_state(self):
        return {"generator_state": self._generator.get_state()}

    def set_extra_state(self, state):
        if not isinstance(state, dict) or "generator_state" not in state:
            raise ValueError("YOSOAttention.set_extra_state: expected a dict with 'generator_state' "
                             f"(as get_extra_state() returns), got {type(state).__name__}")
        self._generator.set_state(state["generator_state"])

    def next_seed(self):
        """The seed of this call: fresh from the generator in training, ``seed`` in eval."""
        if not self.training:
            return seed_bits("YOSOAttention", self.seed)
        return int(torch.randint(0, 2**62, (1,), generator=self._generator).item())

    def forward(self, q, k, v, key_padding_mask=None):
        """q [B, H, N, D], k [B, H, N, D], v [B, H, N, Dv]; key_padding_mask [B, N] bool, True =
        the token takes part (masked tokens output zeros, apart from the convolution term)."""
        if self.use_expectation:
            x = yoso_expectation(q, k, v, hash_bits=self.hash_bits,
                                 key_padding_mask=key_padding_mask)
        elif self.process_group is not None:
            from .. import distributed as ld
            x = ld.yoso_attention(q, k, v, hash_bits=self.hash_bits, num_hashes=self.num_hashes,
                                  seed=self.next_seed(), key_padding_mask=key_padding_mask,
                                  hashing=self.hashing, group=self.process_group)
        else:
            x = yoso_attention(q, k, v, hash_bits=self.hash_bits, num_hashes=self.num_hashes,
                               seed=self.next_seed(), key_padding_mask=key_padding_mask,
                               hashing=self.hashing, backward=self.backward)
        x = F.normalize(x, p=2, dim=-1)
        if self.conv is not None:
            # masked_fill, not a product: a masked token's garbage (NaN) must not reach the sum.
            masked_v = v if key_padding_mask is None else v.masked_fill(~key_padding_mask[:, None, :, None], 0)
            x = x + self.conv(masked_v)
        return x
