"""The per-request audit: retrain the gold standard, run the baselines, compare, report.

For request k of the queue the models compared are: the original model; the model retrained
from scratch without everything forgotten up to k (the gold standard, cached by the forgotten
ids, architecture and recipe); PGU's model after k; and each baseline run on the same request
from the same starting state as PGU. Results go to ``<reports>/<request_id>/``:
``evaluation.json`` (deterministic numbers, for DVC), ``report.md`` (with times) and plots.

With ``n_shadow`` > 0 the audit also trains that many pairs of shadow models (with and without
the forget set, from seeds other than the original's; cached beside the gold standard) and
runs the shadow-model attack of ``pgu.core.shadow`` on every model.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgu.core import plots
from pgu.core.baselines import BASELINES, NEEDS_RETAIN, BaselineContext, run_baseline
from pgu.core.checkpoint import (
    atomic_write_bytes,
    json_bytes,
    model_from_bytes,
    model_hash,
    model_to_bytes,
    sha256_bytes,
)
from pgu.core.data import SampleSet, split_set
from pgu.core.deletion import RequestPlan, Workspace, held_out
from pgu.core.evaluation import (
    EvalSets,
    distance_to_gold,
    evaluate_model,
    gold_key,
    verdicts,
)
from pgu.core.metrics import entropy, softmax_outputs
from pgu.core.requests import ORIGINAL, RequestError
from pgu.core.shadow import fit_shadow_attack
from pgu.core.state import tombstone
from pgu.core.training import TrainRecipe, fit_from_scratch
from pgu.core.unlearning import UnlearnConfig

logger = logging.getLogger(__name__)

# Test accuracy the gold standard may trail the original by before the report calls it weak.
WEAK_GOLD_GAP = 0.05

GOLD = "retrained"
# Default of evaluate.shadow_min_power: below this held-out AUC the shadow attack is powerless.
SHADOW_MIN_POWER = 0.55
COLUMNS = [
    ("retain_acc", "retain acc %"),
    ("forget_acc", "forget acc %"),
    ("test_acc", "test acc %"),
    ("mia_member_rate", "MIA member %"),
    ("forget_entropy", "forget entropy"),
    ("d_acc_forget", "Δ forget %"),
    ("d_acc_test", "Δ test %"),
    ("tow", "ToW"),
    ("js_forget", "JS forget"),
    ("js_test", "JS test"),
    ("seconds", "time (s)"),
]
# Class removal: test accuracy on the removed classes and on the others (after "test acc %").
CLASS_COLUMNS = [
    ("test_forget_class_acc", "test acc removed classes %"),
    ("test_other_acc", "test acc other classes %"),
]
UNCHANGED = "(unchanged)"  # after the name of a model that returned its start model unchanged


def _cached_model(folder: Path, key: str, own: bool = True) -> bytes | None:
    """The model bytes cached in ``folder`` if its recorded key is ``key`` and they hash to the
    recorded sha256, else None (a damaged cache is logged and trained again). A record from
    before hashes were kept is completed, in the request's ``own`` cache only (another
    request's cache is another DVC stage's output)."""
    model_path, info_path = folder / "model.safetensors", folder / "gold.json"
    if not (model_path.is_file() and info_path.is_file()):
        return None
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError):
        logger.warning("%s is unreadable: the model beside it is trained again", info_path)
        return None
    if not isinstance(info, dict) or info.get("key") != key:
        return None
    data = model_path.read_bytes()
    digest = sha256_bytes(data)
    if "sha256" not in info:  # cached before contents were hashed: record its hash now
        if own:
            _write_gold_info(info_path, key, digest)
    elif info["sha256"] != digest:
        logger.warning(
            "%s is not the model %s recorded (damaged or replaced): it is trained again",
            model_path,
            info_path,
        )
        return None
    return data


def _write_gold_info(info_path: Path, key: str, digest: str) -> None:
    """The cache's record: the key of what the model was trained from, and its bytes' sha256."""
    atomic_write_bytes(info_path, json.dumps({"key": key, "sha256": digest}).encode())


def gold_standard(
    cache_dir: Path,
    timing_path: Path,
    forgotten: np.ndarray,
    samples: SampleSet,
    index: pd.DataFrame,
    spec: dict,
    recipe: TrainRecipe,
    device: torch.device,
    label: str = "gold standard",
    donors: Sequence[Path] = (),
    lineage: str = "",
) -> tuple[nn.Module, float]:
    """The model retrained without ``forgotten``; trained once per ids/spec/recipe, then cached.

    The cache folder holds only deterministic bytes (the model and its cache key), so DVC can
    check reproductions; the retraining time goes to ``timing_path`` beside the report.
    ``label`` names the model in the log (shadow models are trained the same way). ``donors``
    are other cache folders: one whose key matches is copied instead of training again (the
    bytes would be the same: same ids, architecture, recipe and seed). ``lineage`` (the
    original model's sha256) joins the key, so data or code that changed since is retrained.

    Returns:
        (model, seconds the retraining took when it was trained; NaN if that was not recorded).
    """
    key = gold_key(forgotten, spec, recipe.__dict__, lineage)
    model_path, info_path = cache_dir / "model.safetensors", cache_dir / "gold.json"
    data = _cached_model(cache_dir, key)
    if data is not None:
        logger.info("%s: cached %s", label, model_path)
        seconds = math.nan
        if timing_path.is_file():
            timing = json.loads(timing_path.read_text())
            seconds = timing["seconds"] if timing.get("key") == key else math.nan
        return model_from_bytes(data, str(model_path)), seconds
    for donor in donors:
        data = _cached_model(donor, key, own=False)
        if data is not None:
            logger.info("%s: the same model as %s, copied", label, donor)
            info_path.unlink(missing_ok=True)  # no key beside a half-replaced model
            atomic_write_bytes(model_path, data)
            _write_gold_info(info_path, key, sha256_bytes(data))
            return model_from_bytes(data, str(model_path)), math.nan
    if tombstone(model_path).exists():  # a model trained on removed samples, purged
        raise RequestError(
            f"{label}: {model_path} was deleted by `pgu-admin purge` (it was trained on samples "
            "requests removed), so it is not trained again; audit requests before purging. To "
            f"train it again anyway, delete {tombstone(model_path)}"
        )
    train = split_set(samples, index, "train").without_ids(forgotten)
    logger.info("%s: training %s on %d samples", label, spec["name"], len(train))
    start = time.perf_counter()
    model, _ = fit_from_scratch(spec, train, recipe, device=device)
    seconds = time.perf_counter() - start
    info_path.unlink(missing_ok=True)  # a run killed between the two writes leaves no old key
    data = model_to_bytes(model)
    atomic_write_bytes(model_path, data)
    _write_gold_info(info_path, key, sha256_bytes(data))
    atomic_write_bytes(timing_path, json.dumps({"key": key, "seconds": seconds}).encode())
    return model, seconds


def trained_with(original: nn.Module, configured: TrainRecipe) -> TrainRecipe:
    """The recipe the gold standard and shadow models must be trained with: the original's own,
    as its file records it, whatever ``parameters_train.yml`` says today (logged where they
    differ); ``configured`` for a model file from before recipes were recorded."""
    recorded = getattr(original, "pgu_recipe", None)
    if not isinstance(recorded, dict):
        return configured
    try:
        recipe = TrainRecipe(**recorded)
    except (TypeError, ValueError) as exc:  # a recipe of another version of the code
        logger.warning("the original's recorded recipe is unusable (%s): using the configured", exc)
        return configured
    used = recipe.__dict__
    changed = {k: (v, used[k]) for k, v in configured.__dict__.items() if used[k] != v}
    if changed:
        logger.warning(
            "the original model was trained with another recipe than parameters_train.yml's "
            "(%s): the gold standard and shadow models are trained with the original's",
            ", ".join(f"{k} {now} now, {was} then" for k, (now, was) in changed.items()),
        )
    return recipe


def check_shadow_params(params: dict) -> int:
    """The number of shadow pairs ``evaluate.n_shadow`` asks for (0: off), checked up front.

    Raises:
        ValueError: not an integer, negative, 1, or ``shadow_min_power`` outside [0.5, 1].
    """
    n = params.get("n_shadow") or 0
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n == 1:
        raise ValueError(
            f"evaluate.n_shadow must be 0 (no shadow-model attack) or an integer >= 2, got {n!r}: "
            "the attack's power is measured on a pair of shadow models it was not fitted on"
        )
    power = params.get("shadow_min_power", SHADOW_MIN_POWER)
    if isinstance(power, bool) or not isinstance(power, int | float) or not 0.5 <= power <= 1:
        raise ValueError(f"evaluate.shadow_min_power must be an AUC in [0.5, 1], got {power!r}")
    return n


def check_baseline_params(params: dict) -> list[str]:
    """The baselines ``evaluate.baselines`` names, checked before the gold standard is trained.

    Raises:
        ValueError: not a list of distinct known names, or an ``ft`` run whose
            ``evaluate.finetune_recipe`` is invalid.
    """
    names = params.get("baselines") or []
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"evaluate.baselines must be a list of names from {sorted(BASELINES)}, got {names!r}"
        )
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(
            f"evaluate.baselines names unknown baselines {unknown}; valid: {sorted(BASELINES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate.baselines lists a baseline twice: {names}")
    if "ft" in names:
        try:
            TrainRecipe.from_params(params.get("finetune_recipe") or {})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"evaluate.finetune_recipe (for the ft baseline): {exc}") from exc
    return list(names)


def shadow_pairs(
    cache_dir: Path,
    timing_dir: Path,
    known: np.ndarray,
    forgotten: np.ndarray,
    samples: SampleSet,
    index: pd.DataFrame,
    spec: dict,
    recipe: TrainRecipe,
    n_pairs: int,
    device: torch.device,
    lineage: str = "",
) -> tuple[list[nn.Module], list[nn.Module], float]:
    """``n_pairs`` pairs of shadow models, each cached like the gold standard.

    Pair s is trained with ``recipe`` under seed ``recipe.seed + 1 + s`` (never the original's):
    one model on the train split minus ``known`` (everything forgotten before this request, so
    it still holds the forget set), one minus ``forgotten`` (also this request's samples).

    Returns:
        (models with the forget set, models without it, seconds their trainings took).
    """
    with_set, without_set, seconds = [], [], 0.0
    # another request's shadows may be the same models (request k's "with" pair is trained
    # without exactly what request k-1's "without" pair was)
    donors = sorted(d for d in cache_dir.parent.parent.glob("*/shadow/*") if d.is_dir())
    donors = [d for d in donors if d.parent != cache_dir]
    for s in range(n_pairs):
        shadow_recipe = replace(recipe, seed=recipe.seed + 1 + s)
        sides = ((known, with_set, "with"), (forgotten, without_set, "without"))
        for excluded, models, tag in sides:
            model, took = gold_standard(
                cache_dir / f"{s}-{tag}",
                timing_dir / f"{s}-{tag}.json",
                excluded,
                samples,
                index,
                spec,
                shadow_recipe,
                device,
                label=f"shadow model {s} ({tag} the forget set)",
                donors=donors,
                lineage=lineage,
            )
            models.append(model)
            seconds += took  # NaN when a cached model's time was not recorded
    return with_set, without_set, seconds


def shadow_rows(
    with_set: list[nn.Module],
    without_set: list[nn.Module],
    evals: dict,
    sets: EvalSets,
    min_power: float,
    device: torch.device,
) -> tuple[dict[str, dict[str, float]], dict]:
    """Run the shadow-model attack on every evaluated model's forget-set outputs.

    Returns:
        (per model: shadow_member_rate, and except for the gold standard shadow_auc against it
        and d_shadow_auc = |shadow_auc - 0.5|; the attack's summary: pairs, held-out AUC and
        whether that reaches ``min_power``).
    """
    attack = fit_shadow_attack(
        [softmax_outputs(m, sets.forget, device=device) for m in with_set],
        [softmax_outputs(m, sets.forget, device=device) for m in without_set],
        sets.forget.y.cpu(),
    )
    gold_probs = evals[GOLD].probs["forget"]
    rows = {}
    for name, ev in evals.items():
        row = {"shadow_member_rate": attack.member_rate(ev.probs["forget"])}
        if name != GOLD:
            auc = attack.auc_against(ev.probs["forget"], gold_probs)
            row.update(shadow_auc=auc, d_shadow_auc=abs(auc - 0.5))
        rows[name] = row
    info = {
        "n_pairs": attack.n_pairs,
        "held_out_auc": attack.held_out_auc,
        "min_power": min_power,
        "informative": attack.held_out_auc >= min_power,
    }
    return rows, info


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold the same weights and buffers (bit for bit)."""
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa
    )


def _markdown_table(
    rows: dict[str, dict],
    seconds: dict[str, float],
    classes: bool = False,
    unchanged: Sequence[str] = (),
) -> str:
    columns = list(COLUMNS)
    at = columns.index(("test_acc", "test acc %")) + 1
    if classes:
        columns[at:at] = CLASS_COLUMNS
    elif any("test_other_acc" in row for row in rows.values()):  # after a class removal
        columns[at:at] = [("test_other_acc", "test acc without removed classes %")]
    head = "| model | " + " | ".join(label for _, label in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, row in rows.items():
        cells = []
        for key, _ in columns:
            v = seconds.get(name) if key == "seconds" else row.get(key)
            if v is None:
                cells.append("–")
            elif key.endswith(("_acc", "_rate")) or key.startswith("d_acc"):
                cells.append(f"{100 * v:.1f}")
            elif key == "seconds":
                cells.append(f"{v:.2f}")
            else:
                cells.append(f"{v:.3f}")
        label = f"{name} {UNCHANGED}" if name in unchanged else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def audit_request(
    plan: RequestPlan,
    forgotten: np.ndarray,
    workspace: Workspace,
    samples: SampleSet,
    index: pd.DataFrame,
    spec: dict,
    recipe: TrainRecipe,
    params: dict,
    config: UnlearnConfig,
    ledger_row: dict,
    gold_cache: Path,
    device: torch.device,
    class_names: Sequence[str] = (),
) -> dict:
    """Compare every model on request ``plan`` with the gold standard; write its report.

    Args:
        plan: the request (its forget ids and starting state).
        forgotten: every id forgotten up to and including this request.
        workspace: states, reports and ledger.
        samples, index: the data.
        spec, recipe: architecture and training recipe of the original (and retrained) model.
        params: ``evaluate`` parameters.
        config: the unlearning configuration PGU used.
        ledger_row: this request's ledger row (hashes, PGU's wall time).
        gold_cache: folder for this request's retrained model.
        device: where to compute.
        class_names: the data's class names by label (as the data pipeline stored them), shown
            beside a class request's labels where they say more than the number.

    Returns:
        The deterministic evaluation summary (also written as evaluation.json).
    """
    request = plan.request
    classes = tuple(request.classes)
    sets = EvalSets(
        retain=split_set(samples, index, "train").without_ids(forgotten),
        forget=samples.with_ids(plan.forget_ids),
        val=split_set(samples, index, "val"),
        test=split_set(samples, index, "test"),
        forget_classes=classes,
        removed_before=plan.removed_classes,
    )
    states = workspace.states
    models: dict[str, nn.Module] = {"original": states.load_model(ORIGINAL)}
    lineage = model_hash(models["original"])  # the cached retrainings must share its data
    recipe = trained_with(models["original"], recipe)
    out = workspace.reports_root / request.id
    gold, retrain_seconds = gold_standard(
        gold_cache,
        out / "retrain_time.json",
        forgotten,
        samples,
        index,
        spec,
        recipe,
        device,
        label=f"{request.id}: gold standard",
        lineage=lineage,
    )
    models[GOLD] = gold
    models["pgu"] = states.load_model(request.id)
    # PGU's cost is the request proper (forget statistics, bases, unlearning and its stop
    # checks), comparable with the baselines' unlearning; the ledger also has the wall time.
    pgu_seconds = ledger_row.get("compute_seconds", ledger_row["wall_seconds"])
    seconds = {GOLD: retrain_seconds, "pgu": float(pgu_seconds)}

    start_model = states.load_model(plan.after)
    ctx_args = dict(
        forget=sets.forget,
        val=held_out(samples, index, plan),  # what PGU's stopping rule read
        config=config,
        forget_classes=list(classes) or None,
        device=device,
        finetune_recipe=TrainRecipe.from_params(params["finetune_recipe"]),
        original=None if plan.after == ORIGINAL else models["original"],  # as execute_request
    )
    stopped: dict[str, str] = {}  # how each baseline's run ended, for the report
    for name in params.get("baselines") or []:
        ctx = BaselineContext(retain=sets.retain if name in NEEDS_RETAIN else None, **ctx_args)
        # the baselines' own loops log as PGU's does: say whose lines follow
        logger.info("%s: baseline %s, from state %s", request.id, name, plan.after)
        t0 = time.perf_counter()
        outcome = run_baseline(name, start_model, ctx)
        seconds[name] = time.perf_counter() - t0
        models[name], stopped[name] = outcome.model, outcome.stopped
        logger.info(
            "%s: baseline %s done in %.1f s (%s)", request.id, name, seconds[name], outcome.stopped
        )
    # models that returned their start model as it was (e.g. stopped before any epoch was kept)
    pgu_same = ledger_row["output_model_sha256"] == ledger_row["input_model_sha256"]
    unchanged = ["pgu"] if pgu_same else []
    unchanged += [n for n in params.get("baselines") or [] if _same_weights(models[n], start_model)]

    evals = {
        name: evaluate_model(m, sets, device, params["attack_seed"]) for name, m in models.items()
    }
    rows: dict[str, dict] = {}
    for name, ev in evals.items():
        rows[name] = dict(ev.metrics)
        if name != GOLD:
            rows[name].update(distance_to_gold(ev, evals[GOLD]))
    rows = {GOLD: rows.pop(GOLD), **rows}  # the reference row first
    tolerances = params.get("tolerances") or {}
    shadow, shadow_seconds = None, math.nan
    n_shadow = check_shadow_params(params)
    if n_shadow:
        known = np.setdiff1d(forgotten, plan.forget_ids)  # forgotten before this request
        with_set, without_set, shadow_seconds = shadow_pairs(
            gold_cache / "shadow",
            out / "shadow_time",
            known,
            forgotten,
            samples,
            index,
            spec,
            recipe,
            n_shadow,
            device,
            lineage=lineage,
        )
        power = float(params.get("shadow_min_power", SHADOW_MIN_POWER))
        found, shadow = shadow_rows(with_set, without_set, evals, sets, power, device)
        for name, extra in found.items():
            rows[name].update(extra)
    summary = {
        "request_id": request.id,
        "kind": request.kind,
        "n_forget": len(sets.forget),
        "n_retain": len(sets.retain),
        "classes": list(classes),
        "class_names": named_classes(classes, class_names),
        "n_named_ids": len(request.sample_ids),  # beside the classes, in a mixed request
        "models": rows,
        "verdicts": {n: verdicts(r, tolerances) for n, r in rows.items() if n != GOLD},
        "tolerances": tolerances,
        "unchanged": unchanged,
        "baseline_stops": stopped,
    }
    if shadow is not None:
        summary["shadow_attack"] = shadow
        if not shadow["informative"]:  # a powerless attack cannot vouch for anything
            for v in summary["verdicts"].values():
                if "d_shadow_auc" in v:
                    v["d_shadow_auc"] = "uninformative"
    atomic_write_bytes(out / "evaluation.json", json_bytes(summary))  # strict: NaN -> null
    ents = {n: entropy(evals[n].probs["forget"]).numpy() for n in ("original", GOLD, "pgu")}
    atomic_write_bytes(
        out / "entropy.png",
        plots.png_bytes(
            plots.entropy_histograms(ents, f"{request.id}: output entropy, forget set")
        ),
    )
    rates = {n: r["mia_member_rate"] for n, r in rows.items()}
    atomic_write_bytes(
        out / "mia.png",
        plots.png_bytes(plots.method_bars(rates, "forget samples called member (%)", request.id)),
    )
    if shadow is not None:
        aucs = {n: r["shadow_auc"] for n, r in rows.items() if n != GOLD}
        figure = plots.method_bars(
            aucs, "shadow attack AUC vs retrained", request.id, 0.5, percent=False
        )
    else:  # DVC declares the plot: say why it is empty
        figure = plots.message("shadow-model attack off (evaluate.n_shadow = 0)", request.id)
    atomic_write_bytes(out / "shadow.png", plots.png_bytes(figure))
    report = _report(summary, ledger_row, seconds, shadow_seconds)
    atomic_write_bytes(out / "report.md", report.encode())
    logger.info("%s: report written to %s", request.id, out / "report.md")
    return summary


def _shadow_section(summary: dict, seconds: float) -> list[str]:
    info, rows = summary["shadow_attack"], summary["models"]
    power = info["held_out_auc"]
    lines = [
        "## Shadow-model attack",
        "",
        f"{info['n_pairs']} pairs of shadow models (trained with and without the forget set, "
        "seeds other than the original's) taught a logistic regression to tell, from a model's "
        "softmax output and the label, whether it trained on a forget sample. On a pair it was "
        f"not fitted on it scores AUC {power:.3f}.",
        "",
    ]
    if not info["informative"]:
        lines += [
            f"That is below {info['min_power']}: the attack cannot tell a model trained on this "
            "forget set from one that was not, so its verdicts below say nothing either way.",
            "",
        ]
    lines += [
        "AUC against retrained: how well its scores tell a model's outputs on the forget set "
        "from the retrained model's (0.5 ideal; above: the model still looks trained on the "
        "forget set; below: it looks less trained on it than retrained does).",
        "",
        "| model | AUC vs retrained | called member % |",
        "|---|---:|---:|",
    ]
    for name, r in rows.items():
        auc = r.get("shadow_auc")
        lines.append(
            f"| {name} | {'–' if auc is None else f'{auc:.3f}'} | "
            f"{100 * r['shadow_member_rate']:.1f} |"
        )
    if math.isnan(seconds):
        lines += [
            "",
            "Some shadow models were not trained for this report: they are the same models as "
            "another request's (copied from its cache: request k's shadows with the forget set "
            "are request k-1's without it) or were cached by an earlier run, so the shadow "
            "attack's cost (training its shadow models) is counted where they were trained, not "
            "here.",
        ]
    else:
        lines += ["", f"Training the {2 * info['n_pairs']} shadow models took {seconds:.2f} s."]
    return lines + [""]


def _weak_reference(rows: dict, classes: bool) -> list[str]:
    """A warning when the retrained model tests far below the original: every distance and
    verdict is then measured against a poor reference, not against what unlearning should reach.
    Where this or an earlier request removed classes, it compares the classes left (the removed
    ones are always wrong for a retrained model, right for the original)."""
    key = "test_other_acc" if "test_other_acc" in rows[GOLD] else "test_acc"
    gold, original = rows[GOLD].get(key), rows.get("original", {}).get(key)
    if gold is None or original is None or not original - gold > WEAK_GOLD_GAP:
        return []
    what = "test accuracy" if key == "test_acc" else "test accuracy on the other classes"
    if key != "test_acc" and not classes:
        what = "test accuracy without the classes earlier requests removed"
    return [
        f"**The retrained reference is weak: {what} {100 * gold:.1f}% against the original's "
        f"{100 * original:.1f}%.** Retrained from scratch with the train pipeline's recipe, it "
        "did not reach the original's level, so the distances and verdicts here measure against "
        "a poor model, not against what unlearning should reach. Give the recipe more epochs "
        "(`parameters_train.yml`), or check that the data suit it.",
        "",
    ]


def named_classes(classes: Sequence[int], class_names: Sequence[str]) -> dict[str, str]:
    """{label: name} for ``classes`` (labels as strings, as JSON keys are), keeping only names
    that say more than the label: digits' classes are named "0" to "9", and a CSV's labels 1,
    2, 3 stored as 0, 1, 2 keep their names "1", "2", "3"."""
    return {
        str(c): str(class_names[c])
        for c in classes
        if c < len(class_names) and str(class_names[c]) != str(c)
    }


def _kind_detail(summary: dict) -> str:
    """' (classes 3 (cat) and 20 named sample ids)' for a class request; '' for samples only."""
    if not summary["classes"]:
        return ""
    named = summary.get("n_named_ids", 0)  # absent from summaries written before it was kept
    also = f" and {named} named sample id{'' if named == 1 else 's'}" if named else ""
    names = summary.get("class_names", {})  # JSON keys are strings once read back
    shown = [f"{c} ({names[str(c)]})" if str(c) in names else str(c) for c in summary["classes"]]
    return f" (classes {', '.join(shown)}{also})"


def _report(
    summary: dict, row: dict, seconds: dict[str, float], shadow_seconds: float = math.nan
) -> str:
    rows = summary["models"]
    gold_s = seconds[GOLD]
    depoison = summary["kind"] == "depoison"
    unchanged = summary.get("unchanged", [])
    lines = [f"# Deletion request {summary['request_id']}", ""]
    if row["output_model_sha256"] == row["input_model_sha256"]:
        lines += [
            f"**PGU left the model unchanged: nothing was "
            f"{'de-poisoned' if depoison else 'unlearned'} (stop reason `{row['stop_reason']}`).**",
            "",
        ]
    lines += [
        f"- kind: **{summary['kind']}**" + _kind_detail(summary),
        f"- samples {'de-poisoned (wrong labels)' if depoison else 'forgotten'}: "
        f"**{summary['n_forget']}**; retain set now {summary['n_retain']}",
        f"- request file sha256 `{row['request_sha256']}`",
        f"- forgotten ids sha256 `{row['ids_sha256']}`",
        f"- input model `{row['input_model_sha256']}` (state `{row['input_state']}`)",
        f"- output model `{row['output_model_sha256']}`",
        f"- statistics: in `{row['input_stats_sha256']}`, out `{row['output_stats_sha256']}`, "
        f"bases `{row['bases_sha256']}` (γ = {row['gamma']})",
        f"- PGU stopped after {row['epochs_run']} epoch{'' if row['epochs_run'] == 1 else 's'}: "
        f"`{row['stop_reason']}`",
        "",
        "## Models against the retrained gold standard",
        "",
        "The retrained model was trained from scratch without every sample forgotten so far; "
        "Δ (absolute accuracy difference) and JS are distances to it (0 is ideal; ToW 1 is "
        "ideal). "
        "FT needs the retain data; PGU and the other baselines use only the forget and val sets.",
        "",
        _markdown_table(rows, seconds, bool(summary["classes"]), unchanged),
        "",
    ]
    if summary["classes"]:
        lines += [
            "Test accuracy is also split into the removed classes and the other classes "
            "(without those earlier requests removed, which no retrained model predicts).",
            "",
        ]
    lines += _weak_reference(rows, bool(summary["classes"]))
    if unchanged:
        lines += [
            f"{UNCHANGED}: the model returned its start model as it was (nothing unlearned), so "
            "its row is the start model's.",
            "",
        ]
    lines += ["## Cost", ""]
    if math.isnan(gold_s):
        lines.append("The cached gold standard's retraining time was not recorded here.")
    else:
        lines.append(
            f"Retraining took {gold_s:.2f} s when the cached gold standard was trained; the "
            "other times are from this run (PGU's is its statistics + bases + unlearning, from "
            "the ledger), so compare them on an idle machine."
        )
    lines.append("")
    stops = summary.get("baseline_stops", {})  # absent from summaries written before it was kept
    for name, s in seconds.items():
        if name != GOLD:
            how = f" ({stops[name]})" if name in stops else ""
            lines.append(f"- {name}: {s:.2f} s = {s / gold_s:.3f} × retraining{how}")
    lines.append("")
    if "shadow_attack" in summary:
        lines += _shadow_section(summary, shadow_seconds)
    lines += ["## Verdicts (PGU)", ""]
    tol = summary["tolerances"]
    for key, verdict in summary["verdicts"].get("pgu", {}).items():
        value = rows["pgu"][key]
        bound = f"≥ {1 - tol[key]:.3f}" if key == "tow" else f"≤ {tol[key]}"
        if verdict == "uninformative":
            lines.append(f"- {key} = {value:.4f}: **uninformative** (the attack has no power)")
        else:
            lines.append(f"- {key} = {value:.4f}: **{verdict}** the tolerance ({bound})")
    lines += [
        "",
        "## Plots",
        "",
        "![unlearning curve](unlearning.png)",
        "![entropy on the forget set](entropy.png)",
        "![membership inference](mia.png)",
        *(["![shadow-model attack](shadow.png)"] if "shadow_attack" in summary else []),
        "![spectra](spectrum.png)",
        "",
    ]
    return "\n".join(lines)
