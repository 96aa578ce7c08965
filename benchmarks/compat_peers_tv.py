"""cutmix.compat.torchvision beside the real torchvision: ours inside ``v2.RandomChoice`` and ``v2.Compose``
and in a DataLoader ``collate_fn`` pipeline, and compared with torchvision's own ``v2.CutMix``/``v2.MixUp``
on what must match (call forms and output structure, dtypes, label sums, ``per_batch=True``'s one box
per batch and rolled partner, and the λ / label-weight distributions by a two-sample KS test: torchvision
draws from torch's global RNG, so no draw-for-draw match).

Run with the peers venv (``../shared/tools/peers/setup-peers.sh``: torch 2.14.1, torchvision 0.29.1)::

    PYTHONPATH=src /tmp/cutmix-peers/bin/python benchmarks/compat_peers_tv.py

It prints one PASS/FAIL line per check and exits non-zero on a FAIL. ``benchmarks/compat_peers.py`` calls
:func:`check_torchvision` for its torchvision part.
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

TESTED_WITH = {"torch": "2.14.1", "torchvision": "0.29.1"}
B, C, H, W, K = 16, 3, 32, 32, 16
Check = tuple[str, bool, str]


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic D and its asymptotic p-value (no SciPy in the venv)."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    d = float(
        np.max(
            np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))
        )
    )
    n = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p))


def constant_batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample i filled with 10·(i + 1) (a pixel shows where it came from), distinct labels i."""
    values = 10 * torch.arange(1, B + 1, dtype=torch.float64)
    return values.view(-1, 1, 1, 1).expand(B, C, H, W).to(dtype).contiguous(), torch.arange(B)


def describe(x: Any) -> Any:
    """The structure of an output: types, keys, shapes and dtypes, not values."""
    if isinstance(x, dict):
        return {key: describe(value) for key, value in x.items()}
    if isinstance(x, list | tuple):
        return type(x).__name__, [describe(v) for v in x]
    if isinstance(x, torch.Tensor):
        return type(x).__name__, tuple(x.shape), str(x.dtype)
    return type(x).__name__


def one_box_rolled(mixed: torch.Tensor, images: torch.Tensor) -> bool:
    """Every pixel is the sample's own or sample i − 1's, and the pasted pixels are one rectangle,
    the same for the whole batch."""
    own, partner = mixed == images, mixed == images.roll(1, 0)
    if not bool(torch.all(own | partner)):
        return False
    mask = partner[:, 0]
    if not torch.equal(mask, mask[:1].expand_as(mask)):
        return False
    rows, cols = mask[0].any(1).nonzero().flatten(), mask[0].any(0).nonzero().flatten()
    return not len(rows) or int(mask[0].sum()) == len(rows) * len(cols)


def weights_of(targets: torch.Tensor) -> np.ndarray:
    """The weight of each sample's own label (labels are distinct: label i for sample i)."""
    return (
        targets[torch.arange(targets.shape[0]), torch.arange(targets.shape[0]) % targets.shape[1]]
        .double()
        .numpy()
    )


def shares_match(mixed: torch.Tensor, images: torch.Tensor, targets: torch.Tensor) -> bool:
    """Each target weight is exactly the share of the sample's own pixels left (CutMix)."""
    own = (mixed == images).flatten(1).double().mean(1).numpy()
    return bool(np.allclose(weights_of(targets), own, atol=1e-6))


