"""longattn.nn.YOSOAttention: normalised rows, the conv variant, training vs eval hashing."""
import torch

import longattn
from longattn.nn import YOSOAttention


def qkv(B=2, H=4, N=32, D=8):
    return [torch.randn(B, H, N, D, requires_grad=True) for _ in range(3)]


def test_rows_are_unit_norm_and_masked_rows_zero():
    layer = YOSOAttention(num_heads=4, hash_bits=2, num_hashes=8).eval()
    q, k, v = qkv()
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1, 20:] = False
    x = layer(q, k, v, key_padding_mask=mask)
    norms = x.norm(dim=-1)
    nonzero = norms > 0
    torch.testing.assert_close(norms[nonzero], torch.ones_like(norms[nonzero]))
    assert torch.all(x[1, :, 20:] == 0)
    assert nonzero[0].all()  # τ = 2, m = 8: every query collides with some key here


def test_eval_is_deterministic_and_training_draws_fresh_hashes():
    layer = YOSOAttention(num_heads=4, hash_bits=4, num_hashes=4, seed=7)
    q, k, v = qkv()
    layer.eval()
    assert torch.equal(layer(q, k, v), layer(q, k, v))
    layer.train()
    a, b = layer(q, k, v), layer(q, k, v)
    assert not torch.equal(a, b)
    # The training sequence of hashes is itself reproducible from the seed.
    again = YOSOAttention(num_heads=4, hash_bits=4, num_hashes=4, seed=7).train()
    assert torch.equal(again(q, k, v), a)


def test_state_dict_carries_the_hash_generator():
    layer = YOSOAttention(num_heads=4, hash_bits=4, num_hashes=4, seed=7).train()
    q, k, v = qkv()
    for _ in range(3):
        layer(q, k, v)
    saved = layer.state_dict()
    expected = layer(q, k, v)  # the call after the checkpoint
    restored = YOSOAttention(num_heads=4, hash_bits=4, num_hashes=4, seed=123).train()
    restored.load_state_dict(saved)
    assert torch.equal(restored(q, k, v), expected)
    fresh = YOSOAttention(num_heads=4, hash_bits=4, num_hashes=4, seed=7).train()
    assert not torch.equal(fresh(q, k, v), expected)  # the generator had moved on


def test_conv_variant_adds_depthwise_conv_of_masked_values():
    layer = YOSOAttention(num_heads=4, hash_bits=3, num_hashes=4, conv_window=5).eval()
    q, k, v = qkv()
    mask = torch.rand(2, 32) > 0.2
    x = layer(q, k, v, key_padding_mask=mask)
    base = torch.nn.functional.normalize(
        longattn.yoso_attention(q, k, v, hash_bits=3, num_hashes=4, seed=0,
                                key_padding_mask=mask, hashing="hadamard"), dim=-1)
    w = layer.conv.weight  # [H, 1, 5, 1]
    vm = v * mask[:, None, :, None]
    conv = torch.nn.functional.conv2d(vm, w, padding=(2, 0), groups=4)
    torch.testing.assert_close(x, base + conv)
    x.sum().backward()
    assert layer.conv.weight.grad is not None and q.grad is not None


def test_expectation_mode_matches_yoso_e():
    layer = YOSOAttention(num_heads=4, hash_bits=5, use_expectation=True)
    q, k, v = qkv()
    ref = torch.nn.functional.normalize(longattn.yoso_expectation(q, k, v, hash_bits=5), dim=-1)
    torch.testing.assert_close(layer(q, k, v), ref)
