"""The training loop: one run of ResNet on one dataset with one mixing op, on the CPU, one GPU or many
(DDP, :mod:`cutmix.training.distributed`).

``train(config, out_dir)`` is the whole run, as a sequence of named steps: build the data, build the
model, restore a checkpoint, then per epoch run, evaluate, record and save. ``cutmix train`` is a thin
shell over it. A run folder holds ``config.json`` (resolved configuration, versions, hardware, git
commit), ``init.pt`` (the initial weights, shared by every arm of a comparison), ``metrics.jsonl``
(one line per epoch), ``checkpoint.pt`` (written atomically every epoch, and within an epoch on a
stop or every ``checkpoint_every_min`` minutes, :mod:`cutmix.training.preemption`; ``resume=True``
continues from it), and at the end ``model.safetensors`` (the final model, see :mod:`cutmix.weights`)
and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cutmix.errors import UsageError
from cutmix.models import l2_penalty, resnet_v1
from cutmix.ops import to_targets
from cutmix.runinfo import atomic_torch_save, atomic_write_json, atomic_write_text, environment
from cutmix.training.checkpoint import check_out_dir, load_weights, resumable_checkpoint, save_checkpoint
from cutmix.training.components import (
    RunData,
    build_data,
    build_mixer,
    build_optimizer,
    divergence,
    evaluate,
    lr_factor,
    precision_dtype,
)
from cutmix.training.config import TrainConfig
from cutmix.training.distributed import (
    Distributed,
    broadcast_buffers,
    dump_rank_state,
    gather_over_ranks,
    setup_distributed,
    sum_over_ranks,
)
from cutmix.training.preemption import EpochProgress, MidEpochSaver, StepGuard
from cutmix.weights import MODEL_FILE, write_model_file

# --------------------------------------------------------------------------------------------
# The run, step by step
# --------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Trains ``config`` into ``out_dir`` and returns the summary (also written to summary.json).

    With ``resume=True`` and a ``checkpoint.pt`` in ``out_dir``, continues where it stopped; the
    result is bit for bit that of an uninterrupted run on the same kind of machine (processor, SIMD
    level, torch build, thread count). ``out_dir`` must not be a file, nor a folder holding files of
    a run's names that are not ours (:func:`check_out_dir`); ``force=True`` (without ``resume``)
    starts afresh anyway, replacing those files and any run of ours there. ``on_epoch`` is called
    (on the main process) with each epoch's metrics record once that epoch is checkpointed.

    After every optimizer step it checks :func:`cutmix.training.preemption.stop_requested` (a signal
    under :func:`~cutmix.training.preemption.stop_on_signals`): if a stop is pending it saves a
    checkpoint within the epoch and raises :class:`~cutmix.training.preemption.TrainingInterrupted`.
    ``config.checkpoint_every_min`` > 0 saves the same checkpoint every that many minutes. Resumed
    from such a checkpoint, a run continues at its step, and still ends bit for bit as above.
    """
    if force and resume:
        raise UsageError("--force: starts the run afresh, so it cannot be combined with --resume")
    out_dir = Path(out_dir)
    dist_info, device = setup_distributed(config.device)
    checkpoint = checked_start(config, out_dir, resume, force, dist_info)
    data = build_data(config, dist_info, device, progress=progress and dist_info.is_main)
    learner = build_learner(config, data, dist_info, device, out_dir, force)
    state = RunState()
    if checkpoint is not None:
        state = restore(learner, checkpoint, dist_info)
        checkpoint = None  # restored: not held through training
        if dist_info.is_main:
            print(_resuming(out_dir, state, config.epochs, len(data.train)), flush=True)
    if dist_info.is_main:
        start_records(out_dir, config, device, argv, state.history, force)
    wrap_for_training(learner, config, dist_info, device)
    contents = partial(checkpoint_contents, learner, state, config, data.classes, dist_info)
    saver = MidEpochSaver(out_dir / "checkpoint.pt", contents, dist_info,
                          StepGuard(config.checkpoint_every_min, dist_info), len(data.train))  # fmt: skip

    started = time.perf_counter() - sum(h["epoch_time"] for h in state.history)
    started -= state.progress.elapsed if state.progress else 0.0
    for epoch in range(state.epoch, config.epochs):
        position, state.progress = state.progress or EpochProgress(), None
        data.train.set_epoch(epoch, position.step)
        mixing = learner.mixer is not None and epoch < config.epochs - config.mix_off_epochs
        epoch_start = time.perf_counter() - position.elapsed  # time spent on it before a stop counts
        after_step = partial(saver.after_step, epoch, epoch_start)
        totals = run_epoch(learner, data, config, epoch, mixing, dist_info, progress, position, after_step)
        train_time = time.perf_counter() - epoch_start
        record = evaluate_epoch(learner, data, config, dist_info, epoch, totals, train_time, mixing)
        record["epoch_time"] = time.perf_counter() - epoch_start
        record["wall_time"] = time.perf_counter() - started
        reason = record_epoch(state, record, len(data.classes))
        save_epoch(out_dir, learner, state, config, data.classes, dist_info)
        saver.guard.saved()
        if dist_info.is_main:
            report_epoch(record, config, progress, on_epoch)
        if reason and config.stop_on_divergence:
            break

    summary = _summary(config, state, out_dir)
    if dist_info.is_main:
        # The final model on its own (weights, config, class names; ~1.1 MB for ResNet-20): what
        # cutmix.load_model and `cutmix robustness` read without the optimizer and RNG states.
        write_model_file(out_dir / MODEL_FILE, learner.model.state_dict(), asdict(config), list(data.classes))
        atomic_write_json(out_dir / "summary.json", summary)
    dump_rank_state(learner.model, dist_info)
    return summary


