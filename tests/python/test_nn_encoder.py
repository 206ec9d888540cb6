"""longattn.nn encoder and attentions by name (the twins of nn/encoder.h, nn/attention.h)."""
import pytest
import torch

import longattn
from longattn.nn import ATTENTIONS, Classifier, ModelConfig, count_parameters


def detect_batch(n, length=16, classes=4, noise=8, generator=None):
    """The C++ 'detect' toy: noise tokens 3 .. 3+noise-1 with one marker token (3+noise+label)
    at a random position; padding (0) on a random tail of some rows. Any attention learns it."""
    tokens = torch.randint(3, 3 + noise, (n, length), generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=generator)
    pos = (torch.rand(n, generator=generator) * lengths).long()
    tokens[torch.arange(n), pos] = 3 + noise + labels
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return tokens.masked_fill(~mask, 0), mask, labels


def tiny(attention, **kw):
    c = dict(vocab_size=3 + 8 + 4, num_classes=4, max_len=16, layers=1, dim=32, heads=2, ffn=64,
             dropout=0.0, attention=attention)
    c.update(kw)
    return ModelConfig(**c)


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_tiny_model_learns_detect(attention):
    # Chance is 25%; 95% on 256 held-out examples leaves room for a dozen mistakes.
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(2)
    model = Classifier(tiny(attention))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        tokens, mask, labels = detect_batch(32, generator=g)
        loss = torch.nn.functional.cross_entropy(model(tokens, mask), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        tokens, mask, labels = detect_batch(256, generator=g)
        acc = (model(tokens, mask).argmax(1) == labels).float().mean().item()
    assert acc >= 0.95, f"{attention}: accuracy {acc:.3f}, last loss {loss.item():.3f}"


def test_parameter_counts_depend_only_on_what_the_mechanism_adds():
    # As tests/train/test_train.cpp: rel_bias (softmax-rpe, kernelized-rpe) adds H (2M - 1) per
    # layer, shatter its partition's 4 x 3, yoso-c its depthwise convolution (H x window 33 per
    # layer), FastRPB H (2M - 1) (2-D: H (2 max(h, w) - 1)).
    layers, heads, M = 2, 2, 50
    cfg = dict(vocab_size=20, max_len=M, layers=layers, dim=16, heads=heads, ffn=32)
    base = count_parameters(Classifier(ModelConfig(**cfg)))
    bias = layers * heads * (2 * M - 1)
    extra = {"softmax": 0, "softmax-rpe": bias, "linear": 0, "sikf": 0, "favor": 0, "kernelized-rpe": bias,
             "yoso": 0, "yoso-c": layers * heads * 33, "yoso-e": 0, "shatter": layers * 4 * 3}
    assert set(extra) == set(ATTENTIONS)
    for name in ATTENTIONS:
        assert count_parameters(Classifier(ModelConfig(attention=name, **cfg))) == base + extra[name], name
    assert count_parameters(Classifier(ModelConfig(fastrpb="1d", **cfg))) == base + bias
    two_d = Classifier(ModelConfig(fastrpb="2d", height=5, width=7, **cfg))
    assert count_parameters(two_d) == base + layers * heads * (2 * 7 - 1)


def test_unknown_attention_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: softmax, softmax-rpe"):
        Classifier(ModelConfig(vocab_size=10, attention="sofmax"))


def test_padding_does_not_change_the_real_tokens_outputs():
    # Appending padded positions leaves every real position's output unchanged, for each core.
    torch.manual_seed(0)
    for name in ATTENTIONS:
        model = Classifier(tiny(name, max_len=24, fastrpb="1d")).eval()
        tokens, mask, _ = detect_batch(3, length=12, generator=torch.Generator().manual_seed(5))
        mask[:] = True
        padded = torch.cat([tokens, torch.zeros(3, 12, dtype=torch.long)], 1)
        pmask = torch.cat([mask, torch.zeros(3, 12, dtype=torch.bool)], 1)
        with torch.no_grad():
            a = model.encoder(tokens, mask)
            b = model.encoder(padded, pmask)[:, :12]
        tol = 1e-4 if name != "yoso" else 0.2  # yoso hashes depend on the sequence length
        assert torch.allclose(a, b, atol=tol), name


def test_retrieval_head_reads_both_documents():
    model = Classifier(ModelConfig(vocab_size=15, num_classes=2, max_len=16, layers=1, dim=16, heads=2,
                                   ffn=32, paired=True)).eval()
    t, m, _ = detect_batch(4)
    out = model(t, m, t.flip(0), m.flip(0))
    assert out.shape == (4, 2)
    with pytest.raises(ValueError, match="second documents"):
        model(t, m)


def test_exported():
    assert longattn.nn.Classifier is Classifier


def test_embedding_init_scale_is_torchs_by_default_and_pytorch_lras_on_request():
    # The twin of tests/train/test_train.cpp's EmbeddingInitScale: 64 x 32 = 2048 normal draws, whose
    # sample std lies within 1.6% of sigma at one standard error (bound: five of them).
    cfg = dict(vocab_size=64, dim=32, max_len=8)
    assert abs(Classifier(ModelConfig(**cfg)).encoder.embed.weight.std().item() - 1.0) < 0.08
    assert abs(Classifier(ModelConfig(embed_std=0.02, **cfg)).encoder.embed.weight.std().item() - 0.02) < 0.0016
    with pytest.raises(ValueError, match="embed_std must be a finite number > 0, got 0"):
        Classifier(ModelConfig(embed_std=0, **cfg))
