"""Training: one run of ResNet on one dataset with one mixing op, on the CPU, one GPU or many (DDP).

``train(config, out_dir)`` is the whole loop; ``cutmix train`` is a thin shell over it. A run folder
holds ``config.json`` (resolved configuration, versions, hardware, git commit), ``init.pt`` (the
initial weights, shared by every arm of a comparison), ``metrics.jsonl`` (one line per epoch),
``checkpoint.pt`` (written atomically every epoch; ``resume=True`` continues from it) and
``summary.json``.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import pickle
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

# TrainConfig is used here; the other names are re-exported for importers of cutmix.train.
from cutmix.config import (  # noqa: F401
    AUGMENTS,
    MIXES,
    OPTIMIZERS,
    PARTNERS,
    PRECISIONS,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    config_with,
    resolve_config,
)
from cutmix.data import Dataset, DeviceLoader, load_dataset, stratified_split
from cutmix.errors import DataError, UsageError
from cutmix.models import l2_penalty, param_groups, resnet_v1
from cutmix.ops import CutMix, Cutout, MixUp, to_targets
from cutmix.runinfo import atomic_torch_save, atomic_write_json, environment

# CIFAR-10 training-set channel statistics, in [0, 1] units (used when normalize=True).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
DIST_TIMEOUT = datetime.timedelta(hours=2)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str) -> tuple[Distributed, torch.device]:
    """Joins the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size <= 1:
        return Distributed(), torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.device(device).type == "cuda"
    if not dist.is_initialized():
        # Rank 0 alone downloads or decodes the data while the others wait in a collective
        # (load_data_main_first): give it longer than NCCL's default of 10 minutes.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=DIST_TIMEOUT)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device(device)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank), target


def load_data_main_first(spec: str, dist_info: Distributed, progress: bool = True) -> Dataset:
    """``load_dataset(spec)``, under DDP on rank 0 first: it alone downloads, decodes and caches,
    while the other ranks wait, then read the copy or cache it left (no concurrent downloads).

    Rank 0 tells the others whether it succeeded, so a bad ``--data`` ends every rank with its
    message instead of leaving them waiting. (On several machines without a shared cache folder,
    the other machines' processes each load for themselves, after rank 0.)
    """
    if not dist_info.enabled:
        return load_data(spec, progress)
    if dist_info.is_main:
        try:
            dataset = load_data(spec, progress)
        except Exception as exc:
            dist.broadcast_object_list([(isinstance(exc, (UsageError, OSError)), str(exc))], src=0)
            raise
        dist.broadcast_object_list([None], src=0)
        return dataset
    outcome: list[Any] = [None]
    dist.broadcast_object_list(outcome, src=0)  # waits for rank 0's load
    if outcome[0] is not None:
        users_fault, message = outcome[0]
        message = message.removeprefix("--data: ")  # load_data's prefix, said once
        raise (DataError if users_fault else RuntimeError)(f"--data: rank 0 could not load it: {message}")
    return load_data(spec, progress=False)


def load_data(spec: str, progress: bool = True) -> Dataset:
    """``load_dataset(spec)``, its user errors naming the flag they came from (``--data: ...``)."""
    try:
        return load_dataset(spec, progress=progress)
    except DataError as exc:
        if str(exc).startswith("--"):
            raise
        raise DataError(f"--data: {exc}") from exc


# The files train() overwrites in a run folder, which a user's own folder might also hold
# (checkpoint.pt is never overwritten unasked: an existing one needs --resume, which reads it).
RUN_FILES = ("config.json", "summary.json", "metrics.jsonl")


