"""Evaluating an unlearned model against the retrained gold standard (METHOD §8).

For each model: accuracy and loss on the retain, forget, val and test sets (for class removal
also on the remaining classes of test), the entropy/loss membership-inference attack on the
forget set, and the mean output entropy on the forget set. Against the gold standard: |Δacc|
per set, the tug-of-war score ToW = Π(1 − |Δacc|) over retain/forget/test, and the mean
Jensen–Shannon divergence of the two models' outputs on the forget set and on test.

Evaluation may read the retain samples (it is an audit, not part of unlearning).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pgu.core.data import SampleSet
from pgu.core.metrics import entropy, entropy_attack, js_divergence, softmax_outputs, tug_of_war

SETS = ("retain", "forget", "val", "test")
GOLD_SETS = ("retain", "forget", "test")  # the sets ToW and |Δacc| are taken over


@dataclass(frozen=True)
class EvalSets:
    """The four sets of one request, the classes it removes (empty for sample removal) and the
    classes earlier requests removed (left out of "the other classes": no retrained model
    predicts them)."""

    retain: SampleSet
    forget: SampleSet
    val: SampleSet
    test: SampleSet
    forget_classes: tuple[int, ...] = ()
    removed_before: tuple[int, ...] = ()

    def get(self, name: str) -> SampleSet:
        return getattr(self, name)


@dataclass
class ModelEval:
    """Metrics of one model plus its softmax outputs (kept in memory for JS, never saved)."""

    metrics: dict[str, float]
    probs: dict[str, Tensor]


def _acc(probs: Tensor, y: Tensor) -> float:
    return (probs.argmax(1) == y).double().mean().item() if len(y) else math.nan


def _loss(probs: Tensor, y: Tensor) -> float:
    if not len(y):
        return math.nan
    return -torch.log(probs[torch.arange(len(y)), y].clamp_min(1e-12)).mean().item()


def evaluate_model(
    model: nn.Module, sets: EvalSets, device: str | torch.device = "cpu", seed: int = 0
) -> ModelEval:
    """Accuracy, loss, attack and entropy metrics of ``model`` on the request's sets."""
    probs = {name: softmax_outputs(model, sets.get(name), device=device) for name in SETS}
    labels = {name: sets.get(name).y.cpu() for name in SETS}  # probs are on the CPU
    m: dict[str, float] = {}
    for name in SETS:
        y = labels[name]
        m[f"{name}_acc"], m[f"{name}_loss"] = _acc(probs[name], y), _loss(probs[name], y)
    if sets.forget_classes or sets.removed_before:
        # test accuracy on the classes no request (this one or an earlier one) removed: what a
        # retrained model can still get right, and so what the original is compared with
        y_test = labels["test"]
        gone = torch.isin(y_test, torch.tensor(sets.forget_classes, dtype=torch.long))
        others = ~gone & ~torch.isin(y_test, torch.tensor(sets.removed_before, dtype=torch.long))
        if sets.forget_classes:
            m["test_forget_class_acc"] = _acc(probs["test"][gone], y_test[gone])
        m["test_other_acc"] = _acc(probs["test"][others], y_test[others])
    attack = entropy_attack(
        probs["retain"],
        labels["retain"],
        probs["test"],
        labels["test"],
        probs["forget"],
        labels["forget"],
        seed=seed,
    )
    m["mia_member_rate"], m["mia_auc"] = attack["member_rate"], attack["auc"]
    m["forget_entropy"] = entropy(probs["forget"]).mean().item()
    return ModelEval(m, probs)


def distance_to_gold(model: ModelEval, gold: ModelEval) -> dict[str, float]:
    """|Δacc| per set, ToW over retain/forget/test, and mean JS on the forget set and test."""
    d = {f"d_acc_{s}": abs(model.metrics[f"{s}_acc"] - gold.metrics[f"{s}_acc"]) for s in GOLD_SETS}
    d["tow"] = tug_of_war(
        {s: model.metrics[f"{s}_acc"] for s in GOLD_SETS},
        {s: gold.metrics[f"{s}_acc"] for s in GOLD_SETS},
    )
    for s in ("forget", "test"):
        d[f"js_{s}"] = js_divergence(model.probs[s], gold.probs[s]).mean().item()
    d["d_mia_member_rate"] = abs(model.metrics["mia_member_rate"] - gold.metrics["mia_member_rate"])
    return d


def verdicts(distance: Mapping[str, float], tolerances: Mapping[str, float]) -> dict[str, str]:
    """'within' / 'outside' per metric with a stated tolerance (ToW: at least 1 − tol)."""
    out = {}
    for key, tol in tolerances.items():
        if key not in distance:
            continue
        value = distance[key]
        ok = value >= 1 - tol if key == "tow" else value <= tol
        out[key] = "within" if ok else "outside"
    return out


def gold_key(forgotten_ids: np.ndarray, spec: dict, recipe: dict, lineage: str = "") -> str:
    """Cache key of a retrained model: the forgotten ids, the architecture, the recipe and
    ``lineage`` (the original model's sha256: other data, normalisation or training code give
    another original, so a model retrained before them is not reused)."""
    h = hashlib.sha256()
    h.update(np.sort(np.asarray(forgotten_ids, dtype="<i8")).tobytes())
    h.update(json.dumps({"spec": spec, "recipe": recipe}, sort_keys=True).encode())
    h.update(lineage.encode())
    return h.hexdigest()


def ratio_table(rows: Sequence[Mapping[str, float]], keys: Sequence[str]) -> list[list[str]]:
    """Format metric rows as strings (percentages for accuracies) for markdown tables."""
    table = []
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k, math.nan)
            if isinstance(v, str):
                cells.append(v)
            elif k.endswith("_acc") or k.startswith("d_acc") or k.endswith("rate"):
                cells.append(f"{100 * v:.1f}")
            else:
                cells.append(f"{v:.3f}")
        table.append(cells)
    return table