class MixCollate:
    """``collate_fn=lambda batch: transform(*default_collate(batch))`` (torchvision's documented
    form) as a picklable object, for spawn workers."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, batch: list) -> Any:
        from torch.utils.data import default_collate

        return self.transform(*default_collate(batch))


class Pairs(torch.utils.data.Dataset):
    """uint8 (C, H, W) images, sample i filled with i (mod 251) + 1, and int labels."""

    def __len__(self) -> int:
        return 4 * B

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((C, H, W), i % 251 + 1, dtype=torch.uint8), i % K


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------


def check_compose_and_random_choice(v2: Any, ours: Any) -> list[Check]:
    images, labels = constant_batch(torch.uint8)
    choice = v2.RandomChoice(
        [ours.CutMix(num_classes=K, seed=0), ours.MixUp(num_classes=K, seed=1)], p=[0.5, 0.5]
    )
    pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True), choice])
    theirs = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                         v2.RandomChoice([v2.CutMix(num_classes=K), v2.MixUp(num_classes=K)])])  # fmt: skip
    floats = v2.ToDtype(torch.float32, scale=True)(images)  # as the pipeline scales them
    kinds, ok, sums = set(), True, True
    for _ in range(40):
        mixed, targets = pipeline(images, labels)
        ok &= describe((mixed, targets)) == describe(theirs(images, labels))
        sums &= bool(torch.allclose(targets.sum(1), torch.ones(B)))
        cut = bool(torch.all((mixed == floats) | (mixed == floats.roll(1, 0))))
        kinds.add("cutmix" if cut else "mixup")
        if cut:
            ok &= shares_match(mixed, floats, targets)
    checks = [
        ("v2.Compose([ToDtype, RandomChoice([ours CutMix, ours MixUp])]): structure as torchvision's, "
         "CutMix targets = pasted share", ok, f"40 calls, B={B} uint8 {H}x{W} -> float32"),
        ("... label rows sum to 1", sums, ""),
        ("... RandomChoice picks both of ours", kinds == {"cutmix", "mixup"}, f"picked {sorted(kinds)}"),
    ]  # fmt: skip
    copy = pickle.loads(pickle.dumps(pipeline))  # what a spawn worker receives
    checks.append(("v2.Compose with ours pickles and runs", describe(copy(images, labels)) == describe(
        pipeline(images, labels)), "pickle round trip"))  # fmt: skip
    return checks


def check_dataloader(v2: Any, ours: Any) -> list[Check]:
    """torchvision's documented pipeline: per-sample v2 transforms in the dataset, then
    ``collate_fn=lambda batch: cutmix_or_mixup(*default_collate(batch))``, in worker processes."""
    from torch.utils.data import DataLoader

    choice = v2.RandomChoice([ours.CutMix(num_classes=K, seed=0), ours.MixUp(num_classes=K, seed=1)])
    collate = MixCollate(v2.Compose([v2.ToDtype(torch.float32, scale=True), choice]))
    try:  # spawn pickles the collate_fn by reference: it needs this module importable by name
        pickle.loads(pickle.dumps(collate))
        context = "spawn"
    except (pickle.PicklingError, AttributeError, TypeError, ModuleNotFoundError):
        context = "fork"
    loader = DataLoader(
        Pairs(), batch_size=B, shuffle=True, num_workers=2, collate_fn=collate,
        multiprocessing_context=context, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    ok, count = True, 0
    for mixed, targets in loader:
        count += 1
        ok &= mixed.shape == (B, C, H, W) and mixed.dtype == torch.float32 and targets.shape == (B, K)
        ok &= bool(torch.allclose(targets.sum(1), torch.ones(B)))
    return [(f"DataLoader(collate_fn=RandomChoice of ours on default_collate), 2 {context} workers",
             ok and count == 4, f"{count} batches")]  # fmt: skip


def check_structures(v2: Any, tv_tensors: Any, ours: Any) -> list[Check]:
    """The same call forms give the same output structure as torchvision's own transforms."""
    images, labels = constant_batch()
    one_hot = torch.nn.functional.one_hot(labels, K)
    forms: dict[str, Callable[[Any], Any]] = {
        "t(images, labels)": lambda t: t(images, labels),
        "t((images, labels))": lambda t: t((images, labels)),
        "t({'image', 'labels'})": lambda t: t({"image": images, "labels": labels, "id": 7}),
        "t((images, {'labels', 'boxes_id'}))": lambda t: t((images, {"labels": labels, "image_id": labels})),
        "t(images, one-hot int64)": lambda t: t(images, one_hot),
        "t(images, one-hot float64)": lambda t: t(images, one_hot.double()),
        "t(Image, labels, plain tensor)": lambda t: t(tv_tensors.Image(images), labels, images),
        "t(Video, labels)": lambda t: t(tv_tensors.Video(images[:, None].expand(B, 2, C, H, W)), labels),
    }
    checks = []
    for kind in ("CutMix", "MixUp"):
        mine = getattr(ours, kind)(num_classes=K, seed=0)
        theirs = getattr(v2, kind)(num_classes=K)
        failed = [name for name, call in forms.items() if describe(call(mine)) != describe(call(theirs))]
        name = f"{kind}: output structure, types and dtypes as torchvision's for {len(forms)} call forms"
        checks.append((name, not failed, f"differ: {failed}" if failed else ", ".join(forms)))
        refused = []
        boxes = tv_tensors.BoundingBoxes(torch.zeros(B, 4), format="XYXY", canvas_size=(H, W))
        for leaf in (tv_tensors.Mask(torch.zeros(B, H, W)), boxes):
            for transform in (mine, theirs):
                try:
                    transform(images, labels, leaf)
                    refused.append(False)
                except ValueError:
                    refused.append(True)
        checks.append((f"{kind}: masks and boxes refused with ValueError, as torchvision", all(refused), ""))
    return checks


