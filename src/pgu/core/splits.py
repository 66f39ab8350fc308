"""Seeded, stratified train/val/test split of a data source, and the sample index built on it.

``stratified_split`` assigns every sample to ``"train"``, ``"val"`` or ``"test"``. Each class is
split on its own, with a permutation drawn from ``np.random.default_rng([seed, label])``, so the
assignment of one class depends only on the seed, the label and that class's samples (in their
order): adding or removing another class, or reordering classes elsewhere, changes nothing.

Per class of ``n`` samples, ``val`` and ``test`` get ``round(n * fraction)`` samples (halves
round up) and ``train`` the rest; a class with at least as many samples as there are splits
gets at least one sample in every split whose fraction is positive.

``sample_index`` turns the split into the table later stages use to number samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")

_FRACTION_TOLERANCE = 1e-9


def stratified_split(
    y: np.ndarray,
    origin: np.ndarray,
    fractions: Mapping[str, float],
    seed: int,
    use_source_test: bool = False,
) -> np.ndarray:
    """Assign each sample to a split, class by class.

    Args:
        y: (N,) integer class labels (>= 0).
        origin: (N,) str, ``"train"`` or ``"test"``: the split the source put each sample in.
        fractions: Exactly the keys ``"train"``, ``"val"``, ``"test"``; each >= 0, summing to 1.
        seed: Non-negative integer seed.
        use_source_test: If False, every sample is split per class by ``fractions``. If True,
            samples of origin ``"train"`` all go to ``"train"`` and samples of origin ``"test"``
            are split per class into ``"val"`` and ``"test"`` in proportion
            ``fractions["val"] : fractions["test"]`` (``fractions["train"]`` is then unused).

    Returns:
        (N,) array of ``"train"`` / ``"val"`` / ``"test"``.

    Raises:
        ValueError: Invalid fractions, seed, labels or origins, or ``use_source_test`` with a
            source that has no test split.
    """
    valid = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    labels = np.asarray(y)
    origins = np.asarray(origin)
    if labels.ndim != 1:
        raise ValueError(f"y must be one-dimensional (N,), got shape {labels.shape}.")
    if origins.shape != labels.shape:
        raise ValueError(
            f"origin must have the same shape as y {labels.shape}, got {origins.shape}."
        )
    if labels.size > 0 and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {labels.dtype}.")
    labels = labels.astype(np.int64)
    if labels.size > 0 and labels.min() < 0:
        raise ValueError(f"y must hold non-negative class labels, got {labels.min()}.")

    split = np.full(labels.shape, "train", dtype="<U5")  # (N,)
    if not use_source_test:
        _assign(
            split,
            np.ones(labels.shape, dtype=bool),
            labels,
            fractions=valid,
            remainder="train",
            seed=int(seed),
        )
    else:
        origin_str = origins.astype(str)
        unknown = sorted(set(origin_str.tolist()) - {"train", "test"})
        if unknown:
            raise ValueError(f"origin must be 'train' or 'test', got {unknown}.")
        is_test = origin_str == "test"  # (N,)
        if not is_test.any():
            raise ValueError(
                "use_source_test is set but the source has no test split (no sample has origin "
                "'test'); set use_source_test: false."
            )
        held_out = {"val": valid["val"], "test": valid["test"]}
        total = held_out["val"] + held_out["test"]
        if total <= 0:
            raise ValueError(
                "use_source_test splits the source's test set into val and test in proportion "
                "fractions['val'] : fractions['test'], but both are 0."
            )
        ratio = {s: f / total for s, f in held_out.items()}
        _assign(split, is_test, labels, fractions=ratio, remainder="test", seed=int(seed))

    counts = {s: int((split == s).sum()) for s in SPLITS}
    logger.info(
        "Split %d samples (seed %d, use_source_test=%s): %s",
        labels.size,
        seed,
        use_source_test,
        counts,
    )
    return split


def sample_index(raw_keys: Sequence[str], y: np.ndarray, split: np.ndarray) -> pd.DataFrame:
    """The table of samples: one row per sample, in source order.

    Args:
        raw_keys: (N,) unique key per sample (``RawData.keys``).
        y: (N,) integer class labels.
        split: (N,) ``"train"`` / ``"val"`` / ``"test"`` (from :func:`stratified_split`).

    Returns:
        DataFrame with columns ``sample_id`` (int64, = position 0..N-1), ``key`` (str),
        ``label`` (int64), ``split`` (str).

    Raises:
        ValueError: Lengths differ, keys repeat, labels are not integers, or a split is unknown.
    """
    keys = [str(k) for k in raw_keys]
    labels = np.asarray(y)
    splits = np.asarray(split).astype(str)
    n = len(keys)
    if labels.shape != (n,) or splits.shape != (n,):
        raise ValueError(
            f"raw_keys, y and split must have the same length: got {n}, shape {labels.shape} "
            f"and shape {splits.shape}."
        )
    if n > 0 and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {labels.dtype}.")
    if len(set(keys)) != n:
        raise ValueError("raw_keys must be unique.")
    unknown = sorted(set(splits.tolist()) - set(SPLITS))
    if unknown:
        raise ValueError(f"split must hold only {', '.join(SPLITS)}, got {unknown}.")
    return pd.DataFrame(
        {
            "sample_id": np.arange(n, dtype=np.int64),
            "key": pd.Series(keys, dtype=str),
            "label": labels.astype(np.int64),
            "split": pd.Series(splits.tolist(), dtype=str),
        }
    )


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Fractions must have exactly the keys of SPLITS, be >= 0 and sum to 1."""
    if not isinstance(fractions, Mapping) or set(fractions) != set(SPLITS):
        got = list(fractions) if isinstance(fractions, Mapping) else fractions
        raise ValueError(f"fractions must have exactly the keys {', '.join(SPLITS)}, got {got!r}.")
    valid: dict[str, float] = {}
    for name in SPLITS:
        value = fractions[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"fractions[{name!r}] must be a number, got {value!r}.")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"fractions[{name!r}] must be >= 0, got {value!r}.")
        valid[name] = value
    total = sum(valid.values())
    if abs(total - 1.0) > _FRACTION_TOLERANCE:
        raise ValueError(f"fractions must sum to 1, got {total!r} ({valid}).")
    return valid


