"""Every operator on any device (#17): the reference path behind whole models, the device report,
and the trainer's --device. The operators' own reference tests are test_reference_*.py."""
import json
import os
import subprocess

import pytest
import torch

import longattn
from longattn.nn import ATTENTIONS, Classifier, ModelConfig

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TOOL = os.path.join(ROOT, "build", "longattn")
PUBLIC_OPERATORS = ["softmax_attention", "kernelized_attention", "kernelized_rpe_attention", "feature_map",
                    "toeplitz_matmul", "toeplitz_matmul_2d", "yoso_attention", "yoso_expectation",
                    "shatter_attention", "dropout"]


def tiny(attention, **kw):
    c = dict(vocab_size=16, num_classes=4, max_len=24, layers=2, dim=16, heads=2, ffn=32, dropout=0.1,
             attention=attention)
    c.update(kw)
    return ModelConfig(**c)


def batch(n=3, length=24, generator=None):
    tokens = torch.randint(1, 16, (n, length), generator=generator)
    lengths = torch.tensor([length, length - 5, 1][:n])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return tokens.masked_fill(~mask, 0), mask, torch.randint(0, 4, (n,), generator=generator)


def test_info_says_where_each_operator_runs():
    info = longattn.info()
    assert "reference" in info["paths"] and "LONGATTN_PATH" in info["paths"]
    for op in PUBLIC_OPERATORS:
        assert info[f"device.{op}"] == ("CPU fused kernel + reference path; CUDA, XPU, MPS, other devices: "
                                        "reference path"), (op, info[f"device.{op}"])


def test_bad_LONGATTN_PATH_names_the_variable_and_the_values(monkeypatch):
    monkeypatch.setenv("LONGATTN_PATH", "fast")
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(RuntimeError, match=r"LONGATTN_PATH: must be 'fused' or 'reference' \(or unset\), got 'fast'"):
        longattn.softmax_attention(q, q, q)


@pytest.mark.parametrize("fastrpb", ["none", "1d"])
@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_models_hold_no_tensor_off_their_device(attention, fastrpb):
    # A module that made a tensor on the CPU inside forward (an index, a partition, a mask) would fail
    # on any other device. The meta device needs no hardware: every operator's Meta kernel answers, and
    # a stray CPU tensor meets a meta one in an operator's device check.
    torch.manual_seed(0)
    model = Classifier(tiny(attention, fastrpb=fastrpb)).to("meta")
    tokens, mask, labels = batch(generator=torch.Generator().manual_seed(1))
    logits = model(tokens.to("meta"), mask.to("meta"))
    assert logits.device.type == "meta" and logits.shape == (3, 4)
    torch.nn.functional.cross_entropy(logits, labels.to("meta")).backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters() if p.requires_grad)


