"""torch.compile(fullgraph=True) of the Python encoder (longattn.nn.Classifier) with each
attention of its registry: forward and backward on CPU match eager to float32 tolerance.

The models run in eval mode: in training, Dropout and YOSO draw a fresh seed per call with
`.item()`, a graph break that fullgraph=True refuses (their operators compile either way; the
seed is an ordinary int argument). Backward through eval mode still runs every backward kernel.
"""
import os
import time

import pytest
import torch

from longattn.nn.encoder import ATTENTIONS, Classifier, ModelConfig

# Dynamo (fullgraph) + AOT autograd on fake tensors, which is what our operators must support;
# inductor (LONGATTN_COMPILE_BACKEND=inductor) adds its own C++ code generation around them,
# minutes per model on a loaded 2-core machine.
BACKEND = os.environ.get("LONGATTN_COMPILE_BACKEND", "aot_eager")


def _model(name, **extra):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=11, num_classes=3, max_len=16, layers=1, dim=16, heads=2, ffn=16,
                      dropout=0.0, attention=name, seed=1, **extra)
    return Classifier(cfg).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 11, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False  # a padded row
    return tokens, mask


def _run(model, call, tokens, mask):
    """Logits and parameter gradients of call(tokens, mask), `model`'s parameters by name."""
    model.zero_grad(set_to_none=True)
    logits = call(tokens, mask)
    (logits * torch.arange(1.0, 4.0)).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name,extra", [(n, {}) for n in ATTENTIONS] + [("softmax", {"fastrpb": "1d"})])
def test_compiled_encoder_matches_eager(name, extra):
    torch._dynamo.reset()
    model = _model(name, **extra)
    tokens, mask = _inputs()
    want_logits, want_grads = _run(model, model, tokens, mask)
    compiled = torch.compile(model, fullgraph=True, backend=BACKEND)
    t0 = time.perf_counter()
    got_logits, got_grads = _run(model, compiled, tokens, mask)
    print(f"{name}{extra or ''}: compile + first forward/backward {time.perf_counter() - t0:.1f} s")
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=1e-4, atol=1e-5, msg=n)
