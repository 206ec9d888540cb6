"""longattn's exact attention as a Hugging Face transformers attention implementation.

    import longattn.integrations.transformers as lt
    lt.register()                                       # once per process
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="longattn")
    model.set_attn_implementation("longattn")           # or switch an existing model

Two functions are registered under one name: an attention function (``AttentionInterface``) that
calls :func:`longattn.softmax_attention`, and a mask function (``AttentionMaskInterface``) that
builds no N x N mask. transformers describes a mask as a pattern (causal or bidirectional, plus
overlays such as sliding windows or packed sequences) and a 2-D padding mask; when the pattern is
plain causal or plain bidirectional, the mask function hands the attention function a
:class:`CompactMask` (``causal`` and a ``[B, Nk]`` key padding mask), which is exactly what the
operator takes. Everything else (a sliding window, packed sequences, a custom 4-D mask, a causal
mask not aligned on the diagonal as in chunked prefill, attention dropout in training, softcapping,
position biases, dtypes other than float32/float64/bfloat16/float16) goes to transformers' ``sdpa`` implementation,
with a warning the first time each reason occurs, so a model always runs and is never silently
wrong.
"""
import warnings

import torch

from .._softmax import softmax_attention

__all__ = ["register", "CompactMask", "attention_forward", "build_mask", "NAME"]

NAME = "longattn"


class CompactMask:
    """The mask of a plain causal or bidirectional pattern with padding, in O(B Nk) memory.

    causal: key j takes part for query i only when j <= i (queries and keys aligned, Nq == Nk).
    key_padding_mask: [B, Nk] bool, True = the key takes part, or None (every key takes part).
    """

    __slots__ = ("causal", "key_padding_mask")

    def __init__(self, causal, key_padding_mask):
        self.causal = causal
        self.key_padding_mask = key_padding_mask

    def to_sdpa(self, q_length, kv_length, device):
        """The same mask as a 4-D boolean tensor (True = take part), for the fallback path."""
        if not self.causal and self.key_padding_mask is None:
            return None
        mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=device)
        if self.causal:
            mask = torch.tril(mask)
        mask = mask[None, None]
        if self.key_padding_mask is not None:
            mask = mask & self.key_padding_mask[:, None, None, :]
        return mask

    def __repr__(self):
        kpm = None if self.key_padding_mask is None else list(self.key_padding_mask.shape)
        return f"CompactMask(causal={self.causal}, key_padding_mask={kpm})"


_warned = set()


def _warn_once(reason):
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"longattn attention: {reason}; falling back to transformers' sdpa attention "
                      "(this warning is shown once per reason)", stacklevel=3)


def build_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                  attention_mask=None, local_size=None, **kwargs):
    """transformers' mask interface: a :class:`CompactMask` when the pattern allows, otherwise
    the ``sdpa`` boolean 4-D mask (which the attention function then hands to ``sdpa``)."""
    from transformers import masking_utils as mu

    if mask_function is None:
        mask_function = mu.causal_mask_function
    causal = mask_function is mu.causal_mask_function
    bidirectional = mask_function is mu.bidirectional_mask_function
    # A tensor offset (static caches under compilation) cannot be read without a graph break.
    offsets_known = not isinstance(q_offset, torch.Tensor) and not isinstance(kv_offset, torch.Tensor)
    if (causal or bidirectional) and local_size is None and offsets_known:
        if causal and kv_offset + kv_length - 1 <= q_offset:
            causal = False  # every key is at or before the first query (decoding): nothing to hide
        if not causal or (q_length == kv_length and q_offset == kv_offset):
            padding = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset)
            if padding is not None:
                padding = padding[:, kv_offset:kv_offset + kv_length]
                if bool(padding.all()):
                    padding = None
            return CompactMask(causal, padding)
    # Not expressible: the full boolean mask, exactly as the sdpa implementation would get it.
    kwargs.pop("allow_is_causal_skip", None)
    return mu.sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                        kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                        local_size=local_size, allow_is_causal_skip=False, **kwargs)


def _fallback(module, query, key, value, attention_mask, dropout, scaling, is_causal, reason, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _warn_once(reason)
    if isinstance(attention_mask, CompactMask):
        attention_mask = attention_mask.to_sdpa(query.shape[2], key.shape[2], query.device)
        is_causal = False  # the causal part, if any, is in the tensor now
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def _unsupported(module, query, key, attention_mask, dropout, kwargs):
    """Why softmax_attention cannot run this call, or None when it can."""
    if isinstance(attention_mask, torch.Tensor):
        return ("the model passed an attention mask that is not plain causal or bidirectional with padding "
                "(sliding window, packed sequences, chunked prefill or a custom 4-D mask)")
    if attention_mask is not None and not isinstance(attention_mask, CompactMask):
        return f"an attention mask of type {type(attention_mask).__name__}"
    if dropout and module.training:
        return "attention dropout in training"
    if kwargs.get("softcap") is not None:
        return "logit softcapping"
    if kwargs.get("position_bias") is not None:
        return "an additive position bias"
    if kwargs.get("cache") is not None:
        return "a paged cache (continuous batching)"
    if query.device.type != "cpu":
        return f"tensors on {query.device.type} (longattn runs on the CPU)"
    if query.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        return f"dtype {query.dtype} (longattn takes float32, float64, bfloat16 and float16)"
    if key.shape[1] == 0 or query.shape[1] % key.shape[1]:
        return f"{query.shape[1]} query heads over {key.shape[1]} key/value heads"
    return None


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                      **kwargs):
    """transformers' attention interface: q [B, H, Nq, D], k, v [B, Hkv, Nk, D] -> ([B, Nq, H, D], None)."""
    reason = _unsupported(module, query, key, attention_mask, dropout, kwargs)
    q_length, kv_length = query.shape[2], key.shape[2]
    if reason is None:
        if isinstance(attention_mask, CompactMask):
            causal, key_padding_mask = attention_mask.causal, attention_mask.key_padding_mask
        else:  # no mask built (a module used on its own): the module says whether it is causal
            causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
            causal = bool(causal) and q_length > 1  # one query sees every cached key
            key_padding_mask = None
            if causal and q_length != kv_length:
                reason = "a causal call with Nq != Nk and no mask"
    if reason is not None:
        return _fallback(module, query, key, value, attention_mask, dropout, scaling, is_causal, reason, **kwargs)

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    out = softmax_attention(query, key, value, causal=causal, key_padding_mask=key_padding_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register(name=NAME):
    """Registers the attention and its mask function in transformers under ``name``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, build_mask)
    return name
