"""Tests for pgu.core.splits: the seeded stratified split and the sample index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pgu.core.splits import SPLITS, sample_index, stratified_split

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _labels(sizes: dict[int, int], seed: int = 0) -> np.ndarray:
    """(N,) labels with ``sizes[label]`` samples each, interleaved in a shuffled order."""
    y = np.concatenate([np.full(n, label, dtype=np.int64) for label, n in sizes.items()])
    return y[np.random.default_rng(seed).permutation(len(y))]


def _train_origin(n: int) -> np.ndarray:
    return np.full(n, "train")


def test_output_shape_and_values() -> None:
    y = _labels({0: 50, 1: 30})
    split = stratified_split(y, _train_origin(len(y)), FRACTIONS, seed=0)
    assert split.shape == y.shape
    assert set(split.tolist()) == set(SPLITS)
    assert SPLITS == ("train", "val", "test")


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.8, "val": 0.1, "test": 0.1},
        {"train": 0.6, "val": 0.25, "test": 0.15},
        {"train": 0.5, "val": 0.0, "test": 0.5},
    ],
)
def test_fractions_honoured_per_class(fractions: dict[str, float]) -> None:
    sizes = {0: 100, 1: 37, 2: 11, 3: 250}
    y = _labels(sizes)
    split = stratified_split(y, _train_origin(len(y)), fractions, seed=3)
    for label, n in sizes.items():
        in_class = split[y == label]
        for name, fraction in fractions.items():
            assert abs((in_class == name).sum() - n * fraction) <= 1, (label, name)


def test_stratification_keeps_class_proportions() -> None:
    sizes = {0: 400, 1: 200, 2: 100, 3: 300}
    y = _labels(sizes)
    split = stratified_split(y, _train_origin(len(y)), FRACTIONS, seed=1)
    overall = np.bincount(y, minlength=4) / len(y)
    for name in SPLITS:
        in_split = np.bincount(y[split == name], minlength=4) / (split == name).sum()
        np.testing.assert_allclose(in_split, overall, atol=0.01)


def test_small_classes_get_one_sample_per_split() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3], dtype=np.int64)
    split = stratified_split(y, _train_origin(len(y)), FRACTIONS, seed=0)
    for label in (0, 1):  # >= 3 samples: every split represented
        assert set(split[y == label].tolist()) == set(SPLITS)
    assert split[y == 2].tolist() == ["train", "train"]  # round(0.2) == 0
    assert split[y == 3].tolist() == ["train"]


def test_same_seed_same_split_different_seed_different() -> None:
    y = _labels({0: 200, 1: 200, 2: 200})
    origin = _train_origin(len(y))
    first = stratified_split(y, origin, FRACTIONS, seed=7)
    second = stratified_split(y.copy(), origin.copy(), dict(FRACTIONS), seed=7)
    other = stratified_split(y, origin, FRACTIONS, seed=8)
    np.testing.assert_array_equal(first, second)
    assert (first != other).any()
    # Only the assignment changes, not the counts.
    for name in SPLITS:
        assert (first == name).sum() == (other == name).sum()


def test_adding_a_class_keeps_existing_assignments() -> None:
    y = _labels({0: 60, 1: 45, 2: 30})
    split = stratified_split(y, _train_origin(len(y)), FRACTIONS, seed=5)
    # Insert samples of a new class (label 3) at the front and in between.
    extra = np.full(25, 3, dtype=np.int64)
    y_big = np.concatenate([extra[:10], y[:50], extra[10:], y[50:]])
    old_positions = np.concatenate([np.arange(10, 60), np.arange(75, 75 + len(y) - 50)])
    split_big = stratified_split(y_big, _train_origin(len(y_big)), FRACTIONS, seed=5)
    np.testing.assert_array_equal(split_big[old_positions], split)
    # Dropping a class does not change the others either.
    keep = y != 1
    split_small = stratified_split(y[keep], _train_origin(int(keep.sum())), FRACTIONS, seed=5)
    np.testing.assert_array_equal(split_small, split[keep])


def test_use_source_test_halves_the_test_set() -> None:
    y_train = _labels({0: 50, 1: 50}, seed=1)
    y_test = _labels({0: 20, 1: 11}, seed=2)
    y = np.concatenate([y_train, y_test])
    origin = np.array(["train"] * len(y_train) + ["test"] * len(y_test))
    fractions = {"train": 0.9, "val": 0.05, "test": 0.05}  # only val : test = 1 : 1 matters
    split = stratified_split(y, origin, fractions, seed=0, use_source_test=True)
    assert (split[origin == "train"] == "train").all()
    held = split[origin == "test"]
    assert set(held.tolist()) == {"val", "test"}
    assert ((y_test == 0) & (held == "val")).sum() == 10
    assert ((y_test == 0) & (held == "test")).sum() == 10
    assert ((y_test == 1) & (held == "val")).sum() == 6  # round(5.5) rounds half up
    assert ((y_test == 1) & (held == "test")).sum() == 5
    again = stratified_split(y, origin, fractions, seed=0, use_source_test=True)
    np.testing.assert_array_equal(split, again)


def test_use_source_test_uneven_ratio() -> None:
    y = np.zeros(100, dtype=np.int64)
    origin = np.array(["train"] * 60 + ["test"] * 40)
    fractions = {"train": 0.5, "val": 0.125, "test": 0.375}  # val : test = 1 : 3
    split = stratified_split(y, origin, fractions, seed=2, use_source_test=True)
    assert (split == "train").sum() == 60
    assert (split == "val").sum() == 10 and (split == "test").sum() == 30


def test_use_source_test_without_test_origin() -> None:
    y = _labels({0: 10, 1: 10})
    with pytest.raises(ValueError, match=r"no test split.*use_source_test: false"):
        stratified_split(y, _train_origin(len(y)), FRACTIONS, seed=0, use_source_test=True)


def test_use_source_test_with_zero_val_and_test() -> None:
    y = np.zeros(4, dtype=np.int64)
    origin = np.array(["train", "train", "test", "test"])
    with pytest.raises(ValueError, match=r"both are 0"):
        stratified_split(y, origin, {"train": 1.0, "val": 0.0, "test": 0.0}, 0, True)


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({"train": 0.8, "val": 0.2}, r"exactly the keys train, val, test"),
        ({"train": 0.8, "val": 0.1, "test": 0.1, "extra": 0.0}, r"exactly the keys"),
        ({"train": 0.8, "validation": 0.1, "test": 0.1}, r"exactly the keys"),
        ({"train": 0.8, "val": 0.1, "test": 0.2}, r"must sum to 1"),
        ({"train": 1.2, "val": -0.1, "test": -0.1}, r"fractions\['val'\] must be >= 0"),
        ({"train": 0.8, "val": "0.1", "test": 0.1}, r"must be a number"),
        ({"train": 0.8, "val": float("nan"), "test": 0.1}, r"must be >= 0"),
    ],
)
def test_invalid_fractions(fractions: dict[str, object], message: str) -> None:
    y = np.zeros(10, dtype=np.int64)
    with pytest.raises(ValueError, match=message):
        stratified_split(y, _train_origin(10), fractions, seed=0)  # type: ignore[arg-type]


def test_fractions_within_tolerance_accepted() -> None:
    y = np.zeros(10, dtype=np.int64)
    fractions = {"train": 0.7, "val": 0.2, "test": 0.1 + 1e-12}
    split = stratified_split(y, _train_origin(10), fractions, seed=0)
    assert (split == "val").sum() == 2 and (split == "test").sum() == 1


def test_invalid_inputs() -> None:
    y = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer"):
        stratified_split(y, _train_origin(4), FRACTIONS, seed=-1)
    with pytest.raises(ValueError, match=r"origin must have the same shape"):
        stratified_split(y, _train_origin(3), FRACTIONS, seed=0)
    with pytest.raises(ValueError, match=r"integer class labels"):
        stratified_split(y.astype(float), _train_origin(4), FRACTIONS, seed=0)
    with pytest.raises(ValueError, match=r"origin must be 'train' or 'test'"):
        stratified_split(y, np.array(["train", "val", "test", "x"]), FRACTIONS, 0, True)


def test_empty_input() -> None:
    split = stratified_split(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=str), FRACTIONS, 0)
    assert split.shape == (0,)


def test_sample_index_columns_and_dtypes() -> None:
    keys = ["digits/0000", "digits/0001", "digits/0002"]
    y = np.array([2, 0, 1], dtype=np.int32)
    split = np.array(["train", "val", "test"])
    index = sample_index(keys, y, split)
    assert isinstance(index, pd.DataFrame)
    assert list(index.columns) == ["sample_id", "key", "label", "split"]
    assert index["sample_id"].dtype == np.int64 and index["sample_id"].tolist() == [0, 1, 2]
    assert index["label"].dtype == np.int64 and index["label"].tolist() == [2, 0, 1]
    assert pd.api.types.is_string_dtype(index["key"]) and index["key"].tolist() == keys
    assert pd.api.types.is_string_dtype(index["split"])
    assert index["split"].tolist() == ["train", "val", "test"]


def test_sample_index_from_stratified_split() -> None:
    y = _labels({0: 20, 1: 20})
    keys = [f"k/{i}" for i in range(len(y))]
    split = stratified_split(y, _train_origin(len(y)), FRACTIONS, seed=0)
    index = sample_index(keys, y, split)
    assert len(index) == 40
    assert index["split"].value_counts().to_dict() == {"train": 32, "val": 4, "test": 4}


def test_sample_index_rejects_bad_input() -> None:
    split = np.array(["train", "train"])
    with pytest.raises(ValueError, match=r"same length"):
        sample_index(["a"], np.array([0, 1]), split)
    with pytest.raises(ValueError, match=r"unique"):
        sample_index(["a", "a"], np.array([0, 1]), split)
    with pytest.raises(ValueError, match=r"split must hold only"):
        sample_index(["a", "b"], np.array([0, 1]), np.array(["train", "holdout"]))
