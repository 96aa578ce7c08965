"""A trained model as one ``model.safetensors`` file: the weights, the run's config and class names.

The `safetensors <https://huggingface.co/docs/safetensors>`_ format holds tensors and a string
metadata table, nothing that runs code, so a model file from anywhere can be read safely and without
torch's pickle. A cutmix model file's metadata holds ``cutmix`` (the file format's version),
``config`` (the run's :class:`cutmix.TrainConfig` fields, JSON) and ``classes`` (the class names in
the order of the model's outputs, JSON). A ResNet-20 file is about 1.1 MB: small enough to commit
beside a run's records.

:func:`write_model_file` and :func:`read_model_file` are the format; :func:`export_checkpoint`
writes one beside a run's ``checkpoint.pt`` (``cutmix export``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cutmix.errors import DataError, UsageError

__all__ = ["FORMAT_VERSION", "MODEL_FILE", "export_checkpoint", "read_model_file", "write_model_file"]

FORMAT_VERSION = "1"
MODEL_FILE = "model.safetensors"


def write_model_file(
    path: str | Path, state_dict: dict[str, torch.Tensor], config: dict, classes: list[str]
) -> None:
    """Writes ``state_dict`` with ``config`` and ``classes`` to the safetensors file ``path``.

    The tensors are saved from the CPU as contiguous copies (safetensors stores dense row-major
    data: a channels-last weight is not contiguous), the config and the class names JSON-encoded
    in the metadata. The file appears complete or not at all, with the permissions of any new file
    (the umask applies).

    Args:
        path: the file to write (conventionally ``model.safetensors``).
        state_dict: the model's ``state_dict()``: names to tensors.
        config: the run's config as a JSON-serialisable dict (``dataclasses.asdict`` of its
            TrainConfig).
        classes: the class names, in the order of the model's outputs.
    """
    from safetensors.torch import save

    from cutmix.runinfo import atomic_write_bytes

    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("expected state_dict as a dict of names to tensors")
    if not isinstance(classes, list | tuple) or not all(isinstance(c, str) for c in classes):
        raise TypeError(f"expected classes as a list of strings, got {classes!r}")
    # Copies: safetensors refuses tensors that share memory, and the caller's stay untouched.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state_dict.items()}
    metadata = {
        "format": "pt",
        "cutmix": FORMAT_VERSION,
        "config": json.dumps(config, sort_keys=True),
        "classes": json.dumps(list(classes)),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """The state dict, config and class names of the cutmix model file ``path``.

    Returns:
        ``(state_dict, config, classes)``: CPU tensors by name, the config dict, the class names.

    Raises:
        DataError: ``path`` is missing, not a safetensors file, or a safetensors file that
            cutmix did not write (no ``cutmix`` metadata, or metadata that does not decode).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise DataError(f"{path}: not a readable safetensors model file ({reason})") from None
    if "cutmix" not in metadata:
        raise DataError(
            f"{path}: expected a cutmix model file (safetensors with cutmix metadata), got a safetensors "
            f"file without it (metadata keys: {sorted(metadata) or 'none'})"
        )
    if metadata["cutmix"] != FORMAT_VERSION:
        raise DataError(
            f"{path}: expected a cutmix model file of format {FORMAT_VERSION}, got {metadata['cutmix']!r}"
        )
    try:
        config, classes = json.loads(metadata["config"]), json.loads(metadata["classes"])
    except (KeyError, ValueError) as exc:
        raise DataError(
            f"{path}: a cutmix model file whose config or classes do not decode ({exc})"
        ) from None
    if not isinstance(config, dict) or not (
        isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    ):
        raise DataError(f"{path}: expected a config object and a list of class names in its metadata")
    return tensors, config, classes


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The project's safe checkpoint reader (weights only; it refuses files that would run code)."""
    from cutmix.training.checkpoint import load_checkpoint  # here: training imports this module

    return load_checkpoint(path)


def export_checkpoint(
    checkpoint_path: str | Path, out_path: str | Path | None = None, *, classes: Sequence[str] | None = None
) -> Path:
    """Writes a run's final model as a safetensors file: ``model.safetensors`` beside
    ``checkpoint_path`` unless ``out_path`` says where.

    Args:
        checkpoint_path: a run's ``checkpoint.pt``, read safely.
        out_path: the file to write; None: ``model.safetensors`` in the checkpoint's folder. An
            existing file is replaced only if it is a cutmix model file.
        classes: the class names, for a checkpoint older than class names (which holds none).

    Returns:
        The path written.

    Raises:
        DataError: the checkpoint is missing, unreadable, refused, or holds no model and config.
        UsageError: no class names anywhere, names that do not match the model's outputs, or an
            ``out_path`` that is a folder or someone else's file.
    """
    source = Path(checkpoint_path)
    target = Path(out_path) if out_path is not None else source.parent / MODEL_FILE
    check_model_target(target)
    try:
        loaded = _load_checkpoint(source)
    except DataError as exc:
        message = str(exc)
        raise DataError(message if message.startswith("--") else f"--checkpoint: {message}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict) or "config" not in loaded:
        raise DataError(f"--checkpoint: {source} is not a cutmix checkpoint (no model and config)")
    state = loaded["model"]
    saved = list(loaded.get("classes") or [])
    if saved and classes is not None and list(classes) != saved:
        raise UsageError(f"--classes: expected the checkpoint's classes {saved}, got {list(classes)}")
    names = saved or list(classes or [])
    outputs = state["fc.weight"].shape[0] if "fc.weight" in state else None
    if not names:
        raise UsageError(f"--classes: {source} holds no class names; expected them as classes=, got none")
    if outputs is not None and len(names) != outputs:
        raise UsageError(
            f"--classes: expected {outputs} names (the model's outputs), got {len(names)}: {names}"
        )
    write_model_file(target, state, dict(loaded["config"]), names)
    return target


def check_model_target(target: Path) -> None:
    """Refuses to write the model file ``target`` over a folder or over a file that is not a cutmix
    model file (someone else's ``model.safetensors`` is never replaced)."""
    if target.is_dir():
        raise UsageError(f"--out: expected a file name for the model, got the folder {str(target)!r}")
    if target.exists():
        try:
            read_model_file(target)
        except DataError:
            raise UsageError(
                f"--out: {str(target)!r} exists and is not a cutmix model file; refusing to overwrite it"
            ) from None
