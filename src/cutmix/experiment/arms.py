"""The arms of a comparison and the setting it varies: ``--arms`` and ``--vary``, parsed and checked.

An arm is a mixing op with some of its options: ``cutmix``, ``cutmix:alpha=0.2:p=0.5``,
``cutout:size=8``. Options an arm does not give come from the recipe and the command line. Its
:attr:`Arm.name` (folder name and report label) is built from the op and the *resolved* values, in
a fixed key order, so ``cutmix:p=.5:alpha=.2`` and ``cutmix:alpha=0.2:p=0.5`` are one arm
(``cutmix_alpha=0.2_p=0.5``), and an arm without options keeps its op's name: the folders of a plain
``--arms none,cutmix`` comparison are those it always had, and so are its config hashes.

``--vary KEY=V1,V2,...`` runs the whole plan (arms × seeds) once per value of one training setting,
each value in its own subfolder named ``key=value`` from the resolved value (``lr=0.1``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from cutmix.errors import UsageError
from cutmix.training.config import MIXES, TrainConfig, config_with

# The options an arm may set: the spec's key -> the TrainConfig field. The order is the order of
# the keys in an arm's name.
ARM_KEYS: dict[str, str] = {
    "alpha": "alpha",
    "p": "mix_p",
    "size": "cutout_size",
    "partner": "partner",
    "mix-off-epochs": "mix_off_epochs",
}
# Other spellings users write: the field's name and its flag's.
_ALIASES = {**{field: key for key, field in ARM_KEYS.items()}, "mix-p": "p", "cutout-size": "size"}
# Which options each op reads (an option an op ignores would make two arms that train alike).
OP_KEYS: dict[str, tuple[str, ...]] = {
    "none": (),
    "cutmix": ("alpha", "p", "partner", "mix-off-epochs"),
    "mixup": ("alpha", "p", "partner", "mix-off-epochs"),
    "cutout": ("size", "p", "mix-off-epochs"),
}
# Settings --vary may not sweep: the arms' op (--arms), the per-run seed and init, what names the
# data or the recipe (a different experiment, not a setting of this one), and options that do not
# change what a run learns.
NOT_VARIED = ("mix", "seed", "init", "data", "recipe", "device", "eval_batch_size", "stop_on_divergence",
              "checkpoint_every_min")  # fmt: skip
_FIELD_TYPES = {f.name: str(f.type) for f in fields(TrainConfig)}
# What names look like on disk (for telling a comparison's folders from a user's).
ARM_NAME = re.compile(rf"(?:{'|'.join(MIXES)})(?:_(?:{'|'.join(ARM_KEYS)})=[^_/\\]+)*")
VARY_FOLDER = re.compile(r"[a-z][a-z0-9-]*=[^/\\]+")


def format_value(value: Any) -> str:
    """A resolved value as it appears in names: ``0.2``, ``1.0``, ``15``, ``true``, ``permute``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_value(field: str, text: str, where: str) -> Any:
    """``text`` as a value of the TrainConfig ``field``; a UsageError naming ``where`` if it is not one."""
    kind = _FIELD_TYPES[field]
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
    except ValueError:
        expected = "an integer" if kind == "int" else "a finite number"
        raise UsageError(
            f"{where}: expected {expected} for {field.replace('_', '-')}, got {text!r}"
        ) from None
    if kind == "bool":
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if text.lower() not in words:
            raise UsageError(f"{where}: expected true or false for {field.replace('_', '-')}, got {text!r}")
        return words[text.lower()]
    if not text:
        raise UsageError(f"{where}: expected a value for {field.replace('_', '-')}, got an empty one")
    return text


@dataclass(frozen=True)
class Arm:
    """A mixing op and the options it sets itself (spec key -> resolved value, in :data:`ARM_KEYS` order).

    Attributes:
        op: one of :data:`cutmix.training.config.MIXES`.
        options: ``(key, value)`` pairs, keys among :data:`OP_KEYS` of ``op``.
        spec: the text it was parsed from (for messages).
    """

    op: str
    options: tuple[tuple[str, Any], ...] = ()
    spec: str = ""

    @property
    def name(self) -> str:
        """The folder name and report label: the op, then ``_key=value`` per option."""
        return self.op + "".join(f"_{key}={format_value(value)}" for key, value in self.options)

    def overrides(self) -> dict[str, Any]:
        """The TrainConfig fields this arm sets, ``mix`` included."""
        return {"mix": self.op, **{ARM_KEYS[key]: value for key, value in self.options}}

    def config(self, base: TrainConfig, **changes: Any) -> TrainConfig:
        """``base`` with this arm's op and options (and ``changes``), validated; a refusal names the spec."""
        try:
            return config_with(base, **self.overrides(), **changes)
        except UsageError as exc:
            raise UsageError(f"--arms: {self.spec or self.name!r}: {exc}") from None


