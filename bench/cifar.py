"""Fidelity benchmark at the paper's scale: real CIFAR-10, SmallVGG, PGU against retraining.

Data and recipe are those of the ``cifar10`` Kedro environment (conf/cifar10 over conf/base): the
JPEG tree ``data/01_raw/cifar10-jpg/{train,test}/<class>/NNNN.jpg`` read by the ``image_folder``
source, the source's train split (50,000) for training, its test split cut per class into val
(5,000) and test (5,000), per-channel standardisation with the train split's statistics, SmallVGG
trained by SGD (momentum 0.9, weight decay 1e-4, batch 256, lr 0.01 -> 0.0005 exponential) with
crop+flip augmentation. ``--epochs`` defaults to 60, the shortened training of the reference
measurements in issue 7 (the paper trains 200).

Scenarios (``--scenarios``, any of a, b, c; run for ``--seeds`` seeds from ``--first-seed``):

- (a) forget the first ``--forget-per-class`` (100) training images of every class in file order;
  with the source's stable order (sorted paths, train before test) these are the lowest
  sample ids of each class (:func:`first_per_class`); ``--forget-draw random`` draws that many
  per class at random instead, a different draw for each seed (:func:`random_per_class`);
- (b) incremental: ``--increments`` (4) such requests in sequence, request k forgetting the
  images ranked (k-1)n .. kn-1 of every class; each request starts from the previous request's
  model and retain statistics (R_retain -= R_forget, collected with the original model, as
  ``pgu.core.deletion`` does); the gold standard of step k is retrained without all k requests
  (``--incremental-gold``: at every step, or the last only); step 1 is scenario (a) and reuses it;
- (c) forget every training image of class ``--forget-class``.

Each request runs with the DEFAULT parameters: the ``UnlearnConfig`` defaults and gamma 0.95
(conf/base/parameters_cgs.yml), the same for every seed. For the original, the retrained gold
standard and PGU it reports forget / retain / test accuracy (class removal: test accuracy on the
class and on the others), the entropy membership-inference attack's member rate on the forget
set (averaged over ``--attack-repeats`` fits), the mean output entropy on the forget set, the mean
Jensen-Shannon divergence to the retrained model on the forget set and on test, and the time of
each phase against retraining: a markdown table per scenario (mean ± std over seeds), the issue's
reference measurements next to scenario (a), and one JSON line.

The device is ``--device`` (auto: CUDA when present). On CUDA the training data stays on the GPU;
the unlearning loop moves its forget and val sets there itself, evaluation moves batches. Work
runs seed by seed (a seed's original model and statistics serve all of its scenarios), and work
predicted to end past ``--time-budget`` is skipped and named. ``--variant NAME=JSON`` runs each
request again (in the scenarios of ``--variant-scenarios``; in (b) as a chain of its own) with
UnlearnConfig overrides and/or ``eigh_dtype`` and ``cuda_graph``, reported as ``pgu:NAME``.
The evaluate pipeline's baselines (``--baselines``; default: ``evaluate.baselines`` of the
configuration, i.e. FT, NG, RL and PGU without projection) run on every request as that
pipeline's audit runs them, from PGU's starting model (in (b), PGU's model of the step before;
FT fine-tunes on everything not forgotten so far), and get rows of their own (their time is the
baseline's own work; none needs the statistics or bases).
``--state-dir`` keeps decoded images, models and R_full for a later run; ``--merge`` joins
per-seed runs' results. The report (tables over seeds, the reference's figures, the merge) is
``bench/cifar_report.py``.
Only the framework-free core is imported (no Kedro, PyYAML optional), so the
script runs where only torch, numpy, pandas, scikit-learn, pillow and safetensors are installed.

    # full size (GPU; a 40-epoch training takes 40 s on an H200, README has the results);
    # results.{md,json} and log.txt in --out
    PYTHONPATH=src python3 bench/cifar.py --archive data/01_raw/cifar10-jpg.tar.gz --seeds 2 \\
        --scenarios a,b,c --incremental-gold last --time-budget 450 --out "$OUT"
    # a CPU smoke run (not a fidelity result: 16x16 images, 200 per class, 3 epochs)
    PYTHONPATH=src .venv/bin/python bench/cifar.py --seeds 1 --scenarios a,c --image-size 16 \\
        --train-per-class 200 --eval-per-class 50 --forget-per-class 20 --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pgu.core.baselines import BASELINES, NEEDS_RETAIN, BaselineContext, run_baseline
from pgu.core.cgs import compute_bases, retain_statistics
from pgu.core.checkpoint import (
    load_tensors,
    model_from_bytes,
    model_spec,
    model_to_bytes,
    save_tensors,
    tensors_from_bytes,
)
from pgu.core.data import SampleSet, indexed_samples, split_set
from pgu.core.evaluation import EvalSets, ModelEval, evaluate_model
from pgu.core.metrics import entropy_attack, js_divergence, tug_of_war
from pgu.core.representation import collect_representations
from pgu.core.sources import RawData, load_source
from pgu.core.splits import split_index
from pgu.core.training import TrainRecipe, accuracy_and_loss, fit_from_scratch, resolve_device
from pgu.core.unlearning import UnlearnConfig, unlearn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cifar_report, beside this file
from cifar_report import PAPER_EPOCHS, REFERENCE, SCENARIOS, describe, merge, report  # noqa: E402

logger = logging.getLogger("bench.cifar")

ROOT = Path(__file__).resolve().parents[1]

# The parameter blocks of conf/base + conf/cifar10 (Kedro replaces top-level keys), used when
# PyYAML is missing; tests/pipelines/test_cifar_optional.py checks that they match the files.
CONF_KEYS = ("data", "model", "train", "cgs", "representation", "unlearn")
# and of the `evaluate` block, what the baselines need
EVALUATE_KEYS = ("baselines", "finetune_recipe")
CIFAR10_DEFAULTS: dict[str, Any] = {
    "data": {
        "source": "image_folder",
        "root": "data/01_raw",
        "options": {"path": "cifar10-jpg", "workers": 4},
        "split": {
            "fractions": {"train": 0.0, "val": 0.5, "test": 0.5},
            "use_source_test": True,
            "seed": 0,
        },
    },
    "model": {"name": "small_vgg", "kwargs": {}},
    "train": {
        "device": "auto",
        "exclude_sample_ids": [],
        "recipe": {
            "epochs": 200,
            "batch_size": 256,
            "lr": 0.01,
            "lr_end": 0.0005,
            "momentum": 0.9,
            "weight_decay": 0.0001,
            "crop_padding": 4,
            "horizontal_flip": True,
            "seed": 0,
        },
    },
    "cgs": {"gamma": 0.95, "overrides": {}, "eigh_dtype": "float64"},
    "representation": {"batch_size": 256, "device": "auto"},
    "unlearn": {
        "request_id": None,
        "device": "auto",
        "cuda_graph": False,
        "config": {
            "epochs": 30,
            "step": "calibrated",
            "lr_start": 0.15,
            "lr_end": 0.03,
            "max_backtracks": 6,
            "delta": 0.05,
            "w_forget": 1.0,
            "w_entropy": 0.2,
            "batch_size": 64,
            "sample_measure": "loss",
            "sample_loss": "pgu",
            "sample_tolerance": 0.25,
            "sample_guard_drop": 0.05,
            "class_target_acc": 0.01,
            "class_guard_drop": 0.01,
            "class_free_rows": True,
            "reference": "original",
            "seed": 0,
        },
    },
    "evaluate": {
        "baselines": ["ft", "ng", "rl", "no_projection"],
        "finetune_recipe": {
            "epochs": 3,
            "batch_size": 64,
            "lr": 0.01,
            "lr_end": 0.001,
            "momentum": 0.9,
            "weight_decay": 0.0005,
            "seed": 0,
        },
    },
}

# --- configuration and data -----------------------------------------------------------------


def load_conf() -> dict[str, Any]:
    """The parameter blocks of the ``cifar10`` environment: conf/base, then conf/cifar10 on top.

    Key by key, as the project's Kedro settings merge parameters (``merge_strategy: soft``):
    what conf/cifar10 leaves out stays conf/base's. Without PyYAML, :data:`CIFAR10_DEFAULTS`.
    """
    try:
        import yaml
    except ImportError:
        logger.warning("PyYAML is missing: using the built-in copy of conf/cifar10")
        return copy.deepcopy(CIFAR10_DEFAULTS)

    def merge(into: dict[str, Any], over: dict[str, Any]) -> None:
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merged: dict[str, Any] = {}
    for env in ("base", "cifar10"):
        env_blocks: dict[str, Any] = {}  # an environment's files are disjoint blocks
        for path in sorted((ROOT / "conf" / env).glob("parameters*.yml")):
            env_blocks.update(yaml.safe_load(path.read_text()) or {})
        merge(merged, env_blocks)
    conf = {key: merged[key] for key in CONF_KEYS}
    conf["evaluate"] = {key: merged["evaluate"][key] for key in EVALUATE_KEYS}
    return conf


def _class_members(
    sample_id: Sequence[int] | np.ndarray | torch.Tensor,
    y: Sequence[int] | np.ndarray | torch.Tensor,
    need: int,
    need_name: str,
) -> Iterator[np.ndarray]:
    """Each class's ids, ascending, checked to number at least ``need`` (named in the error)."""
    ids = np.asarray(sample_id, dtype=np.int64)
    labels = np.asarray(y)
    if ids.shape != labels.shape:
        raise ValueError(f"sample_id {ids.shape} and y {labels.shape} differ in shape")
    for label in np.unique(labels):
        members = np.sort(ids[labels == label])
        if len(members) < need:
            raise ValueError(
                f"class {label} has {len(members)} samples, fewer than {need_name} = {need}"
            )
        yield members


