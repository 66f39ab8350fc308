"""SampleSet: normalisation, selection by id and split, and storage round trip."""

import numpy as np
import pandas as pd
import pytest
import torch

from pgu.core.data import (
    SampleSet,
    data_fingerprint,
    excluded_train_ids,
    normalisation_stats,
    split_ids,
    split_set,
)


def _images(n: int = 12) -> SampleSet:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    mean, std = normalisation_stats(x)
    return SampleSet(x, torch.arange(n) % 3, torch.arange(100, 100 + n), mean, std, num_classes=3)


def test_inputs_are_standardised_per_channel():
    s = _images(64)
    x = s.inputs()  # (N, C, H, W) float32
    assert x.dtype == torch.float32
    per_channel_mean = x.mean(dim=(0, 2, 3))
    per_channel_std = x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(per_channel_mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel_std, torch.ones(3), atol=1e-4)


def test_tabular_inputs_use_per_feature_statistics():
    x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    mean, std = normalisation_stats(x)
    s = SampleSet(x, torch.tensor([0, 1]), torch.tensor([0, 1]), mean, std, 2)
    assert torch.allclose(s.inputs(), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_constant_feature_does_not_divide_by_zero():
    x = torch.ones(5, 3)
    mean, std = normalisation_stats(x)
    s = SampleSet(x, torch.zeros(5, dtype=torch.long), torch.arange(5), mean, std, 1)
    assert torch.isfinite(s.inputs()).all()


def test_with_and_without_ids_partition_the_set():
    s = _images()
    ids = [101, 105, 111]
    kept, dropped = s.with_ids(ids), s.without_ids(ids)
    assert sorted(kept.sample_id.tolist()) == ids
    assert len(kept) + len(dropped) == len(s)
    assert not set(kept.sample_id.tolist()) & set(dropped.sample_id.tolist())
    assert torch.equal(kept.x[0], s.x[1])  # sample 101 is row 1


def test_batches_cover_every_sample_once_in_order_and_shuffled():
    s = _images(10)
    ys = torch.cat([y for _, y in s.batches(3)])
    assert torch.equal(ys, s.y)
    g = torch.Generator().manual_seed(1)
    shuffled = torch.cat([x for x, _ in s.batches(4, g)])
    assert shuffled.shape == (10, 3, 4, 4)
    assert not torch.equal(shuffled, s.inputs())
    assert torch.allclose(shuffled.sum(), s.inputs().sum(), atol=1e-3)


@pytest.mark.parametrize("size", [0, -4, 2.5, True])
def test_a_batch_size_that_is_not_a_positive_integer_is_named(size):
    with pytest.raises(ValueError, match=f"batch size must be a positive integer, got {size!r}"):
        next(_images(10).batches(size))


def test_tensor_round_trip_and_missing_key_error():
    s = _images()
    back = SampleSet.from_tensors(s.to_tensors())
    assert torch.equal(back.x, s.x) and back.num_classes == 3
    t = s.to_tensors()
    del t["mean"]
    with pytest.raises(ValueError, match="mean"):
        SampleSet.from_tensors(t)


def test_split_set_selects_by_sample_index():
    s = _images(6)
    index = pd.DataFrame(
        {
            "sample_id": np.arange(100, 106),
            "label": s.y.numpy(),
            "split": ["train", "val", "train", "test", "train", "val"],
        }
    )
    assert split_ids(index, "train").tolist() == [100, 102, 104]
    assert split_set(s, index, "val").sample_id.tolist() == [101, 105]
    with pytest.raises(ValueError, match="unknown split"):
        split_ids(index, "holdout")


def _index(n: int = 12, seed: int = 0) -> pd.DataFrame:
    splits = np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2)[:n]
    order = np.random.default_rng(seed).permutation(n) if seed else np.arange(n)
    return pd.DataFrame({"sample_id": np.arange(100, 100 + n), "split": splits[order]})


def test_the_data_fingerprint_follows_the_data_and_the_split_not_the_row_order():
    s, index = _images(), _index()
    base = data_fingerprint(s.to_tensors(), index)
    assert data_fingerprint(s.to_tensors(), index.iloc[::-1]) == base  # the same table
    assert data_fingerprint(_images().to_tensors(), index.copy()) == base  # rebuilt alike
    assert data_fingerprint(s.to_tensors(), _index(seed=1)) != base  # another split
    other = s.to_tensors()
    other["x"] = other["x"].clone()
    other["x"][0, 0, 0, 0] ^= 1  # one bit of one pixel
    assert data_fingerprint(other, index) != base
    moved = dict(s.to_tensors(), mean=s.mean + 1e-6)  # other normalisation statistics
    assert data_fingerprint(moved, index) != base


def test_excluded_ids_must_be_training_samples_named_once():
    index = _index()
    assert excluded_train_ids(index, [105, 101]).tolist() == [101, 105]
    assert excluded_train_ids(index, None).tolist() == []
    for bad, message in (
        ([101, 101], "lists ids twice: \\[101\\]"),
        ([108, 999], "\\[108, 999\\] are not training samples"),  # a val id and an unknown one
        (["101"], "must be sample ids"),
        ([True], "must be sample ids"),
    ):
        with pytest.raises(ValueError, match=message):
            excluded_train_ids(index, bad)
