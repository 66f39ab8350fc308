"""Tests for pgu.core.poisoning: the label-flip scenario and the poisoned copy."""

import pandas as pd
import pytest
import torch

from pgu.core.data import SampleSet
from pgu.core.poisoning import COLUMNS, flip_labels, poisoned_copy, poisoned_samples


def toy_set(per_class: int = 12, classes: int = 6) -> SampleSet:
    """Labels 0..classes-1, ``per_class`` each, interleaved; ids deliberately not positions."""
    n = per_class * classes
    y = torch.arange(n) % classes
    return SampleSet(
        x=torch.arange(n, dtype=torch.float32).view(n, 1),
        y=y,
        sample_id=torch.arange(n) * 3 + 100,
        mean=torch.zeros(1),
        std=torch.ones(1),
        num_classes=classes,
    )


def test_scenario_flips_n_per_class_within_disjoint_pairs():
    data = toy_set()
    table = flip_labels(data, n_pairs=3, per_class=4, seed=1)
    assert list(table.columns) == COLUMNS
    assert len(table) == 3 * 2 * 4
    assert table["sample_id"].is_unique and table["sample_id"].is_monotonic_increasing
    assert set(table["sample_id"]) <= set(data.sample_id.tolist())
    pairs = {frozenset(p) for p in table[["true_label", "wrong_label"]].to_numpy().tolist()}
    assert len(pairs) == 3 and len(set().union(*pairs)) == 6  # disjoint pairs
    assert (table.groupby("true_label").size() == 4).all()
    # every pair swaps both ways and carries one pair number
    for _, rows in table.groupby("pair"):
        assert set(rows["true_label"]) == set(rows["wrong_label"])
    # the true labels are the samples' labels
    by_id = dict(zip(data.sample_id.tolist(), data.y.tolist(), strict=True))
    assert all(by_id[i] == t for i, t in zip(table["sample_id"], table["true_label"], strict=True))


def test_scenario_is_seeded():
    data = toy_set()
    a = flip_labels(data, 2, 5, seed=7)
    pd.testing.assert_frame_equal(a, flip_labels(data, 2, 5, seed=7))
    assert not a.equals(flip_labels(data, 2, 5, seed=8))


@pytest.mark.parametrize(
    ("n_pairs", "per_class", "message"),
    [
        (4, 2, "n_pairs must be in"),
        (0, 2, "n_pairs must be in"),
        (1, 13, "fewer than per_class"),
        (1, 0, "per_class must be"),
    ],
)
def test_scenario_rejects_impossible_requests(n_pairs, per_class, message):
    with pytest.raises(ValueError, match=message):
        flip_labels(toy_set(), n_pairs, per_class)


def test_poisoned_copy_changes_exactly_the_scenario_labels():
    data = toy_set()
    y_before = data.y.clone()
    table = flip_labels(data, 2, 3, seed=0)
    poisoned = poisoned_copy(data, table)
    assert torch.equal(data.y, y_before)  # the clean set is untouched
    assert poisoned.x is data.x and torch.equal(poisoned.sample_id, data.sample_id)
    changed = (poisoned.y != data.y).nonzero().squeeze(1)
    assert sorted(data.sample_id[changed].tolist()) == table["sample_id"].tolist()
    wrong = dict(zip(table["sample_id"], table["wrong_label"], strict=True))
    assert all(wrong[int(data.sample_id[i])] == int(poisoned.y[i]) for i in changed)


def test_poisoned_samples_rows_correspond():
    data = toy_set()
    table = flip_labels(data, 3, 2, seed=3)
    wrong, true = poisoned_samples(data, table)
    assert torch.equal(wrong.sample_id, true.sample_id) and len(wrong) == len(table)
    assert (wrong.y != true.y).all()


def test_poisoned_copy_rejects_a_scenario_of_other_samples():
    data = toy_set()
    table = flip_labels(data, 1, 2, seed=0)
    with pytest.raises(ValueError, match="not in the sample set"):
        poisoned_copy(data.without_ids(table["sample_id"].tolist()[:1]), table)
    bad = table.assign(true_label=table["wrong_label"])
    with pytest.raises(ValueError, match="disagree"):
        poisoned_copy(data, bad)
