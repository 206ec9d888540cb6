"""The `longattn` tool never crashes, hangs or accepts nonsense (issue 12, part 4): every bad flag
value is a usage error (exit 2) naming the flag, the value and what is allowed; `--help` on every
subcommand lists every flag with its default; no C++ backtrace reaches the user."""
import os
import re
import subprocess

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.environ.get("LONGATTN_BUILD", os.path.join(ROOT, "build")), "longattn")
SUBCOMMANDS = ["info", "bench", "data", "train", "eval"]
TINY = "n_train=16,n_val=8,n_test=8,length=8"


def run(*args, timeout=60):
    if not os.path.exists(BIN):
        pytest.fail(f"the longattn tool is not built: {BIN} (run `make build`, or set LONGATTN_BUILD)")
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    return p.returncode, p.stdout, p.stderr


def assert_no_backtrace(text):
    for marker in ("Exception raised from", "frame #", "terminate called", "Aborted", "Segmentation"):
        assert marker not in text, text


def help_flags(text):
    """{flag: help text} from a --help listing ("  --name VALUE" then an indented help line)."""
    flags, name = {}, None
    for line in text.splitlines():
        m = re.match(r"^  --([a-z0-9-]+)( VALUE)?$", line)
        if m:
            name = m.group(1)
            flags[name] = {"valued": bool(m.group(2)), "help": ""}
        elif name and line.startswith("      "):
            flags[name]["help"] += line.strip()
    return flags


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_help_lists_every_flag_with_its_default(cmd):
    rc, out, err = run(cmd, "--help")
    assert rc == 0, err
    flags = help_flags(out)
    assert len(flags) >= 2, out
    for name, f in flags.items():
        if f["valued"]:
            assert re.search(r"default|required", f["help"]), f"--{name}: {f['help']!r}"
    # Every flag the listing names is accepted by the parser (not "unknown flag").
    for name, f in flags.items():
        if name == "help":
            continue
        rc, _, err = run(cmd, f"--{name}", "x", "--no-such-flag") if f["valued"] else run(cmd, f"--{name}", "--no-such-flag")
        assert "unknown flag --no-such-flag" in err, err


def test_top_level_usage_and_unknown_command():
    rc, out, _ = run("--help")
    assert rc == 0 and all(c in out for c in SUBCOMMANDS)
    rc, _, err = run("frobnicate")
    assert rc == 2 and "unknown command 'frobnicate'" in err


