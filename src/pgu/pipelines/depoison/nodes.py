"""Nodes of the ``depoison`` pipeline: thin wrappers over ``pgu.core.poisoning``,
``pgu.core.training`` and ``pgu.core.depoisoning``, plus the report."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from pgu.core.cgs import retain_statistics
from pgu.core.checkpoint import CheckpointError, TensorBundle, model_hash, model_spec
from pgu.core.data import SampleSet, split_set
from pgu.core.depoisoning import (
    DepoisonConfig,
    accuracies,
    depoison,
    depoison_bases,
    gap_recovered,
)
from pgu.core.poisoning import flip_labels, poisoned_copy, poisoned_ids, poisoned_samples
from pgu.core.representation import collect_representations, collect_representations_sharded
from pgu.core.training import TrainRecipe, fit_from_scratch, resolve_device

logger = logging.getLogger(__name__)

MODELS = ("poisoned", "depoisoned", "clean")
# Report sets: name -> what it measures (the poisoned samples are scored twice).
SETS = {
    "test": "test split",
    "clean_train": "clean training samples",
    "poisoned_true": "poisoned samples, true labels",
    "poisoned_wrong": "poisoned samples, wrong labels",
}


def _report_sets(samples: TensorBundle, index: pd.DataFrame, scenario: pd.DataFrame) -> dict:
    """The sets every model is scored on (keys of ``SETS``), plus ``val``."""
    data = SampleSet.from_tensors(samples.tensors)
    train = split_set(data, index, "train")
    wrong, true = poisoned_samples(train, scenario)
    return {
        "test": split_set(data, index, "test"),
        "clean_train": train.without_ids(poisoned_ids(scenario)),
        "poisoned_true": true,
        "poisoned_wrong": wrong,
        "val": split_set(data, index, "val"),
    }


@contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (None: leave torch's setting), restored afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def draw_scenario(samples: TensorBundle, index: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Pick the class pairs and the training samples whose labels are flipped.

    Args:
        samples: the sample bundle.
        index: the sample index table.
        params: ``depoison`` parameters; ``scenario`` holds n_pairs, per_class and seed.

    Returns:
        One row per poisoned sample: sample_id, true_label, wrong_label, pair.
    """
    train = split_set(SampleSet.from_tensors(samples.tensors), index, "train")
    return flip_labels(train, **params["scenario"])


def _fit(
    train: SampleSet, model_params: dict, train_params: dict, threads: int | None, what: str
) -> nn.Module:
    spec = model_spec(
        model_params["name"],
        train.in_shape,
        train.num_classes,
        **(model_params.get("kwargs") or {}),
    )
    recipe = TrainRecipe.from_params(train_params["recipe"])
    logger.info("training the %s model on %d samples, %d epochs", what, len(train), recipe.epochs)
    start = time.perf_counter()
    with _cpu_threads(threads):
        device = resolve_device(train_params["device"])
        model, _ = fit_from_scratch(spec, train, recipe, device=device)
    logger.info("%s model trained in %.2f s", what, time.perf_counter() - start)
    return model


def train_poisoned_model(
    samples: TensorBundle,
    index: pd.DataFrame,
    scenario: pd.DataFrame,
    model_params: dict,
    train_params: dict,
    threads: int | None,
) -> nn.Module:
    """The project's training recipe on the train split with the scenario's labels flipped.

    ``threads``: torch CPU threads while training (``depoison.cpu_threads``).
    """
    train = split_set(SampleSet.from_tensors(samples.tensors), index, "train")
    return _fit(poisoned_copy(train, scenario), model_params, train_params, threads, "poisoned")


def train_clean_model(
    samples: TensorBundle,
    index: pd.DataFrame,
    scenario: pd.DataFrame,
    model_params: dict,
    train_params: dict,
    threads: int | None,
) -> nn.Module:
    """The reference: the same recipe on the train split without the poisoned samples."""
    train = split_set(SampleSet.from_tensors(samples.tensors), index, "train")
    clean = train.without_ids(poisoned_ids(scenario))
    return _fit(clean, model_params, train_params, threads, "clean")


