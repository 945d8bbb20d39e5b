"""The training loop the three examples share: sharded training with a bcejax loss.

* Devices: a 1-D ``jax.sharding`` mesh over every device of every process,
  axis ``"data"``; each batch is split across it and the parameters are
  replicated, so the same code runs on one CPU, several GPUs, a TPU slice or
  several hosts. Every process holds the whole data set and feeds only its own
  devices' rows of each batch; the evaluation logits come back replicated, so
  every process sees all of them. A batch that does not split evenly is
  padded and the padding masked with ``where``.
* :func:`fit` runs an optax optimizer in a jitted step, with tqdm progress
  bars, a validation pass per epoch with ``bcejax.metrics``, early stopping on
  the validation loss (the best parameters are kept) and a checkpoint every
  epoch (:mod:`checkpoints`, which ``--resume`` continues from). It returns a
  :class:`FitResult`: the state after the last epoch (parameters, best
  parameters, history) and the mesh and steps that evaluate it.
* A NaN or infinite training loss stops the run with the step and the likely
  causes.

The command line is :mod:`cli`'s; the evaluation, plots and ``metrics.json``
are :mod:`evaluation`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import checkpoints
import cli
import jax
import jax.numpy as jnp
import numpy as np
import optax
from checkpoints import TrainState
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from bcejax import metrics

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
    """An example's model, loss and data, as the shared loop needs them.

    ``loss`` is a bcejax loss callable, called as ``loss(logits, labels,
    where=mask)``; ``splits`` holds ``"train"``, ``"val"`` and ``"test"``
    dicts of NumPy arrays with ``"x"`` (an array, or a dict of arrays with
    the examples along their first axis) and ``"y"``; ``kind`` is
    ``"classifier"`` (one logit per example) or ``"segmentation"``;
    ``augment(x, rng)``, if given, transforms each training batch's inputs.
    """

    name: str
    model: nnx.Module
    loss: Callable[..., jax.Array]
    splits: dict[str, Batch]
    kind: str = "classifier"
    loss_name: str = ""
    augment: Callable[[Any, np.random.Generator], Any] | None = None


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Where and how one model trains: the mesh, the global batch size and the jitted steps."""

    mesh: jax.sharding.Mesh
    batch_size: int
    train_step: Callable[..., Any]
    eval_step: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns: the state after the last epoch and what evaluating it needs."""

    state: TrainState
    trainer: Trainer
    out: Path
    seconds: float  # the wall time of the epochs


# ---------------------------------------------------------------------------
# Devices and batches.
# ---------------------------------------------------------------------------


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device (every process's after ``jax.distributed.initialize``)."""
    # Auto axes: XLA places the replicated parameters' all-reduces and gathers itself.
    auto = (jax.sharding.AxisType.Auto,)
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=auto)


def global_batch_size(requested: int) -> int:
    """The batch :func:`fit` trains with: ``requested`` rounded up to a multiple of the devices.

    Every device then gets as many rows. A learning-rate schedule counts its steps with it.
    """
    devices = jax.device_count()
    return -(-requested // devices) * devices


def _batches(size: int, batch_size: int, rng: np.random.Generator | None):
    """Index arrays of at most ``batch_size``; shuffled when ``rng`` is given."""
    order = np.arange(size) if rng is None else rng.permutation(size)
    return [order[i : i + batch_size] for i in range(0, size, batch_size)]


def _device_batch(mesh, data: Batch, index: np.ndarray, batch_size: int):
    """``(x, y, mask)`` padded to ``batch_size`` and sharded over the mesh's data axis."""
    pad = batch_size - index.size
    mask = np.concatenate([np.ones(index.size, bool), np.zeros(pad, bool)])
    index = np.concatenate([index, np.zeros(pad, index.dtype)])
    sharding = NamedSharding(mesh, P("data"))

    # Called for this process's devices only: each process feeds its own rows.
    def put(array):
        array = np.asarray(array)
        shape = (batch_size, *array.shape[1:])
        return jax.make_array_from_callback(shape, sharding, lambda rows: array[rows])

    x = jax.tree.map(lambda array: put(array[index]), data["x"])  # an array or a dict of them
    return x, put(data["y"][index]), put(mask)


def _train_batch(task: Task, trainer: Trainer, index: np.ndarray, rng: np.random.Generator):
    """The training rows ``index``, augmented if the task says so, as a sharded ``(x, y, mask)``."""
    train = task.splits["train"]
    x = jax.tree.map(lambda array: array[index], train["x"])
    if task.augment is not None:
        x = task.augment(x, rng)
    batch = {"x": x, "y": train["y"][index]}
    return _device_batch(trainer.mesh, batch, np.arange(index.size), trainer.batch_size)


# ---------------------------------------------------------------------------
# The jitted steps.
# ---------------------------------------------------------------------------


def _mask_like(mask, logits):
    """The per-example mask broadcast to the logits (per pixel for segmentation)."""
    return mask.reshape(mask.shape + (1,) * (logits.ndim - mask.ndim))


def _steps(graphdef, loss_fn, optimizer, mesh):
    def forward(params, x):
        return nnx.merge(graphdef, params)(x)

    def loss_of(params, x, y, mask):
        logits = forward(params, x)
        where = jnp.broadcast_to(_mask_like(mask, logits), logits.shape)
        return loss_fn(logits, y, where=where)

    @jax.jit
    def train_step(params, opt_state, x, y, mask):
        loss, grads = jax.value_and_grad(loss_of)(params, x, y, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # Replicated logits: every process can read all of them, on one host or several.
    @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, P()))
    def eval_step(params, x, y, mask):
        logits = forward(params, x)
        where = jnp.broadcast_to(_mask_like(mask, logits), logits.shape)
        return loss_fn(logits, y, where=where), logits

    return train_step, eval_step