# (subcommand args, flag, value, what the message allows)
BAD = [
    (["train", "--heads", "0"], "heads", "0", "an integer in [1, "),
    (["train", "--heads", "-2"], "heads", "-2", "an integer in [1, "),
    (["train", "--layers", "-1"], "layers", "-1", "an integer in [1, 1024]"),
    (["train", "--dim", "0"], "dim", "0", "an integer in [1, "),
    (["train", "--dim", "6", "--heads", "4"], "dim", "6", "a multiple of --heads (4)"),
    (["train", "--ffn", "0"], "ffn", "0", "an integer in [1, "),
    (["train", "--warmup", "-3"], "warmup", "-3", "an integer >= 0"),
    (["train", "--clip", "-1"], "clip", "-1", "a finite number >= 0"),
    (["train", "--eval-every", "-1"], "eval-every", "-1", "an integer >= 0"),
    (["train", "--log-every", "0"], "log-every", "0", "an integer >= 1"),
    (["train", "--threads", "-1"], "threads", "-1", "an integer in [0, 1024]"),
    (["train", "--batch", "0"], "batch", "0", "an integer in [1, "),
    (["train", "--batch", "-1"], "batch", "-1", "an integer in [1, "),
    (["train", "--steps", "abc"], "steps", "abc", "an integer >= 1"),
    (["train", "--steps", "0"], "steps", "0", "an integer >= 1"),
    (["train", "--steps", "99999999999999999999999"], "steps", "99999999999999999999999", "an integer >= 1"),
    (["train", "--lr", "nan"], "lr", "nan", "a finite number > 0"),
    (["train", "--lr", "inf"], "lr", "inf", "a finite number > 0"),
    (["train", "--lr", "0"], "lr", "0", "a finite number > 0"),
    (["train", "--lr", "1e-3x"], "lr", "1e-3x", "a finite number > 0"),
    (["train", "--dropout", "1"], "dropout", "1", "a finite number in [0, 1)"),
    (["train", "--dropout", "-0.1"], "dropout", "-0.1", "a finite number in [0, 1)"),
    (["train", "--weight-decay", "-1"], "weight-decay", "-1", "a finite number >= 0"),
    (["train", "--bucket", "0"], "bucket", "0", "an integer in [1, "),
    (["train", "--seed", "-1"], "seed", "-1", "an integer in [0, 2^64 - 1]"),
    (["train", "--seed", "18446744073709551616"], "seed", "18446744073709551616", "[0, 2^64 - 1]"),
    (["train", "--stop-after", "-2"], "stop-after", "-2", "an integer >= -1"),
    (["train", "--eval-limit", "-1", "--task", "detect"], "eval-limit", "-1", "an integer >= 0"),
    (["train", "--attention", "magic"], "attention", "magic", "softmax"),
    (["train", "--fastrpb", "3d"], "fastrpb", "3d", "none, 1d, 2d"),
    (["train", "--positions", "sin"], "positions", "sin", "learned, none"),
    (["train", "--pooling", "max"], "pooling", "max", "mean, cls"),
    (["train", "--device", "banana"], "device", "banana", "(cpu, cuda, cuda:1, xpu, mps)"),
    (["train", "--device", "cuda:7"] if not torch.cuda.is_available() else ["train", "--device", "cuda:4096"],
     "device", "cuda:7" if not torch.cuda.is_available() else "cuda:4096", "no such device in this process"),
    (["train", "--task", "detect", "--task-options", TINY, "--fastrpb", "2d"], "fastrpb", "2d", "none, 1d"),
    (["eval", "--checkpoint", "x.ckpt", "--batch", "0"], "batch", "0", "an integer in [1, "),
    (["eval", "--checkpoint", "x.ckpt", "--batch", "-1"], "batch", "-1", "an integer in [1, "),
    (["eval", "--checkpoint", "x.ckpt", "--threads", "-1"], "threads", "-1", "an integer in [0, 1024]"),
    (["bench", "--threads", "0"], "threads", "0", "an integer in [1, 1024]"),
    (["bench", "--reps", "0"], "reps", "0", "an integer in [1, "),
    (["bench", "--n", "64,abc"], "n", "64,abc", "each an integer >= 1"),
    (["bench", "--causal", "2"], "causal", "2", "each an integer in [0, 1]"),
    (["bench", "--dtype", "half"], "dtype", "half", "float32, float64"),
    (["bench", "--budget", "-1"], "budget", "-1", "a finite number in (0, "),
    (["bench", "--suite", "nope"], "suite", "nope", "allowed: "),
    (["info", "--threads", "0"], "threads", "0", "an integer in [1, 1024]"),
]


