"""An example as several processes on one machine, as a cluster of hosts would run it.

Each example, ``--quick --distributed``, runs as two processes with two
simulated CPU devices each, a coordinator on a free port of 127.0.0.1 and gloo
collectives between them, and gives what one process with four devices gives.
The spam run is also killed and resumed. Waits are bounded, and every process
started here is ended by its id, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("examples_compile_cache")]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# One epoch of sentiment and segmentation; the spam runs are --quick's three epochs, and the
# two-process one is also the run the killed run must resume to.
ARGS = {"spam": (), "sentiment": ("--epochs", "1"), "segmentation": ("--epochs", "1")}
TIMEOUT = 180  # seconds for one run; a run takes about 30 on 2 cores


def environment(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.pop("JAX_ENABLE_X64", None)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def two_processes(out: Path, *args: str, example: str = "spam"):
    """``<example>.py --quick`` as processes 0 and 1; their output goes to ``out``-0.log, -1.log."""
    address = f"127.0.0.1:{free_port()}"
    started = []
    try:
        for i in range(2):
            script = EXAMPLES / f"{example}.py"
            command = [sys.executable, str(script), "--quick", "--out", str(out), *args]
            command += ["--distributed", "--coordinator-address", address]
            command += ["--num-processes", "2", "--process-id", str(i)]
            with out.with_name(f"{out.name}-{i}.log").open("w") as log:
                started.append(
                    subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, env=environment(2), cwd=ROOT
                    )
                )
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def logs(out: Path) -> list[str]:
    return [out.with_name(f"{out.name}-{i}.log").read_text() for i in range(2)]


def run_two_processes(out: Path, *args: str, example: str = "spam") -> list[str]:
    """Runs both processes to the end; returns their output."""
    with two_processes(out, *args, example=example) as started:
        deadline = time.monotonic() + TIMEOUT
        for process in started:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
    assert [process.returncode for process in started] == [0, 0], "\n".join(logs(out))
    return logs(out)


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def one_process(out: Path, example: str, *args: str) -> dict:
    """The same run as one process with four devices."""
    command = [sys.executable, str(EXAMPLES / f"{example}.py"), "--quick", "--out", str(out)]
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=environment(4),
        cwd=ROOT,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return read_metrics(out)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("two-processes") / "run"
    return out, run_two_processes(out)


@pytest.mark.parametrize("example", ARGS)
def test_two_processes_train_as_one_process_with_four_devices(tmp_path, example, uninterrupted):
    want = one_process(tmp_path / "one", example, *ARGS[example])
    if example == "spam":
        out, (first, second) = uninterrupted
    else:
        out = tmp_path / "two"
        first, second = run_two_processes(out, *ARGS[example], example=example)
    got = read_metrics(out)
    assert (got["devices"], got["processes"]) == ("4 x cpu", 2)
    # Each process fed its half of every batch: the same training, up to rounding. The
    # Lovász hinge's validation loss alone, a sum of sorted errors, rounds differently (3e-6).
    assert got["test"] == pytest.approx(want["test"], abs=1e-6)
    for key, values in want["history"].items():
        lovasz_loss = example == "segmentation" and key == "val_loss"
        assert got["history"][key] == pytest.approx(values, abs=1e-5 if lovasz_loss else 1e-6)
    # process 0 alone prints and writes the outputs
    score = "iou" if example == "segmentation" else "roc_auc"
    assert "epoch   1:" in first and score in first
    assert "epoch" not in second and score not in second
    for plot in ("loss_curves.png", "roc_pr.png" if score == "roc_auc" else "overlays.png"):
        assert (out / plot).stat().st_size > 1000


def test_a_killed_run_resumes_where_it_stopped(tmp_path, uninterrupted):
    out = tmp_path / "run"
    first_checkpoint = out / "checkpoints" / "1"  # orbax renames it into place when complete
    with two_processes(out) as started:
        deadline = time.monotonic() + TIMEOUT
        while not first_checkpoint.is_dir():
            assert all(process.poll() is None for process in started), "\n".join(logs(out))
            assert time.monotonic() < deadline, "no checkpoint written in time"
            time.sleep(0.05)
        os.kill(started[1].pid, signal.SIGKILL)  # a host fails; the run is lost with it
    assert not (out / "metrics.json").exists()

    first, _ = run_two_processes(out, "--resume")
    assert "resumed from the checkpoint after epoch" in first
    assert "epoch   1:" not in first  # the saved epoch is not run again
    want, got = read_metrics(uninterrupted[0]), read_metrics(out)
    assert got["test"] == pytest.approx(want["test"], abs=1e-6)
    for key, values in want["history"].items():
        assert got["history"][key] == pytest.approx(values, abs=1e-6)
