"""Behaviour pins: every op and option, the torch ops and the Keras layers, hashed from their outputs.

The digests were computed with the code at 76de277 (before the defects fixes and the redesign), by
running this file as a script: ``python tests/test_pins.py`` prints the table. A refactor that changes
any draw, pixel, target, mask or box of any case below fails here. Floating outputs are hashed after
rounding to 2^-16, so that a 1-ulp difference between CPU kinds (fused multiply-add or not in MixUp's
blend) does not fail while any real change does.
"""

from __future__ import annotations

import hashlib
import os
import sys

import pytest
import torch

from cutmix.ops import CutMix, CutMixOrMixUp, Cutout, MixUp

CALLS = 3  # each case is called this many times on one op: the second and third use draws made ahead


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(dtype: str = "float32", shape=(8, 3, 12, 10), seed: int = 0) -> torch.Tensor:
    x = torch.rand(shape, generator=gen(seed))
    return (x * 255).round().to(torch.uint8) if dtype == "uint8" else x


def _labels(n: int = 8, k: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=gen(seed))


def _masks(shape=(8, 12, 10), seed: int = 2) -> torch.Tensor:
    return torch.randint(0, 4, shape, generator=gen(seed))


def _boxes(n: int = 8, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    xy = torch.randint(0, 6, (n, 2, 2), generator=g).float()
    wh = torch.randint(1, 6, (n, 2, 2), generator=g).float()
    boxes = torch.cat([xy, xy + wh], dim=-1)  # (n, 2 boxes, xyxy)
    labels = torch.randint(0, 5, (n, 2), generator=g)
    labels[::3, 1] = -1  # some padding
    return boxes, labels


def _leaves(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [leaf for item in value for leaf in _leaves(item)]
    if hasattr(value, "table"):  # MixParams
        return [value.table]
    if value is None:
        return []
    return [torch.as_tensor(value)]


def digest(outputs) -> str:
    h = hashlib.sha256()
    for leaf in _leaves(outputs):
        leaf = leaf.detach().cpu()
        if leaf.is_floating_point():
            leaf = torch.round(leaf.double() * 2**16).to(torch.int64)
        h.update(str((tuple(leaf.shape), str(leaf.dtype))).encode())
        h.update(leaf.contiguous().numpy().tobytes())
    return h.hexdigest()


def _run(op, make_args, calls: int = CALLS) -> str:
    return digest([op(*args, **kwargs) for args, kwargs in (make_args() for _ in range(calls))])


def _plain(dtype="float32", **kw):
    return lambda: ((_images(dtype), _labels()), dict(return_params=True, **kw))


def _channels_last_memory():
    return (_images().contiguous(memory_format=torch.channels_last), _labels()), {"return_params": True}


def _channels_last_format():
    return (_images().permute(0, 2, 3, 1).contiguous(), _labels()), {"return_params": True}


def _second_batch():
    return (_images(), _labels(), _images(seed=5), _labels(seed=6)), {"return_params": True}


def _probabilities():
    probs = torch.softmax(torch.randn(8, 5, generator=gen(7)), dim=1)
    return (_images(), probs), {"return_params": True}


def _dense():
    boxes, box_labels = _boxes()
    return (_images(), _labels()), dict(
        masks=_masks(), boxes=boxes, box_labels=box_labels, return_params=True
    )


def _box_lists():
    boxes, box_labels = _boxes()
    keep = [slice(None, 1 + i % 2) for i in range(8)]
    return (_images(), _labels()), dict(
        boxes=[b[k] for b, k in zip(boxes, keep, strict=True)],
        box_labels=[lab[k].clamp(min=0) for lab, k in zip(box_labels, keep, strict=True)],
        return_params=True,
    )


def _clips():
    return (_images(shape=(8, 3, 4, 12, 10)), _labels()), {"return_params": True}


def _mixup_masks():
    return (_images(), _labels()), dict(masks=_masks(), return_params=True)


TORCH_CASES = {
    "cutmix": (lambda: CutMix(num_classes=5, generator=gen(0)), _plain()),
    "cutmix-uint8": (lambda: CutMix(num_classes=5, generator=gen(0)), _plain("uint8")),
    "cutmix-alpha0.25-p0.5": (lambda: CutMix(alpha=0.25, p=0.5, num_classes=5, generator=gen(1)), _plain()),
    "cutmix-inside": (lambda: CutMix(box="inside", num_classes=5, generator=gen(2)), _plain()),
    "cutmix-roll": (lambda: CutMix(partner="roll", num_classes=5, generator=gen(3)), _plain()),
    "cutmix-flip": (lambda: CutMix(partner="flip", num_classes=5, generator=gen(4)), _plain()),
    "cutmix-smoothing": (lambda: CutMix(label_smoothing=0.1, num_classes=5, generator=gen(5)), _plain()),
    "cutmix-probabilities": (lambda: CutMix(generator=gen(6)), _probabilities),
    "cutmix-second-batch": (lambda: CutMix(num_classes=5, generator=gen(7)), _second_batch),
    "cutmix-channels-last-memory": (lambda: CutMix(num_classes=5, generator=gen(8)), _channels_last_memory),
    "cutmix-channels-last-format": (
        lambda: CutMix(num_classes=5, data_format="channels_last", generator=gen(9)),
        _channels_last_format,
    ),
    "cutmix-masks-boxes": (lambda: CutMix(num_classes=5, generator=gen(10)), _dense),
    "cutmix-box-lists": (lambda: CutMix(num_classes=5, generator=gen(11)), _box_lists),
    "cutmix-clips": (lambda: CutMix(num_classes=5, generator=gen(12)), _clips),
    "mixup": (lambda: MixUp(num_classes=5, generator=gen(0)), _plain()),
    "mixup-uint8": (lambda: MixUp(num_classes=5, generator=gen(0)), _plain("uint8")),
    "mixup-alpha0.4-p0.5": (lambda: MixUp(alpha=0.4, p=0.5, num_classes=5, generator=gen(13)), _plain()),
    "mixup-roll-smoothing": (
        lambda: MixUp(partner="roll", label_smoothing=0.2, num_classes=5, generator=gen(14)),
        _plain(),
    ),
    "mixup-second-batch": (lambda: MixUp(num_classes=5, generator=gen(15)), _second_batch),
    "mixup-masks": (lambda: MixUp(num_classes=5, generator=gen(16)), _mixup_masks),
    "mixup-clips": (lambda: MixUp(num_classes=5, generator=gen(17)), _clips),
    "cutout": (lambda: Cutout(size=4, num_classes=5, generator=gen(0)), _plain()),
    "cutout-uint8-p0.5": (
        lambda: Cutout(size=(3, 5), p=0.5, num_classes=5, generator=gen(18)),
        _plain("uint8"),
    ),
    "cutout-fill": (lambda: Cutout(size=6, fill=0.5, num_classes=5, generator=gen(19)), _plain()),
    "cutout-masks-boxes": (lambda: Cutout(size=5, num_classes=5, generator=gen(20)), _dense),
    "switch": (
        lambda: CutMixOrMixUp(
            CutMix(num_classes=5, generator=gen(21)),
            MixUp(num_classes=5, generator=gen(22)),
            generator=gen(23),
        ),
        _plain(),
    ),
    "switch-0.8": (
        lambda: CutMixOrMixUp(
            CutMix(alpha=0.5, num_classes=5, generator=gen(24)),
            MixUp(alpha=0.2, num_classes=5, generator=gen(25)),
            switch_prob=0.8,
            generator=gen(26),
        ),
        _plain("uint8"),
    ),
}


def _keras_cases() -> dict:
    from cutmix.keras import CutMix as KCutMix
    from cutmix.keras import CutMixOrMixUp as KSwitch
    from cutmix.keras import Cutout as KCutout
    from cutmix.keras import MixUp as KMixUp

    def channels_last(dtype="float32"):
        return lambda: ((_images(dtype).permute(0, 2, 3, 1).contiguous(), _labels()), {})

    def dense():
        boxes, box_labels = _boxes()
        masks = _masks().unsqueeze(-1)
        sample = {
            "images": _images().permute(0, 2, 3, 1).contiguous(),
            "labels": _labels(),
            "segmentation_masks": masks,
            "bounding_boxes": {"boxes": boxes, "labels": box_labels},
        }
        return (sample,), {}

    return {
        "keras-cutmix": (lambda: KCutMix(num_classes=5, seed=0), channels_last()),
        "keras-cutmix-uint8-alpha0.5-p0.7": (
            lambda: KCutMix(alpha=0.5, p=0.7, num_classes=5, seed=1),
            channels_last("uint8"),
        ),
        "keras-cutmix-inside-roll": (
            lambda: KCutMix(box="inside", partner="roll", num_classes=5, seed=2),
            channels_last(),
        ),
        "keras-cutmix-dense": (lambda: KCutMix(num_classes=5, seed=3), dense),
        "keras-mixup": (
            lambda: KMixUp(alpha=0.4, label_smoothing=0.1, num_classes=5, seed=4),
            channels_last(),
        ),
        "keras-cutout": (lambda: KCutout(size=4, p=0.5, num_classes=5, seed=5), channels_last("uint8")),
        "keras-cutout-dense": (lambda: KCutout(size=5, num_classes=5, seed=6), dense),
        "keras-switch": (
            lambda: KSwitch(KCutMix(num_classes=5, seed=7), KMixUp(num_classes=5, seed=8), seed=9),
            channels_last(),
        ),
    }


def _keras_digest(make, make_args, path: str) -> str:
    layer = make()
    layers = [layer, *(getattr(layer, name) for name in ("cutmix", "mixup") if hasattr(layer, name))]
    for each in layers:
        each._prefer_torch_op = path == "torch_op"
    outputs = []
    for _ in range(CALLS):
        args, kwargs = make_args()
        out = layer(*args, **kwargs)
        outputs.append([out[k] for k in sorted(out)] if isinstance(out, dict) else out)
    return digest(_flatten_dicts(outputs))


def _flatten_dicts(value):
    if isinstance(value, dict):
        return [_flatten_dicts(value[k]) for k in sorted(value)]
    if isinstance(value, list | tuple):
        return [_flatten_dicts(v) for v in value]
    return torch.as_tensor(value.cpu() if hasattr(value, "cpu") else value)


# fmt: off
PINNED = {
    "cutmix": "42d0d3cdd354fdf55587a51b76e1749d3a715bef4a3a62b3438cd60d2e3bb370",
    "cutmix-uint8": "50a0850428e454bad0b0e3e92af6d57b15f10dbb50e64db6b1cf1ea8ab81b287",
    "cutmix-alpha0.25-p0.5": "40205d500fbda8861841c41d427391d36115d104ede162aef8e19520aa7572e4",
    "cutmix-inside": "b8dda662f28e636de40fe0467db4e5d10d92b5e98595f4b95ef0dec556273d16",
    "cutmix-roll": "1d5d7f664ad6c2eaf9ad94852a6f9ef8e26e0815d9f4726f5b1869e193eb7116",
    "cutmix-flip": "bba51a9e13bef783c88efb20501786d64dba29dce6bca15d5ae6b163fa310ad9",
    "cutmix-smoothing": "6e0771724d2ca74e814ba5bc13baf5cd776f6b31da62c2dc154b0c845fc2e3ce",
    "cutmix-probabilities": "3761bd7792e0c95aa8ac41e13240f52f1d20ac0e4a96232ac15fcaaa2cbe707c",
    "cutmix-second-batch": "3b04d9c17965db22d3a4d978616fd66beffd7a28fa8427706583b26fc29492af",
    "cutmix-channels-last-memory": "f95225c827e252503b1d69db3158c4848aafff00ad0bb1bf251f9b4edce2975d",
    "cutmix-channels-last-format": "fbb251227a4dd29a1ea34f389dd148b08dbfdad00d3a88dc2cd2681271622996",
    "cutmix-masks-boxes": "31341286ef1cc21e89ebac825b67cd2b92398524d4e53f2134797b0f9fdab490",
    "cutmix-box-lists": "b3d736b6c047d70f7a02d36f2494d2b2ceb4984f33db2ccd45c091084a349c66",
    "cutmix-clips": "1de33a9013cd65e084777bc6a0aad5e6e4a4e11c56d3ac1080680e292a967cdd",
    "mixup": "50bc8722ede433ed72c9c48a3c17d3550c823d3623532b36b47f66b200ff2b03",
    "mixup-uint8": "3b0ddd5e36e18cfdd5d73f31aa465508df3261b274c098e7f5ed0d8bb2b1d793",
    "mixup-alpha0.4-p0.5": "6a098f78791fefa65d693b6f03ac26742e5e0994180d8ba890a5111ea89364c1",
    "mixup-roll-smoothing": "e91e4f463fdafd0b16aac30a90d2ab1b0b0d76e778e786499e4f806161bb8080",
    "mixup-second-batch": "f4ea13578fd92d07e8bb88b912912cc32eec42dc8b0e97f2885ae062fa8d9791",
    "mixup-masks": "72f6e38c19db3399282772dddb9d7ae109b9a014634b11b5a00aa738a18b6927",
    "mixup-clips": "c49987081a0ad930bd8f42d0380ebaddb4e29d06f6a67eb9e7240629e30138d5",
    "cutout": "e5cb621bfaec4e06b897f3707ee17ef1b53606fc67e973e53a0f55dec677489a",
    "cutout-uint8-p0.5": "4304936aa08ebaba3e2fffe993c168f8ec2e5790eb7c1661c437b38d051c9d34",
    "cutout-fill": "b6486020ad3f31f92bd0f5b9d1feeedd98404a87819ebbfb5faad1d5d09d726c",
    "cutout-masks-boxes": "545a8675726ea1dd1cd6ad669a2fd4262ea8dde7b1235b2fe269ee5bd3a9d593",
    "switch": "d1e06d24077e73c255674525ead859eb7eb4225b16d8ee44203fbb512562c3f9",
    "switch-0.8": "5960d2db5951c997cac5c68f656a3a20139109cb34eec414b17148c1e880f494",
    "keras-cutmix/torch_op": "53215c07efaeacf16ab7e446de6f0e4b58bce539ee44c1a8478ed5f95c7b8a08",
    "keras-cutmix/keras_ops": "9d0b9e33f67198cfac33410e59001e6b53af5a78f4660f09641af40507cc7fed",
    "keras-cutmix-uint8-alpha0.5-p0.7/torch_op": "860519c6af3f1c40cb85367484f7091cd514296357b6c3582774f2a9af0d2351",
    "keras-cutmix-uint8-alpha0.5-p0.7/keras_ops": "00c260c45f0d48e0e4b83fa08e388881fa4f5c723a9483fcce60278ad658656d",
    "keras-cutmix-inside-roll/torch_op": "d325fe484f08fd2c772950cabcc2199a9aaa7ec0e6e66a172b5d45af3c9e34a5",
    "keras-cutmix-inside-roll/keras_ops": "aa0a9d6d778a9102d97856933011545b51348585065b787b03cdbe899be6ddc9",
    "keras-cutmix-dense/torch_op": "9a3a26b7814089085d99808d648e43d30f4c8a85401d161a29d5ba0bd309b9aa",
    "keras-cutmix-dense/keras_ops": "2067393356061ffc366b8d5db8b5f656b6f94c64a483b8a655e082d5cc14f6ab",
    "keras-mixup/torch_op": "ac5f56df2615c341cafc841f119e6d797b0ebd8960eadad333e87385e357647b",
    "keras-mixup/keras_ops": "ff7d75c0c9f5ff5d1e650f58db25fabc4e8302180f920c27e94eb948d4de1d14",
    "keras-cutout/torch_op": "690047cf521d88f3b8dcaecf2214d6d9858a82ec1763bb4941dbc935e2ea1e98",
    "keras-cutout/keras_ops": "935b1178178a73b2bd578231370dbf9a915d3fb4e65b00406b12982e331e8344",
    "keras-cutout-dense/torch_op": "4d257e24cc8163dc6789b152e2f9c6f7bb739c4613a6d537ad4b479efbde6187",
    "keras-cutout-dense/keras_ops": "c63ce2eb45abe715432f5701c54e7d0104a131349f93674bebb73f749491fffe",
    "keras-switch/torch_op": "bebf46be05605f557e0b7f49f4bb481dfd6f54381f39e4b9f1b5713599b0b660",
    "keras-switch/keras_ops": "eda55103800e4ac05bcd7d368399b499e7553cdf08b5f242c3460a3dec77f3f3",
}
# fmt: on


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_torch_op_outputs_are_pinned(name):
    make, make_args = TORCH_CASES[name]
    assert _run(make(), make_args) == PINNED[name]


KERAS_NAMES = [
    "keras-cutmix",
    "keras-cutmix-uint8-alpha0.5-p0.7",
    "keras-cutmix-inside-roll",
    "keras-cutmix-dense",
    "keras-mixup",
    "keras-cutout",
    "keras-cutout-dense",
    "keras-switch",
]


@pytest.fixture(scope="module")
def keras_cases():
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    if keras.config.backend() != "torch":  # pragma: no cover - keras imported earlier with another backend
        pytest.skip(f"Keras was imported with the {keras.config.backend()} backend")
    return _keras_cases()


@pytest.mark.parametrize("path", ["torch_op", "keras_ops"])
@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_layer_outputs_are_pinned(keras_cases, name, path):
    make, make_args = keras_cases[name]
    assert _keras_digest(make, make_args, path) == PINNED[f"{name}/{path}"]


def test_cases_are_all_pinned():
    # A case added without its digest would otherwise fail with a KeyError only: name them.
    wanted = set(TORCH_CASES) | {f"{n}/{p}" for n in KERAS_NAMES for p in ("torch_op", "keras_ops")}
    assert wanted == set(PINNED)


if __name__ == "__main__":  # prints the table for PINNED
    os.environ["KERAS_BACKEND"] = "torch"
    table = {name: _run(make(), make_args) for name, (make, make_args) in TORCH_CASES.items()}
    keras_cases = _keras_cases()
    assert sorted(keras_cases) == sorted(KERAS_NAMES)
    for name in KERAS_NAMES:
        for path in ("torch_op", "keras_ops"):
            table[f"{name}/{path}"] = _keras_digest(*keras_cases[name], path)
    for name, value in table.items():
        print(f'    "{name}": "{value}",')
    sys.exit(0)
