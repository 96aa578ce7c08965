"""The Keras example "CutMix data augmentation for image classification", in Keras, with cutmix.keras.

The example's experiment: ResNet-20 v1 (its ``resnet_v20``: he_normal, L2 1e-4 on the convolution
kernels, softmax head; 274,442 parameters), Adam (Keras defaults), batch 32, 15 epochs, pixels in
[0, 1], one set of initial weights for both arms, CutMix with α = 0.25 and the partner taken from a
second, independently shuffled stream. Two deliberate fixes:

* both arms are shuffled every epoch (the example never shuffles its no-augmentation arm, which
  then collapsed to 10% in its log);
* an empty box mixes nothing (the example pastes a 1-pixel patch and weighs it as one pixel).

Data comes through :func:`cutmix.data.load_dataset`: ``cifar10``/``cifar100`` (found locally or
downloaded), a path to the official archive or to an image tree ``ROOT/{train,test}/<class>/``,
or ``synthetic[:N]``. Runs on any Keras backend; the torch backend is the default here::

    python examples/keras_cutmix.py --data cifar10 --out keras-cutmix.json
    python examples/keras_cutmix.py --data synthetic --epochs 1 --limit 512 --out /tmp/quick.json

Writes the two test accuracies (and the per-epoch history) as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Keras fixes its backend at import; this project's environment has torch. KERAS_BACKEND wins.
os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from cutmix.data import load_dataset  # noqa: E402
from cutmix.keras import CutMix  # noqa: E402

ARMS = ("none", "cutmix")


# ----------------------------------------------------------------------------------------------
# The example's model, layer for layer
# ----------------------------------------------------------------------------------------------


def _resnet_layer(
    inputs: Any,
    num_filters: int = 16,
    kernel_size: int = 3,
    strides: int = 1,
    activation: str | None = "relu",
    batch_normalization: bool = True,
) -> Any:
    x = layers.Conv2D(
        num_filters, kernel_size=kernel_size, strides=strides, padding="same", kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(1e-4),
    )(inputs)  # fmt: skip
    if batch_normalization:
        x = layers.BatchNormalization()(x)
    if activation is not None:
        x = layers.Activation(activation)(x)
    return x


def resnet_v1(
    input_shape: tuple[int, int, int] = (32, 32, 3), depth: int = 20, num_classes: int = 10
) -> keras.Model:
    """The example's ``resnet_v20(input_shape, depth)``: ResNet v1, depth 6n + 2, softmax output."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: expected 6n + 2 with n >= 1 (8, 20, 32, ...), got {depth}")
    inputs = keras.Input(shape=input_shape)
    x = _resnet_layer(inputs)
    num_filters = 16
    for stack in range(3):
        for block in range((depth - 2) // 6):
            strides = 2 if stack > 0 and block == 0 else 1  # downsample at each new stack
            y = _resnet_layer(x, num_filters, strides=strides)
            y = _resnet_layer(y, num_filters, activation=None)
            if strides == 2:  # linear projection shortcut to the new shape
                x = _resnet_layer(x, num_filters, kernel_size=1, strides=2, activation=None,
                                  batch_normalization=False)  # fmt: skip
            x = layers.Activation("relu")(layers.add([x, y]))
        num_filters *= 2
    x = layers.Flatten()(layers.AveragePooling2D(pool_size=8)(x))
    outputs = layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal")(x)
    return keras.Model(inputs, outputs)


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


class Batches(keras.utils.PyDataset):
    """Training batches of pixels in [0, 1] and one-hot labels, fully reshuffled every epoch.

    With ``mix``, each batch is mixed with a batch of a second, independently shuffled stream
    (the example zips two shuffled copies of the training set): sample i of the one gets its box
    from sample i of the other.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, mix: CutMix | None = None
    ) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size, self.mix = images, labels, batch_size, mix
        self.rng = np.random.default_rng(seed)
        self._shuffle()

    def _shuffle(self) -> None:
        self.order = self.rng.permutation(len(self.images))
        self.order2 = self.rng.permutation(len(self.images))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def _batch(self, order: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(order[index * self.batch_size : (index + 1) * self.batch_size])
        return self.images[rows].astype(np.float32) / 255.0, self.labels[rows]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._batch(self.order, index)
        if self.mix is None:
            return images, labels
        mixed, targets = self.mix(images, labels, *self._batch(self.order2, index))
        return keras.ops.convert_to_numpy(mixed), keras.ops.convert_to_numpy(targets)

    def on_epoch_end(self) -> None:
        self._shuffle()


# ----------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = load_dataset(args.data, seed=args.seed)
    train_x, train_y = data.train_images, data.train_labels
    test_x, test_y = data.test_images, data.test_labels
    if args.limit is not None:  # a seeded subset, for quick runs
        rng = np.random.default_rng(args.seed)
        keep = np.sort(rng.permutation(len(train_x))[: args.limit])
        train_x, train_y = train_x[keep], train_y[keep]
        keep = np.sort(rng.permutation(len(test_x))[: args.limit])
        test_x, test_y = test_x[keep], test_y[keep]
    classes = data.num_classes
    train_onehot = np.eye(classes, dtype=np.float32)[train_y]
    test_onehot = np.eye(classes, dtype=np.float32)[test_y]
    test_pixels = test_x.astype(np.float32) / 255.0

    # One set of initial weights for both arms, as the example's initial_weights.weights.h5.
    keras.utils.set_random_seed(args.seed)
    initial = resnet_v1(data.image_shape, args.depth, classes)
    initial_weights = initial.get_weights()

    result: dict[str, Any] = {
        "data": str(args.data), "backend": keras.config.backend(), "keras": keras.__version__,
        "epochs": args.epochs, "batch_size": args.batch_size, "alpha": args.alpha, "seed": args.seed,
        "depth": args.depth, "params": initial.count_params(), "train_images": len(train_x),
        "test_images": len(test_x), "test_accuracy": {}, "final_loss": {}, "history": {}, "seconds": {},
    }  # fmt: skip
    for arm in args.arms:
        keras.utils.set_random_seed(args.seed)  # the same data order for both arms
        model = resnet_v1(data.image_shape, args.depth, classes)
        model.set_weights(initial_weights)
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        mix = CutMix(alpha=args.alpha, seed=args.seed) if arm == "cutmix" else None
        batches = Batches(train_x, train_onehot, args.batch_size, args.seed, mix)
        start = time.perf_counter()
        history = model.fit(batches, epochs=args.epochs, verbose=args.verbose)
        _, accuracy = model.evaluate(test_pixels, test_onehot, batch_size=256, verbose=0)
        result["seconds"][arm] = round(time.perf_counter() - start, 1)
        result["test_accuracy"][arm] = float(accuracy)
        result["final_loss"][arm] = float(history.history["loss"][-1])
        result["history"][arm] = {key: [float(v) for v in values] for key, values in history.history.items()}
        print(f"{arm}: test accuracy {accuracy:.2%} after {args.epochs} epochs", flush=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="cifar10", help="cifar10, cifar100, synthetic[:N], or a path")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--limit", type=int, default=None, help="use N training (and at most N test) images")
    parser.add_argument("--out", type=Path, default=Path("keras-cutmix.json"), help="the JSON result")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--depth", type=int, default=20, help="ResNet depth 6n + 2 (the example: 20)")
    parser.add_argument("--arms", default=",".join(ARMS), help="none, cutmix or both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, help="Keras' fit verbosity")
    args = parser.parse_args(argv)
    args.arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit: expected an int >= 1, got {args.limit}")
    if not args.arms or any(arm not in ARMS for arm in args.arms):
        parser.error(f"--arms: expected some of {', '.join(ARMS)}, got {','.join(args.arms)!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["test_accuracy"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