def _logits_and_grads(model, tokens, mask, labels):
    model.zero_grad()
    logits = model(tokens, mask)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    return logits.detach().clone(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("fastrpb", ["none", "1d"])
@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_a_whole_model_on_the_reference_path_matches_the_fused_kernels(attention, fastrpb, monkeypatch):
    # LONGATTN_PATH=reference sends every operator call of the model to the reference path (the code a
    # GPU runs): a float64 model in training mode (dropout and YOSO's fresh hashes included: the same
    # seeds must give the same bits) gives the same logits and parameter gradients as the fused kernels.
    torch.manual_seed(0)
    model = Classifier(tiny(attention, fastrpb=fastrpb)).double()
    tokens, mask, labels = batch(generator=torch.Generator().manual_seed(1))

    def reseed():  # dropout draws its seeds from torch's generator, YOSO layers from their own
        torch.manual_seed(5)
        for m in model.modules():
            if hasattr(m, "_generator"):
                m._generator.manual_seed(m.seed)

    reseed()
    fused = _logits_and_grads(model, tokens, mask, labels)
    reseed()
    monkeypatch.setenv("LONGATTN_PATH", "reference")
    reference = _logits_and_grads(model, tokens, mask, labels)
    torch.testing.assert_close(reference[0], fused[0], rtol=1e-9, atol=1e-11)
    assert len(reference[1]) == len(fused[1])
    for g_ref, g in zip(reference[1], fused[1]):
        torch.testing.assert_close(g_ref, g, rtol=1e-7, atol=1e-10)


def _train(tmp, attention, env=None):
    # The detect toy at a tiny size: four optimiser steps and an evaluation, logged to metrics.jsonl.
    args = [TOOL, "train", "--task", "detect", "--task-options", "n_train=64 n_val=32 n_test=32 length=24",
            "--attention", attention, "--layers", "1", "--dim", "16", "--heads", "2", "--ffn", "32", "--steps", "4",
            "--batch", "8", "--log-every", "1", "--eval-every", "0", "--threads", "1", "--quiet", "--out", str(tmp)]
    out = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=300)
    assert out.returncode == 0, out.stderr
    with open(os.path.join(tmp, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.skipif(not os.path.exists(TOOL), reason="build/longattn not built")
@pytest.mark.parametrize("attention", ["softmax-rpe", "sikf", "shatter", "yoso", "kernelized-rpe"])
def test_the_trainer_on_the_reference_path_follows_the_fused_run(attention, tmp_path):
    # The C++ modules and trainer with every operator on the reference path (LONGATTN_PATH, the code
    # a GPU runs) against the fused run: float32, four optimiser steps, so the two round differently
    # and no more.
    fused = _train(tmp_path / "fused", attention)
    reference = _train(tmp_path / "reference", attention, env={"LONGATTN_PATH": "reference"})
    assert [r["step"] for r in reference] == [r["step"] for r in fused] and len(fused) >= 5
    for r, f in zip(reference, fused):
        assert r["loss"] == pytest.approx(f["loss"], rel=2e-4, abs=1e-5), (r, f)


@pytest.mark.skipif(not os.path.exists(TOOL), reason="build/longattn not built")
def test_the_trainer_refuses_a_device_it_cannot_use():
    out = subprocess.run([TOOL, "train", "--task", "detect", "--device", "cuda:99"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "--device 'cuda:99': torch sees no such device in this process" in out.stderr


def _every_operator_once():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 4, generator=g) for _ in range(3))
    omega = longattn.random_features(4, 4, seed=1)
    phi = torch.rand(1, 2, 8, 3, generator=g) + 0.1
    longattn.softmax_attention(q, k, v, causal=True, rel_bias=torch.randn(2, 15, generator=g))
    longattn.kernelized_attention(q, k, v, feature_map="favor", projection=omega)
    longattn.kernelized_attention(q, k, v, feature_map="elu", rel_bias=torch.randn(2, 15, generator=g))
    longattn.kernelized_rpe_attention(phi, phi, v, torch.randn(2, 15, generator=g))
    longattn.feature_map(q, feature_map="sikf")
    longattn.toeplitz_matmul(torch.randn(2, 15, generator=g), v, causal=True)
    longattn.toeplitz_matmul_2d(torch.randn(2, 3, generator=g), torch.randn(2, 7, generator=g), v, height=2, width=4)
    longattn.yoso_attention(q, k, v, hash_bits=2, num_hashes=2, seed=1)
    longattn.yoso_expectation(q, k, v, hash_bits=2)
    longattn.shatter_attention(q[:, 0], k[:, 0], v, torch.softmax(torch.randn(2, 15, generator=g), 0))
    longattn.dropout(q, 0.5, 3)


def test_LONGATTN_PATH_reference_reaches_every_operator(monkeypatch):
    # The fused path calls the internal operators (longattn::_<op>_...) through the dispatcher; the
    # reference path on CPU calls its functions directly. The profiler sees which ran.
    from torch.profiler import profile

    def internal_ops():
        with profile() as p:
            _every_operator_once()
        return {e.name for e in p.events() if e.name.startswith("longattn::_")}

    fused = internal_ops()
    assert {"longattn::_softmax_attention_forward", "longattn::_toeplitz_matmul_2d_forward",
            "longattn::_dropout_apply", "longattn::_yoso_forward"} <= fused, fused
    monkeypatch.setenv("LONGATTN_PATH", "reference")
    assert internal_ops() == set()
