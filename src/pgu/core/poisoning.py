"""Label-flip poisoning (METHOD.md section 7): the scenario that de-poisoning undoes.

For ``n_pairs`` random, disjoint class pairs (a, b), ``per_class`` random training samples of
class a are relabelled b and as many of class b are relabelled a. The scenario is a table, one
row per poisoned sample::

    sample_id  true_label  wrong_label  pair
    17         3           8            0

``poisoned_copy`` applies it to a :class:`SampleSet` (a new set; the original is untouched),
so the poisoned model trains on exactly the samples of the clean split with some labels
changed. Everything is drawn from one seeded generator: the same seed and split give the same
table.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from pgu.core.data import SampleSet

logger = logging.getLogger(__name__)

COLUMNS = ["sample_id", "true_label", "wrong_label", "pair"]


def flip_labels(train: SampleSet, n_pairs: int, per_class: int, seed: int = 0) -> pd.DataFrame:
    """Draw a label-flip scenario on the training samples.

    Args:
        train: the clean training samples (their labels are the true labels).
        n_pairs: number of disjoint class pairs (a, b); at most ``num_classes // 2``.
        per_class: samples of each paired class whose label is flipped to its partner.
        seed: seeds the choice of pairs and of samples.

    Returns:
        The scenario table (columns ``COLUMNS``), sorted by sample_id; int64 columns.

    Raises:
        ValueError: too many pairs for the classes, or a class with fewer than ``per_class``
            training samples.
    """
    c = train.num_classes
    if n_pairs < 1 or 2 * n_pairs > c:
        raise ValueError(f"n_pairs must be in [1, {c // 2}] for {c} classes, got {n_pairs}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(c)[: 2 * n_pairs].reshape(n_pairs, 2)  # (P, 2) disjoint pairs
    y = train.y.numpy()
    ids = train.sample_id.numpy()
    rows = []
    for pair, (a, b) in enumerate(classes.tolist()):
        for true, wrong in ((a, b), (b, a)):
            members = ids[y == true]
            if len(members) < per_class:
                raise ValueError(
                    f"class {true} has {len(members)} training samples, "
                    f"fewer than per_class={per_class}"
                )
            chosen = rng.choice(members, per_class, replace=False)
            rows += [(int(i), true, wrong, pair) for i in chosen]
    table = pd.DataFrame(rows, columns=COLUMNS).astype("int64")
    table = table.sort_values("sample_id", ignore_index=True)
    logger.info(
        "poisoning %d samples: class pairs %s, %d flipped per class",
        len(table),
        [tuple(p) for p in classes.tolist()],
        per_class,
    )
    return table


def _column(table: pd.DataFrame, name: str) -> torch.Tensor:
    # a copy: pandas hands out read-only arrays, which torch warns about
    return torch.from_numpy(table[name].to_numpy(dtype=np.int64, copy=True))  # (n,) int64


def poisoned_ids(scenario: pd.DataFrame) -> torch.Tensor:
    """The scenario's poisoned sample ids, (n,) int64."""
    return _column(scenario, "sample_id")


def poisoned_copy(data: SampleSet, scenario: pd.DataFrame) -> SampleSet:
    """``data`` with the scenario's samples relabelled to their wrong labels.

    Args:
        data: samples that contain every id of the scenario (normally the train split).
        scenario: the table of :func:`flip_labels`.

    Returns:
        A new SampleSet sharing ``x`` with ``data`` but with its own label tensor.

    Raises:
        ValueError: a scenario id is not in ``data``, or its true label disagrees with it.
    """
    ids = poisoned_ids(scenario)
    pos = {int(s): i for i, s in enumerate(data.sample_id.tolist())}
    missing = [int(i) for i in ids.tolist() if int(i) not in pos]
    if missing:
        raise ValueError(f"poisoned ids {missing[:10]} are not in the sample set")
    rows = torch.tensor([pos[int(i)] for i in ids.tolist()], dtype=torch.int64)  # (n,)
    true = _column(scenario, "true_label")
    if not torch.equal(data.y[rows], true):
        raise ValueError("the scenario's true labels disagree with the samples' labels")
    y = data.y.clone()
    y[rows] = _column(scenario, "wrong_label")
    return SampleSet(data.x, y, data.sample_id, data.mean, data.std, data.num_classes)


def poisoned_samples(data: SampleSet, scenario: pd.DataFrame) -> tuple[SampleSet, SampleSet]:
    """The poisoned samples twice: (with their wrong labels, with their true labels).

    Both sets list the samples in ``data``'s order, so their rows correspond.
    """
    true = data.with_ids(poisoned_ids(scenario))
    return poisoned_copy(true, scenario), true