def collect_training_statistics(
    model: nn.Module, samples: TensorBundle, index: pd.DataFrame, params: dict
) -> TensorBundle:
    """R_full of the poisoned model over its whole train split, kept from training time.

    What the ``representation`` pipeline stores for the original model: the statistics a
    deployed model has before anyone knows which of its labels were wrong. De-poisoning later
    subtracts the poisoned samples' share (METHOD section 2) instead of reading the clean ones.
    """
    train = split_set(SampleSet.from_tensors(samples.tensors), index, "train")
    with _cpu_threads(params.get("cpu_threads")):
        stats = collect_representations_sharded(
            model, train, chunk_size=params["batch_size"], device=resolve_device(params["device"])
        )
    return TensorBundle(stats, {"stats_model_sha256": model_hash(model), "n_samples": len(train)})


def depoison_poisoned_model(
    model: nn.Module,
    stats: TensorBundle,
    samples: TensorBundle,
    index: pd.DataFrame,
    scenario: pd.DataFrame,
    params: dict,
) -> tuple[nn.Module, dict]:
    """Bases from the clean samples' statistics, then the de-poisoning loop.

    The clean samples' representation matrices are R_full - R_poisoned: the training-time
    statistics ``stats`` minus those of the poisoned samples, collected now with the same
    (poisoned) model; they give the bases and stay in memory. The loop reads only the poisoned
    samples (wrong labels) and val; the test, clean-train and true-label accuracies of every
    epoch are observed for the report only.

    Raises:
        CheckpointError: ``stats`` were collected with another model than ``model``.

    Returns:
        (de-poisoned model with S folded in, run record: stop reason, epochs, layers, history).
    """
    sets = _report_sets(samples, index, scenario)
    device = resolve_device(params["device"])
    config = DepoisonConfig.from_params(params.get("config") or {})
    tr_layer = config.trust_region_name(model)
    report = {k: sets[k] for k in SETS}
    if stats.meta.get("stats_model_sha256") != model_hash(model):
        raise CheckpointError(
            "the training-time statistics were collected with another model than the poisoned "
            "one, so R_full - R_poisoned would be inexact: rerun `kedro run --pipelines depoison "
            "--tags poison`"
        )
    start = time.perf_counter()
    with _cpu_threads(params.get("cpu_threads")):
        batches = sets["poisoned_wrong"].batches(params["batch_size"])  # labels play no part
        r_poisoned = collect_representations(model, batches, device=device, keep_on_device=True)
        # in the model's layer order (the file holds them sorted by name), for the report
        r_clean = retain_statistics(
            {name: stats.tensors[name] for name in r_poisoned}, r_poisoned, device=device
        )
        del r_poisoned
        cgs = params["cgs"]
        bases, summary = depoison_bases(r_clean, cgs["gamma"], cgs.get("overrides"), tr_layer)
        del r_clean
        result = depoison(
            model,
            bases,
            sets["poisoned_wrong"],
            sets["val"],
            config,
            device=device,
            observe=lambda m: accuracies(m, report, device),
        )
    logger.info("de-poisoned in %.2f s (with per-epoch report)", time.perf_counter() - start)
    run = {
        "stop_reason": result.stop_reason,
        "epochs_run": result.epochs_run,
        "kept_epoch": result.kept_epoch,
        "lr_scale": result.lr_scale,
        "trust_region_layer": result.trust_region_layer,
        "layers": [{k: v for k, v in s.items() if k != "sigma"} for s in summary],
        "history": result.history,
    }
    return result.model.cpu().eval(), run


