"""The command line every example shares, and the set-up of its processes.

:func:`arguments` builds the flags every example takes, and :func:`parse`
checks them before any work (a bad value ends the run with a one-line error
and exit status 2, as argparse does), then joins the other processes when
``--distributed`` is given: before any other JAX call, as
``jax.distributed.initialize`` requires. :func:`run` ends an example cleanly
on the faults it expects and on Ctrl-C or SIGTERM (a preempted TPU VM or
Colab sends it): the checkpoint being written is finished, one line says
what is saved and how to resume, and the status is 130 or 143.
:func:`report` prints from process 0 alone.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import jax


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointError(RuntimeError):
    """``--resume`` found checkpoints but could read none of them."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run stops (a BaseException, as KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``spam.py: error: ...``, exit status 2.

    ``--help`` shows each flag's default.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


BASELINE = {  # --baseline: each choice, as --help explains it
    "auto": "train it, except with --quick",
    "on": "train it",
    "off": "skip it",
}


class _Given(argparse.Action):
    """Stores a flag's value and its name in ``given``: what the command line set."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*namespace.given, self.dest}


def arguments(
    name: str,
    description: str,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int = 3,
    members: int = 1,
) -> argparse.ArgumentParser:
    """The command line every example shares; examples add their own options.

    ``members`` is the default of ``--members``, the models in the ensemble.
    ``--baseline`` chooses whether the scikit-learn baseline (:mod:`baselines`)
    trains beside the model.
    """
    parser = _Parser(description=description)
    parser.set_defaults(given=set())
    parser.add_argument("--epochs", type=int, default=epochs, help="the most epochs to train")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="the global batch")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument(
        "--patience",
        type=int,
        default=patience,
        help="stop after this many epochs without a lower validation loss",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the model and the batches")
    parser.add_argument(
        "--members",
        type=int,
        default=members,
        action=_Given,
        help="models in the ensemble, seeded --seed, --seed + 1, ...; its logit is their mean",
    )
    parser.add_argument("--out", type=Path, default=Path("runs") / name, help="output folder")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest readable checkpoint",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --out that holds a run: its checkpoints are deleted",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast run (tests): one model unless --members is given, no baseline",
    )
    add_choice(parser, "--baseline", BASELINE, default="auto")
    hosts = parser.add_argument_group(
        "several processes",
        "one command per process; on a TPU pod, Slurm or Open MPI, --distributed finds the rest",
    )
    hosts.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() first"
    )
    hosts.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    hosts.add_argument("--num-processes", type=int, metavar="N", help="how many processes")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this one's, 0 to N - 1")
    return parser


def add_choice(
    parser: argparse.ArgumentParser, flag: str, choices: dict[str, str], default: str
) -> None:
    """A flag with named choices; ``--help`` says what each one is (``choices``: name to text)."""
    text = "; ".join(f"{name}: {what}" for name, what in choices.items())
    parser.add_argument(flag, choices=tuple(choices), default=default, help=text)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags, then joins the other processes if ``--distributed``.

    Call it first in ``main``: ``jax.distributed.initialize`` must run before
    any other JAX call, and a bad flag must stop the run before any work.
    """
    args = parser.parse_args(argv)
    positive = ("--epochs", args.epochs), ("--batch-size", args.batch_size)
    for flag, value in (*positive, ("--members", args.members)):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be positive and finite, got {args.lr:g}")
    for flag, value in (("--patience", args.patience), ("--seed", args.seed)):
        if value < 0:
            parser.error(f"{flag} must be 0 or more, got {value}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder (it is created if absent)")
    if args.resume and not has_checkpoint(args.out):
        parser.error(f"--resume: no checkpoint in {args.out}; leave out --resume to start anew")
    if not (args.resume or args.overwrite) and has_checkpoint(args.out):
        parser.error(
            f"--out {args.out} holds the checkpoints of an earlier run: add --resume to "
            "continue it, or --overwrite to start over (deletes them), or give another --out"
        )
    _check_processes(parser, args)
    if args.quick and "members" not in args.given:
        args.members = 1
    if args.distributed:
        # Processes on CPU exchange data through gloo: JAX's default, set if a JAX has none.
        if jax.config.jax_cpu_collectives_implementation is None:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        host = (args.coordinator_address or "").rpartition(":")[0]
        # A coordinator on a loopback address serves this machine only: it listens there
        # rather than on every interface, JAX's default.
        local = host in ("127.0.0.1", "localhost", "[::1]")
        try:
            jax.distributed.initialize(
                args.coordinator_address,
                args.num_processes,
                args.process_id,
                coordinator_bind_address=args.coordinator_address if local else None,
            )
        except ValueError as error:  # a value neither given nor found in a cluster
            parser.error(
                f"--distributed: {error} Outside a TPU pod, Slurm or Open MPI job, give "
                "--coordinator-address, --num-processes and --process-id"
            )
    return args