@dataclass
class Learner:
    """What trains: the bare ``model`` (what is saved, and evaluated under DDP), ``net`` (what runs the
    training forward pass: the model, or its DDP or compiled wrapper), the optimizer, the lr schedule,
    the mixing op (None for ``mix="none"``) and the autocast dtype (None: fp32)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    mixer: Any
    net: nn.Module
    autocast: torch.dtype | None = None


@dataclass
class RunState:
    """What a checkpoint restores."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    diverged: str | None = None
    progress: EpochProgress | None = None  # within epoch ``epoch`` (a checkpoint saved mid-epoch)


def checked_start(
    config: TrainConfig, out_dir: Path, resume: bool, force: bool, dist_info: Distributed
) -> dict[str, Any] | None:
    """Step 0: refuses an ``out_dir`` that this run must not write into, and returns the checkpoint to
    resume from (None: a run from the start), checked before anything is loaded or written."""
    check_out_dir(out_dir, force)
    checkpoint_path = out_dir / "checkpoint.pt"
    if checkpoint_path.exists() and not resume and not force:
        raise UsageError(
            f"--out: {out_dir} already holds a run; pass --resume to continue it "
            "(or --force to start it afresh)"
        )
    if resume and checkpoint_path.exists():
        return resumable_checkpoint(checkpoint_path, config, dist_info)
    return None


def build_learner(
    config: TrainConfig,
    data: RunData,
    dist_info: Distributed,
    device: torch.device,
    out_dir: Path,
    force: bool,
) -> Learner:
    """Step 2: seeded initial weights, or the shared ones given by ``init`` (written to init.pt for the
    record), on the device; the optimizer, the lr schedule over every step, and the mixing op."""
    num_classes = len(data.classes)
    model = resnet_v1(config.depth, num_classes, generator=seeded_generator(config.seed, 1))
    if config.init:
        model.load_state_dict(load_weights(config.init))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = config.bn_momentum
    if dist_info.is_main and (force or not (out_dir / "init.pt").exists()):
        atomic_torch_save(out_dir / "init.pt", model.state_dict())
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    total_steps = config.epochs * len(data.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config.schedule, config.warmup)
    )
    # Per-rank mixing draws: partners are drawn within each rank's batch.
    mixer = build_mixer(config, num_classes, seeded_generator(config.seed, 2, dist_info.rank))
    return Learner(model, optimizer, scheduler, mixer, net=model)


def restore(learner: Learner, checkpoint: dict[str, Any], dist_info: Distributed) -> RunState:
    """Step 3 (resuming): the weights, optimizer, schedule, this rank's mixing draws and the global
    RNG as the checkpoint saved them; returns the epochs done, their history, and (a checkpoint saved
    within an epoch) this rank's progress in the next one."""
    learner.model.load_state_dict(checkpoint["model"])
    learner.optimizer.load_state_dict(checkpoint["optimizer"])
    learner.scheduler.load_state_dict(checkpoint["scheduler"])
    if learner.mixer is not None:
        learner.mixer.load_state_dict(checkpoint["mix_state"][dist_info.rank])
    torch.set_rng_state(checkpoint["torch_rng"])
    within = checkpoint.get("epoch_progress")  # one per rank; absent from epoch-end checkpoints
    progress = EpochProgress.from_dict(within[dist_info.rank]) if within else None
    return RunState(checkpoint["epoch"], list(checkpoint["history"]), checkpoint["diverged"], progress)


