"""Checkpoints: written atomically every epoch (and within one on a stop, or every
``--checkpoint-every-min``: :mod:`cutmix.training.preemption`), read back safely, and matched to a
data set's classes.

A ``checkpoint.pt`` is a dict of tensors, numbers, strings, lists and dicts (:func:`save_checkpoint`);
:func:`load_checkpoint` reads it with ``weights_only=True`` and refuses, naming them, the globals of a
file that holds anything else, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cutmix.errors import DataError, UsageError
from cutmix.runinfo import atomic_torch_save
from cutmix.training.config import SCHEDULING_OPTIONS, TrainConfig
from cutmix.training.distributed import Distributed
from cutmix.weights import MODEL_FILE, check_model_target

# What a checkpoint needs to be resumed from (older ones lack world_size: it is read with a default).
_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "diverged", "mix_state",
                    "torch_rng", "config")  # fmt: skip


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The options a resumed run must share with its checkpoint: all but the --init path (a run folder
    may have moved; the checkpoint holds the weights) and the scheduling options (when to checkpoint),
    which older checkpoints lack."""
    return {k: v for k, v in config.items() if k != "init" and k not in SCHEDULING_OPTIONS}


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


def resumable_checkpoint(
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
    if _identity(checkpoint["config"]) != _identity(asdict(config)):
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


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Writes ``checkpoint`` (a dict of tensors and plain containers, as :func:`load_checkpoint` reads
    back) to ``path`` atomically: a run killed while saving keeps its previous checkpoint."""
    atomic_torch_save(Path(path), checkpoint)


# --------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------

# The files train() overwrites in a run folder, which a user's own folder might also hold
# (checkpoint.pt is never overwritten unasked: an existing one needs --resume, which reads it).
RUN_FILES = ("config.json", "summary.json", "metrics.jsonl", MODEL_FILE)


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
    config.json, summary.json, metrics.jsonl or model.safetensors without being a run of ours (the
    user's own files, which a run would overwrite) unless ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out: expected a run folder, got the file {str(out_dir)!r}")
    if force or not out_dir.is_dir():
        return
    if is_run_folder(out_dir):
        check_model_target(out_dir / MODEL_FILE)  # replaced at the end of the run: ours only
        return
    foreign = [name for name in RUN_FILES if (out_dir / name).exists()]
    if foreign:
        raise UsageError(
            f"--out: {str(out_dir)!r} is not a cutmix run folder (no config.json of ours) but holds "
            f"{', '.join(foreign)}; refusing to overwrite: pass --force to replace them, or choose "
            "another --out"
        )
