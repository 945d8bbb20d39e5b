"""Runs an example as ``python examples/NAME.py ARGS`` would, sending it a signal at a point.

    python tests/interrupt_example.py NAME SIGNAL POINT ARGS...

``POINT`` is ``step:N`` (after the N-th training step of the run) or
``save:E`` (while the checkpoint after epoch E is being written: orbax has
started the write and not finished it). The signal is a real one, sent to
this process with ``os.kill``; what the example does with it is its own code.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    name, signame, point = sys.argv[1:4]
    number = signal.Signals[signame]
    kind, _, count = point.partition(":")
    sys.path.insert(0, str(EXAMPLES))
    import orbax.checkpoint as ocp
    import training

    def send() -> None:
        os.kill(os.getpid(), number)

    if kind == "step":
        train_batch, steps = training._train_batch, []

        def counted(*args, **kwargs):
            steps.append(1)
            if len(steps) == int(count) + 1:  # the N-th step has run
                send()
            return train_batch(*args, **kwargs)

        training._train_batch = counted
    elif kind == "save":
        save = ocp.CheckpointManager.save

        def interrupted_save(self, step, *args, **kwargs):
            started = save(self, step, *args, **kwargs)
            if step == int(count):
                send()  # the write runs in orbax's threads
            return started

        ocp.CheckpointManager.save = interrupted_save
    else:
        raise SystemExit(f"unknown point {point!r}: give step:N or save:E")
    script = str((EXAMPLES / f"{name}.py").relative_to(Path.cwd()))
    sys.argv = [script, *sys.argv[4:]]  # as python examples/NAME.py ARGS
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