def parse_arm(spec: str) -> Arm:
    """``"cutmix:alpha=0.2:p=0.5"`` -> an :class:`Arm`; a UsageError naming ``--arms`` and the spec for an
    unknown op or key, a key the op does not read, a key given twice or a value of the wrong type."""
    where = f"--arms: {spec!r}"
    op, *parts = [part.strip() for part in spec.split(":")]
    if op not in MIXES:
        raise UsageError(f"{where}: expected a mixing op among {', '.join(MIXES)}, got {op!r}")
    given: dict[str, Any] = {}
    for part in parts:
        key, sep, text = part.partition("=")
        key = _ALIASES.get(key.strip(), key.strip())
        if not sep or key not in ARM_KEYS:
            raise UsageError(
                f"{where}: expected key=value with a key among {', '.join(ARM_KEYS)}, got {part!r}"
            )
        if key not in OP_KEYS[op]:
            reads = ", ".join(OP_KEYS[op]) or "no option"
            raise UsageError(f"{where}: expected options {op} reads ({reads}), got {key}")
        if key in given:
            raise UsageError(f"{where}: expected each key once, got {key} twice")
        given[key] = parse_value(ARM_KEYS[key], text, where)
    return Arm(op, tuple((key, given[key]) for key in ARM_KEYS if key in given), spec.strip())


def parse_arms(text: str) -> tuple[Arm, ...]:
    """``"none,cutmix,cutmix:alpha=1.0"`` -> the arms; a UsageError naming ``--arms`` for an empty list,
    a bad spec, or two specs of one arm (the same op and values, however written)."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise UsageError(f"--arms: expected a comma-separated list of {', '.join(MIXES)}, got {text!r}")
    arms = tuple(parse_arm(spec) for spec in specs)
    seen: dict[str, str] = {}
    for arm in arms:
        if arm.name in seen:
            raise UsageError(
                f"--arms: expected each arm once, got {seen[arm.name]!r} and {arm.spec!r} (both {arm.name})"
            )
        seen[arm.name] = arm.spec
    return arms


def as_arms(arms: Sequence[str | Arm]) -> tuple[Arm, ...]:
    """Arms given as specs or :class:`Arm` s, as arms (for callers of the library)."""
    return tuple(arm if isinstance(arm, Arm) else parse_arm(arm) for arm in arms)


def check_distinct(arms: Sequence[Arm], base: TrainConfig) -> None:
    """Refuses two arms that resolve to one configuration (``cutmix`` and ``cutmix:alpha=0.25`` under a
    recipe whose alpha is 0.25), naming both: they would train the same run twice."""
    seen: dict[tuple, Arm] = {}
    for arm in arms:
        config = arm.config(base, seed=0, init=None)
        key = tuple(sorted((k, repr(v)) for k, v in vars(config).items()))
        if key in seen:
            raise UsageError(
                f"--arms: expected arms that train differently, got {seen[key].spec!r} and {arm.spec!r}, "
                f"which resolve to the same configuration (options not given come from the recipe and the "
                "command line)"
            )
        seen[key] = arm


def resolve_baseline(baseline: str | None, arms: Sequence[Arm]) -> str | None:
    """The name of the arm every paired difference is taken against: ``baseline`` (a spec, resolved like
    an arm's) or, when not given, ``none`` if it is an arm (else no paired differences); a UsageError
    naming ``--baseline`` for a spec that is not one of the arms."""
    names = [arm.name for arm in arms]
    if baseline is None:
        return "none" if "none" in names else None
    try:
        name = parse_arm(baseline).name
    except UsageError as exc:
        raise UsageError(str(exc).replace("--arms", "--baseline", 1)) from None
    if name not in names:
        raise UsageError(f"--baseline: expected one of the arms ({', '.join(names)}), written as in --arms, "
                         f"got {baseline!r}")  # fmt: skip
    return name


@dataclass(frozen=True)
class Vary:
    """One training setting and the values a comparison is run at (``--vary epochs=15,30``).

    Attributes:
        field: the TrainConfig field.
        values: its resolved values, in the order given.
    """

    field: str
    values: tuple[Any, ...]

    @property
    def key(self) -> str:
        """The setting as a flag without dashes: ``batch-size``."""
        return self.field.replace("_", "-")

    def folder(self, value: Any) -> str:
        """The subfolder of ``value``: ``epochs=15``."""
        return f"{self.key}={format_value(value)}"


def parse_vary(text: str, arms: Sequence[Arm] = ()) -> Vary:
    """``"epochs=15,30,60"`` -> a :class:`Vary`; a UsageError naming ``--vary`` for an unknown or
    excluded setting, a bad or repeated value, fewer than two values, or a setting an arm sets itself."""
    key, sep, values_text = text.partition("=")
    field = key.strip().lstrip("-").replace("-", "_")
    if not sep or field not in _FIELD_TYPES or field in NOT_VARIED:
        allowed = ", ".join(f.replace("_", "-") for f in _FIELD_TYPES if f not in NOT_VARIED)
        raise UsageError(f"--vary: expected KEY=V1,V2,... with KEY among {allowed}, got {text!r}")
    texts = [v for v in values_text.split(",") if v.strip()]
    values = tuple(parse_value(field, v, f"--vary {key.strip()}") for v in texts)
    if len(values) < 2:
        raise UsageError(f"--vary: expected at least two values for {key.strip()}, got {text!r}")
    names = [format_value(v) for v in values]
    if len(set(names)) != len(names):
        raise UsageError(f"--vary: expected each value once, got {', '.join(names)}")
    setters = [arm.spec for arm in arms if field in arm.overrides() and field != "mix"]
    if setters:
        raise UsageError(
            f"--vary: expected a setting no arm sets itself, got {field.replace('_', '-')}, "
            f"which {', '.join(map(repr, setters))} set(s)"
        )
    return Vary(field, values)
