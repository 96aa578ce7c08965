"""cutmix.compat.timm beside the real timm (and, through its hook, cutmix.compat.torchvision beside the real
torchvision): the same batches through timm's ``Mixup``/``FastCollateMixup`` and ours, in every mode,
compared on what must match. timm draws from NumPy's global RNG and we from a torch.Generator, so there is
no draw-for-draw match: deterministic things (signatures, targets and smoothing with mixing off, output
types) must be equal; each mode's structure must hold for both (read back from the pixels and targets
alone, the same analysis for both); shares of mixed samples and of CutMix are compared by a two-proportion
z-test (|z| < 4) and λ / pasted-share distributions by a two-sample KS test (p > 0.001). NumPy's global
RNG and our seeds are fixed, so a run is reproducible.

Run with the peers venv (``bash ../shared/tools/peers/setup-peers.sh``; scipy added with
``/tmp/cutmix-peers/bin/pip install scipy``) and our sources::

    cd /work/main && PYTHONPATH=src /tmp/cutmix-peers/bin/python benchmarks/compat_peers.py

Tested with timm 1.0.31 and torch 2.14.1 (the peers venv). Prints one PASS/FAIL line per check and exits
non-zero on any FAIL. If ``benchmarks/compat_peers_tv.py`` defines ``check_torchvision()`` its checks are
run and printed too (see ``torchvision_checks``).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import stats

TESTED_WITH = {"timm": "1.0.31", "torch": "2.14.1"}
B, C, H, W, K = 32, 3, 16, 16, 64  # labels 0..B-1 < K: every sample's partner has another label
MODES = ("batch", "pair", "elem")
Check = tuple[str, bool, str]


# ----------------------------------------------------------------------------------------------
# Reading a mixed batch back from its pixels and targets (the same analysis for timm and ours)
# ----------------------------------------------------------------------------------------------


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixels (so every output pixel tells which sample it came from) and labels 0..B-1."""
    return torch.rand(B, C, H, W, generator=torch.Generator().manual_seed(seed)), torch.arange(B)


def read_back(x: torch.Tensor, out: torch.Tensor, targets: torch.Tensor, smoothing: float) -> dict:
    """Per sample: kind (0 not mixed, 1 CutMix, 2 MixUp), the share of its own content read from the
    pixels (own pixels for CutMix, the least-squares λ for MixUp), the target weight read from the
    targets, the box mask, and whether every pixel is explained by the flipped partner."""
    partner = x.flip(0)
    own_px, partner_px = (out == x).all(dim=1), (out == partner).all(dim=1)
    unchanged = own_px.flatten(1).all(1)
    cutmix = ~unchanged & (own_px | partner_px).flatten(1).all(1) & partner_px.flatten(1).any(1)
    diff = (x - partner).double()
    lam = ((out - partner).double() * diff).flatten(1).sum(1) / diff.pow(2).flatten(1).sum(1)
    residual = (out.double() - (partner.double() + lam.view(-1, 1, 1, 1) * diff)).abs().flatten(1).amax(1)
    kind = torch.where(unchanged, 0, torch.where(cutmix, 1, 2))
    share = torch.where(kind == 1, own_px.flatten(1).double().mean(1), torch.where(kind == 2, lam, 1.0))
    off = smoothing / K
    on = 1 - smoothing + off
    weight = (targets.double()[torch.arange(B), torch.arange(B)] - off) / (on - off)
    explained = torch.where(kind == 2, residual < 1e-4, torch.ones(B, dtype=torch.bool))
    rebuilt = torch.full((B, K), off, dtype=torch.float64)
    rebuilt[torch.arange(B), torch.arange(B)] = on
    w = weight[:, None]
    consistent = bool(torch.allclose(targets.double(), rebuilt * w + rebuilt.flip(0) * (1 - w), atol=1e-5))
    return {
        "kind": kind,
        "share": share,
        "weight": weight,
        "mask": partner_px & ~own_px,
        "explained": explained,
        "targets_ok": consistent,
    }


def run(make: Callable, mode: str, calls: int, smoothing: float = 0.1, seed: int = 0, **kwargs) -> list[dict]:
    """``calls`` batches through a fresh Mixup of this kind; timm's gets a copy (it mixes in place)."""
    mixup = make(mode=mode, label_smoothing=smoothing, num_classes=K, **kwargs)
    records = []
    for call in range(calls):
        x, y = batch(seed * 100_000 + call)
        out, targets = mixup(x.clone(), y)
        records.append(read_back(x, out, targets, smoothing))
    return records


def gather(records: list[dict], key: str, rows: int = B) -> np.ndarray:
    """``key`` of the first ``rows`` samples of each batch: 1 in batch mode and B / 2 in pair mode, so
    that each draw counts once (the rest repeat it) and the tests' sample sizes are honest."""
    return np.concatenate([r[key][:rows].numpy() for r in records])