def _finite(value: object) -> object:
    """NaN -> None, so that the JSON outputs are strict JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


def evaluate_models(
    poisoned: nn.Module,
    depoisoned: nn.Module,
    clean: nn.Module,
    samples: TensorBundle,
    index: pd.DataFrame,
    scenario: pd.DataFrame,
    run: dict,
) -> tuple[dict, list[dict]]:
    """Final accuracies of the three models and the per-epoch curves of de-poisoning.

    Returns:
        (metrics, history): metrics holds the scenario, per model the accuracy on every set of
        ``SETS`` and val plus its sha256, the share of the test-accuracy gap recovered, and the
        run's summary; history holds the accepted epochs of the loop (epoch 0: poisoned).
    """
    sets = _report_sets(samples, index, scenario)
    models = dict(zip(MODELS, (poisoned, depoisoned, clean), strict=True))
    finals = {
        name: {**accuracies(m, sets), "model_sha256": model_hash(m)} for name, m in models.items()
    }
    pairs = scenario.loc[
        scenario["true_label"] < scenario["wrong_label"], ["true_label", "wrong_label"]
    ]
    metrics = {
        "scenario": {
            "n_poisoned": len(scenario),
            "pairs": sorted({tuple(p) for p in pairs.to_numpy().tolist()}),
        },
        "models": finals,
        "test_gap_recovered": gap_recovered(*(finals[name]["test_acc"] for name in MODELS)),
        "depoison": {
            **{k: v for k, v in run.items() if k != "history"},
            "backtracks": sum(not rec["accepted"] for rec in run["history"]),
        },
    }
    history = [
        {k: _finite(v) for k, v in rec.items() if k != "accepted"}
        for rec in run["history"]
        if rec["accepted"]
    ]
    logger.info(
        "test accuracy: poisoned %.4f, de-poisoned %.4f, clean %.4f (%.0f%% of the gap)",
        *(finals[name]["test_acc"] for name in MODELS),
        100 * metrics["test_gap_recovered"],
    )
    return {k: _finite(v) for k, v in metrics.items()}, history


def plot_depoisoning(history: list[dict], metrics: dict) -> Figure:
    """Accuracies per de-poisoning epoch, with the clean model's values dashed."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    clean = metrics["models"]["clean"]
    panels = (("test", "clean_train", "val"), ("poisoned_true", "poisoned_wrong"))
    for ax, keys in zip(axes, panels, strict=True):
        for key in keys:
            label = SETS.get(key, "validation split")
            line = ax.plot(
                epochs, [100 * h[f"{key}_acc"] for h in history], marker=".", label=label
            )
            if f"{key}_acc" in clean:
                ax.axhline(100 * clean[f"{key}_acc"], ls="--", lw=1, color=line[0].get_color())
        ax.axvline(metrics["depoison"]["kept_epoch"], color="grey", lw=1, ls=":", label="kept")
        ax.set(xlabel="de-poisoning epoch (0: poisoned model)", ylabel="accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("held-out and clean data (dashed: clean model)", fontsize=9)
    axes[1].set_title("poisoned samples (dashed: clean model)", fontsize=9)
    fig.tight_layout()
    return fig


def write_report(metrics: dict) -> str:
    """A markdown report of the scenario, the three models and the de-poisoning run."""
    run, finals = metrics["depoison"], metrics["models"]
    head = "| model | " + " | ".join(SETS.values()) + " |"
    lines = [
        "# De-poisoning",
        "",
        f"- scenario: **{metrics['scenario']['n_poisoned']}** training labels flipped within "
        f"the class pairs {metrics['scenario']['pairs']}",
        f"- trust-region layer: `{run['trust_region_layer']}`; stopped (`{run['stop_reason']}`) "
        f"after {run['epochs_run']} epoch{'' if run['epochs_run'] == 1 else 's'}, keeping epoch "
        f"**{run['kept_epoch']}** "
        f"({run['backtracks']} halved-step retries)",
        f"- test-accuracy gap between poisoned and clean model recovered: "
        f"**{100 * (metrics['test_gap_recovered'] or 0.0):.1f}%**",
        "",
        "## Accuracy (%)",
        "",
        head,
        "|" + "---|" * (len(SETS) + 1),
    ]
    for name in MODELS:
        cells = [f"{100 * finals[name][f'{key}_acc']:.1f}" for key in SETS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Models", ""]
    lines += [f"- {name}: `{finals[name]['model_sha256']}`" for name in MODELS]
    lines += ["", "## Core gradient space of the clean samples", "", "| layer | k | d | γ |"]
    lines.append("|---|---|---|---|")
    lines += [f"| {s['layer']} | {s['k']} | {s['d']} | {s['gamma']} |" for s in run["layers"]]
    lines += ["", "![accuracy per epoch](curves.png)", ""]
    return "\n".join(lines)