@pytest.mark.parametrize("args,flag,value,allowed", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_flag_values_name_the_flag_the_value_and_what_is_allowed(args, flag, value, allowed):
    rc, out, err = run(*args)
    assert rc == 2, (rc, out, err)
    assert f"--{flag}" in err and f"'{value}'" in err and allowed in err, err
    assert f"longattn {args[0]} --help" in err, err
    assert_no_backtrace(err)


@pytest.mark.parametrize("args,message", [
    (["train", "--steps"], "flag --steps needs a value"),
    (["train", "--quiet=1"], "flag --quiet takes no value"),
    (["train", "--steps", "1", "--steps", "2"], "flag --steps given twice"),
    (["train", "stray"], "unexpected argument 'stray'"),
    (["train", "--frobnicate", "1"], "unknown flag --frobnicate for 'train'; known: "),
    (["train", "--steps", "1"], "flag --task is required"),
    (["eval", "--task", "detect"], "flag --checkpoint is required"),
    (["data", "--task", "detect"], "flag --out is required"),
    (["train", "--resume", "--task", "detect"], "flag --resume needs --out"),
])
def test_usage_errors(args, message):
    rc, _, err = run(*args)
    assert rc == 2 and message in err, err
    assert_no_backtrace(err)


def test_runtime_errors_are_one_line_without_backtrace(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    rc, _, err = run("eval", "--checkpoint", str(bad), "--task", "detect", "--task-options", TINY)
    assert rc == 1 and str(bad) in err, err
    assert_no_backtrace(err)
    assert len(err.strip().splitlines()) == 1, err
    rc, _, err = run("train", "--task", "nosuchtask")
    assert rc == 1 and "nosuchtask" in err and "detect" in err, err
    assert_no_backtrace(err)


def test_huge_vocab_in_a_data_header_names_the_file(tmp_path):
    rc, out, err = run("data", "--task", "detect", "--task-options", TINY, "--out", str(tmp_path))
    assert rc == 0, err
    path = tmp_path / "train.tsv"
    text = path.read_text()
    header, rest = text.split("\n", 1)
    header = re.sub(r"vocab_size=\d+", "vocab_size=99999999999", header)
    path.write_text(header + "\n" + rest)
    rc, _, err = run("train", "--task", "files", "--task-options", f"dir={tmp_path}", "--steps", "1")
    assert rc == 1, err
    assert str(path) in err and "vocab_size=99999999999" in err and "exceeds the limit 16777216" in err, err
    assert_no_backtrace(err)


def test_valid_flags_still_train_and_evaluate(tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = run("train", "--task", "detect", "--task-options", TINY, "--steps", "2", "--batch", "4",
                          "--layers", "1", "--dim", "8", "--heads", "2", "--ffn", "8", "--eval-every", "0",
                          "--warmup", "0", "--clip", "0", "--threads", "1", "--seed", "18446744073709551615",
                          "--quiet", "--out", str(out), timeout=300)
    assert rc == 0, err
    assert "test accuracy" in stdout
    rc, stdout, err = run("eval", "--checkpoint", str(out / "best.ckpt"), "--task", "detect",
                          "--task-options", TINY, "--batch", "3", "--threads", "1", timeout=300)
    assert rc == 0, err
    assert "test accuracy" in stdout and "8 examples" in stdout


# ----------------------------------------------------------------------------- flag fuzzing

NASTY = ["0", "-1", "1", "2", "3", "8", "abc", "nan", "inf", "-inf", "1e400", "", "99999999999999999999",
         "0x10", "1.5", "-0", "+2", " 3", "softmax", "yoso", "2d", "1d", "none", "cls", "--quiet"]
TRAIN_BASE = {"task": "detect", "task-options": TINY, "steps": "1", "batch": "2", "dim": "8", "heads": "2",
              "layers": "1", "ffn": "8", "eval-every": "0", "threads": "1"}
TRAIN_FLAGS = ["attention", "fastrpb", "layers", "dim", "heads", "ffn", "dropout", "positions", "pooling", "steps",
               "batch", "bucket", "lr", "warmup", "weight-decay", "clip", "eval-every", "log-every", "threads",
               "seed", "stop-after", "eval-limit"]


@settings(max_examples=int(os.environ.get("FUZZ_CLI_EXAMPLES", "12")))
@given(overrides=st.dictionaries(st.sampled_from(TRAIN_FLAGS), st.sampled_from(NASTY), min_size=1, max_size=3))
def test_train_flag_fuzz_never_crashes_or_hangs(overrides):
    """Any values for any flags: a run (0), a runtime error (1) or a usage error (2), never a
    signal, a hang or a backtrace. Sizes stay small enough that every accepted run is quick."""
    flags = dict(TRAIN_BASE, **overrides)
    args = ["train", "--quiet"]
    for k, v in flags.items():
        args += [f"--{k}", v]
    rc, out, err = run(*args, timeout=120)
    assert rc in (0, 1, 2), (args, rc, err)
    assert_no_backtrace(err)
    if rc == 2:
        assert "--" in err and "longattn train --help" in err, err
