"""One model in two languages: the Python attention registry (longattn.nn.encoder.ATTENTIONS)
against the C++ one (nn/attention.cpp, listed by `longattn attentions`): the same names in the
same order, descriptions, parameters and buffers (names and shapes), parameter counts and fixed
settings, for the same configurations."""
import json
import os
import subprocess

import pytest

from longattn.nn.encoder import ATTENTIONS, AttentionSpec, make_attention_core
from longattn.nn.yoso import YOSOAttention

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TOOL = os.path.join(os.environ.get("LONGATTN_BUILD", os.path.join(ROOT, "build")), "longattn")


def cpp_registry(dim, heads, max_len, seed):
    assert os.path.exists(TOOL), f"{TOOL} is not built (make build; LONGATTN_BUILD names another build)"
    out = subprocess.run([TOOL, "attentions", "--dim", str(dim), "--heads", str(heads),
                          "--max-len", str(max_len), "--seed", str(seed)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def settings(core):
    """The fixed settings `longattn attentions` reports, read from the Python module."""
    if not isinstance(core, YOSOAttention):
        return {}
    return {"hash_bits": core.hash_bits, "num_hashes": core.num_hashes, "hashing": core.hashing,
            "backward": core.backward, "conv_window": core.conv.kernel_size[0] if core.conv is not None else 0,
            "use_expectation": core.use_expectation}


def python_registry(dim, heads, max_len, seed):
    entries = []
    for name, (description, _) in ATTENTIONS.items():
        core = make_attention_core(AttentionSpec(name, dim, heads, max_len, seed=seed))
        entries.append({
            "name": name, "description": description,
            "parameters": {n: list(p.shape) for n, p in core.named_parameters()},
            "buffers": {n: list(b.shape) for n, b in core.named_buffers()},
            "parameter_count": sum(p.numel() for p in core.parameters()),
            "settings": settings(core),
        })
    return entries


@pytest.mark.parametrize("dim,heads,max_len", [(64, 2, 512), (32, 4, 100), (48, 3, 4096)])
def test_registries_agree(dim, heads, max_len):
    cpp = cpp_registry(dim, heads, max_len, seed=3)
    py = python_registry(dim, heads, max_len, seed=3)
    assert [e["name"] for e in py] == [e["name"] for e in cpp]
    for p, c in zip(py, cpp):
        assert p == c, p["name"]


def test_parameter_counts_are_not_all_zero():
    # The comparison above is only as strong as what it compares: the learned mechanisms have
    # parameters whose count depends on the configuration.
    counts = {e["name"]: e["parameter_count"] for e in cpp_registry(64, 2, 512, seed=0)}
    assert counts["softmax"] == 0 and counts["softmax-rpe"] == 2 * (2 * 512 - 1)
    assert counts["yoso-c"] == 2 * 33 and counts["shatter"] > 0