def independent(mode: str) -> int:
    return {"batch": 1, "pair": B // 2}.get(mode, B)


def structure_holds(records: list[dict], mode: str) -> tuple[bool, str]:
    """Each mode's structure: batch one kind, weight and box for all; pair i and B-1-i alike; elem
    per-sample weights and, with both alphas, both kinds in one batch; always the flipped partner."""
    problems = []
    for r in records:
        kind, weight, mask = r["kind"], r["weight"], r["mask"]
        if not (bool(r["explained"].all()) and r["targets_ok"]):
            problems.append("pixels or targets not a flipped-partner mix")
        if mode == "batch" and not (
            bool((kind == kind[0]).all())
            and bool(torch.allclose(weight, weight[0]))
            and bool((mask == mask[0]).all())
        ):
            problems.append("batch not mixed alike")
        if mode == "pair" and not (
            torch.equal(kind, kind.flip(0))
            and torch.allclose(weight, weight.flip(0))
            and torch.equal(mask, mask.flip(0))
        ):
            problems.append("pair i, B-1-i not alike")
    if mode == "elem":
        both = sum(bool((r["kind"] == 1).any() and (r["kind"] == 2).any()) for r in records)
        # MixUp's λ is continuous, so per-sample draws are all distinct (CutMix's pasted shares are
        # multiples of 1/(H·W) and may repeat); and no batch is paired as in pair mode.
        distinct = min(
            len(torch.unique(r["weight"][r["kind"] == 2])) / max(int((r["kind"] == 2).sum()), 1)
            for r in records
        )
        paired = sum(torch.allclose(r["weight"], r["weight"].flip(0)) for r in records)
        if both < len(records) * 0.9 or distinct < 1.0 or paired:
            problems.append(
                f"elem not per sample ({both} batches with both kinds, {distinct:.2f} of MixUp λs distinct, "
                f"{paired} batches paired)"
            )
    return not problems, "; ".join(sorted(set(problems))) or f"{len(records)} batches"


def ks(a: np.ndarray, b: np.ndarray) -> tuple[bool, str]:
    result = stats.ks_2samp(a, b)
    return result.pvalue > 1e-3, f"KS D={result.statistic:.3f} p={result.pvalue:.3f} (n={len(a)}, {len(b)})"


def proportions(a: int, n: int, b: int, m: int) -> tuple[bool, str]:
    pooled = (a + b) / (n + m)
    sd = math.sqrt(max(pooled * (1 - pooled) * (1 / n + 1 / m), 1e-300))
    z = (a / n - b / m) / sd
    return abs(z) < 4, f"timm {a}/{n}={a / n:.3f}, ours {b}/{m}={b / m:.3f}, z={z:+.2f}"


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------


def check_signatures(timm_data, ours) -> list[Check]:
    def positional(cls) -> list:
        return [
            (p.name, p.default)
            for p in inspect.signature(cls).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD
        ]

    checks = []
    for name in ("Mixup", "FastCollateMixup"):
        theirs, mine = positional(getattr(timm_data, name)), positional(getattr(ours, name))
        checks.append((f"signature: {name} arguments and defaults", theirs == mine, f"timm {theirs}"))
    call = list(inspect.signature(timm_data.Mixup.__call__).parameters)[1:]
    mine = [p for p in inspect.signature(ours.Mixup.__call__).parameters if p != "return_params"][1:]
    checks.append(("signature: mixup_fn(x, target)", call == mine, f"timm {call}, ours {mine}"))
    return checks


def check_targets_off(timm_data, ours) -> list[Check]:
    """With prob=0, or mixup_enabled=False, both must return the images unchanged and equal targets."""
    x, y = batch(1)
    same, detail = True, []
    for smoothing in (0.0, 0.1, 0.25):
        for mode in MODES:
            for off in ("prob", "enabled"):
                made = []
                for cls in (timm_data.Mixup, ours.Mixup):
                    mixup = cls(
                        mode=mode,
                        label_smoothing=smoothing,
                        num_classes=K,
                        prob=0.0 if off == "prob" else 1.0,
                    )
                    mixup.mixup_enabled = off != "enabled"
                    made.append(mixup(x.clone(), y))
                (tx, tt), (ox, ot) = made
                ok = (
                    torch.equal(tx, x) and torch.equal(ox, x) and torch.equal(tt, ot) and tt.dtype == ot.dtype
                )
                same &= ok
                if not ok:
                    detail.append(f"{mode}/{off}/{smoothing}")
    dense = (torch.rand(B, K, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    multi = [
        cls(prob=0.0, multi_label=True, num_classes=K)(x.clone(), dense)[1]
        for cls in (timm_data.Mixup, ours.Mixup)
    ]
    return [
        (
            "targets: smoothing with mixing off (prob=0, mixup_enabled=False), 3 modes x 3 smoothings, equal",
            same,
            ", ".join(detail) or "torch.equal, float32",
        ),
        ("targets: multi_label smoothing towards 0.5 with mixing off, equal", torch.equal(*multi), ""),
    ]


def check_modes(timm_data, ours) -> list[Check]:
    """Structure per mode, the targets' agreement with the pixels, and the distributions."""
    checks = []
    for mode in MODES:
        calls = 400 if mode == "batch" else 40
        both = {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "prob": 0.6, "switch_prob": 0.3}
        timm_r = run(timm_data.Mixup, mode, calls, **both)
        ours_r = run(lambda **kw: ours.Mixup(seed=1, **kw), mode, calls, **both)
        for who, records in (("timm", timm_r), ("ours", ours_r)):
            ok, detail = structure_holds(records, mode)
            checks.append(
                (f"{mode}: structure ({who}): flipped partner, timm's target mix, mode's sharing", ok, detail)
            )
        first = independent(mode)
        kt, ko = gather(timm_r, "kind", first), gather(ours_r, "kind", first)
        ok, detail = proportions(int((kt > 0).sum()), len(kt), int((ko > 0).sum()), len(ko))
        checks.append(
            (f"{mode}: share of mixed {'batches' if first == 1 else 'samples'} (prob=0.6)", ok, detail)
        )
        ok, detail = proportions(
            int((kt == 1).sum()), int((kt > 0).sum()), int((ko == 1).sum()), int((ko > 0).sum())
        )
        checks.append((f"{mode}: share of CutMix among mixed (switch_prob=0.3)", ok, detail))
        for kind, name in ((1, "CutMix pasted share"), (2, "MixUp λ")):
            st, so = (gather(r, "share", first)[gather(r, "kind", first) == kind] for r in (timm_r, ours_r))
            wt, wo = (gather(r, "weight", first)[gather(r, "kind", first) == kind] for r in (timm_r, ours_r))
            agree = bool(np.allclose(st, wt, atol=1e-4) and np.allclose(so, wo, atol=1e-4))
            checks.append((f"{mode}: {name} = target weight (correct_lam=True), timm and ours", agree, ""))
            ok, detail = ks(st, so)
            checks.append((f"{mode}: {name} distribution", ok, detail))
    return checks


def check_lam_options(timm_data, ours) -> list[Check]:
    """correct_lam=False (the drawn λ as weight: Beta, inexact) and cutmix_minmax (exact, its own box)."""
    checks = []
    for mode, kwargs, name in (
        ("elem", {"correct_lam": False}, "correct_lam=False"),
        ("batch", {"correct_lam": False}, "correct_lam=False"),
        ("elem", {"cutmix_minmax": (0.2, 0.7)}, "cutmix_minmax=(0.2, 0.7)"),
        ("pair", {"cutmix_minmax": (0.2, 0.7)}, "cutmix_minmax=(0.2, 0.7)"),
    ):
        calls = 600 if mode == "batch" else 40
        common = {"mixup_alpha": 0.0, "cutmix_alpha": 0.7, **kwargs}
        timm_r = run(timm_data.Mixup, mode, calls, **common)
        ours_r = run(lambda **kw: ours.Mixup(seed=2, **kw), mode, calls, **common)
        first = independent(mode)
        for key in ("weight", "share"):
            ok, detail = ks(gather(timm_r, key, first), gather(ours_r, key, first))
            checks.append(
                (
                    f"{mode}, {name}: target-weight distribution"
                    if key == "weight"
                    else f"{mode}, {name}: pasted-share distribution",
                    ok,
                    detail,
                )
            )
        inexact = [
            float(np.mean(np.abs(gather(r, "weight", first) - gather(r, "share", first)) > 1e-6))
            for r in (timm_r, ours_r)
        ]
        expect_exact = "cutmix_minmax" in kwargs
        ok = all((v == 0) if expect_exact else (v > 0) for v in inexact)
        checks.append(
            (
                f"{mode}, {name}: weight {'exact' if expect_exact else 'inexact (the drawn λ)'} in both",
                ok,
                f"share of weights != pasted share: timm {inexact[0]:.3f}, ours {inexact[1]:.3f}",
            )
        )
        if expect_exact:
            sides = [
                np.array(
                    [int(r["mask"][i].any(1).sum()) for r in recs for i in range(B) if r["kind"][i] == 1]
                )
                for recs in (timm_r, ours_r)
            ]
            ok = all(((s >= int(H * 0.2)) & (s < int(H * 0.7))).all() for s in sides) and ks(*sides)[0]
            checks.append(
                (
                    f"{mode}, {name}: box heights in [int(H·min), int(H·max)), same distribution",
                    ok,
                    ks(*sides)[1],
                )
            )
    return checks


def check_collate(timm_data, ours) -> list[Check]:
    """FastCollateMixup: output types and shapes, mixing off equal, CutMix's pixels and weights."""
    pixels = torch.randint(
        0, 256, (B, C, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    samples = [(pixels[i].numpy(), i) for i in range(B)]
    checks = []
    for mode in (*MODES, "half"):
        outs = {}
        for who, cls in (("timm", timm_data.FastCollateMixup), ("ours", ours.FastCollateMixup)):
            mixed = cls(mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, num_classes=K)(
                [(a.copy(), b) for a, b in samples]
            )
            off = cls(prob=0.0, mode=mode, num_classes=K)([(a.copy(), b) for a, b in samples])
            outs[who] = (mixed, off)
        (tm, toff), (om, ooff) = outs["timm"], outs["ours"]
        kinds = all(a.dtype == b.dtype and a.shape == b.shape for a, b in zip(tm, om, strict=True))
        checks.append(
            (
                f"collate {mode}: output dtypes and shapes",
                kinds,
                f"{tm[0].dtype} {tuple(tm[0].shape)}, {tm[1].dtype} {tuple(tm[1].shape)}",
            )
        )
        equal = torch.equal(toff[0], ooff[0]) and torch.equal(toff[1], ooff[1])
        checks.append((f"collate {mode}: mixing off (prob=0) equal images and targets", equal, ""))
    for who, cls in (("timm", timm_data.FastCollateMixup), ("ours", ours.FastCollateMixup)):
        collate = cls(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=K, label_smoothing=0.0)
        good = 0
        for _ in range(20):
            out, targets = collate([(a.copy(), b) for a, b in samples])
            own = (out == pixels).all(1).flatten(1).double().mean(1)
            flipped = ((out == pixels) | (out == pixels.flip(0))).all()
            good += bool(flipped) and bool(
                torch.allclose(targets[torch.arange(B), torch.arange(B)].double(), own)
            )
        checks.append(
            (
                f"collate elem CutMix ({who}): pixels from the flipped partner, weight = pasted share",
                good == 20,
                f"{good}/20 batches",
            )
        )
    return checks


def check_refusals(timm_data, ours) -> list[Check]:
    x, y = torch.rand(7, C, H, W), torch.arange(7)
    refused = []
    for cls in (timm_data.Mixup, ours.Mixup):
        try:
            cls(num_classes=K)(x.clone(), y)
            refused.append(None)
        except (AssertionError, ValueError) as error:
            refused.append(type(error).__name__)
    return [("odd batch size refused by both", None not in refused, f"timm {refused[0]}, ours {refused[1]}")]


# ----------------------------------------------------------------------------------------------
# HOOK: torchvision's checks, from benchmarks/compat_peers_tv.py (written separately) if it exists
# ----------------------------------------------------------------------------------------------


def torchvision_checks() -> list[Check]:
    """``check_torchvision() -> list[(name, passed, detail)]`` from benchmarks/compat_peers_tv.py, if that
    file exists and defines it; a failure to load or run it is a FAIL."""
    path = Path(__file__).with_name("compat_peers_tv.py")
    if not path.exists():
        return []
    try:
        spec = importlib.util.spec_from_file_location("compat_peers_tv", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        check = getattr(module, "check_torchvision", None)
        return [] if check is None else [(f"torchvision: {n}", bool(p), d) for n, p, d in check()]
    except Exception as error:  # reported as a FAIL line, not a traceback that hides timm's results
        return [
            (
                "torchvision: compat_peers_tv.check_torchvision() ran",
                False,
                f"{type(error).__name__}: {error}",
            )
        ]


def main() -> int:
    import timm
    from timm import data as timm_data

    from cutmix.compat import timm as ours

    np.random.seed(0)  # timm draws from NumPy's global RNG
    torch.manual_seed(0)
    checks: list[Check] = [
        (
            f"versions: timm {timm.__version__}, torch {torch.__version__}",
            timm.__version__ == TESTED_WITH["timm"] and torch.__version__.startswith(TESTED_WITH["torch"]),
            f"tested with {TESTED_WITH}",
        )
    ]
    for group in (
        check_signatures,
        check_targets_off,
        check_modes,
        check_lam_options,
        check_collate,
        check_refusals,
    ):
        checks += group(timm_data, ours)
    checks += torchvision_checks()
    for name, passed, detail in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}" + (f"  [{detail}]" if detail else ""), flush=True)
    failed = sum(not passed for _, passed, _ in checks)
    print(f"{len(checks) - failed}/{len(checks)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