def _assign(
    split: np.ndarray,
    eligible: np.ndarray,
    labels: np.ndarray,
    *,
    fractions: Mapping[str, float],
    remainder: str,
    seed: int,
) -> None:
    """Split the ``eligible`` samples of every class by ``fractions``, writing into ``split``.

    ``remainder`` gets what rounding leaves; the other splits get ``round(n * fraction)``.
    """
    for label in np.unique(labels[eligible]):  # sorted; each class is independent anyway
        members = np.flatnonzero(eligible & (labels == label))  # (n,) positions, ascending
        counts = _class_counts(len(members), fractions, remainder)
        rng = np.random.default_rng([seed, int(label)])
        shuffled = members[rng.permutation(len(members))]  # (n,)
        start = 0
        for name in fractions:  # dict order: train, val, test (or val, test)
            if name == remainder:
                continue
            split[shuffled[start : start + counts[name]]] = name
            start += counts[name]
        split[shuffled[start:]] = remainder


def _class_counts(n: int, fractions: Mapping[str, float], remainder: str) -> dict[str, int]:
    """How many of a class's ``n`` samples each split gets.

    Non-remainder splits get ``round(n * f)`` (halves up); when ``n`` is at least the number of
    splits, every split with a positive fraction gets at least one sample.
    """
    guarantee = n >= len(fractions)
    minimum = {s: 1 if guarantee and f > 0 else 0 for s, f in fractions.items()}
    counts = {
        s: max(math.floor(n * f + 0.5), minimum[s]) for s, f in fractions.items() if s != remainder
    }
    counts[remainder] = n - sum(counts.values())
    while counts[remainder] < minimum[remainder]:
        # Take one back from the split furthest above its exact share.
        reducible = [s for s in counts if s != remainder and counts[s] > minimum[s]]
        worst = max(reducible, key=lambda s: counts[s] - n * fractions[s])
        counts[worst] -= 1
        counts[remainder] += 1
    return counts


def split_index(
    y: np.ndarray, origin: Sequence[str], keys: Sequence[str], split: Mapping
) -> pd.DataFrame:
    """The sample index table of a source's samples under a ``data.split`` parameter block.

    Args:
        y: (N,) labels; origin: (N,) the source's own split of each sample; keys: (N,) stable
            sample keys (``RawData.y``, ``.origin``, ``.keys``).
        split: ``fractions``, ``seed`` and optionally ``use_source_test``.

    Returns:
        ``sample_id, key, label, split`` as from :func:`sample_index`.
    """
    assignment = stratified_split(
        y,
        origin,
        split["fractions"],
        seed=split["seed"],
        use_source_test=split.get("use_source_test", False),
    )
    return sample_index(keys, y, assignment)
