"""Drop-in replacements for peers' mixing APIs, each in its own module, imported by name:

* :mod:`cutmix.compat.timm`: ``Mixup`` (timm's constructor and call, tested against timm 1.0.31) and its
  collate form ``FastCollateMixup``;
* :mod:`cutmix.compat.torchvision`: ``CutMix`` and ``MixUp`` as ``nn.Module`` transforms with
  torchvision ``v2`` signatures.

Nothing is imported here, so ``import cutmix.compat.timm`` loads only what it needs.
"""
