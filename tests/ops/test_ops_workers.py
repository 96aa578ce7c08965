"""DataLoader workers draw their own parameters, reproducibly, while the main process draws exactly as
before (issue 10, item 8), under every start method (issue 17, item 6)."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cutmix import CutMix, CutMixOrMixUp, Cutout, MixUp


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Item 8: DataLoader workers draw their own streams; the main process draws as it always did
# ----------------------------------------------------------------------------------------------


class MixCollate:
    """A ``collate_fn`` as torchvision documents for its ``v2.CutMix``; returns the drawn table (and
    whether the batch was CutMix, for :class:`CutMixOrMixUp`)."""

    def __init__(self, op) -> None:
        self.op = op

    def __call__(self, batch):
        images = torch.stack([image for image, _ in batch])
        labels = torch.stack([label for _, label in batch])
        params = self.op(images, labels, return_params=True)[2]
        return params.table, params.kind


def _dataset(size: int = 64) -> TensorDataset:
    return TensorDataset(
        torch.rand(size, 3, 8, 8, generator=gen(7)), torch.randint(0, 10, (size,), generator=gen(8))
    )


def _epochs(op, epochs: int = 1, loader_generator: torch.Generator | None = None, **loader_args) -> list:
    loader = DataLoader(
        _dataset(), batch_size=8, num_workers=2, collate_fn=MixCollate(op), generator=loader_generator,
        **loader_args,
    )  # fmt: skip
    return [list(loader) for _ in range(epochs)]


def _tables(batches) -> list[torch.Tensor]:
    return [table for table, _ in batches]


@pytest.mark.parametrize("explicit", [False, True])
def test_dataloader_workers_draw_their_own_parameters(explicit):
    """Batches are handed out round-robin (worker 0: batches 0, 2, ...; worker 1: 1, 3, ...): the
    k-th batch of each worker must get its own λ, box and partner; so must each epoch."""
    torch.manual_seed(0)
    op = CutMix(num_classes=10, generator=gen(1) if explicit else None)
    first, second = (_tables(epoch) for epoch in _epochs(op, epochs=2))
    assert len(first) == 8
    for k in range(0, 8, 2):
        assert not torch.equal(first[k][:, :2], first[k + 1][:, :2]), f"workers drew the same batch {k // 2}"
    everything = first + second
    for i in range(len(everything)):
        for j in range(i):
            assert not torch.equal(everything[i], everything[j]), f"batches {j} and {i} drew the same"


def test_dataloader_workers_switch_independently():
    torch.manual_seed(0)
    op = CutMixOrMixUp(CutMix(num_classes=10), MixUp(num_classes=10))
    loader = DataLoader(_dataset(256), batch_size=8, num_workers=2, collate_fn=MixCollate(op))
    kinds = [kind for _, kind in loader]
    assert len(kinds) == 32 and kinds[0::2] != kinds[1::2]


def test_dataloader_with_workers_is_reproducible():
    """The same seeds give the same batches, under torch.manual_seed and with explicit generators."""

    def seeded_run():
        torch.manual_seed(3)
        return _tables(_epochs(CutMix(num_classes=10), epochs=2)[1])

    def explicit_run(op_seed: int = 4, loader_seed: int = 5):
        torch.manual_seed(int(torch.randint(0, 1000, ())))  # the global RNG must not matter here
        return _tables(
            _epochs(MixUp(num_classes=10, generator=gen(op_seed)), loader_generator=gen(loader_seed))[0]
        )

    for run in (seeded_run, explicit_run):
        a, b = run(), run()
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # Each seed matters: the op's own and the loader's (which seeds the workers).
    reference = explicit_run()
    assert not torch.equal(explicit_run(op_seed=6)[0], reference[0])
    assert not torch.equal(explicit_run(loader_seed=6)[0], reference[0])


def test_persistent_workers_continue_their_streams():
    op = Cutout(size=3, num_classes=10, generator=gen(2))
    first, second = (
        _tables(e) for e in _epochs(op, epochs=2, loader_generator=gen(0), persistent_workers=True)
    )
    assert all(not torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_op_used_in_the_main_process_before_the_workers_does_not_hand_them_its_draws_ahead():
    op = CutMix(num_classes=10, generator=gen(9))
    op(torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,)))  # 31 batches of this shape drawn ahead
    tables = _tables(_epochs(op, loader_generator=gen(0))[0])
    assert not torch.equal(tables[0], tables[1])


def _digest(op, calls: int = 40) -> tuple[str, list]:
    images, labels = torch.zeros(8, 3, 16, 16), torch.arange(8)
    digest = hashlib.sha256()
    first = None
    for _ in range(calls):
        params = op(images, labels, return_params=True)[2]
        first = first or [params.lam.tolist(), params.partner.tolist(), params.box.tolist()]
        digest.update(params.table.numpy().tobytes())
    return digest.hexdigest(), first


# Computed with the code before DataLoader workers got their own streams (at f3fed6b): a seed must keep
# giving bit-identical parameters in the main process, across the pool boundary (32 batches).
PINNED = {
    "cutmix": (
        lambda: CutMix(num_classes=8, generator=gen(0)),
        "f85c4777c78067f144e1ec8d7c7bb419c8213a2b649ff9b0c6bb824c33610fa2",
        [0.4854833781719208, 0.8817576766014099, 0.9584893584251404, 0.29450905323028564,
         0.16345666348934174, 0.49680668115615845, 0.8771880865097046, 0.8348742723464966],
        [1, 2, 4, 3, 6, 0, 5, 7],
        [[5, 15, 0, 10], [1, 5, 12, 16], [2, 4, 0, 2], [0, 0, 0, 0], [8, 16, 0, 7], [3, 13, 6, 16],
         [9, 13, 8, 12], [0, 0, 0, 0]],
    ),
    "mixup": (
        lambda: MixUp(num_classes=8, generator=gen(0)),
        "3350e1db84053d0035d75996e291ed94f0d3c79ef71961b76a2329aba61a4e25",
        [0.4854833781719208, 0.8817576766014099, 0.9584893584251404, 0.29450905323028564,
         0.16345666348934174, 0.49680668115615845, 0.8771880865097046, 0.8348742723464966],
        [1, 2, 4, 3, 6, 0, 5, 7],
        [[0, 0, 0, 0]] * 8,
    ),
    "cutout": (
        lambda: Cutout(size=5, p=0.5, num_classes=8, generator=gen(0)),
        "e974396349f851144f79626ed614b9d4e91a7cf695f2139fcd879d6f2ab736a1",
        [1.0] * 8,
        list(range(8)),
        [[0, 0, 0, 0], [3, 8, 1, 6], [0, 0, 0, 0], [0, 4, 0, 3], [0, 0, 0, 0], [7, 12, 13, 16],
         [8, 13, 7, 12], [0, 0, 0, 0]],
    ),
    "switch": (
        lambda: CutMixOrMixUp(
            CutMix(num_classes=8, generator=gen(1)), MixUp(num_classes=8, generator=gen(2)), generator=gen(3)
        ),
        "061159ded028a3c89855abc36bc247688ddfca1342dc45fa2e6cdb88d38db6c1",
        [0.8250283598899841, 0.3744134306907654, 0.33552655577659607, 0.5350573658943176,
         0.7871793508529663, 0.5591027140617371, 0.4159327745437622, 0.5291980504989624],
        [1, 6, 4, 5, 2, 7, 3, 0],
        [[2, 8, 0, 3], [4, 16, 1, 13], [2, 14, 5, 16], [0, 5, 1, 11], [7, 13, 0, 5], [9, 16, 0, 6],
         [0, 8, 4, 16], [8, 16, 1, 11]],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PINNED))
def test_main_process_draws_are_unchanged(name):
    make, digest, lam, partner, box = PINNED[name]
    assert _digest(make()) == (digest, [lam, partner, box])
    # A loader without workers runs the op in the main process: the same draws.
    data = TensorDataset(torch.zeros(320, 3, 16, 16), torch.arange(320) % 8)
    tables = _tables(DataLoader(data, batch_size=8, collate_fn=MixCollate(make())))
    assert hashlib.sha256(b"".join(t.numpy().tobytes() for t in tables)).hexdigest() == digest


def test_generator_none_still_follows_torch_manual_seed_as_before():
    torch.manual_seed(123)
    params = CutMix(num_classes=8)(torch.zeros(8, 3, 16, 16), torch.arange(8), return_params=True)[2]
    assert params.lam.tolist() == [0.9008483290672302, 0.9776571393013, 0.003200675593689084,
                                   0.2111453413963318, 0.0034255681093782187, 0.2134414166212082,
                                   0.4570891261100769, 0.4526764452457428]  # fmt: skip
    assert params.partner.tolist() == [1, 7, 4, 6, 0, 3, 5, 2]
    assert params.box.tolist() == [[12, 16, 10, 14], [7, 9, 8, 10], [1, 15, 0, 9], [3, 16, 1, 15],
                                   [6, 16, 0, 9], [5, 16, 3, 16], [0, 7, 4, 14], [0, 6, 7, 16]]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Issue 17, item 6: the op travels to spawn and forkserver workers (its generator as bytes)
# ----------------------------------------------------------------------------------------------


def _switch_op() -> CutMixOrMixUp:
    """Three generators: the switch's and each op's."""
    return CutMixOrMixUp(
        CutMix(num_classes=10, generator=gen(1)), MixUp(num_classes=10, generator=gen(2)), generator=gen(3)
    )


class _NoGeneratorPickler(pickle.Pickler):
    """Pickles as multiprocessing does, but fails on a torch.Generator: torch pickles one through a
    tensor that spawned workers could not rebuild ("unable to resize file")."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.Generator):
            raise AssertionError("a torch.Generator was pickled")
        return NotImplemented


