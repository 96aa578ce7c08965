"""Keras 3 layers: per-sample CutMix, MixUp, Cutout and CutMixOrMixUp with the torch ops' semantics.

``pip install -e ".[keras]"`` from the clone, and a Keras backend that loads (``KERAS_BACKEND=torch``
or ``jax``; Keras' default is TensorFlow). The layers are a drop-in for ``keras.layers.CutMix``::

    from cutmix.keras import CutMix

    mix = CutMix(alpha=1.0, num_classes=10, seed=0)
    out = mix({"images": images, "labels": labels})  # {"images": mixed, "labels": targets}
    mixed, targets = mix(images, labels)              # the same, as a pair

They keep the guarantees of :mod:`cutmix.ops`: λ ~ Beta(α, α) per sample, the paper's clipped
centre box, each target weight equal to the share of pixels actually pasted, and a sample whose
box is empty (or that is paired with itself, or not drawn by ``p``) keeps its image and label
exactly. Integer images stay integer (Keras itself casts floating images to the layer's compute
dtype before the call). ``training=False`` returns the inputs unchanged.

Labels are class ids of any integer dtype, (B,) or (B, 1) as ``keras.datasets`` gives them, or float
probabilities (B, K). Both implementations check their inputs with the same code before either runs,
so they refuse alike; values (class ids in range, boxes inside the image) are checked where they can
be read without waiting for an accelerator or tracing (NumPy, CPU torch tensors, concrete CPU JAX
arrays), not in traced graphs or TensorFlow. Box labels come back int64 (int32 on JAX without x64)
with -1 for padding; unsigned box labels are class ids only (they cannot hold the -1).

Two implementations, one semantics:

* on the torch backend, with concrete tensors, the layer calls the torch op of :mod:`cutmix.ops`
  (the fast path: it draws parameters for many batches at once on the CPU), with a
  ``torch.Generator`` seeded once from the layer's ``keras.random.SeedGenerator``;
* everywhere else (JAX, TensorFlow, ``tf.data.Dataset.map`` with the TensorFlow backend,
  ``jax.jit`` through ``stateless_call``) it is written with ``keras.ops`` and ``keras.random``
  only, every draw taken from the layer's ``SeedGenerator`` when the graph runs, never frozen at
  trace time. The box arithmetic is float32 there (JAX has no float64 by default).

Keras chooses its backend once, at import (``KERAS_BACKEND``); this package works with whichever
it is, and with Keras 3 only.

Modules: :mod:`cutmix.keras.layers` (the layers, this package's API) on :mod:`cutmix.keras.base` (input
forms, ``training``, the choice of implementation); the keras.ops implementation is
:mod:`cutmix.keras.draw` (the parameters, as :mod:`cutmix.ops.params` draws them) and
:mod:`cutmix.keras.apply` (pixels, targets, masks and boxes, as :mod:`cutmix.ops.apply`,
:mod:`cutmix.ops.dense` and :mod:`cutmix.ops.boxes` apply them); :mod:`cutmix.keras.checks` reads the
inputs' shapes, dtypes and (where it can) values for :mod:`cutmix.ops.rules`, whose checks and
messages both implementations share.
"""

from __future__ import annotations

import importlib.util
import os

# The project is installed from its clone, not from a package index.
_INSTALL = 'pip install -e ".[keras]" from the cutmix clone (or pip install "keras>=3.8")'


def _import_error_message(error: ImportError) -> str:
    """Why ``import keras`` failed, and what to do: Keras missing, or installed with a backend that
    cannot load (its default is TensorFlow, which this project does not install)."""
    if importlib.util.find_spec("keras") is None:
        return f"cutmix.keras needs Keras 3, which is not installed: {_INSTALL}"
    chosen = os.environ.get("KERAS_BACKEND")
    backend = (
        f"KERAS_BACKEND={chosen}"
        if chosen
        else "KERAS_BACKEND is not set, so Keras loads its default, TensorFlow, unless "
        "~/.keras/keras.json names another"
    )
    return (
        f"cutmix.keras: Keras is installed but its backend could not load ({backend}; {error}): "
        "set KERAS_BACKEND=torch (or jax) before importing keras, or install TensorFlow"
    )


try:
    import keras
    from keras import ops  # noqa: F401 - a backend that cannot load fails here
except ImportError as error:  # depends on the environment: tested in subprocesses
    raise ImportError(_import_error_message(error)) from error

if not keras.__version__.startswith("3."):  # pragma: no cover - depends on the environment
    raise ImportError(f"cutmix.keras needs Keras 3, got Keras {keras.__version__}")

from cutmix.keras.layers import CutMix, CutMixOrMixUp, Cutout, MixUp  # noqa: E402

__all__ = ["CutMix", "CutMixOrMixUp", "Cutout", "MixUp"]