def is_run_folder(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a run of ours: a ``config.json`` as train() writes it (every
    version so far: a JSON object whose "config" is an object of options)."""
    try:
        recorded = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(recorded, dict) and isinstance(recorded.get("config"), dict)


def check_out_dir(out_dir: Path, force: bool = False) -> None:
    """Refuses an ``--out`` that train() must not write into: a file, or a folder that holds
    config.json, summary.json or metrics.jsonl without being a run of ours (the user's own files,
    which a run would overwrite) unless ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out: expected a run folder, got the file {str(out_dir)!r}")
    if force or not out_dir.is_dir() or is_run_folder(out_dir):
        return
    foreign = [name for name in RUN_FILES if (out_dir / name).exists()]
    if foreign:
        raise UsageError(
            f"--out: {str(out_dir)!r} is not a cutmix run folder (no config.json of ours) but holds "
            f"{', '.join(foreign)}; refusing to overwrite: pass --force to replace them, or choose "
            "another --out"
        )


def check_image_size(dataset: Dataset, spec: str) -> None:
    """The ResNet is the Keras example's CIFAR model: 32x32 inputs (its pooling expects 8x8 maps)."""
    if tuple(dataset.image_shape[:2]) != (32, 32):
        height, width = dataset.image_shape[:2]
        raise DataError(f"--data: expected 32x32 images for the CIFAR ResNet, got {height}x{width}: {spec}")


def broadcast_buffers(model: nn.Module, dist_info: Distributed) -> None:
    """Makes every rank's buffers (BatchNorm running statistics) rank 0's.

    DDP keeps the parameters equal, and broadcasts rank 0's buffers before each training forward,
    but each rank's last batches still update its own copy, so without this each test shard would
    be scored by a different model and none of them would be the one rank 0 saves. Rank 0's copy,
    not an average: it is what DDP trains on from the next step and what the checkpoint holds, so
    the evaluated model is the saved one and training goes on exactly as before (rank 0 is unchanged).
    """
    if dist_info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def build_mixer(config: TrainConfig, num_classes: int, generator: torch.Generator):
    """The mixing op of ``config`` (None for ``mix="none"``), drawing from ``generator``."""
    common = dict(num_classes=num_classes, label_smoothing=config.label_smoothing, generator=generator)
    partner = "permute" if config.partner == "stream" else config.partner
    if config.mix == "cutmix":
        return CutMix(alpha=config.alpha, p=config.mix_p, partner=partner, **common)
    if config.mix == "mixup":
        return MixUp(alpha=config.alpha, p=config.mix_p, partner=partner, **common)
    if config.mix == "cutout":
        return Cutout(size=config.cutout_size, p=config.mix_p, **common)
    return None


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        groups = param_groups(model, config.weight_decay) if config.weight_decay else model.parameters()
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.999), eps=config.adam_eps)
    groups = param_groups(model, config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def lr_factor(step: int, total_steps: int, schedule: str, warmup: float) -> float:
    """The multiplier of the peak lr at ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant":
        return 1.0
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    # onecycle: linear from 0.1 up to 1 over the warm-up, then linear down to 0.
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


def precision_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU by default; on the CPU only when asked (measured slower here)."""
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    num_classes: int,
    autocast: torch.dtype | None,
    tta_flip: bool = False,
    dist_info: Distributed | None = None,
) -> dict[str, Any]:
    """Loss, accuracy and per-class accuracy over ``loader`` (one pass, no augmentation).

    With ``tta_flip`` the predictions average the softmax of each image and its mirror image.
    Under DDP each rank evaluates its own shard and the counts are summed.
    """
    was_training = model.training
    model.eval()
    device = loader.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros(num_classes, device=device, dtype=torch.float64)
    total = torch.zeros(num_classes, device=device, dtype=torch.float64)
    for images, labels in loader:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = model(images).float()
            if tta_flip:
                probs = 0.5 * (logits.softmax(1) + model(images.flip(3)).float().softmax(1))
                logits = probs.clamp_min(1e-12).log()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        hits = (logits.argmax(1) == labels).double()
        correct.index_add_(0, labels, hits)
        total.index_add_(0, labels, torch.ones_like(hits))
    if dist_info is not None and dist_info.enabled:
        for tensor in (loss_sum, correct, total):
            dist.all_reduce(tensor)
    model.train(was_training)
    count = total.sum().clamp_min(1)
    per_class = (correct / total.clamp_min(1)).tolist()
    return {"loss": (loss_sum / count).item(), "acc": (correct.sum() / count).item(), "per_class": per_class}


