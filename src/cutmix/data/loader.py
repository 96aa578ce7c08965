"""A device-side loader: the whole split lives on the device as one uint8 tensor.

Each batch is one gather out of that tensor plus a handful of batched ops (the airbench recipe):
no worker processes, no per-image Python loop. Per epoch, the order and every augmentation draw
are made up front on the CPU from a ``torch.Generator`` seeded with ``(seed, epoch, stream)``, so
an epoch depends on nothing but those numbers (resumable, identical on every device and rank) and
is moved to the device in one transfer, after which a batch needs no host-device synchronisation.

Random crop + flip works on the uint8 pixels in their physical memory layout. The batch is written
into a zero-filled buffer with ``pad`` pixels of border; the images to be flipped are mirrored
once more into extra slots of the same buffer. Every output row (one image row, or one channel's
row when channels-first) is then a contiguous run of that buffer, so the crop and the flip
together are a single ``index_select`` over an overlapping-rows view: one memcpy per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DeviceLoader", "stratified_split"]

AUGMENTS = ("none", "crop-flip")

# Generator streams per epoch: each draw has its own, so that turning one feature on (say, the
# paired stream) never changes what another draws.
_ORDER, _AUGMENT, _PAIR_ORDER, _PAIR_AUGMENT = range(4)


def _stream_seed(seed: int, epoch: int, stream: int) -> int:
    # SeedSequence hashes the tuple, so neighbouring (seed, epoch) pairs give unrelated streams,
    # which seed + epoch would not (seed 1 epoch 0 == seed 0 epoch 1).
    words = np.random.SeedSequence((seed, epoch, stream)).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(seed, epoch, stream))


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _as_tensor(value: object, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        # torch.from_numpy warns on read-only arrays (np.load(mmap_mode="r"), broadcast views);
        # a copy is needed anyway for non-contiguous ones.
        if not value.flags.writeable or not value.flags.c_contiguous:
            value = np.ascontiguousarray(value).copy()
        return torch.from_numpy(value)
    raise TypeError(f"expected {name} as a numpy array or torch tensor, got {type(value).__name__}")


def _check_images(images: object) -> Tensor:
    tensor = _as_tensor(images, "images")
    if tensor.dtype != torch.uint8 or tensor.ndim != 4:
        raise ValueError(
            f"expected images as uint8 (N, H, W, C), got {tensor.dtype} with shape {tuple(tensor.shape)}"
        )
    n, h, w, c = tensor.shape
    if n < 1 or h < 1 or w < 1 or c < 1:
        raise ValueError(f"expected images as uint8 (N, H, W, C), no axis empty, got {tuple(tensor.shape)}")
    return tensor


def _check_labels(labels: object, n: int) -> Tensor:
    tensor = _as_tensor(labels, "labels")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise ValueError(f"expected labels as integers, got {tensor.dtype}")
    if tensor.shape != (n,):
        raise ValueError(f"expected labels of shape ({n},) to match images, got {tuple(tensor.shape)}")
    return tensor.to(torch.int64)


def _check_stats(mean: object, std: object, channels: int) -> tuple[Tensor, Tensor] | None:
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ValueError(f"expected mean and std together, got mean={mean!r}, std={std!r}")
    out = []
    for name, value in (("mean", mean), ("std", std)):
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"expected {name} as {channels} numbers, got {value!r}") from exc
        if t.numel() != channels or not bool(torch.isfinite(t).all()):
            raise ValueError(f"expected {name} as {channels} finite numbers (one per channel), got {value!r}")
        out.append(t)
    if bool((out[1] <= 0).any()):
        raise ValueError(f"expected std > 0 in every channel, got {std!r}")
    return out[0], out[1]


def _check_resize(resize: object) -> tuple[int, int] | None:
    if resize is None:
        return None
    if not isinstance(resize, Sequence) or len(resize) != 2 or not all(_is_int(v) and v >= 1 for v in resize):
        raise ValueError(f"expected resize as (H, W) positive integers, got {resize!r}")
    return int(resize[0]), int(resize[1])


@dataclass(frozen=True)
class _Crop:
    """One epoch's crop + flip draws, on the device.

    ``row_base``: int64 (M,), where each sample's first output row starts in the padded batch
    buffer. ``flip_slots``: int64, the in-batch positions of the flipped samples, batch after
    batch; ``flip_offsets``: host ints, where each batch's run starts in it (batches + 1 of them).
    """

    row_base: Tensor
    flip_slots: Tensor
    flip_offsets: list[int]


@dataclass(frozen=True)
class _Stream:
    """One epoch of one stream: ``order`` int64 (M,) indices into the split, M = this rank's
    samples, and the crop draws (``None`` without augmentation)."""

    order: Tensor
    crop: _Crop | None


class DeviceLoader:
    """Batches of a whole split kept on ``device`` as one uint8 tensor.

    ``images``: uint8 (N, H, W, C), numpy or torch; ``labels``: integers (N,). They are copied to
    ``device`` once, as (N, C, H, W) uint8, in channels_last memory format if ``channels_last``
    (physically N, H, W, C) or contiguous otherwise; the loader never writes to them (on the CPU,
    with a C-contiguous input, the stored tensor may share its memory).

    Iterating yields ``(images, labels)``: ``images`` of ``dtype`` (B, C, H', W') on ``device`` in
    the same memory format, scaled to [0, 1] (``x / 255``) and then, when ``mean``/``std`` are
    given (one number per channel, in [0, 1] units), normalised ``(x / 255 - mean) / std``;
    ``labels`` int64 (B,). (H', W') is ``resize`` if given, else (H, W). With ``paired=True`` it
    yields ``(images, labels, images2, labels2)``, the second pair coming from an independently
    shuffled and augmented pass over the same split (the CutMix partner of the Keras example).

    ``augment="crop-flip"``: each image gets its own random crop out of the image zero-padded by
    ``pad`` pixels (offset ``dy, dx`` uniform in [0, 2 * pad]), then its own horizontal flip with
    probability 1/2. Both happen on the uint8 pixels, at the stored resolution, before ``resize``.

    Epochs: each ``iter()`` runs one epoch and then moves on to the next; ``set_epoch(k)`` makes
    the next ``iter()`` run epoch ``k``. Epoch ``k``'s order is a full permutation of the split
    drawn from a generator seeded with ``(seed, k)``, so it does not depend on earlier epochs.

    DDP: with ``world_size > 1`` every rank draws the same permutation and takes positions
    ``rank, rank + world_size, ...`` of it. If N is not a multiple of ``world_size``, the
    permutation is first cut to a multiple (``drop_last=True``) or wrapped around (as
    ``DistributedSampler`` does, ``drop_last=False``) so that every rank gets the same number of
    samples and batches. ``drop_last`` also drops each rank's final short batch.
    """

    def __init__(
        self,
        images: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        drop_last: bool = True,
        augment: str = "none",
        pad: int = 4,
        mean: Sequence[float] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
        channels_last: bool = True,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        paired: bool = False,
        resize: tuple[int, int] | None = None,
    ) -> None:
        images_t = _check_images(images)
        n, h, w, c = images_t.shape
        labels_t = _check_labels(labels, n)
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"expected batch_size as a positive integer, got {batch_size!r}")
        if augment not in AUGMENTS:
            raise ValueError(f"expected augment in {AUGMENTS}, got {augment!r}")
        if not _is_int(pad) or pad < 0:
            raise ValueError(f"expected pad as an integer >= 0, got {pad!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"expected dtype as a floating torch.dtype, got {dtype!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"expected seed as an integer >= 0, got {seed!r}")
        if not _is_int(world_size) or world_size < 1:
            raise ValueError(f"expected world_size as a positive integer, got {world_size!r}")
        if not _is_int(rank) or not 0 <= rank < world_size:
            raise ValueError(f"expected rank in [0, {world_size}), got {rank!r}")
        if drop_last and n < world_size:
            raise ValueError(f"expected at least world_size={world_size} images with drop_last, got {n}")
        stats = _check_stats(mean, std, c)
        self._resize = _check_resize(resize)
        if self._resize == (h, w):
            self._resize = None  # the seed's resize to 32 on 32x32 data: skip the op entirely

        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.augment = augment
        self.pad = int(pad)
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.paired = bool(paired)
        self.num_samples = int(n)
        self._epoch = 0
        self._start = 0  # the batch the next iter() starts at (set_epoch)

        # Per rank: cut or wrap the permutation to a multiple of world_size, then stride it.
        per_rank = n // world_size if drop_last else -(-n // world_size)
        self.samples_per_rank = per_rank
        if drop_last and per_rank < self.batch_size:
            raise ValueError(
                f"expected batch_size <= {per_rank} (samples per rank) with drop_last, got {batch_size}"
            )

        # Physical layout: (N, H, W, C) for channels_last, (N, C, H, W) otherwise. All the uint8
        # work happens on contiguous physical tensors; the logical (N, C, H, W) view is a permute.
        physical = images_t if self.channels_last else images_t.permute(0, 3, 1, 2)
        self._images = physical.to(self.device).contiguous()
        self._labels = labels_t.to(self.device)
        self._shape = (int(h), int(w), int(c))

        # Offsets of one image's output rows from its first: (planes, H), planes = C if channels-first.
        _, row_stride, plane_stride, _ = self._strides()
        planes = 1 if self.channels_last else int(c)
        self._row_offsets = (
            torch.arange(planes).view(planes, 1) * plane_stride + torch.arange(h).view(1, h) * row_stride
        ).to(self.device)

        out_h, out_w = self._resize or (h, w)
        self._scale, self._bias = self._affine(stats, out_h, out_w)

    # ------------------------------------------------------------------ public

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will run."""
        return self._epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next ``iter()`` run epoch ``epoch`` (>= 0) from its batch ``start`` on.

        ``start`` (0..len(self)) skips the epoch's first batches without making them: the epoch's
        order and draws are made whole, so the batches that follow are exactly those of the whole
        epoch (a run resumed within an epoch). Only the next ``iter()`` starts there.
        """
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"expected epoch as an integer >= 0, got {epoch!r}")
        if not _is_int(start) or not 0 <= start <= len(self):
            raise ValueError(f"expected start as an integer in [0, {len(self)}], got {start!r}")
        self._epoch = int(epoch)
        self._start = int(start)

    @property
    def images(self) -> Tensor:
        """The stored split: uint8 (N, C, H, W) on the device (a read-only view; do not modify)."""
        return self._logical(self._images)

    @property
    def labels(self) -> Tensor:
        """The stored labels: int64 (N,) on the device."""
        return self._labels

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return -(-self.samples_per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch, start = self._epoch, self._start
        self._epoch += 1
        self._start = 0
        return self._run(epoch, start)

    def __repr__(self) -> str:
        h, w, c = self._shape
        return (
            f"DeviceLoader(n={self.num_samples}, image=({c}, {h}, {w}), batch_size={self.batch_size}, "
            f"augment={self.augment!r}, device={self.device}, rank={self.rank}/{self.world_size}, "
            f"paired={self.paired}, batches={len(self)})"
        )

    # ------------------------------------------------------------------ epoch plan

    def _plan(self, epoch: int, order_stream: int, augment_stream: int) -> _Stream:
        n, world = self.num_samples, self.world_size
        if self.shuffle:
            perm = torch.randperm(n, generator=_generator(self.seed, epoch, order_stream))
        else:
            perm = torch.arange(n)
        total = self.samples_per_rank * world
        # Wrapping with tile handles world_size > N as well as the usual short tail.
        perm = perm[:total] if total <= n else perm.repeat(-(-total // n))[:total]
        order = perm[self.rank :: world]
        if self.augment == "none":
            return _Stream(order.to(self.device), None)

        # Draw for every position of the full permutation and stride like the order, so that a
        # rank's draws are the same whatever the world size's other ranks do.
        gen = _generator(self.seed, epoch, augment_stream)
        span = 2 * self.pad + 1
        dy = torch.randint(span, (total,), generator=gen)[self.rank :: world]
        dx = torch.randint(span, (total,), generator=gen)[self.rank :: world]
        flip = (torch.rand(total, generator=gen) < 0.5)[self.rank :: world]

        m, bs = len(order), self.batch_size
        position = torch.arange(m)
        local = position % bs  # in-batch position
        start = position - local  # first position of the batch
        batch_len = torch.clamp(m - start, max=bs)
        # Rank of each flipped sample among the flipped ones of its batch.
        ones = flip.to(torch.int64)
        csum = torch.cumsum(ones, 0)
        before = torch.cat([torch.zeros(1, dtype=torch.int64), csum])[start]
        slot = torch.where(flip, batch_len + (csum - ones - before), local)
        # Crop then mirror equals mirror (of the padded image) then crop at 2 * pad - dx.
        dx_eff = torch.where(flip, 2 * self.pad - dx, dx)

        img_stride, row_stride, _, col_step = self._strides()
        row_base = slot * img_stride + dy * row_stride + dx_eff * col_step
        n_batches = -(-m // bs)
        counts = [0] + csum[torch.clamp(torch.arange(1, n_batches + 1) * bs, max=m) - 1].tolist()
        flip_slots = local[flip]
        crop = _Crop(row_base.to(self.device), flip_slots.to(self.device), counts)
        return _Stream(order.to(self.device), crop)

    def _strides(self) -> tuple[int, int, int, int]:
        """Element strides of one padded image: (image, row, channel plane, one column step)."""
        h, w, c = self._shape
        hp, wp = h + 2 * self.pad, w + 2 * self.pad
        if self.channels_last:  # (Hp, Wp, C): a row holds all channels
            return hp * wp * c, wp * c, 0, c
        return c * hp * wp, wp, hp * wp, 1  # (C, Hp, Wp): one row per channel

    # ------------------------------------------------------------------ batches

    def _run(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, ...]]:
        main = self._plan(epoch, _ORDER, _AUGMENT)
        pair = self._plan(epoch, _PAIR_ORDER, _PAIR_AUGMENT) if self.paired else None
        for i in range(start_batch, len(self)):
            start = i * self.batch_size
            stop = min(start + self.batch_size, self.samples_per_rank)
            x, y = self._batch(main, i, start, stop)
            if pair is None:
                yield x, y
            else:
                yield (x, y, *self._batch(pair, i, start, stop))

    def _batch(self, stream: _Stream, i: int, start: int, stop: int) -> tuple[Tensor, Tensor]:
        idx = stream.order[start:stop]
        images = self._images.index_select(0, idx)  # uint8, physical layout, memcpy per image
        crop = stream.crop
        if crop is not None:
            flips = crop.flip_slots[crop.flip_offsets[i] : crop.flip_offsets[i + 1]]
            images = self._crop_flip(images, crop.row_base[start:stop], flips)
        return self._to_float(images), self._labels.index_select(0, idx)

    def _crop_flip(self, images: Tensor, row_base: Tensor, flip_slots: Tensor) -> Tensor:
        """uint8 physical (B, ...) -> the same shape, each image cropped and maybe mirrored."""
        b = images.shape[0]
        h, w, c = self._shape
        p = self.pad
        k = flip_slots.numel()
        if self.channels_last:
            interior = (slice(None), slice(p, p + h), slice(p, p + w))
            buf = images.new_zeros((b + k, h + 2 * p, w + 2 * p, c))
            w_dim = 2
        else:
            interior = (slice(None), slice(None), slice(p, p + h), slice(p, p + w))
            buf = images.new_zeros((b + k, c, h + 2 * p, w + 2 * p))
            w_dim = 3
        buf[:b][interior] = images
        if k:
            buf[b:][interior] = images.index_select(0, flip_slots).flip(w_dim)

        rows = (row_base.view(b, 1, 1) + self._row_offsets).reshape(-1)
        flat = buf.reshape(-1)
        row_len = w * self._strides()[3]
        # Every possible row start as one overlapping view: the crop is then a row gather.
        windows = flat.as_strided((flat.numel() - row_len + 1, row_len), (1, 1))
        return windows.index_select(0, rows).view(images.shape)

    def _to_float(self, images: Tensor) -> Tensor:
        # Convert while still physically contiguous: converting the permuted view takes a strided,
        # unvectorised path (5x slower on CPU); the permute afterwards is free.
        x = self._logical(images.to(self.dtype))
        if self._resize is not None:
            x = F.interpolate(x, size=self._resize, mode="bilinear", align_corners=False, antialias=False)
        # x / 255 exactly as the Keras example does it when there is nothing to normalise.
        x = x.div_(255.0) if self._scale is None else x.mul_(self._scale).add_(self._bias)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def _logical(self, physical: Tensor) -> Tensor:
        return physical.permute(0, 3, 1, 2) if self.channels_last else physical

    def _affine(
        self, stats: tuple[Tensor, Tensor] | None, out_h: int, out_w: int
    ) -> tuple[Tensor | None, Tensor | None]:
        if stats is None:
            return None, None
        mean, std = stats
        c = mean.numel()
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # Full (1, C, H, W) constants in the output's memory format: broadcasting a (1, C, 1, 1)
        # tensor over channels_last data runs an unvectorised loop, ~10x slower on CPU.
        scale = (1.0 / (255.0 * std)).view(1, c, 1, 1).expand(1, c, out_h, out_w)
        bias = (-mean / std).view(1, c, 1, 1).expand(1, c, out_h, out_w)
        return (
            scale.to(self.device, self.dtype).contiguous(memory_format=memory_format),
            bias.to(self.device, self.dtype).contiguous(memory_format=memory_format),
        )


def stratified_split(
    labels: np.ndarray | Tensor | Sequence[int], n_val: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``n_val`` samples, stratified by class, deterministically from ``seed``.

    ``labels``: integers (N,). Each class c with n_c samples gives floor(n_val * n_c / N) samples,
    and the remaining few go to the classes with the largest remainders (ties to the lower class),
    so the total is exactly ``n_val``. Which samples of a class are held out is drawn with
    ``numpy.random.default_rng(seed)``. Returns ``(train_idx, val_idx)``: int64 arrays, each sorted
    ascending, disjoint, together covering range(N).
    """
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"expected labels as integers (N,), got {arr.dtype} with shape {arr.shape}")
    n = arr.size
    if n == 0:
        raise ValueError("expected labels with at least one entry, got none")
    if not _is_int(n_val) or not 0 <= n_val < n:
        raise ValueError(f"expected n_val as an integer in [0, {n}) for {n} labels, got {n_val!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"expected seed as an integer >= 0, got {seed!r}")
    classes, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    quota = (n_val * counts) // n
    remainder = (n_val * counts) % n
    # Largest remainder first; a stable sort on the negated remainder keeps ties in class order.
    extra = np.argsort(-remainder, kind="stable")[: n_val - int(quota.sum())]
    quota[extra] += 1
    rng = np.random.default_rng(seed)
    val_parts = []
    for k in range(len(classes)):
        members = np.flatnonzero(inverse == k)
        val_parts.append(rng.choice(members, size=int(quota[k]), replace=False))
    val = np.sort(np.concatenate(val_parts)).astype(np.int64)
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return np.flatnonzero(~is_val).astype(np.int64), val
