"""What the three examples share: flags, sharded training with a bcejax loss, evaluation, outputs.

* Flags: :func:`arguments` builds the command line every example shares and
  :func:`parse` checks it before any work (a bad value ends the run with a
  one-line error and exit status 2, as argparse does), then joins the other
  processes when ``--distributed`` is given: before any other JAX call, as
  ``jax.distributed.initialize`` requires.
* Devices: a 1-D ``jax.sharding`` mesh over every device of every process,
  axis ``"data"``; each batch is split across it and the parameters are
  replicated, so the same code runs on one CPU, several GPUs, a TPU slice or
  several hosts. Every process holds the whole data set and feeds only its own
  devices' rows of each batch; the evaluation logits come back replicated, so
  every process sees all of them. A batch that does not split evenly is
  padded and the padding masked with ``where``.
* Training: :func:`fit` runs an optax optimizer in a jitted step, with tqdm
  progress bars, a validation pass per epoch with ``bcejax.metrics``, early
  stopping on the validation loss (the best parameters are kept), orbax
  checkpoints every epoch (every process takes part in each save), and
  ``--resume`` to continue an interrupted run where it stopped; a checkpoint
  that cannot be read is skipped with a line saying why, and the run resumes
  from the newest one that can. It returns a :class:`FitResult`: the
  :class:`TrainState` after the last epoch (parameters, best parameters,
  history) and the mesh and steps that evaluate it.
* A NaN or infinite training loss stops the run with the step and the likely
  causes.
* Outputs in ``--out``, written by process 0 alone, which also prints the
  progress and the summary: ``metrics.json`` (with a ``"test"`` object and the
  history of the epochs that ran), and PNG plots of the loss curves, and for
  classifiers the ROC and PR curves and the reliability diagram before and
  after temperature scaling.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from bcejax import calibration, metrics

Batch = dict[str, np.ndarray]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointError(RuntimeError):
    """``--resume`` found checkpoints but could read none of them."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``spam.py: error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def arguments(
    name: str, description: str, *, epochs: int, batch_size: int, lr: float, patience: int = 3
) -> argparse.ArgumentParser:
    """The command line every example shares; examples add their own options."""
    parser = _Parser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size, help="the global batch")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--patience", type=int, default=patience, help="early-stopping epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / name, help="output folder (%(default)s)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest readable checkpoint"
    )
    parser.add_argument("--quick", action="store_true", help="a small, fast run (tests)")
    hosts = parser.add_argument_group(
        "several processes",
        "one command per process; on a TPU pod, Slurm or Open MPI, --distributed finds the rest",
    )
    hosts.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() first"
    )
    hosts.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    hosts.add_argument("--num-processes", type=int, metavar="N")
    hosts.add_argument("--process-id", type=int, metavar="I", help="0 to N - 1")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags, then joins the other processes if ``--distributed``.

    Call it first in ``main``: ``jax.distributed.initialize`` must run before
    any other JAX call, and a bad flag must stop the run before any work.
    """
    args = parser.parse_args(argv)
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be positive and finite, got {args.lr:g}")
    for flag, value in (("--patience", args.patience), ("--seed", args.seed)):
        if value < 0:
            parser.error(f"{flag} must be 0 or more, got {value}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder (it is created if absent)")
    if args.resume and not _has_checkpoint(args.out):
        parser.error(f"--resume: no checkpoint in {args.out}; leave out --resume to start anew")
    _check_processes(parser, args)
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


def report(message: str) -> None:
    """Prints ``message`` from process 0 only, so several processes print it once."""
    if jax.process_index() == 0:
        print(message, flush=True)


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
# Checkpoints.
# ---------------------------------------------------------------------------


def _checkpointer(directory: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    # One unnamed item, declared here: orbax would otherwise infer the layout from the
    # first checkpoint it reads, and a damaged one would make it misread the rest.
    handler = ocp.StandardCheckpointHandler()
    return ocp.CheckpointManager(directory.resolve(), options=options, item_handlers=handler)


def _has_checkpoint(out: Path) -> bool:
    """Whether ``out``, or a folder below it (an ensemble member's), holds a checkpoint."""
    return any(step.name.isdigit() for step in out.glob("**/checkpoints/*"))


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


def _resume(
    manager: ocp.CheckpointManager, state: TrainState, trainer: Trainer, args: argparse.Namespace
) -> TrainState:
    """``--resume``: the newest readable checkpoint's state; else ``state``, old ones deleted."""
    if manager.latest_step() is None:
        return state
    if not args.resume:
        for step in list(manager.all_steps()):
            manager.delete(step)
        return state
    saved = _from_checkpoint(_restore(manager, _to_checkpoint(state, args.epochs)), args.epochs)
    replicated = NamedSharding(trainer.mesh, P())
    params, opt_state = jax.device_put((saved.params, saved.opt_state), replicated)
    report(f"resumed from the checkpoint after epoch {saved.epoch}")
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
            report(f"skipped the checkpoint after epoch {step} ({where}): {_reason(error)}")
            unreadable.append(step)
            continue
        for bad in unreadable:
            manager.delete(bad)
        return state
    raise CheckpointError(f"--resume: no checkpoint in {manager.directory} can be read")


def _reason(error: BaseException) -> str:
    """The innermost cause of ``error``, on one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    message = str(error.args[0]) if len(error.args) == 1 else str(error)
    return f"{type(error).__name__}: {' '.join(message.split())[:300]}"


# ---------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------


def _check_finite(losses: list, first_step: int, epoch: int, lr: float, start: int = 0) -> None:
    """Raises :class:`NonFiniteLossError` naming the first step whose loss is not finite.

    Only ``losses[start:]`` are fetched from the device: the earlier ones were checked.
    """
    values = np.asarray(jax.device_get(losses[start:]), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        step = first_step + start + int(bad[0]) + 1
        raise NonFiniteLossError(
            f"the training loss is {values[bad[0]]} at step {step} (epoch {epoch + 1}). "
            "Likely causes: a learning "
            f"rate too high for this model (--lr {lr:g}; try a tenth), NaN or inf in the "
            "inputs, or labels outside [0, 1] (wrap the step in bcejax.checked to find them)"
        )


def run(main: Callable[[], Any]) -> None:
    """Runs an example's ``main``, ending the process cleanly on the faults it expects.

    A non-finite loss exits with its message and status 1; checkpoints none of
    which can be read, with an argparse-style one-line error and status 2.
    """
    try:
        main()
    except NonFiniteLossError as error:
        raise SystemExit(f"training stopped: {error}") from None
    except CheckpointError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def fit(task: Task, args: argparse.Namespace, optimizer: optax.GradientTransformation) -> FitResult:
    """Trains ``task.model`` with early stopping on the validation loss, a checkpoint each epoch.

    The result's state holds the best parameters and the history of the epochs that ran.
    """
    args.out.mkdir(parents=True, exist_ok=True)
    trainer, state = _setup(task, optimizer, args.batch_size)
    manager = _checkpointer(args.out / "checkpoints")
    state = _resume(manager, state, trainer, args)
    start = time.perf_counter()
    while state.epoch < args.epochs and not _stop_early(state, args.patience):
        state = _epoch(task, trainer, state, args)
        manager.save(state.epoch, args=ocp.args.StandardSave(_to_checkpoint(state, args.epochs)))
        manager.wait_until_finished()
        report(_epoch_line(task, state))
    manager.close()
    return FitResult(state, trainer, args.out, seconds=time.perf_counter() - start)


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


# ---------------------------------------------------------------------------
# Evaluation and outputs.
# ---------------------------------------------------------------------------


def split_logits(task: Task, result: FitResult) -> dict[str, np.ndarray]:
    """The best parameters' logits on the validation and test splits."""
    best = result.state.best_params
    return {
        split: predict(result.trainer, best, task.splits[split])[1] for split in ("val", "test")
    }


def evaluate(
    task: Task, result: FitResult, logits: dict[str, np.ndarray] | None = None
) -> dict[str, Any] | None:
    """Test metrics, plots and ``metrics.json`` of the best parameters; returns the metrics.

    ``logits`` (per split, e.g. an ensemble's averaged logits) replaces the
    best parameters' own. Every process takes part in computing the logits;
    process 0 alone computes the metrics, writes the files and prints the
    summary, and the others return None.
    """
    logits = split_logits(task, result) if logits is None else logits
    if jax.process_index() != 0:
        return None
    out = result.out
    results: dict[str, Any] = {"example": task.name, "loss": task.loss_name}
    for split in ("val", "test"):
        loss = task.loss(jnp.asarray(logits[split]), jnp.asarray(task.splits[split]["y"]))
        results[f"{split}_loss"] = float(loss)
    y_test = task.splits["test"]["y"]
    if task.kind == "classifier":
        temperature = float(calibration.fit_temperature(logits["val"], task.splits["val"]["y"]))
        results["test"] = _classifier_metrics(logits["test"], y_test, temperature)
        _plot_classifier(out, logits["test"], y_test, temperature)
    else:
        results["test"] = {
            "iou": float(metrics.iou_score(logits["test"], y_test, threshold=0.0)),
            "dice": float(metrics.dice_score(logits["test"], y_test, threshold=0.0)),
        }
        _plot_segmentation(out, task.splits["test"]["x"], y_test, logits["test"])
    results["epochs"] = result.state.epoch
    results["train_seconds"] = round(result.seconds, 1)
    results["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    results["processes"] = jax.process_count()
    results["history"] = {k: list(v) for k, v in dataclasses.asdict(result.state.history).items()}
    _plot_losses(out, results["history"])
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    _print_summary(results)
    return results


def _classifier_metrics(x: np.ndarray, y: np.ndarray, temperature: float) -> dict[str, float]:
    """The test metrics of a classifier's logits ``x``."""
    return {
        "roc_auc": float(metrics.roc_auc(x, y)),
        "average_precision": float(metrics.average_precision(x, y)),
        "f1": float(metrics.f1_score(x, y, threshold=0.0)),
        "log_loss": float(metrics.log_loss(x, y, from_logits=True)),
        "ece": float(metrics.expected_calibration_error(x, y, from_logits=True)),
        "ece_after_temperature_scaling": float(
            metrics.expected_calibration_error(x / temperature, y, from_logits=True)
        ),
        "temperature": temperature,
    }


def _print_summary(results: dict) -> None:
    test = results["test"]
    hosts = f", {results['processes']} processes" if results["processes"] > 1 else ""
    print(f"\n{results['example']} ({results['loss']}), test split, {results['devices']}{hosts}:")
    for key, value in test.items():
        print(f"  {key:<32} {value:.4f}")
    print(f"  {'epochs':<32} {results['epochs']}")
    print(f"  {'training seconds':<32} {results['train_seconds']}")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_losses(out: Path, history: dict[str, list[float]]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], "o-", label="train")
    ax.plot(epochs, history["val_loss"], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=100)
    plt.close(fig)


def _plot_classifier(out: Path, logits, labels, temperature: float) -> None:
    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr, _ = metrics.roc_curve(logits, labels)
    roc.plot(fpr, tpr)
    roc.plot([0, 1], [0, 1], ":", color="gray")
    roc.set(xlabel="false positive rate", ylabel="true positive rate")
    roc.set_title(f"ROC, AUC {float(metrics.roc_auc(logits, labels)):.3f}")
    precision, recall, _ = metrics.precision_recall_curve(logits, labels)
    pr.step(recall, precision, where="post")
    pr.set(xlabel="recall", ylabel="precision")
    pr.set_title(f"precision-recall, AP {float(metrics.average_precision(logits, labels)):.3f}")
    fig.tight_layout()
    fig.savefig(out / "roc_pr.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="gray")
    for scale, name in ((1.0, "before"), (temperature, f"after, T = {temperature:.2f}")):
        bins = metrics.reliability_diagram(logits / scale, labels, n_bins=10, from_logits=True)
        full = np.asarray(bins.weight) > 0
        ece = float(metrics.expected_calibration_error(logits / scale, labels, from_logits=True))
        ax.plot(
            np.asarray(bins.prob_pred)[full],
            np.asarray(bins.prob_true)[full],
            "o-",
            label=f"{name} (ECE {ece:.3f})",
        )
    ax.set(xlabel="mean predicted probability", ylabel="fraction of positives")
    ax.set_title("reliability, temperature scaling")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)


def _plot_segmentation(out: Path, images, masks, logits, count: int = 6) -> None:
    plt = _pyplot()
    count = min(count, len(images))
    fig, axes = plt.subplots(3, count, figsize=(2 * count, 6.2), squeeze=False)
    for i in range(count):
        image = images[i, ..., 0] if images.ndim == 4 else images[i]
        for row, (title, overlay) in enumerate(
            (("image", None), ("mask", masks[i]), ("prediction", logits[i] > 0))
        ):
            axes[row, i].imshow(image, cmap="gray")
            if overlay is not None:
                shown = np.ma.masked_where(~np.asarray(overlay, bool), overlay)
                axes[row, i].imshow(shown, cmap="autumn", alpha=0.6, vmin=0, vmax=1)
            axes[row, i].set_axis_off()
            if i == 0:
                axes[row, i].set_title(title, loc="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "overlays.png", dpi=80)
    plt.close(fig)