def divergence(history: list[dict[str, Any]], num_classes: int) -> str | None:
    """Why the run looks diverged, or None: a non-finite loss, or test accuracy fallen back to
    chance after having been well above it (the seed's no-augmentation arm fell from 63% to 10%)."""
    last = history[-1]
    if not math.isfinite(last["train_loss"]) or not math.isfinite(last["test_loss"]):
        return "non-finite loss"
    chance = 1.0 / num_classes
    best = max(h["test_acc"] for h in history)
    if best >= max(2 * chance, chance + 0.2) and last["test_acc"] <= 1.5 * chance:
        return f"test accuracy collapsed to {last['test_acc']:.2%} (chance {chance:.0%}) from {best:.2%}"
    return None


# What a checkpoint needs to be resumed from (older ones lack world_size: it is read with a default).
_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "diverged", "mix_state",
                    "torch_rng", "config")  # fmt: skip


def _without_init(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "init"}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True``: a file from elsewhere cannot run code.

    A file that names anything but tensors and plain containers is refused with the globals it
    names; torch's own message is not relayed, because it advises loading such a file unsafely.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path)
        if names:
            raise DataError(
                f"{path}: refused, not loaded: it holds objects a checkpoint must not contain "
                f"({'global' if len(names) == 1 else 'globals'} {', '.join(names)}); "
                "a cutmix checkpoint holds only tensors, numbers, strings, lists and dicts"
            ) from None
        raise DataError(
            f"{path}: refused, not loaded: not a checkpoint of tensors and plain containers "
            f"({_unpickler_reason(exc)})"
        ) from None
    # torch's unpickler meets garbage with whatever error the first bad opcode causes (KeyError for
    # a text file), so these are all "not a checkpoint" rather than bugs of ours.
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable cutmix checkpoint ({reason})") from exc


def _unsafe_globals(path: str | Path) -> list[str]:
    """The globals (``module.name``) a pickled file names beyond what ``weights_only`` admits,
    found by reading its opcodes, never by running them."""
    try:
        # The zip format that torch.save writes: torch reads the pickle inside for us.
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint: a bare or legacy pickle, scanned below
        pass
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except ImportError:  # private to torch: without it every global named is reported
        allowed = set()
    return sorted(_pickle_globals(Path(path)) - allowed)


def _pickle_globals(path: Path) -> set[str]:
    """Every ``module.name`` that the pickles at the start of ``path`` import (GLOBAL, INST, or
    STACK_GLOBAL with its two strings pushed or fetched from the memo just before)."""
    import pickletools

    found: set[str] = set()
    strings = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}  # fmt: skip
    try:
        if zipfile.is_zipfile(path):
            # A zip whose pickle torch's own scan could not read (a protocol torch.save never writes).
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                handle = io.BytesIO(archive.read(names[0]))
        else:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
        with handle:
            # A legacy torch file is several pickles in a row, then raw storage bytes.
            while True:
                pushed: list[Any] = []
                memo: dict[int, Any] = {}
                for op, arg, _ in pickletools.genops(handle):
                    if op.name in ("GLOBAL", "INST"):
                        found.add(".".join(str(arg).split(" ", 1)))
                    elif op.name == "STACK_GLOBAL" and len(pushed) >= 2:
                        module, name = pushed[-2], pushed[-1]
                        if isinstance(module, str) and isinstance(name, str):
                            found.add(f"{module}.{name}")
                    elif op.name in strings:
                        pushed.append(arg)
                    elif op.name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[arg] = pushed[-1] if pushed else None
                    elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(arg))
                    elif op.name not in ("FRAME", "PROTO"):
                        pushed.append(None)
    except Exception:  # noqa: BLE001 - the end of the pickles, or a damaged file: report what was seen
        pass
    return found