def _sorted_ids(chosen: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def first_per_class(
    sample_id: Sequence[int] | np.ndarray | torch.Tensor,
    y: Sequence[int] | np.ndarray | torch.Tensor,
    n: int,
    skip: int = 0,
) -> np.ndarray:
    """The ids ranked ``skip`` .. ``skip + n - 1`` by sample id within each class, sorted.

    With the image_folder source's order (sorted relative paths, train before test), the first
    ``n`` training images of a class in file order are its ``n`` lowest sample ids among the
    train split: pass the train split's ids and labels.

    Args:
        sample_id: (N,) ids of the candidate samples.
        y: (N,) their labels.
        n: how many per class.
        skip: how many of the lowest ids of each class to pass over first (request k of an
            incremental sequence of ``n`` per class skips ``(k - 1) * n``).

    Returns:
        (n * classes,) int64 ids, ascending.

    Raises:
        ValueError: a class has fewer than ``skip + n`` samples, or n < 1 or skip < 0.
    """
    if n < 1 or skip < 0:
        raise ValueError(f"need n >= 1 and skip >= 0, got n={n}, skip={skip}")
    return _sorted_ids(
        [m[skip : skip + n] for m in _class_members(sample_id, y, skip + n, "skip + n")]
    )


def random_per_class(
    sample_id: Sequence[int] | np.ndarray | torch.Tensor,
    y: Sequence[int] | np.ndarray | torch.Tensor,
    n: int,
    seed: int,
) -> np.ndarray:
    """``n`` ids of each class drawn without replacement by ``numpy.random.default_rng(seed)``.

    Returns:
        (n * classes,) int64 ids, ascending.

    Raises:
        ValueError: a class has fewer than ``n`` samples, or n < 1.
    """
    if n < 1:
        raise ValueError(f"need n >= 1, got n={n}")
    rng = np.random.default_rng(seed)
    members = _class_members(sample_id, y, n, "n")
    return _sorted_ids([rng.choice(m, size=n, replace=False) for m in members])


def first_of(data: SampleSet, n: int, skip: int = 0) -> np.ndarray:
    """:func:`first_per_class` of a SampleSet's ids and labels."""
    return first_per_class(data.sample_id.cpu().numpy(), data.y.cpu().numpy(), n, skip)


def random_of(data: SampleSet, n: int, seed: int) -> np.ndarray:
    """:func:`random_per_class` of a SampleSet's ids and labels (the set may be on a GPU)."""
    return random_per_class(data.sample_id.cpu().numpy(), data.y.cpu().numpy(), n, seed)


def extract_archive(archive: Path, root: Path) -> None:
    """Extract the CIFAR-10 JPEG archive under ``root`` (regular files and folders only)."""
    logger.info("extracting %s into %s", archive, root)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:  # Python without extraction filters: the archive is the project's own data
            tar.extractall(root)


class StateDir:
    """``--state-dir``: decoded images, trained models and R_full kept on disk (safetensors).

    A later run with the same data, recipe and seeds loads them instead of decoding and
    training, and repeats only the requests and their evaluation. Its request times are then
    measured on an otherwise idle device (runs that share one GPU time each other's work too).
    Entries are named by a hash of everything they depend on, so a changed recipe or data
    option never loads a stale entry.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder) if folder else None

    def path(self, kind: str, key: dict) -> Path | None:
        if self.folder is None:
            return None
        text = json.dumps(key, sort_keys=True, default=str)
        return self.folder / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.safetensors"

    def existing(self, kind: str, key: dict) -> Path | None:
        """The entry's file when it is there (logged), else None."""
        path = self.path(kind, key)
        if path is None or not path.is_file():
            return None
        logger.info("state dir: loading %s", path)
        return path

    def load(self, kind: str, key: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
        path = self.existing(kind, key)
        return None if path is None else load_tensors(path)

    def save(self, kind: str, key: dict, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        path = self.path(kind, key)
        if path is not None:
            save_tensors(path, tensors, meta)

    def load_model(self, key: dict) -> tuple[nn.Module, float] | None:
        path = self.existing("model", key)
        if path is None:
            return None
        data = path.read_bytes()
        return model_from_bytes(data, str(path)), float(tensors_from_bytes(data)[1]["train_s"])

    def save_model(self, key: dict, model: nn.Module, seconds: float) -> None:
        path = self.path("model", key)
        if path is not None:
            tensors, meta = tensors_from_bytes(model_to_bytes(model))
            save_tensors(path, tensors, dict(meta, train_s=seconds))


def cached_source(name: str, root: Path, options: dict, state: StateDir) -> RawData:
    """``load_source`` through the state dir (the decoded images, labels, keys and origins)."""
    key = {"source": name, "root": str(root), "options": dict(options, workers=None)}
    hit = state.load("source", key)
    if hit is not None:
        tensors, meta = hit
        return RawData(
            x=tensors["x"].numpy(),
            y=tensors["y"].numpy(),
            keys=meta["keys"],
            origin=np.asarray(meta["origin"]),
            classes=meta["classes"],
        )
    raw = load_source(name, root, **options)
    meta = {"keys": list(raw.keys), "origin": raw.origin.tolist(), "classes": list(raw.classes)}
    state.save("source", key, {"x": torch.from_numpy(raw.x), "y": torch.from_numpy(raw.y)}, meta)
    return raw


def build_sets(
    conf: dict, args: argparse.Namespace, state: StateDir
) -> tuple[dict[str, SampleSet], dict]:
    """Train, val and test SampleSets on the CPU, as the data pipeline builds them, then subset.

    Normalisation statistics come from the whole train split of the source (what the data
    pipeline computes), also when ``--train-per-class`` trains on a subset of it.
    """
    params = conf["data"]
    options = dict(params.get("options") or {}, workers=args.workers)
    if args.image_size:
        options["image_size"] = [args.image_size, args.image_size]
    root = Path(args.root) if args.root else ROOT / params["root"]
    folder = root / options["path"]
    if not (folder / "train").is_dir() and args.archive:
        extract_archive(Path(args.archive), root)
    start = time.perf_counter()
    raw = cached_source(params["source"], root, options, state)
    decode_s = time.perf_counter() - start
    index = split_index(raw.y, raw.origin, raw.keys, params["split"])
    data = indexed_samples(raw.x, raw.y, index, len(raw.classes))
    sets = {s: split_set(data, index, s) for s in ("train", "val", "test")}
    if args.train_per_class:
        sets["train"] = sets["train"].with_ids(first_of(sets["train"], args.train_per_class))
    if args.eval_per_class:
        for s in ("val", "test"):
            sets[s] = sets[s].with_ids(first_of(sets[s], args.eval_per_class))
    info = {
        "n_source": len(raw.y),
        "classes": list(raw.classes),
        "in_shape": list(data.in_shape),
        "sizes": {s: len(v) for s, v in sets.items()},
        "mean": data.mean.tolist(),
        "std": data.std.tolist(),
        "decode_s": decode_s,
        "first_train_keys": [raw.keys[int(i)] for i in sets["train"].sample_id[:2]],
    }
    logger.info("data: %s", info)
    return sets, info


# --- timing and budget ----------------------------------------------------------------------


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn(), wall seconds), with the device's queued work finished at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


class Budget:
    """Skips work predicted to end past ``seconds`` after the start (0: no limit)."""

    def __init__(self, seconds: float, start: float | None = None) -> None:
        self.seconds = seconds
        self.start = time.perf_counter() if start is None else start
        self.train_s: list[float] = []  # measured trainings
        self.extra_s: list[float] = []  # measured cost per request besides training
        self._mark = (0.0, 0.0)

    def begin(self) -> None:
        """Start measuring one unit of work (see :meth:`end`)."""
        self._mark = (self.elapsed(), sum(self.train_s))

    def end(self, requests: int) -> None:
        """Record the unit's cost per request besides training: statistics, bases, unlearning,
        evaluation."""
        if requests > 0:
            wall = self.elapsed() - self._mark[0]
            training = sum(self.train_s) - self._mark[1]
            self.extra_s.append(max(0.0, wall - training) / requests)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def estimate(self, trainings: int, requests: int) -> float:
        train = statistics.fmean(self.train_s) if self.train_s else 0.0
        extra = max(self.extra_s) if self.extra_s else 0.3 * train
        return trainings * train + requests * extra

    def allows(self, trainings: int, requests: int) -> bool:
        if not self.seconds:
            return True
        return self.elapsed() + self.estimate(trainings, requests) <= self.seconds


# --- the benchmark --------------------------------------------------------------------------


class Bench:
    """Per-seed originals and statistics, cached gold standards and requests, and evaluation."""

    def __init__(
        self,
        args: argparse.Namespace,
        conf: dict,
        sets: dict[str, SampleSet],
        budget: Budget,
        state: StateDir,
    ) -> None:
        self.args = args
        self.device = resolve_device(args.device)
        self.sets = sets
        self.train = sets["train"]
        self.train_dev = self.train.to(self.device)
        train_params = conf["train"]["recipe"]
        self.recipe_params = dict(train_params, epochs=args.epochs, **json.loads(args.train))
        model_params = conf["model"]
        if args.model:  # another architecture: conf's constructor arguments are its own
            model_params = {"name": args.model, "kwargs": {}}
        self.spec = model_spec(
            model_params["name"],
            self.train.in_shape,
            self.train.num_classes,
            **(model_params.get("kwargs") or {}),
        )
        self.gamma = float(conf["cgs"]["gamma"])
        self.gamma_overrides = dict(conf["cgs"].get("overrides") or {})
        self.eigh_dtype = str(conf["cgs"].get("eigh_dtype", "float64"))
        self.batch_size = int(conf["representation"]["batch_size"])
        self.cuda_graph = bool(conf["unlearn"].get("cuda_graph", False))  # as the unlearn node
        self.config = UnlearnConfig.from_params(
            dict(conf["unlearn"].get("config") or {}, **json.loads(args.unlearn))
        )
        # --variant NAME=JSON: the same requests with other settings, reported as "pgu:NAME"
        self.variants: dict[str, tuple[UnlearnConfig, str, bool]] = {}
        for name, overrides in args.variant:
            over = dict(overrides)
            dtype = str(over.pop("eigh_dtype", self.eigh_dtype))
            graph = bool(over.pop("cuda_graph", self.cuda_graph))
            self.variants[name] = (
                UnlearnConfig.from_params(dict(asdict(self.config), **over)),
                dtype,
                graph,
            )
        # the evaluate pipeline's baselines (--baselines), on every request; FT seeded per seed
        self.baselines: list[str] = (
            list(conf["evaluate"]["baselines"]) if args.baselines is None else args.baselines
        )
        self.finetune_params = dict(conf["evaluate"]["finetune_recipe"])
        self.budget = budget
        self.state = state
        # the training times of models loaded from --state-dir (measured by an earlier run), by
        # identity: a record says which of its times they are, and its ratios are then marked
        self.loaded_times: list[float] = []
        self._seed_state: dict[int, dict] = {}
        self._gold: dict[tuple[int, bytes], tuple[nn.Module, float]] = {}
        self._requests: dict[tuple[int, bytes], dict] = {}
        self._baselines: dict[tuple, tuple[nn.Module, float]] = {}

    # -- building blocks

    def recipe(self, seed: int) -> TrainRecipe:
        return TrainRecipe.from_params(dict(self.recipe_params, seed=seed))

    def model_key(self, data: SampleSet, seed: int) -> dict:
        """What a trained model depends on: architecture, recipe, seed and its training ids."""
        ids = np.ascontiguousarray(data.sample_id.cpu().numpy())
        return {
            "spec": self.spec,
            "recipe": self.recipe_params,
            "seed": seed,
            "ids": hashlib.sha256(ids.tobytes()).hexdigest(),
            "mean": data.mean.tolist(),
            "std": data.std.tolist(),
        }

    def fit(self, data: SampleSet, seed: int) -> tuple[nn.Module, float]:
        key = self.model_key(data, seed)
        hit = self.state.load_model(key)
        if hit is not None:  # trained by an earlier run: its measured seconds come along
            self.loaded_times.append(hit[1])
            return hit
        # cuDNN autotuning pays off over a training's fixed batch shapes; requests run without
        # it, as the pipelines do (it would re-tune for every new forget-set size)
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        try:
            (model, _), seconds = timed(
                lambda: fit_from_scratch(
                    self.spec, data.to(self.device), self.recipe(seed), device=self.device
                ),
                self.device,
            )
        finally:
            torch.backends.cudnn.benchmark = False
        self.budget.train_s.append(seconds)
        self.state.save_model(key, model, seconds)
        return model, seconds

    def seed_state(self, seed: int) -> dict:
        """The original model of ``seed`` and its full-data statistics R_full (cached)."""
        if seed not in self._seed_state:
            logger.info("seed %d: training the original on %d samples", seed, len(self.train))
            original, train_s = self.fit(self.train_dev, seed)
            key = dict(self.model_key(self.train_dev, seed), batch_size=self.batch_size)
            hit = self.state.load("r_full", key)
            if hit is not None:
                r_full = hit[0]  # on the CPU, as collect_representations returns it
                full_s = float(hit[1]["full_stats_s"])
            else:
                r_full, full_s = timed(
                    lambda: collect_representations(
                        original, self.train_dev.batches(self.batch_size), device=self.device
                    ),
                    self.device,
                )
                self.state.save("r_full", key, r_full, {"full_stats_s": full_s})
            logger.info("seed %d: original %.1fs, R_full %.1fs", seed, train_s, full_s)
            self._seed_state[seed] = {
                "original": original,
                "r_full": r_full,
                "train_s": train_s,
                "full_stats_s": full_s,
            }
        return self._seed_state[seed]

    def variants_for(self, scenario: str) -> list[str]:
        """The ``--variant`` names run in ``scenario`` (``--variant-scenarios``)."""
        return list(self.variants) if scenario in self.args.variant_scenarios else []

    def has_seed(self, seed: int) -> bool:
        return seed in self._seed_state

    def has_gold(self, seed: int, forgotten: np.ndarray) -> bool:
        return (seed, np.sort(forgotten).tobytes()) in self._gold

    def trainings_b(self, seed: int) -> int:
        """Trainings scenario (b) of ``seed`` still needs (original and gold standards)."""
        n, steps = self.args.forget_per_class, self.args.increments
        count = int(not self.has_seed(seed))
        for k in range(1, steps + 1):
            forgotten = first_of(self.train, k * n)
            if self.args.incremental_gold == "all" or k == steps:
                count += int(not self.has_gold(seed, forgotten))
        return count

    def requests_b(self, seed: int) -> int:
        """Requests scenario (b) of ``seed`` still needs (its first may be scenario (a)'s)."""
        first = np.sort(first_of(self.train, self.args.forget_per_class))
        cached = (seed, b"0:" + first.tobytes()) in self._requests
        return self.args.increments - int(cached)

    def gold(self, seed: int, forgotten: np.ndarray) -> tuple[nn.Module, float, bool]:
        """The model retrained without ``forgotten`` (cached): (model, seconds, reused)."""
        key = (seed, np.sort(forgotten).tobytes())
        if key in self._gold:
            return (*self._gold[key], True)
        logger.info("seed %d: retraining without %d samples", seed, len(forgotten))
        model, seconds = self.fit(self.train.without_ids(forgotten), seed)
        self._gold[key] = (model, seconds)
        return model, seconds, False

    def request(
        self,
        seed: int,
        start: nn.Module,
        r_prev: dict,
        forget_ids: np.ndarray,
        classes: list[int] | None,
        chain: str,
        variant: str | None = None,
    ) -> dict:
        """One PGU request as ``pgu.core.deletion.execute_request`` runs it (cached by chain).

        R_forget is collected with the original model (the statistics model of R_full), so
        R_retain = R_prev - R_forget is exact; the unlearning starts from ``start``.
        """
        config, eigh_dtype, cuda_graph = (
            self.variants[variant] if variant else (self.config, self.eigh_dtype, self.cuda_graph)
        )
        key = (seed, f"{variant or ''}/{chain}:".encode() + np.sort(forget_ids).tobytes())
        if key in self._requests:
            return dict(self._requests[key], reused=True)
        dev = self.device
        original = self.seed_state(seed)["original"]
        forget = self.train.with_ids(forget_ids)
        val = self.sets["val"]
        # normalised where R_full's samples were (train_dev): a GPU divides by a scalar through
        # its reciprocal, the CPU does not, and R_retain = R_prev - R_forget must stay exact
        placed = self.train_dev.with_ids(forget_ids)
        r_forget, forget_stats_s = timed(
            lambda: collect_representations(
                original, placed.batches(self.batch_size), device=dev, keep_on_device=True
            ),
            dev,
        )

        def retain_and_bases() -> tuple:
            # R_retain = R_prev - R_forget is part of the request: timed with the bases
            r_retain = retain_statistics(r_prev, r_forget, device=dev)
            return r_retain, *compute_bases(
                r_retain, self.gamma, self.gamma_overrides, device=dev, eigh_dtype=eigh_dtype
            )

        (r_retain, bases, summary), bases_s = timed(retain_and_bases, dev)
        result, unlearn_s = timed(
            lambda: unlearn(
                start,
                bases,
                forget,
                val,
                config,
                classes,
                device=dev,
                original=None if start is original else original,
                cuda_graph=cuda_graph,
            ),
            dev,
        )
        out = {
            "model": result.model.cpu().eval(),
            "r_retain": r_retain,
            "forget_stats_s": forget_stats_s,
            "bases_s": bases_s,
            "unlearn_s": unlearn_s,
            "request_s": forget_stats_s + bases_s + unlearn_s,
            "stop_reason": result.stop_reason,
            "epochs_run": result.epochs_run,
            "kept_epoch": result.kept_epoch,
            "lr_scale": result.lr_scale,
            "tries": len(result.history) - 1,
            "layers": [f"{s['layer']} k={s['k']}/{s['d']}" for s in summary],
            "reused": False,
        }
        if chain == "0" and classes is None:
            # scenario (a) is step 1 of (b): keep it
            self._requests[key] = {k: v for k, v in out.items() if k != "reused"}
        logger.info(
            "seed %d %s (%s): %s after %d epochs (kept %d, %d tries, scale %.3g); "
            "request %.2fs (R_forget %.2fs, bases %.2fs, unlearning %.2fs)",
            seed,
            chain,
            variant or "defaults",
            result.stop_reason,
            result.epochs_run,
            result.kept_epoch,
            out["tries"],
            result.lr_scale,
            out["request_s"],
            forget_stats_s,
            bases_s,
            unlearn_s,
        )
        return out

    def baseline(
        self,
        name: str,
        seed: int,
        start: nn.Module,
        forget_ids: np.ndarray,
        forgotten: np.ndarray,
        classes: list[int] | None,
    ) -> tuple[nn.Module, dict]:
        """Baseline ``name`` on a request, as the evaluate pipeline runs it: from PGU's starting
        model ``start`` (the original, or in (b) PGU's previous step), forgetting ``forget_ids``
        with PGU's UnlearnConfig (FT: evaluate.finetune_recipe, seeded with the seed, on the
        train set without ``forgotten``, everything forgotten so far): (model, {"time_s",
        "stopped"}), where "stopped" says how its run ended."""
        original = self.seed_state(seed)["original"]
        key = (seed, name, np.sort(forget_ids).tobytes(), np.sort(forgotten).tobytes())
        if start is original and key in self._baselines:  # (a)'s, again as (b)'s first step
            return self._baselines[key]
        ctx = BaselineContext(
            forget=self.train.with_ids(forget_ids),
            val=self.sets["val"],
            retain=self.train_dev.without_ids(forgotten) if name in NEEDS_RETAIN else None,
            config=self.config,
            forget_classes=classes,
            device=self.device,
            finetune_recipe=TrainRecipe.from_params(dict(self.finetune_params, seed=seed)),
            original=None if start is original else original,
        )
        outcome, seconds = timed(lambda: run_baseline(name, start, ctx), self.device)
        logger.info("seed %d baseline %s: %.2fs, %s", seed, name, seconds, outcome.stopped)
        model, run = outcome.model.cpu().eval(), {"time_s": seconds, "stopped": outcome.stopped}
        if start is original:
            self._baselines[key] = (model, run)
        return model, run

    def evaluate(
        self, models: dict[str, nn.Module], sets: EvalSets, seed: int
    ) -> dict[str, dict[str, float]]:
        """Metrics of each model; JS and ToW against ``models["retrained"]`` when present."""
        evals: dict[str, ModelEval] = {
            name: evaluate_model(model, sets, device=self.device, seed=seed)
            for name, model in models.items()
        }
        gold = evals.get("retrained")
        rows: dict[str, dict[str, float]] = {}
        for name, ev in evals.items():
            m = ev.metrics
            row = {k: m[k] for k in ("retain_acc", "forget_acc", "val_acc", "test_acc")}
            if sets.forget_classes:
                row["test_class_acc"] = m["test_forget_class_acc"]
                row["test_other_acc"] = m["test_other_acc"]
            attacks = [
                entropy_attack(
                    ev.probs["retain"],
                    sets.retain.y,
                    ev.probs["test"],
                    sets.test.y,
                    ev.probs["forget"],
                    sets.forget.y,
                    seed=seed * 100 + r,
                )
                for r in range(self.args.attack_repeats)
            ]
            row["attack_rate"] = statistics.fmean(a["member_rate"] for a in attacks)
            row["attack_auc"] = statistics.fmean(a["auc"] for a in attacks)
            row["forget_entropy"] = m["forget_entropy"]
            if gold is not None and name != "retrained":  # the retrained model's are 0
                for s in ("forget", "test"):
                    row[f"js_{s}"] = js_divergence(ev.probs[s], gold.probs[s]).mean().item()
                accs = ("retain_acc", "forget_acc", "test_acc")
                row["tow"] = tug_of_war({k: m[k] for k in accs}, {k: gold.metrics[k] for k in accs})
            rows[name] = row
        return rows

    def eval_sets(self, forgotten: np.ndarray, classes: Sequence[int] = ()) -> EvalSets:
        return EvalSets(
            retain=self.train.without_ids(forgotten),
            forget=self.train.with_ids(forgotten),
            val=self.sets["val"],
            test=self.sets["test"],
            forget_classes=tuple(classes),
        )

    # -- scenarios

    def single(self, scenario: str, seed: int) -> dict:
        """Scenario (a) or (c): one request from the original model."""
        state = self.seed_state(seed)
        if scenario == "a":
            n = self.args.forget_per_class
            if self.args.forget_draw == "random":
                forget_ids = random_of(self.train, n, seed)
            else:
                forget_ids = first_of(self.train, n)
            classes = None
        else:
            forget_ids = self.train.sample_id[self.train.y == self.args.forget_class].numpy()
            classes = [self.args.forget_class]
        gold, retrain_s, gold_reused = self.gold(seed, forget_ids)
        req = self.request(seed, state["original"], state["r_full"], forget_ids, classes, "0")
        models = {"original": state["original"], "retrained": gold, "pgu": req["model"]}
        extra = {
            name: self.request(
                seed, state["original"], state["r_full"], forget_ids, classes, "0", name
            )
            for name in self.variants_for(scenario)
        }
        models.update({f"pgu:{name}": r["model"] for name, r in extra.items()})
        baseline_runs = {}
        for name in self.baselines:
            models[name], baseline_runs[name] = self.baseline(
                name, seed, state["original"], forget_ids, forget_ids, classes
            )
        rows = self.evaluate(models, self.eval_sets(forget_ids, classes or ()), seed)
        record = self._record(
            scenario, seed, 1, forget_ids, forget_ids, rows, req, retrain_s, gold_reused, state
        )
        record["variants"] = {}
        for name, r in extra.items():
            rows[f"pgu:{name}"]["time_s"] = r["request_s"]
            record["variants"][name] = {
                k: r[k] for k in ("request_s", "bases_s", "unlearn_s", "stop_reason", "epochs_run")
            }
        for name, run in baseline_runs.items():
            rows[name]["time_s"] = run["time_s"]
        record["baselines"] = baseline_runs
        return record

    def incremental(self, seed: int, on_step: Callable[[dict], None]) -> list[dict]:
        """Scenario (b): ``--increments`` requests of ``--forget-per-class`` per class in turn.

        Each variant runs its own chain of requests (each step starts from the variant's
        previous model); R_forget comes from the original model, so every chain shares R_retain.
        """
        state = self.seed_state(seed)
        n, steps = self.args.forget_per_class, self.args.increments
        names = [None, *self.variants_for("b")]
        current = dict.fromkeys(names, state["original"])
        r_prev = state["r_full"]
        forgotten = np.empty(0, dtype=np.int64)
        chain = "0"  # step 1 starts from the original, exactly like scenario (a)
        records = []
        for k in range(1, steps + 1):
            step_ids = first_of(self.train, n, skip=(k - 1) * n)
            forgotten = np.union1d(forgotten, step_ids)
            cached = self.has_gold(seed, forgotten)
            with_gold = cached or self.args.incremental_gold == "all" or k == steps
            work = len(names) + len(self.baselines)
            if not self.budget.allows(int(with_gold and not cached), work):
                logger.warning("seed %d (b) step %d: skipped, the time budget is spent", seed, k)
                break
            self.budget.begin()  # each step is a unit: the next step's estimate uses its cost
            reqs = {
                name: self.request(seed, current[name], r_prev, step_ids, None, chain, name)
                for name in names
            }
            req = reqs[None]
            label = {name: "pgu" if name is None else f"pgu:{name}" for name in names}
            models = {"original": state["original"]}
            models.update({label[name]: r["model"] for name, r in reqs.items()})
            baseline_runs = {}
            for name in self.baselines:  # from PGU's previous model, as the audit does
                models[name], baseline_runs[name] = self.baseline(
                    name, seed, current[None], step_ids, forgotten, None
                )
            retrain_s, gold_reused = math.nan, False
            if with_gold:
                models["retrained"], retrain_s, gold_reused = self.gold(seed, forgotten)
            rows = self.evaluate(models, self.eval_sets(forgotten), seed)
            step_set = self.train.with_ids(step_ids)
            for name, r in reqs.items():
                # accuracy of the step's model on this step's own request
                rows[label[name]]["request_acc"] = accuracy_and_loss(
                    r["model"], step_set, device=self.device
                )[0]
            record = self._record(
                "b", seed, k, step_ids, forgotten, rows, req, retrain_s, gold_reused, state
            )
            record["variants"] = {}
            for name in names[1:]:
                rows[label[name]]["time_s"] = reqs[name]["request_s"]
                record["variants"][name] = {
                    key: reqs[name][key]
                    for key in ("request_s", "bases_s", "unlearn_s", "stop_reason", "epochs_run")
                }
            for name, run in baseline_runs.items():
                rows[name]["time_s"] = run["time_s"]
            record["baselines"] = baseline_runs
            records.append(record)
            self.budget.end(len(names) + len(baseline_runs))
            on_step(record)
            current = {name: r["model"] for name, r in reqs.items()}
            r_prev, chain = req["r_retain"], f"{chain}>{k}"
        return records

    def _record(
        self,
        scenario: str,
        seed: int,
        step: int,
        request_ids: np.ndarray,
        forgotten: np.ndarray,
        rows: dict,
        req: dict,
        retrain_s: float,
        gold_reused: bool,
        state: dict,
    ) -> dict:
        # Without a retrain in this step, compare with the original's training (same recipe,
        # 1-2% more samples): the cost of retraining from scratch.
        ref_s = retrain_s if not math.isnan(retrain_s) else state["train_s"]
        rows["original"]["time_s"] = state["train_s"]
        if "retrained" in rows:
            rows["retrained"]["time_s"] = retrain_s
        rows["pgu"]["time_s"] = req["request_s"]
        return {
            "scenario": scenario,
            "seed": seed,
            "step": step,
            "n_request": len(request_ids),
            "n_forgotten": len(forgotten),
            "models": rows,
            "timing": {
                "train_original_s": state["train_s"],
                "full_stats_s": state["full_stats_s"],
                "retrain_s": retrain_s,
                "retrain_reused": gold_reused,
                "forget_stats_s": req["forget_stats_s"],
                "bases_s": req["bases_s"],
                "unlearn_s": req["unlearn_s"],
                "request_s": req["request_s"],
                "request_reused": req["reused"],
                "request_over_retrain": req["request_s"] / ref_s,
                "request_over_paper_retrain": req["request_s"]
                / (ref_s * PAPER_EPOCHS / self.args.epochs),
            },
            # True: the original's training or this step's retraining was loaded from
            # --state-dir, so its time (and the ratios against it) are an earlier run's
            "times_from_state_dir": any(
                t is state["train_s"] or t is retrain_s for t in self.loaded_times
            ),
            "unlearn": {
                k: req[k] for k in ("stop_reason", "epochs_run", "kept_epoch", "lr_scale", "tries")
            },
            "layers": req["layers"],
        }


def warm_up(bench: Bench, train: SampleSet, device: torch.device) -> None:
    """One pass through every phase on 512 samples, so no timing pays for first calls."""
    small = train.take(torch.arange(min(len(train), 512)))
    recipe = TrainRecipe.from_params(dict(bench.recipe_params, epochs=1))
    model, _ = fit_from_scratch(bench.spec, small.to(device), recipe, device=device)
    r_small = collect_representations(model, small.batches(64), device=device)
    bases, _ = compute_bases(r_small, bench.gamma, device=device)
    # the unlearning loop's shapes (update batches, stop-check batches) in both modes
    forget, val = small.take(torch.arange(100)), small.take(torch.arange(100, len(small)))
    quick = replace(
        bench.config, epochs=1, max_backtracks=0, sample_tolerance=0.0, class_target_acc=0.0
    )  # one epoch of updates, whatever the half-trained model's start
    unlearn(model, bases, forget, val, quick, device=device)
    unlearn(model, bases, forget, val, quick, forget_classes=[0], device=device)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="number of seeds")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run are first-seed .. first-seed + seeds - 1 (to split seeds across runs)",
    )
    p.add_argument("--scenarios", default="a,b,c", help="comma-separated subset of a, b, c")
    p.add_argument(
        "--epochs",
        type=int,
        default=60,
        help="training epochs of the original and every retraining (paper: 200)",
    )
    p.add_argument(
        "--forget-per-class", type=int, default=100, help="(a), (b): images per class per request"
    )
    p.add_argument(
        "--forget-draw",
        choices=("first", "random"),
        default="first",
        help="(a): the first images of each class in file order (the issue's scenario), or a "
        "random draw per class, a different one for each seed",
    )
    p.add_argument("--increments", type=int, default=4, help="(b): requests in sequence")
    p.add_argument(
        "--incremental-gold",
        choices=("all", "last"),
        default="all",
        help="(b): retrain the gold standard after every request, or the last only",
    )
    p.add_argument("--forget-class", type=int, default=3, help="(c): the class removed")
    p.add_argument(
        "--train-per-class",
        type=int,
        default=0,
        help="train on the first N train images of each class (0: all 5,000)",
    )
    p.add_argument(
        "--eval-per-class",
        type=int,
        default=0,
        help="keep the first N val and test images of each class (0: all 500)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=0,
        help="resize images to SxS on decoding (CPU smoke runs only; 0: 32x32)",
    )
    p.add_argument(
        "--train",
        default="{}",
        help="JSON overrides of the training recipe (e.g. no augmentation for a CPU proxy)",
    )
    p.add_argument(
        "--model",
        default="",
        help="registry name instead of conf's model (e.g. digits_cnn for a quicker CPU proxy)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: no MKL/OpenMP thrashing on a shared machine)",
    )
    p.add_argument(
        "--workers", type=int, default=min(16, os.cpu_count() or 1), help="JPEG-decoding threads"
    )
    p.add_argument("--root", default="", help="raw data folder (default: conf's data.root)")
    p.add_argument(
        "--archive",
        default="",
        help="cifar10-jpg.tar.gz to extract under the root if the tree is missing",
    )
    p.add_argument(
        "--attack-repeats",
        type=int,
        default=3,
        help="attack fits averaged per model (different member subsamples)",
    )
    p.add_argument(
        "--unlearn",
        default="{}",
        help="JSON overrides of UnlearnConfig (default: none, the defaults)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="seconds: skip work predicted to end later, then report (0: no limit)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="also run each request with these UnlearnConfig overrides (and/or "
        '"eigh_dtype", "cuda_graph"), reported as pgu:NAME; repeatable. E.g. '
        'f32=\'{"eigh_dtype": "float32"}\'',
    )
    p.add_argument(
        "--variant-scenarios",
        default="a,b,c",
        help="the scenarios in which --variant requests run (default: all)",
    )
    p.add_argument(
        "--baselines",
        default=None,
        help="comma list of the evaluate pipeline's baselines to run on every request, or "
        f"'none' (default: evaluate.baselines of the configuration; valid: "
        f"{', '.join(sorted(BASELINES))})",
    )
    p.add_argument(
        "--state-dir",
        default="",
        help="folder that keeps decoded images, trained models and R_full between runs: a "
        "second run loads them and repeats only requests and evaluation (times the requests "
        "on an idle device)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="RESULTS_JSON",
        help="run nothing: one report from the results.json of several runs (e.g. one seed "
        "each), written to --out",
    )
    p.add_argument("--out", default="", help="folder for results.md, results.json and log.txt")
    p.add_argument("--verbose", action="store_true", help="log the core's INFO messages too")
    args = p.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or not scenarios:
        p.error(f"unknown scenarios {unknown}; choose from a, b, c")
    args.scenarios = [s for s in SCENARIOS if s in scenarios]
    args.variant_scenarios = [s.strip() for s in args.variant_scenarios.split(",") if s.strip()]
    if set(args.variant_scenarios) - set(SCENARIOS):
        p.error(f"--variant-scenarios {args.variant_scenarios}: choose from a, b, c")
    variants = []
    for text in args.variant:
        name, sep, body = text.partition("=")
        try:
            overrides = json.loads(body) if sep else None
        except json.JSONDecodeError as err:
            p.error(f"--variant {text!r}: not JSON after '=': {err}")
        if not name.isidentifier() or not isinstance(overrides, dict):
            p.error(f"--variant {text!r}: expected NAME={{...}} (a JSON object)")
        variants.append((name, overrides))
    args.variant = variants
    if args.baselines is not None:
        names = [b.strip() for b in args.baselines.split(",") if b.strip()]
        names = [] if names == ["none"] else names
        unknown = sorted(set(names) - set(BASELINES))
        if unknown:
            p.error(f"--baselines: unknown {unknown}; valid: {sorted(BASELINES)} or 'none'")
        args.baselines = list(dict.fromkeys(names))
    return args


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def main(argv: Sequence[str] | None = None) -> None:
    start = time.perf_counter()
    args = parse_args(argv)
    if args.merge:
        print(merge(args.merge, Path(args.out) if args.out else None))
        return
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.setLevel(logging.INFO)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),  # CPU bytes follow the CPU's model and kernels (README, "Determinism")
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_at_start": os.getloadavg()[0],
    }
    logger.info("environment: %s", env)

    conf = load_conf()
    state = StateDir(args.state_dir)
    sets, info = build_sets(conf, args, state)
    bench = Bench(args, conf, sets, Budget(args.time_budget, start), state)
    args.baselines = bench.baselines  # resolved from the configuration: results.json says which
    if device.type == "cuda":  # kernels, cuDNN autotuning and allocator growth: not timed
        warm_up(bench, sets["train"], device)
    runs: list[dict] = []
    skipped: list[str] = []

    def save(partial: bool) -> None:
        if out is not None:
            payload = {
                "partial": partial,
                "args": vars(args),
                "env": env,
                "data": info,
                "model": bench.spec["name"],
                "gamma": bench.gamma,
                "config": repr(bench.config),
                "wall_s": bench.budget.elapsed(),
                "runs": runs,
                "skipped": skipped,
            }
            (out / "results.json").write_text(json.dumps(payload, indent=1, default=float))

    def add(record: dict) -> None:
        runs.append(record)
        pgu = record["models"]["pgu"]
        logger.info(
            "(%s) seed %d step %d done at %.0fs: pgu forget %.4f test %.4f",
            record["scenario"],
            record["seed"],
            record["step"],
            bench.budget.elapsed(),
            pgu["forget_acc"],
            pgu["test_acc"],
        )
        save(partial=True)

    # seed by seed: a seed's original and statistics serve all of its scenarios, so a run cut
    # short by the time budget has whole seeds rather than one scenario's seeds
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for scenario in args.scenarios:
            runs_per_request = (  # for the budget, a baseline costs about what a request does
                1 + len(bench.variants_for(scenario)) + len(bench.baselines)
            )
            if scenario == "b":
                trainings = bench.trainings_b(seed)
                requests = bench.requests_b(seed) * runs_per_request  # baselines: every step
            else:
                trainings, requests = int(not bench.has_seed(seed)) + 1, runs_per_request
            if not bench.budget.allows(trainings, requests):
                msg = f"({scenario}) seed {seed}"
                logger.warning(
                    "%s skipped: predicted to end past the time budget of %.0fs "
                    "(elapsed %.0fs, estimate %.0fs)",
                    msg,
                    args.time_budget,
                    bench.budget.elapsed(),
                    bench.budget.estimate(trainings, requests),
                )
                skipped.append(msg)
                continue
            if scenario == "b":
                bench.incremental(seed, add)  # measures each of its steps itself
            else:
                bench.budget.begin()
                add(bench.single(scenario, seed))
                bench.budget.end(runs_per_request)

    text, summaries = report(runs, args, info)
    header = describe(
        args,
        info,
        env,
        bench.spec["name"],
        bench.gamma,
        repr(bench.config),
        bench.budget.elapsed(),
        skipped,
    )
    text = header + "\n\n" + text
    print(text)
    if out is not None:
        (out / "results.md").write_text(text + "\n")
    save(partial=False)
    print(
        json.dumps(
            {
                "bench": "cifar",
                "args": vars(args),
                "env": env,
                "data": info,
                "config": bench.config.__dict__,
                "gamma": bench.gamma,
                "recipe": bench.recipe_params,
                "summary": summaries,
                "runs": runs,
                "skipped": skipped,
                "reference": REFERENCE,
                "wall_s": bench.budget.elapsed(),
            },
            default=float,
        )
    )


if __name__ == "__main__":
    main()