def test_a_pickled_op_continues_exactly_and_holds_no_generator_object():
    images, labels = torch.rand(8, 3, 8, 8, generator=gen(4)), torch.arange(8)
    for make in (lambda: CutMix(num_classes=8, generator=gen(0)), _switch_op):
        original, untouched = make(), make()
        original(images, labels)  # 31 batches drawn ahead travel with the copy
        untouched(images, labels)
        buffer = io.BytesIO()
        _NoGeneratorPickler(buffer).dump(original)
        copy = pickle.loads(buffer.getvalue())
        for _ in range(40):  # past the draws made ahead
            a, b = original(images, labels, return_params=True), copy(images, labels, return_params=True)
            c = untouched(images, labels, return_params=True)
            assert torch.equal(a[2].table, b[2].table) and torch.equal(a[0], b[0])
            assert torch.equal(a[2].table, c[2].table)  # pickling changed nothing in the original


def _start_method_epoch(method: str) -> tuple[list, list]:
    """One epoch of the README's collate recipe under ``method``, two workers, a seeded loader; and
    the main process's own next draws after it."""
    op = _switch_op()
    images, labels = torch.rand(4, 3, 8, 8, generator=gen(4)), torch.arange(4)
    op(images, labels)  # draws made ahead in the main process go to the workers, which drop them
    loader = DataLoader(_dataset(16), batch_size=4, num_workers=2, collate_fn=MixCollate(op),
                        generator=gen(0), multiprocessing_context=method)  # fmt: skip
    batches = list(loader)
    after = [op(images, labels, return_params=True)[2].table for _ in range(3)]
    return batches, after


@pytest.fixture(scope="module")
def forked_epoch() -> tuple[list, list]:
    return _start_method_epoch("fork")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_the_collate_recipe_runs_under_every_start_method(method, forked_epoch):
    """Spawned and forkserver workers start from the same op state as forked ones (a pickle of the
    generator's state), so a seeded loader gives bit for bit the forked workers' batches, whose own
    streams the tests above check; a second fork run checks reproducibility."""
    assert method in multiprocessing.get_all_start_methods()
    batches, after = _start_method_epoch(method)
    assert len(batches) == 4
    for (table, kind), (expected_table, expected_kind) in zip(batches, forked_epoch[0], strict=True):
        assert kind == expected_kind and torch.equal(table, expected_table)
    assert not torch.equal(batches[0][0], batches[1][0]), "the two workers drew the same batch"
    # The main process goes on with its own stream, whatever the workers did.
    reference = _switch_op()
    images, labels = torch.rand(4, 3, 8, 8, generator=gen(4)), torch.arange(4)
    expected = [reference(images, labels, return_params=True)[2].table for _ in range(4)][1:]
    assert all(torch.equal(a, b) for a, b in zip(after, expected, strict=True))