def _unpickler_reason(exc: BaseException) -> str:
    """The cause in torch's weights-only message, without its advice to load the file unsafely."""
    advice = ("weights_only", "Weights only", "Check the documentation", "safe_globals", "file an issue")
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not any(a in line for a in advice)]
    return "; ".join(kept) or "unsupported pickle contents"


def match_classes(
    saved: list[str] | None, found: list[str], num_outputs: int, data: str
) -> np.ndarray | None:
    """How the labels of data set ``data`` (class names ``found``) map to the outputs of a model
    saved with class names ``saved``: None when they already agree, else an index array
    (``remap[label]`` is the model's output for that label).

    The same names in another order are mapped by name: a name is what a label means, so this
    scores exactly what the user asks, where refusing would only make them rename folders. Other
    names are refused, showing both lists: nothing says which output is which class. A checkpoint
    without names (older ones) is trusted, if the class counts agree.
    """
    found = list(found)
    if saved is None:
        if len(found) != num_outputs:
            raise DataError(
                f"--data: expected {num_outputs} classes (the checkpoint's outputs), "
                f"got {len(found)} in {data}"
            )
        return None
    saved = list(saved)
    if found == saved:
        return None
    if sorted(found) == sorted(saved) and len(set(saved)) == len(saved):
        return np.array([saved.index(name) for name in found], dtype=np.int64)
    raise DataError(
        f"--data: {data} holds other classes than the checkpoint was trained on: expected {saved}, "
        f"got {found}"
    )


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A model state dict from an ``init.pt`` or a ``checkpoint.pt``."""
    state = load_checkpoint(path)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a model state dict or a cutmix checkpoint")
    return state


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


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


@dataclass
class RunState:
    """What a checkpoint restores."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    diverged: str | None = None