def _resuming(out_dir: Path, state: RunState, epochs: int, steps: int) -> str:
    if state.progress is None:
        return f"resuming {out_dir} after epoch {state.epoch} of {epochs}"
    return (f"resuming {out_dir} in epoch {state.epoch + 1} of {epochs}, after step {state.progress.step} "
            f"of {steps}")  # fmt: skip


def start_records(
    out_dir: Path,
    config: TrainConfig,
    device: torch.device,
    argv: list[str] | None,
    history: list[dict[str, Any]],
    force: bool,
) -> None:
    """On the main process: config.json for this run, and metrics.jsonl holding exactly the epochs
    restored (a killed run may have logged one more than it checkpointed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:  # afresh: no earlier checkpoint to resume by mistake, no summary of another run
        for name in ("checkpoint.pt", "summary.json"):
            (out_dir / name).unlink(missing_ok=True)
    atomic_write_json(out_dir / "config.json", {"config": asdict(config), **environment(device, argv)})
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def wrap_for_training(
    learner: Learner, config: TrainConfig, dist_info: Distributed, device: torch.device
) -> None:
    """``learner.net``: the model in DDP across the processes, compiled if asked; and the autocast
    dtype (bf16 on GPU by default)."""
    if dist_info.enabled:
        learner.net = nn.parallel.DistributedDataParallel(
            learner.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        learner.net = torch.compile(learner.net)
    learner.autocast = precision_dtype(config, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def run_epoch(
    learner: Learner,
    data: RunData,
    config: TrainConfig,
    epoch: int,
    mixing: bool,
    dist_info: Distributed,
    progress: bool,
    start: EpochProgress | None = None,
    after_step: Callable[[int, Tensor, Tensor, int], None] | None = None,
) -> Tensor:
    """Step 4: one pass over the training data (mixed if ``mixing``), one optimisation step per batch;
    returns the loss sum, the correct count and the image count, summed over the processes.

    ``start``: where a resumed run stands within the epoch (its steps done and their sums; the loader
    starts after them). ``after_step(step, loss_sum, correct, seen)`` is called after every optimizer
    step with the epoch's steps and sums so far (the mid-epoch checkpoint, :class:`MidEpochSaver`).
    """
    device = data.train.device
    num_classes = len(data.classes)
    start = start or EpochProgress()
    loss_sum = torch.tensor(start.loss_sum, device=device, dtype=torch.float64)
    correct = torch.tensor(start.correct, device=device, dtype=torch.float64)
    seen = start.seen
    bar = _progress(
        len(data.train) * data.train.batch_size,
        f"epoch {epoch + 1}/{config.epochs}",
        progress and dist_info.is_main,
    )
    if bar is not None and seen:
        bar.update(seen)
    try:  # a stop within the epoch (TrainingInterrupted) must not leave the bar among tqdm's
        for step, batch in enumerate(data.train, start=start.step + 1):
            images, labels = batch[0], batch[1]
            if mixing:
                images, targets = learner.mixer(images, labels, *batch[2:])
            else:
                targets = to_targets(labels, num_classes, config.label_smoothing)
            loss, logits = train_step(
                learner.net, learner.model, learner.optimizer, images, targets, config.l2, learner.autocast
            )
            learner.scheduler.step()
            loss_sum += loss.double() * labels.shape[0]
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.shape[0]
            if bar is not None:
                bar.update(labels.shape[0])
            if after_step is not None:
                after_step(step, loss_sum, correct, seen)
    finally:
        if bar is not None:
            bar.close()
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device, dtype=torch.float64)])
    return sum_over_ranks(totals, dist_info)


def train_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    targets: Tensor,
    l2: float = 0.0,
    autocast: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """One optimisation step on soft ``targets`` (B, K); returns the detached loss and logits.

    ``net`` is what runs the forward pass (``model`` itself, or its DDP/compiled wrapper); ``l2``
    adds the Keras-style penalty on ``model``'s conv kernels to the objective, not to the loss.
    """
    with torch.autocast(images.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        logits = net(images)
    loss = F.cross_entropy(logits.float(), targets)
    objective = loss + l2_penalty(model, l2) if l2 else loss
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def evaluate_epoch(
    learner: Learner,
    data: RunData,
    config: TrainConfig,
    dist_info: Distributed,
    epoch: int,
    totals: Tensor,
    train_time: float,
    mixing: bool,
) -> dict[str, Any]:
    """Step 5: the epoch's metrics record: the training totals, and the test (and validation) scores
    of the model every process holds, which is the one saved."""
    # Under DDP the bare model evaluates: shards may differ in batch count, and a DDP forward is
    # a collective that every rank would have to join.
    eval_net = learner.model if dist_info.enabled else learner.net
    broadcast_buffers(learner.model, dist_info)  # the model every rank evaluates is the one saved
    num_classes = len(data.classes)
    test = evaluate(eval_net, data.test, num_classes, learner.autocast, config.tta_flip, dist_info)
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "train_loss": totals[0].item() / totals[2].item(),
        "train_acc": totals[1].item() / totals[2].item(),
        "test_loss": test["loss"],
        "test_acc": test["acc"],
        "test_per_class": test["per_class"],
        "lr": learner.optimizer.param_groups[0]["lr"],
        "images_per_s": totals[2].item() / train_time,
        "train_time": train_time,
        "mixing": mixing,
        "tta_flip": config.tta_flip,
    }
    if data.val is not None:
        val = evaluate(eval_net, data.val, num_classes, learner.autocast, config.tta_flip, dist_info)
        record.update(val_loss=val["loss"], val_acc=val["acc"])
    return record


def record_epoch(state: RunState, record: dict[str, Any], num_classes: int) -> str | None:
    """Step 6: ``record`` joins the history, marked with why the run looks diverged (None: it does
    not); returns that reason."""
    state.history.append(record)
    reason = divergence(state.history, num_classes)
    record["diverged"] = reason
    state.diverged = state.diverged or reason
    state.epoch = record["epoch"]
    return reason


def save_epoch(
    out_dir: Path,
    learner: Learner,
    state: RunState,
    config: TrainConfig,
    classes: list[str],
    dist_info: Distributed,
) -> None:
    """Step 7: the epoch's line of metrics.jsonl and the checkpoint, written by the main process with
    every process's mixing state (each draws its own)."""
    checkpoint = checkpoint_contents(learner, state, config, classes, dist_info)
    if not dist_info.is_main:
        return
    with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(state.history[-1]) + "\n")
    save_checkpoint(out_dir / "checkpoint.pt", checkpoint)


