"""longattn as a Hugging Face transformers attention implementation (issue #13, part 4).

Small randomly initialised models built here (no download): the logits with
attn_implementation="longattn" equal those of "sdpa" to float32 tolerance on padded batches,
greedy generate() gives the same tokens, longattn's operator really runs (counted), and what it
cannot express falls back to sdpa with a warning instead of giving a wrong answer.
"""
import contextlib
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import longattn.integrations.transformers as lt  # noqa: E402

lt.register()


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls that reach longattn.softmax_attention (and not the sdpa fallback)."""
    seen = []
    real = lt.softmax_attention

    def counting(q, k, v, **kw):
        seen.append((tuple(q.shape), tuple(k.shape), kw["causal"], kw["key_padding_mask"] is not None))
        return real(q, k, v, **kw)

    monkeypatch.setattr(lt, "softmax_attention", counting)
    return seen


@contextlib.contextmanager
def no_fallback():
    """A context that fails the test if the integration falls back to sdpa."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="longattn attention")
        yield


def llama(num_kv_heads=2, layers=2):
    cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=layers, num_attention_heads=4,
                                   num_key_value_heads=num_kv_heads, max_position_embeddings=128,
                                   pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def padded_batch(lengths, total, left, vocab=101, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), total), generator=g)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        if left:
            mask[b, total - n:] = 1
        else:
            mask[b, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


def logits(model, impl, ids, mask):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("kv_heads,left", [(2, True), (4, False)], ids=["gqa-left-padded", "mha-right-padded"])
def test_llama_padded_logits_match_sdpa(kv_heads, left, calls):
    model = llama(kv_heads)
    ids, mask = padded_batch([23, 9, 17], 23, left)
    ref = logits(model, "sdpa", ids, mask)
    with no_fallback():
        got = logits(model, "longattn", ids, mask)
    assert len(calls) == 2  # one call per layer, causal, with the padding as a key mask
    assert all(c[2] and c[3] and c[0][1] == 4 and c[1][1] == 4 for c in calls)
    keep = mask.bool()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-4, atol=1e-5)
    if left:  # not a tautology: with the pads before the tokens, ignoring them changes the logits
        unpadded = logits(model, "sdpa", ids, torch.ones_like(mask))
        assert not torch.allclose(unpadded[keep], ref[keep], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_llama_half_precision_logits_match_float32(dtype, calls):
    """A half-precision model runs on longattn (no fallback), and its logits are as close to the
    float32 model's as sdpa's half-precision logits are (the rule of tests/test_half_precision)."""
    model = llama()
    ids, mask = padded_batch([23, 9, 17], 23, left=True)
    ref = logits(model, "sdpa", ids, mask)
    half = llama().to(dtype)
    with no_fallback():
        got = logits(half, "longattn", ids, mask)
    low = logits(half, "sdpa", ids, mask)
    assert calls and got.dtype == dtype
    keep = mask.bool()
    err = (got[keep].float() - ref[keep]).abs().max().item()
    err_sdpa = (low[keep].float() - ref[keep]).abs().max().item()
    assert err <= 2 * err_sdpa + 1e-3, (err, err_sdpa)


def test_llama_unpadded_batch_uses_plain_causal(calls):
    model = llama()
    ids, mask = padded_batch([16, 16], 16, left=True)
    ref = logits(model, "sdpa", ids, mask)
    with no_fallback():
        got = logits(model, "longattn", ids, mask)
    assert calls and all(c[2] and not c[3] for c in calls)  # no key mask when nothing is padded
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_llama_generate_same_tokens(calls):
    model = llama()
    ids, mask = padded_batch([12, 5, 9], 12, left=True, seed=3)
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        ref = model.generate(ids, **kw)
    model.set_attn_implementation("longattn")
    with no_fallback(), torch.no_grad():
        got = model.generate(ids, **kw)
    assert got.shape == ref.shape == (3, 22)
    assert torch.equal(got, ref)
    prefill = [c for c in calls if c[0][2] > 1]
    decode = [c for c in calls if c[0][2] == 1]
    assert len(prefill) == 2 and all(c[2] for c in prefill)
    # Each new token: one query over every cached key, not causal, padding still masked.
    assert len(decode) == 2 * 9 and all(not c[2] and c[3] for c in decode)


def test_llama_backward_matches_sdpa():
    model = llama().train()
    ids, mask = padded_batch([14, 8], 14, left=False)
    grads = {}
    for impl in ("sdpa", "longattn"):
        model.zero_grad()
        model.set_attn_implementation(impl)
        out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
        out.loss.backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, g in grads["sdpa"].items():
        torch.testing.assert_close(grads["longattn"][n], g, rtol=1e-3, atol=1e-5, msg=n)


def test_bert_padded_logits_match_sdpa(calls):
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(cfg).eval()
    ids, mask = padded_batch([20, 7, 13], 20, left=False)
    ref = logits(model, "sdpa", ids, mask)
    with no_fallback():
        got = logits(model, "longattn", ids, mask)
    assert len(calls) == 2 and all(not c[2] and c[3] for c in calls)  # bidirectional, keys masked
    keep = mask.bool()
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-4, atol=1e-5)
    unpadded = logits(model, "sdpa", ids, torch.ones_like(mask))  # bidirectional: pads matter
    assert not torch.allclose(unpadded[keep], ref[keep], rtol=1e-4, atol=1e-5)


def test_sliding_window_falls_back_to_sdpa_with_one_warning(calls):
    cfg = transformers.MistralConfig(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    ids, mask = padded_batch([12, 8], 12, left=True)
    ref = logits(model, "sdpa", ids, mask)
    lt._warned.clear()
    with pytest.warns(UserWarning, match="sliding window") as record:
        got = logits(model, "longattn", ids, mask)
    assert sum("longattn attention" in str(w.message) for w in record) == 1  # once, not per layer
    assert calls == []
    keep = mask.bool()
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-4, atol=1e-5)


def test_mask_function_compact_only_when_expressible():
    from transformers import masking_utils as mu

    pad = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    m = lt.build_mask(1, 8, 8, attention_mask=pad)
    assert isinstance(m, lt.CompactMask) and m.causal and torch.equal(m.key_padding_mask, pad)
    # decoding one token after 7 cached ones: every key is in the past
    m = lt.build_mask(1, 1, 8, q_offset=7, attention_mask=pad)
    assert isinstance(m, lt.CompactMask) and not m.causal
    # chunked prefill: 3 queries at positions 5..7 over 8 keys is causal off the diagonal
    m = lt.build_mask(1, 3, 8, q_offset=5, attention_mask=pad)
    assert isinstance(m, torch.Tensor) and m.shape == (1, 1, 3, 8)
    assert torch.equal(m, mu.sdpa_mask(1, 3, 8, q_offset=5, attention_mask=pad, allow_is_causal_skip=False))
    m = lt.build_mask(1, 8, 8, mask_function=mu.sliding_window_causal_mask_function(3))
    assert isinstance(m, torch.Tensor)
    # the compact mask expands to exactly sdpa's mask
    m = lt.build_mask(1, 8, 8, attention_mask=pad)
    assert torch.equal(m.to_sdpa(8, 8, "cpu"), mu.sdpa_mask(1, 8, 8, attention_mask=pad, allow_is_causal_skip=False))