def seeded_generator(seed: int, *salt: int) -> torch.Generator:
    """A torch generator seeded from ``(seed, *salt)`` (numpy's SeedSequence): the initial weights
    use salt 1, each rank's mixing draws salt (2, rank). cutmix.compare draws a run's shared initial
    weights from the same generator, so changing it changes every run."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0]))


def _resumable_checkpoint(
    checkpoint_path: Path, config: TrainConfig, dist_info: Distributed
) -> dict[str, Any]:
    """The checkpoint to resume from, checked before anything is loaded or written: a cutmix
    checkpoint, of this configuration, written by as many processes as there are now."""
    checkpoint = load_checkpoint(checkpoint_path)
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise DataError(
            f"--resume: {checkpoint_path} is not a cutmix checkpoint (it lacks {', '.join(missing)}); "
            "use a new --out, or --force to start afresh there"
        )
    # The --init path may differ (a run folder moved mid-run); the checkpoint holds the weights.
    if _without_init(checkpoint["config"]) != _without_init(asdict(config)):
        raise UsageError(
            f"--resume: {checkpoint_path} was written with another configuration; "
            "use a new --out or the same options"
        )
    # Each process's data shard and mixing draws depend on the number of processes, so another
    # number could not continue the run bit for bit (older checkpoints: one mixing state each).
    saved_world_size = checkpoint.get("world_size", len(checkpoint["mix_state"]))
    if saved_world_size != dist_info.world_size:
        raise UsageError(
            f"--resume: {checkpoint_path} was written by {saved_world_size} process(es), "
            f"got {dist_info.world_size}; resume it with {saved_world_size} process(es) "
            "(torchrun --nproc_per_node ...) or start afresh in a new --out"
        )
    return checkpoint


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
    """
    if force and resume:
        raise UsageError("--force: starts the run afresh, so it cannot be combined with --resume")
    out_dir = Path(out_dir)
    dist_info, device = setup_distributed(config.device)
    check_out_dir(out_dir, force)
    checkpoint_path = out_dir / "checkpoint.pt"
    if checkpoint_path.exists() and not resume and not force:
        raise UsageError(
            f"--out: {out_dir} already holds a run; pass --resume to continue it "
            "(or --force to start it afresh)"
        )
    resuming = resume and checkpoint_path.exists()
    checkpoint = _resumable_checkpoint(checkpoint_path, config, dist_info) if resuming else None

    # Data: the whole split on the device; the validation split held out of train by count.
    dataset = load_data_main_first(config.data, dist_info, progress=progress and dist_info.is_main)
    check_image_size(dataset, config.data)
    num_classes = len(dataset.classes)
    train_images, train_labels = dataset.train_images, dataset.train_labels
    val_loader = None
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if config.normalize else (None, None)
    eval_kwargs = dict(
        batch_size=config.eval_batch_size,
        device=device,
        shuffle=False,
        drop_last=False,
        mean=mean,
        std=std,
        channels_last=config.channels_last,
    )
    shard = slice(dist_info.rank, None, dist_info.world_size)
    if config.val:
        if config.val >= len(train_labels):
            raise UsageError(
                f"--val: expected fewer than the {len(train_labels)} training images, got {config.val}"
            )
        train_idx, val_idx = stratified_split(train_labels, config.val, seed=config.seed)
        val_idx = np.sort(val_idx)[shard]
        val_loader = DeviceLoader(train_images[val_idx], train_labels[val_idx], **eval_kwargs)
        train_images, train_labels = train_images[np.sort(train_idx)], train_labels[np.sort(train_idx)]
    test_loader = DeviceLoader(dataset.test_images[shard], dataset.test_labels[shard], **eval_kwargs)
    if config.batch_size % dist_info.world_size:
        raise UsageError(
            f"--batch-size: expected a multiple of the {dist_info.world_size} processes, "
            f"got {config.batch_size}"
        )
    if config.batch_size > len(train_labels):
        # Every batch is full (drop_last): a batch larger than the data set would train on nothing.
        raise UsageError(
            f"--batch-size: expected at most the {len(train_labels)} training images, got {config.batch_size}"
        )
    train_loader = DeviceLoader(
        train_images,
        train_labels,
        config.batch_size // dist_info.world_size,
        device=device,
        augment=config.augment,
        mean=mean,
        std=std,
        channels_last=config.channels_last,
        seed=config.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        paired=config.mix in ("cutmix", "mixup") and config.partner == "stream",
    )

    # Model: seeded initial weights, or the shared ones given by --init (written for the record).
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
    total_steps = config.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config.schedule, config.warmup)
    )
    # Per-rank mixing draws: partners are drawn within each rank's batch.
    mix_generator = seeded_generator(config.seed, 2, dist_info.rank)
    mixer = build_mixer(config, num_classes, mix_generator)
    state = RunState()

    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if mixer is not None:
            mixer.load_state_dict(checkpoint["mix_state"][dist_info.rank])
        torch.set_rng_state(checkpoint["torch_rng"])
        state = RunState(checkpoint["epoch"], list(checkpoint["history"]), checkpoint["diverged"])
        if dist_info.is_main:
            print(f"resuming {out_dir} after epoch {state.epoch} of {config.epochs}", flush=True)
        checkpoint = None  # restored: not held through training

    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if force:  # afresh: no earlier checkpoint to resume by mistake, no summary of another run
            for name in ("checkpoint.pt", "summary.json"):
                (out_dir / name).unlink(missing_ok=True)
        atomic_write_json(out_dir / "config.json", {"config": asdict(config), **environment(device, argv)})
        _rewrite_metrics(out_dir / "metrics.jsonl", state.history)

    net: nn.Module = model
    if dist_info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)
    autocast = precision_dtype(config, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    started = time.perf_counter() - sum(h["epoch_time"] for h in state.history)
    for epoch in range(state.epoch, config.epochs):
        train_loader.set_epoch(epoch)
        mixing = mixer is not None and epoch < config.epochs - config.mix_off_epochs
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        seen = 0
        bar = _progress(
            len(train_loader) * train_loader.batch_size,
            f"epoch {epoch + 1}/{config.epochs}",
            progress and dist_info.is_main,
        )
        for batch in train_loader:
            images, labels = batch[0], batch[1]
            if mixing:
                images, targets = mixer(images, labels, *batch[2:])
            else:
                targets = to_targets(labels, num_classes, config.label_smoothing)
            loss, logits = train_step(net, model, optimizer, images, targets, config.l2, autocast)
            scheduler.step()
            loss_sum += loss.double() * labels.shape[0]
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.shape[0]
            if bar is not None:
                bar.update(labels.shape[0])
        if bar is not None:
            bar.close()
        totals = torch.stack(
            [loss_sum, correct, torch.tensor(float(seen), device=device, dtype=torch.float64)]
        )
        if dist_info.enabled:
            dist.all_reduce(totals)
        train_time = time.perf_counter() - epoch_start
        # Under DDP the bare model evaluates: shards may differ in batch count, and a DDP forward is
        # a collective that every rank would have to join.
        eval_net = model if dist_info.enabled else net
        broadcast_buffers(model, dist_info)  # the model every rank evaluates is the one saved
        test = evaluate(eval_net, test_loader, num_classes, autocast, config.tta_flip, dist_info)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": totals[0].item() / totals[2].item(),
            "train_acc": totals[1].item() / totals[2].item(),
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "test_per_class": test["per_class"],
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": totals[2].item() / train_time,
            "train_time": train_time,
            "mixing": mixing,
            "tta_flip": config.tta_flip,
        }
        if val_loader is not None:
            val = evaluate(eval_net, val_loader, num_classes, autocast, config.tta_flip, dist_info)
            record.update(val_loss=val["loss"], val_acc=val["acc"])
        record["epoch_time"] = time.perf_counter() - epoch_start
        record["wall_time"] = time.perf_counter() - started
        state.history.append(record)
        reason = divergence(state.history, num_classes)
        record["diverged"] = reason
        state.diverged = state.diverged or reason
        state.epoch = epoch + 1

        mix_state = mixer.state_dict() if mixer is not None else None
        mix_states = [mix_state]
        if dist_info.enabled:
            mix_states = [None] * dist_info.world_size
            dist.all_gather_object(mix_states, mix_state)
        if dist_info.is_main:
            with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            atomic_torch_save(
                checkpoint_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": state.epoch,
                    "history": state.history,
                    "diverged": state.diverged,
                    "mix_state": mix_states,
                    "torch_rng": torch.get_rng_state(),
                    "config": asdict(config),
                    "classes": list(dataset.classes),
                    "world_size": dist_info.world_size,
                },
            )
            if progress:
                line = (
                    f"epoch {epoch + 1}/{config.epochs}  loss {record['train_loss']:.4f}  "
                    f"test acc {record['test_acc']:.2%}  {record['images_per_s']:,.0f} img/s"
                )
                if "val_acc" in record:
                    line += f"  val acc {record['val_acc']:.2%}"
                print(line + (f"  DIVERGED: {reason}" if reason else ""), flush=True)
            if on_epoch is not None:
                on_epoch(record)
        if reason and config.stop_on_divergence:
            break

    summary = _summary(config, state, out_dir)
    if dist_info.is_main:
        atomic_write_json(out_dir / "summary.json", summary)
    _dump_rank_state(model, dist_info)
    return summary


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


def _rewrite_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl holds exactly the checkpointed epochs (a killed run may have logged one more)."""
    from cutmix.runinfo import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))


def _dump_rank_state(model: nn.Module, dist_info: Distributed) -> None:
    """For tests of DDP: every rank saves its final weights where CUTMIX_RANK_STATE_DIR says."""
    target = os.environ.get("CUTMIX_RANK_STATE_DIR")
    if target:
        atomic_torch_save(Path(target) / f"rank{dist_info.rank}.pt", model.state_dict())


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True)