def check_per_batch(v2: Any, ours: Any) -> list[Check]:
    images, labels = constant_batch()
    checks = []
    mine, theirs = ours.CutMix(num_classes=K, seed=3, per_batch=True), v2.CutMix(num_classes=K)
    ok_mine = ok_theirs = True
    for _ in range(50):
        mixed, targets = mine(images, labels)
        ok_mine &= one_box_rolled(mixed, images) and shares_match(mixed, images, targets)
        mixed, targets = theirs(images, labels)
        ok_theirs &= one_box_rolled(mixed, images) and shares_match(mixed, images, targets)
    checks.append(("CutMix(per_batch=True): one box per batch, partner = batch rolled by 1, weight = pasted "
                   "share; the same holds for torchvision's", ok_mine and ok_theirs,
                   f"ours {ok_mine}, torchvision {ok_theirs}, 50 calls"))  # fmt: skip
    per_sample = ours.CutMix(num_classes=K, seed=3)
    differs = sum(not one_box_rolled(per_sample(images, labels)[0], images) for _ in range(20))
    checks.append(
        ("CutMix (default): per-sample boxes (not one box per batch)", differs >= 19, f"{differs}/20 calls")
    )
    mine, theirs = ours.MixUp(num_classes=K, seed=3, per_batch=True), v2.MixUp(num_classes=K)
    spreads = []
    for transform in (mine, theirs):
        mixed, targets = transform(images, labels)
        own, partner = images[:, 0, 0, 0].double(), images.roll(1, 0)[:, 0, 0, 0].double()
        lam = (mixed[:, 0, 0, 0].double() - partner) / (own - partner)
        spreads.append(float(lam.max() - lam.min()) + float(np.abs(weights_of(targets) - lam.numpy()).max()))
    name = "MixUp(per_batch=True): one λ per batch, partner rolled, targets weighted by λ; as torchvision's"
    detail = f"spread + target error: ours {spreads[0]:.1e}, torchvision {spreads[1]:.1e}"
    checks.append((name, max(spreads) < 1e-4, detail))
    return checks


def check_distributions(v2: Any, ours: Any, alpha: float = 0.4, calls: int = 1500) -> list[Check]:
    """λ (MixUp) and the label weight (CutMix: 1 − pasted share) against torchvision's, by KS."""
    images, labels = constant_batch()
    torch.manual_seed(0)  # torchvision draws from the global RNG
    checks = []
    for kind in ("MixUp", "CutMix"):
        theirs = getattr(v2, kind)(alpha=alpha, num_classes=K)
        reference = np.array([weights_of(theirs(images, labels)[1])[0] for _ in range(calls)])
        for per_batch in (True, False):
            mine = getattr(ours, kind)(alpha=alpha, num_classes=K, seed=5, per_batch=per_batch)
            if per_batch:
                drawn = np.array([weights_of(mine(images, labels)[1])[0] for _ in range(calls)])
            else:  # every sample's own draw, pooled
                drawn = np.concatenate([weights_of(mine(images, labels)[1]) for _ in range(calls // B + 1)])
            d, p = ks_two_sample(drawn, reference)
            what = "λ" if kind == "MixUp" else "label weight"
            name = f"{kind}(alpha={alpha}, per_batch={per_batch}): {what} distribution = torchvision's (KS)"
            checks.append((name, p > 0.01, f"D={d:.3f}, p={p:.2f}, n={len(drawn)} vs {calls}"))
    return checks


def check_torchvision() -> list[Check]:
    """Every check against the real torchvision: (name, passed, detail)."""
    import torchvision
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from cutmix.compat import torchvision as ours

    checks: list[Check] = [(f"versions: torch {torch.__version__}, torchvision {torchvision.__version__}",
                            torch.__version__.startswith(TESTED_WITH["torch"])
                            and torchvision.__version__.startswith(TESTED_WITH["torchvision"]),
                            f"tested with {TESTED_WITH}")]  # fmt: skip
    checks += check_structures(v2, tv_tensors, ours)
    checks += check_compose_and_random_choice(v2, ours)
    checks += check_dataloader(v2, ours)
    checks += check_per_batch(v2, ours)
    checks += check_distributions(v2, ours)
    return checks


def main() -> int:
    checks = check_torchvision()
    for name, passed, detail in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}" + (f"  [{detail}]" if detail else ""))
    failed = sum(not passed for _, passed, _ in checks)
    print(f"{len(checks) - failed}/{len(checks)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