def checkpoint_contents(
    learner: Learner, state: RunState, config: TrainConfig, classes: list[str], dist_info: Distributed
) -> dict[str, Any]:
    """What a checkpoint holds after ``state.epoch`` epochs (on every process, which must all call it:
    the mixing states are gathered; only the main process's copy is written)."""
    mix_state = learner.mixer.state_dict() if learner.mixer is not None else None
    mix_states = gather_over_ranks(mix_state, dist_info)
    return {
        "model": learner.model.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "scheduler": learner.scheduler.state_dict(),
        "epoch": state.epoch,
        "history": state.history,
        "diverged": state.diverged,
        "mix_state": mix_states,
        "torch_rng": torch.get_rng_state(),
        "config": asdict(config),
        "classes": list(classes),
        "world_size": dist_info.world_size,
    }


def report_epoch(
    record: dict[str, Any],
    config: TrainConfig,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Step 8 (main process): the epoch's line on the terminal, and the caller's ``on_epoch``."""
    if progress:
        line = (
            f"epoch {record['epoch']}/{config.epochs}  loss {record['train_loss']:.4f}  "
            f"test acc {record['test_acc']:.2%}  {record['images_per_s']:,.0f} img/s"
        )
        if "val_acc" in record:
            line += f"  val acc {record['val_acc']:.2%}"
        print(line + (f"  DIVERGED: {record['diverged']}" if record["diverged"] else ""), flush=True)
    if on_epoch is not None:
        on_epoch(record)


def _summary(config: TrainConfig, state: RunState, out_dir: Path) -> dict[str, Any]:
    history = state.history
    last = history[-1] if history else {}
    summary: dict[str, Any] = {
        "out_dir": str(out_dir),
        "epochs_completed": state.epoch,
        "epochs": config.epochs,
        "finished": state.epoch == config.epochs,
        "test_acc": last.get("test_acc"),
        "test_loss": last.get("test_loss"),
        "test_per_class": last.get("test_per_class"),
        "tta_flip": config.tta_flip,
        "wall_time": last.get("wall_time"),
        "train_images_per_s": (float(np.mean([h["images_per_s"] for h in history])) if history else None),
        "diverged": state.diverged,
    }
    if history and "val_acc" in last:
        best = max(history, key=lambda h: h["val_acc"])
        summary.update(
            best_epoch_by_val=best["epoch"],
            val_acc=last["val_acc"],
            best_val_acc=best["val_acc"],
            test_acc_at_best_val=best["test_acc"],
        )
    return summary


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def seeded_generator(seed: int, *salt: int) -> torch.Generator:
    """A torch generator seeded from ``(seed, *salt)`` (numpy's SeedSequence): the initial weights
    use salt 1, each rank's mixing draws salt (2, rank). :mod:`cutmix.experiment.plan` draws a run's
    shared initial weights from the same generator, so changing it changes every run."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0]))


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True)
