"""The nn modules refuse nonsense with clear messages and give a documented meaning to None
(issue 12, part 5)."""
import math

import pytest
import torch

import longattn
from longattn.nn import ATTENTIONS, Classifier, FastRPB, ModelConfig, Shatter, YOSOAttention


@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
def test_classifier_none_mask_means_no_padding(attention):
    torch.manual_seed(0)
    c = ModelConfig(vocab_size=11, num_classes=3, max_len=16, layers=1, dim=8, heads=2, ffn=8, dropout=0.0,
                    attention=attention)
    model = Classifier(c).eval()
    tokens = torch.randint(0, 11, (2, 16))
    a = model(tokens, None)
    b = model(tokens, torch.ones(2, 16, dtype=torch.bool))
    assert a.shape == (2, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_classifier_bad_mask_and_config():
    c = ModelConfig(vocab_size=11, num_classes=3, max_len=16, layers=1, dim=8, heads=2, ffn=8)
    model = Classifier(c)
    with pytest.raises(ValueError, match=r"mask must be bool \[2, 16\].*got torch.int64 \[2, 15\]"):
        model(torch.zeros(2, 16, dtype=torch.long), torch.ones(2, 15, dtype=torch.long))
    for field in ("layers", "dim", "heads", "ffn"):
        with pytest.raises(ValueError, match=f"{field} must be >= 1, got 0"):
            Classifier(ModelConfig(**{**c.__dict__, field: 0}))


def test_shatter_messages():
    with pytest.raises(ValueError, match=r"x must have shape \[B, N, 8\], got \[5, 8\]"):
        Shatter(8)(torch.randn(5, 8))
    with pytest.raises(ValueError, match="num_parts must be an integer >= 1, got 0"):
        Shatter(8, num_parts=0)
    with pytest.raises(ValueError, match="embed_dim must be an integer >= 1, got 0"):
        Shatter(0)


def test_fast_rpb_messages_and_masked_garbage():
    with pytest.raises(ValueError, match="max_len must be an integer >= 1, got 0"):
        FastRPB(2, 0)
    with pytest.raises(ValueError, match="heads must be an integer >= 1, got 0"):
        FastRPB(0, 4)
    rpb = FastRPB(2, 6)
    v = torch.randn(2, 2, 6, 3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    clean = rpb(v.masked_fill(~mask[:, None, :, None], 0), mask)
    for bad in (math.nan, math.inf):
        dirty = rpb(v.masked_fill(~mask[:, None, :, None], bad), mask)
        torch.testing.assert_close(dirty, clean, rtol=0, atol=0)


def test_yoso_attention_module_messages_and_seeds():
    for w in (0, 2, -1):
        with pytest.raises(ValueError, match=f"conv_window must be None or an odd integer >= 1, got {w}"):
            YOSOAttention(2, 4, conv_window=w)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got 18446744073709551616"):
        YOSOAttention(2, 4, seed=2**64)
    with pytest.raises(ValueError, match="num_heads must be an integer >= 1, got 0"):
        YOSOAttention(0, 4)
    q, k, v = (torch.randn(1, 2, 7, 4) for _ in range(3))
    top = YOSOAttention(2, 4, seed=2**64 - 1).eval()   # the same 64 bits as seed -1
    ref = longattn.yoso_attention(q, k, v, hash_bits=4, num_hashes=32, seed=-1, hashing="hadamard")
    torch.testing.assert_close(top(q, k, v), torch.nn.functional.normalize(ref, dim=-1))
    # An odd window keeps the sequence length; masked values (even NaN) stay out of the convolution.
    m = YOSOAttention(2, 4, conv_window=3, use_expectation=True)
    mask = torch.ones(1, 7, dtype=torch.bool)
    mask[0, 5:] = False
    clean = m(q, k, v.masked_fill(~mask[:, None, :, None], 0), mask)
    dirty = m(q, k, v.masked_fill(~mask[:, None, :, None], math.nan), mask)
    assert clean.shape == (1, 2, 7, 4)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