def _check_processes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [args.coordinator_address, args.num_processes, args.process_id]
    if not args.distributed and any(value is not None for value in given):
        parser.error("--coordinator-address, --num-processes and --process-id need --distributed")
    if args.coordinator_address is not None:
        host, _, port = args.coordinator_address.rpartition(":")
        if not (host and port.isdigit() and 0 < int(port) < 65536):
            parser.error(f"--coordinator-address must be HOST:PORT, got {args.coordinator_address}")
    if args.num_processes is not None and args.num_processes < 1:
        parser.error(f"--num-processes must be a positive integer, got {args.num_processes}")
    if args.process_id is not None and args.process_id < 0:
        parser.error(f"--process-id must be 0 or more, got {args.process_id}")
    if args.num_processes is not None and (args.process_id or 0) >= args.num_processes:
        parser.error(f"--process-id must be below --num-processes, got {args.process_id}")


def has_checkpoint(out: Path) -> bool:
    """Whether ``out``, or a folder below it (an ensemble member's), holds a checkpoint.

    Checkpoints are kept in ``OUT/checkpoints/<epoch>`` (:mod:`checkpoints`).
    """
    return any(step.name.isdigit() for step in out.glob("**/checkpoints/*"))


def report(message: str) -> None:
    """Prints ``message`` from process 0 only, so several processes print it once."""
    if jax.process_index() == 0:
        print(message, flush=True)


def run(main: Callable[[], Any]) -> None:
    """Runs an example's ``main``, ending the process cleanly on the faults it expects.

    A non-finite loss exits with its message and status 1; checkpoints none of
    which can be read, with an argparse-style one-line error and status 2.
    SIGINT (Ctrl-C) and SIGTERM stop the run between two steps, or once the
    checkpoint being written is complete; one line then says which checkpoint
    is saved and the command that resumes, and the status is ``128 + signal``
    (130, 143), as a shell reports a process the signal ended.
    """
    handlers = {number: signal.signal(number, _on_signal) for number in _SIGNALS}
    try:
        main()
    except NonFiniteLossError as error:
        raise SystemExit(f"training stopped: {error}") from None
    except CheckpointError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except Interrupted as stop:
        if jax.process_index() == 0:
            print(_interrupted(stop.signum), file=sys.stderr, flush=True)
        raise SystemExit(128 + stop.signum) from None
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_deferred: list[int] = []  # signals that arrived while a checkpoint was being written
_deferring = False
_saved: tuple[int, Path] | None = None  # (epoch, folder) of the newest complete checkpoint


def _on_signal(signum: int, frame: Any) -> None:
    if _deferring:
        _deferred.append(signum)
    else:
        raise Interrupted(signum)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends: a checkpoint is never cut off."""
    global _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
    if _deferred:
        raise Interrupted(_deferred[0])


def saved(epoch: int, folder: Path) -> None:
    """Records that the checkpoint after ``epoch`` is complete in ``folder``."""
    global _saved
    _saved = (epoch, folder)


def _interrupted(signum: int) -> str:
    """The one line of an interrupted run: what is saved, and the command to go on."""
    name = f"{Path(sys.argv[0]).name}: stopped by {signal.Signals(signum).name}"
    python = os.path.relpath(sys.executable)
    python = sys.executable if python.startswith("..") else python
    if _saved is None:
        command = shlex.join([python, *sys.argv])
        return f"{name} before an epoch was saved; start again with: {command}"
    argv = [a for a in sys.argv if a not in ("--resume", "--overwrite")]
    epoch, folder = _saved
    command = shlex.join([python, *argv, "--resume"])
    return f"{name}; the checkpoint after epoch {epoch} is in {folder}; resume with: {command}"
