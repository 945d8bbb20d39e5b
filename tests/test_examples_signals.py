"""Ctrl-C and SIGTERM lose nothing: a run stopped at any point resumes to the same results.

Each test runs ``spam.py --quick`` and sends it a real signal, at a training
step, while a checkpoint is being written, or from outside once an epoch has
ended (``interrupt_example.py`` sends the first two from inside the process,
at the exact point). The run must end with one line, no traceback, the
status ``128 + signal`` and every completed epoch saved; the command that
line gives must then finish the run with the test metrics of a run never
stopped. Several processes each: marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("examples_compile_cache")]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env.pop("JAX_ENABLE_X64", None)
    return env


def _run(command):
    return subprocess.run(
        command, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300
    )


def _python_lines(stderr: str) -> list[str]:
    """stderr without XLA's C++ log lines (``E1205 06:39:35.56 ...``), which some jaxlib
    versions print when they load the tests' shared compilation cache."""
    return [line for line in stderr.strip().splitlines() if not _CPP_LOG.match(line)]


_CPP_LOG = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ ")


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    result = _run([sys.executable, "examples/spam.py", "--quick", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    return _metrics(out)


def _assert_stopped_cleanly(result, signum, saved_epoch):
    assert result.returncode == 128 + signum, result.stdout + result.stderr
    lines = _python_lines(result.stderr)
    assert len(lines) == 1, result.stderr  # one line: no traceback, no orbax errors
    name = signal.Signals(signum).name
    if saved_epoch is None:
        assert (
            f"spam.py: stopped by {name} before an epoch was saved; start again with: "
            in (lines[0])
        )
    else:
        assert (
            f"spam.py: stopped by {name}; the checkpoint after epoch {saved_epoch} is in"
            in (lines[0])
        )
        assert lines[0].endswith("--resume")
    return shlex.split(lines[0].split(" with: ", 1)[1])


def _assert_resumes_to(command, out, uninterrupted):
    result = _run(command)
    assert result.returncode == 0, result.stdout + result.stderr
    stderr = "\n".join(_python_lines(result.stderr))
    assert "Traceback" not in stderr and "WARNING" not in stderr, stderr
    got = _metrics(out)
    assert got["test"] == pytest.approx(uninterrupted["test"], rel=1e-6)
    for key, values in uninterrupted["history"].items():
        assert got["history"][key] == pytest.approx(values, rel=1e-6)


# Spam --quick: 3 epochs of 37 steps (2,352 training emails, batches of 64).
POINTS = [
    ("SIGINT", "step:5", None),  # in the first epoch: nothing saved yet
    ("SIGTERM", "step:50", 1),  # in the second epoch
    ("SIGINT", "save:2", 2),  # while the checkpoint after epoch 2 is written
    ("SIGTERM", "save:1", 1),
]


@pytest.mark.parametrize("signame, point, saved_epoch", POINTS)
def test_a_signal_at_a_point_loses_nothing(tmp_path, uninterrupted, signame, point, saved_epoch):
    out = tmp_path / "run"
    args = ["--quick", "--out", str(out)]
    result = _run([sys.executable, "tests/interrupt_example.py", "spam", signame, point, *args])
    command = _assert_stopped_cleanly(result, signal.Signals[signame], saved_epoch)
    saved = sorted(int(p.name) for p in (out / "checkpoints").glob("*") if p.name.isdigit())
    assert saved[-1:] == ([saved_epoch] if saved_epoch else [])
    assert command[1] == "examples/spam.py"
    _assert_resumes_to(command, out, uninterrupted)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_from_outside_after_the_first_epoch(tmp_path, uninterrupted, signum):
    out = tmp_path / "run"
    command = [sys.executable, "-u", "examples/spam.py", "--quick", "--out", str(out)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT
    )
    deadline = time.monotonic() + 300
    for line in process.stdout:
        if line.startswith("epoch   1:") or time.monotonic() > deadline:
            break
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if process.returncode == 0:  # the run ended before the signal came: nothing to resume
        pytest.skip("the run finished before the signal arrived")
    resume = _assert_stopped_cleanly(result, signum, saved_epoch=_last(out))
    _assert_resumes_to(resume, out, uninterrupted)


def _last(out: Path) -> int:
    return max(int(p.name) for p in (out / "checkpoints").glob("*") if p.name.isdigit())


def test_an_earlier_run_is_never_deleted_without_overwrite(tmp_path, uninterrupted):
    out = tmp_path / "run"
    spam = [sys.executable, "examples/spam.py", "--quick", "--out", str(out)]
    assert _run([*spam, "--epochs", "1"]).returncode == 0
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    again = _run(spam)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"spam.py: error: --out {out} holds the checkpoints of an earlier run: add --resume to "
        "continue it, or --overwrite to start over (deletes them), or give another --out"
    ]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    overwritten = _run([*spam, "--overwrite"])
    assert overwritten.returncode == 0, overwritten.stderr
    assert "resumed" not in overwritten.stdout
    assert _metrics(out)["test"] == pytest.approx(uninterrupted["test"], rel=1e-6)


def test_a_leftover_temporary_checkpoint_is_removed_silently(tmp_path, uninterrupted):
    out = tmp_path / "run"
    spam = [sys.executable, "examples/spam.py", "--quick", "--out", str(out)]
    assert _run([*spam, "--epochs", "2"]).returncode == 0
    # What a save cut off by a crash leaves: orbax's temporary folder of the next epoch.
    leftover = out / "checkpoints" / "3.orbax-checkpoint-tmp-1764900000000000"
    (leftover / "default").mkdir(parents=True)
    (leftover / "default" / "_METADATA").write_text("{}")
    result = _run([*spam, "--resume"])
    assert result.returncode == 0, result.stderr
    assert "resumed from the checkpoint after epoch 2" in result.stdout
    stderr = "\n".join(_python_lines(result.stderr))
    assert "Traceback" not in stderr and "WARNING" not in stderr, stderr
    assert not leftover.exists()
    assert _metrics(out)["test"] == pytest.approx(uninterrupted["test"], rel=1e-6)
