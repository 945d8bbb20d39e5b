"""Checkpoints: what a run saves after each epoch, and ``--resume``.

:class:`TrainState` is what each checkpoint holds (orbax, one unnamed item,
every process taking part in each save). :func:`resume` continues from the
newest checkpoint that can be read; one that cannot is skipped with a line
saying why, and the run resumes from the newest one that can.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import cli
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class History:
    """The per-epoch figures of the epochs that ran: mean training loss, validation loss, score."""

    train_loss: tuple[float, ...] = ()
    val_loss: tuple[float, ...] = ()
    val_score: tuple[float, ...] = ()

    def add(self, train_loss: float, val_loss: float, val_score: float) -> History:
        """This history with one more epoch."""
        return History(
            (*self.train_loss, train_loss),
            (*self.val_loss, val_loss),
            (*self.val_score, val_score),
        )


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where training stands after ``epoch`` epochs: what each checkpoint holds."""

    params: nnx.State
    opt_state: optax.OptState
    best_params: nnx.State  # those of the epoch with the lowest validation loss
    epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    bad_epochs: int = 0  # epochs since the validation loss last improved
    history: History = dataclasses.field(default_factory=History)


def manager(directory: Path) -> ocp.CheckpointManager:
    """The checkpoints of one run: the two newest epochs are kept.

    A temporary folder that a save cut off by a crash left behind is removed
    here, by name: orbax's own ``cleanup_tmp_directories`` warns about every
    complete checkpoint in some versions (0.11).
    """
    if jax.process_index() == 0:
        for leftover in directory.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(leftover, ignore_errors=True)
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    # One unnamed item, declared here: orbax would otherwise infer the layout from the
    # first checkpoint it reads, and a damaged one would make it misread the rest.
    handler = ocp.StandardCheckpointHandler()
    return ocp.CheckpointManager(directory.resolve(), options=options, item_handlers=handler)


def save(manager: ocp.CheckpointManager, state: TrainState, epochs: int) -> None:
    """Saves ``state`` as the checkpoint of its epoch, and waits until it is written.

    SIGINT and SIGTERM wait until it is complete (:func:`cli.signals_deferred`).
    """
    with cli.signals_deferred():
        manager.save(state.epoch, args=ocp.args.StandardSave(_to_checkpoint(state, epochs)))
        manager.wait_until_finished()
        cli.saved(state.epoch, manager.directory)


def _to_checkpoint(state: TrainState, epochs: int) -> dict[str, Any]:
    """The state as a checkpoint stores it: named arrays, the history NaN-padded to ``epochs``."""

    def padded(values: tuple[float, ...]) -> np.ndarray:
        return np.concatenate(
            [np.asarray(values, np.float64), np.full(epochs - len(values), np.nan)]
        )

    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "best_params": state.best_params,
        "epoch": np.asarray(state.epoch, np.int32),
        "step": np.asarray(state.step, np.int32),
        "best_val_loss": np.asarray(state.best_val_loss, np.float64),
        "bad_epochs": np.asarray(state.bad_epochs, np.int32),
        **{f.name: padded(getattr(state.history, f.name)) for f in dataclasses.fields(History)},
    }


def _from_checkpoint(saved: dict[str, Any], epochs: int) -> TrainState:
    """The state a checkpoint holds, its history cut to this run's ``epochs``."""
    ran = min(int(saved["epoch"]), epochs)
    history = {
        f.name: tuple(np.asarray(saved[f.name])[:ran].tolist()) for f in dataclasses.fields(History)
    }
    return TrainState(
        params=saved["params"],
        opt_state=saved["opt_state"],
        best_params=saved["best_params"],
        epoch=int(saved["epoch"]),
        step=int(saved["step"]),
        best_val_loss=float(saved["best_val_loss"]),
        bad_epochs=int(saved["bad_epochs"]),
        history=History(**history),
    )


def resume(
    manager: ocp.CheckpointManager,
    state: TrainState,
    mesh: jax.sharding.Mesh,
    args: argparse.Namespace,
) -> TrainState:
    """``--resume``: the newest readable checkpoint's state; else ``state``.

    Without ``--resume``, an earlier run's checkpoints are there only with
    ``--overwrite`` (:func:`cli.parse` refuses the rest), which deletes them.
    """
    if manager.latest_step() is None:
        return state
    if not args.resume:
        for step in list(manager.all_steps()):
            manager.delete(step)
        return state
    saved = _from_checkpoint(_restore(manager, _to_checkpoint(state, args.epochs)), args.epochs)
    replicated = NamedSharding(mesh, P())
    params, opt_state = jax.device_put((saved.params, saved.opt_state), replicated)
    cli.report(f"resumed from the checkpoint after epoch {saved.epoch}")
    cli.saved(saved.epoch, manager.directory)
    return dataclasses.replace(saved, params=params, opt_state=opt_state)


def _restore(manager: ocp.CheckpointManager, template: dict[str, Any]) -> dict[str, Any]:
    """The newest checkpoint that can be read; each newer one is reported in a line, then deleted.

    Deleted only once an older one was read, so that its epoch is saved again.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    unreadable = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        # A damaged checkpoint fails in any of orbax's layers, each with its own error.
        except Exception as error:
            where = f"{manager.directory}/{step}"
            cli.report(f"skipped the checkpoint after epoch {step} ({where}): {_reason(error)}")
            unreadable.append(step)
            continue
        for bad in unreadable:
            manager.delete(bad)
        return state
    raise cli.CheckpointError(f"--resume: no checkpoint in {manager.directory} can be read")


def _reason(error: BaseException) -> str:
    """The innermost cause of ``error``, on one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    message = str(error.args[0]) if len(error.args) == 1 else str(error)
    return f"{type(error).__name__}: {' '.join(message.split())[:300]}"