def _setup(
    task: Task, optimizer: optax.GradientTransformation, batch_size: int
) -> tuple[Trainer, TrainState]:
    """The mesh, the jitted steps and the initial state, parameters replicated on every device."""
    mesh = make_mesh()
    graphdef, params = nnx.split(task.model)
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(optimizer.init(params), replicated)
    train_step, eval_step = _steps(graphdef, task.loss, optimizer, mesh)
    trainer = Trainer(mesh, global_batch_size(batch_size), train_step, eval_step)
    return trainer, TrainState(params, opt_state, best_params=params)


def predict(trainer: Trainer, params: nnx.State, data: Batch) -> tuple[float, np.ndarray]:
    """``(mean loss, logits)`` over a split, in order (padding dropped)."""
    losses, weights, outputs = [], [], []
    for index in _batches(len(data["y"]), trainer.batch_size, None):
        x, y, mask = _device_batch(trainer.mesh, data, index, trainer.batch_size)
        loss, logits = trainer.eval_step(params, x, y, mask)
        losses.append(float(loss))
        weights.append(index.size)
        outputs.append(np.asarray(logits)[: index.size])
    return float(np.average(losses, weights=weights)), np.concatenate(outputs)


# ---------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------


def _check_finite(losses: list, first_step: int, epoch: int, lr: float, start: int = 0) -> None:
    """Raises :class:`cli.NonFiniteLossError` naming the first step whose loss is not finite.

    Only ``losses[start:]`` are fetched from the device: the earlier ones were checked.
    """
    values = np.asarray(jax.device_get(losses[start:]), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        step = first_step + start + int(bad[0]) + 1
        raise cli.NonFiniteLossError(
            f"the training loss is {values[bad[0]]} at step {step} (epoch {epoch + 1}). "
            "Likely causes: a learning "
            f"rate too high for this model (--lr {lr:g}; try a tenth), NaN or inf in the "
            "inputs, or labels outside [0, 1] (wrap the step in bcejax.checked to find them)"
        )


def fit(task: Task, args: argparse.Namespace, optimizer: optax.GradientTransformation) -> FitResult:
    """Trains ``task.model`` with early stopping on the validation loss, a checkpoint each epoch.

    The result's state holds the best parameters and the history of the epochs that ran.
    """
    args.out.mkdir(parents=True, exist_ok=True)
    trainer, state = _setup(task, optimizer, args.batch_size)
    manager = checkpoints.manager(args.out / "checkpoints")
    try:
        state = checkpoints.resume(manager, state, trainer.mesh, args)
        start = time.perf_counter()
        while state.epoch < args.epochs and not _stop_early(state, args.patience):
            state = _epoch(task, trainer, state, args)
            checkpoints.save(manager, state, args.epochs)
            cli.report(_epoch_line(task, state))
    finally:
        manager.close()
    return FitResult(state, trainer, args.out, seconds=time.perf_counter() - start)


def split_logits(task: Task, result: FitResult) -> dict[str, np.ndarray]:
    """The best parameters' logits on the validation and test splits."""
    best = result.state.best_params
    return {
        split: predict(result.trainer, best, task.splits[split])[1] for split in ("val", "test")
    }


def fit_ensemble(
    make_task: Callable[[int], Task],
    args: argparse.Namespace,
    optimizer: optax.GradientTransformation,
) -> tuple[Task, FitResult, dict[str, np.ndarray]]:
    """Trains ``args.members`` models with :func:`fit`; their mean logits on validation and test.

    Member ``i`` is ``make_task(args.seed + i)`` (seeded initialization and
    batch order) and trains in ``OUT/member<i>``; a single model trains in
    ``OUT`` itself. Returns the last member's task, a result in ``OUT`` whose
    ``seconds`` are the members' total (its state, epochs and history are the
    last member's), and the logits per split.
    """
    if args.members == 1:
        task = make_task(args.seed)
        result = fit(task, args, optimizer)
        return task, result, split_logits(task, result)
    logits, seconds = [], 0.0
    for index in range(args.members):
        seed = args.seed + index
        cli.report(f"member {index + 1} of {args.members}")
        task = make_task(seed)
        member_args = argparse.Namespace(
            **{**vars(args), "seed": seed, "out": args.out / f"member{index}"}
        )
        result = fit(task, member_args, optimizer)
        logits.append(split_logits(task, result))
        seconds += result.seconds
    mean = {split: np.mean([each[split] for each in logits], 0) for split in ("val", "test")}
    return task, dataclasses.replace(result, out=args.out, seconds=seconds), mean


def _stop_early(state: TrainState, patience: int) -> bool:
    """Whether ``patience`` epochs in a row brought no improvement."""
    # Patience 0 stops at the first epoch without improvement, as in Keras.
    return state.bad_epochs >= max(patience, 1)


def _epoch(task: Task, trainer: Trainer, state: TrainState, args: argparse.Namespace) -> TrainState:
    """One epoch of training and validation; the state after it."""
    params, opt_state, train_loss, steps = _train_epoch(task, trainer, state, args)
    val = task.splits["val"]
    val_loss, val_logits = predict(trainer, params, val)
    val_score = _score(task, val_logits, val["y"])
    improved = val_loss < state.best_val_loss
    return TrainState(
        params=params,
        opt_state=opt_state,
        best_params=params if improved else state.best_params,
        epoch=state.epoch + 1,
        step=state.step + steps,
        best_val_loss=min(val_loss, state.best_val_loss),
        bad_epochs=0 if improved else state.bad_epochs + 1,
        history=state.history.add(train_loss, val_loss, val_score),
    )


def _train_epoch(
    task: Task, trainer: Trainer, state: TrainState, args: argparse.Namespace
) -> tuple[nnx.State, optax.OptState, float, int]:
    """One pass over the shuffled training split: ``(params, opt_state, mean loss, steps)``."""
    # Seeded by epoch, so a resumed run draws what an uninterrupted one would.
    rng = np.random.default_rng([args.seed, state.epoch])
    batches = _batches(len(task.splits["train"]["y"]), trainer.batch_size, rng)
    bar = tqdm(
        batches,
        desc=f"epoch {state.epoch + 1}/{args.epochs}",
        leave=False,
        disable=None if jax.process_index() == 0 else True,
    )
    params, opt_state, losses = state.params, state.opt_state, []
    for i, index in enumerate(bar):
        x, y, mask = _train_batch(task, trainer, index, rng)
        params, opt_state, loss = trainer.train_step(params, opt_state, x, y, mask)
        losses.append(loss)
        if i % 20 == 19:
            _check_finite(losses, state.step, state.epoch, args.lr, start=i - 19)
            bar.set_postfix(loss=f"{float(loss):.4f}")
    _check_finite(losses, state.step, state.epoch, args.lr, start=len(losses) // 20 * 20)
    sizes = [index.size for index in batches]
    train_loss = float(np.average(jax.device_get(losses), weights=sizes))
    return params, opt_state, train_loss, len(batches)


def _score(task: Task, logits: np.ndarray, labels: np.ndarray) -> float:
    """The validation score of an epoch: ROC-AUC for classifiers, IoU for segmentation."""
    if task.kind == "classifier":
        return float(metrics.roc_auc(logits, labels))
    return float(metrics.iou_score(logits, labels, threshold=0.0))


def _epoch_line(task: Task, state: TrainState) -> str:
    """The progress line of the epoch that just ended."""
    history, score = state.history, "AUC" if task.kind == "classifier" else "IoU"
    return (
        f"epoch {state.epoch:>3}: train loss {history.train_loss[-1]:.4f}  "
        f"val loss {history.val_loss[-1]:.4f}  val {score} {history.val_score[-1]:.4f}"
        + ("" if state.bad_epochs == 0 else f"  (no improvement {state.bad_epochs})")
    )
