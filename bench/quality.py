"""Quality benchmark of PGU against retraining from scratch, on digits (run by hand).

For each seed: train the original model with the recipe of conf/base/parameters_train.yml on
the train split of conf/base/parameters_data.yml, collect R_full, then for two deletion
requests - (a) every train sample of one class, (b) a seeded random fraction of the train
split - retrain from scratch on the retain set (the gold standard) and run a PGU request with
the default ``UnlearnConfig``: forget statistics, bases, unlearning with its evaluations.
Each baseline of conf/base/parameters_evaluate.yml (``evaluate.baselines``, or ``--baselines``)
is then run on the same request from the original model, as the evaluate pipeline runs it: the
same ``UnlearnConfig`` as PGU (no baseline projects, so none needs the bases), FT with
``evaluate.finetune_recipe`` (seeded with the benchmark's seed).

Prints a markdown table (mean ± std over seeds) of the three models per scenario, the issue's
targets with whether they hold, a table per scenario of every method's distance to the
retrained model (``distance_to_gold``) with its time relative to retraining, and one JSON line
with every number. With ``--shadow N`` the shadow-model attack of the evaluate pipeline
(``pgu.core.shadow``) also runs on every request: N pairs of shadow models per request and
seed (seeds 1000 * (seed + 1) + s, never an original's), and the distance table gains each
method's AUC against retrained (0.5 ideal).

    PYTHONPATH=src .venv/bin/python bench/quality.py --seeds 3

Timing runs single-threaded by default (``--threads``): on a shared 2-core machine two
OpenMP threads spin-wait whenever another process takes a core, which slowed both sides by
3-4x and made the ratio a matter of luck; retraining and the request use the same setting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from pgu.core.baselines import BASELINES, NEEDS_RETAIN, BaselineContext, run_baseline
from pgu.core.cgs import compute_bases, retain_statistics
from pgu.core.checkpoint import model_spec
from pgu.core.data import SampleSet, split_set
from pgu.core.evaluation import GOLD_SETS, ModelEval, distance_to_gold
from pgu.core.metrics import entropy, entropy_attack, js_divergence, softmax_outputs, tug_of_war
from pgu.core.representation import collect_representations
from pgu.core.shadow import fit_shadow_attack
from pgu.core.training import TrainRecipe, fit_from_scratch
from pgu.core.unlearning import UnlearnConfig, unlearn
from pgu.pipelines.data.nodes import bundle_samples, load_raw_data, split_samples

logger = logging.getLogger("bench.quality")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("original", "retrained", "pgu")
DISTANCE_KEYS = (
    *(f"d_acc_{s}" for s in GOLD_SETS),
    "tow",
    "js_forget",
    "js_test",
    "d_mia_member_rate",
)


def load_params() -> tuple[dict, dict, dict]:
    """The ``data``, ``model`` and ``train`` parameters of conf/base."""
    conf = ROOT / "conf" / "base"
    data = yaml.safe_load((conf / "parameters_data.yml").read_text())["data"]
    train_file = yaml.safe_load((conf / "parameters_train.yml").read_text())
    return data, train_file["model"], train_file["train"]


def load_evaluate_params() -> dict:
    """The ``evaluate`` parameters of conf/base (baselines and the FT recipe)."""
    path = ROOT / "conf" / "base" / "parameters_evaluate.yml"
    return yaml.safe_load(path.read_text())["evaluate"]


def parse_baselines(value: str | None, default: list[str]) -> list[str]:
    """``--baselines``: None keeps ``default``; "none" runs none; else a comma list."""
    if value is None:
        names = list(default)
    elif value.strip().lower() == "none":
        names = []
    else:
        names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise SystemExit(f"unknown baselines {unknown}; valid: {sorted(BASELINES)} or 'none'")
    return names


def gold_distance(
    row: dict, probs: dict[str, torch.Tensor], ref_row: dict, ref_probs: dict[str, torch.Tensor]
) -> dict[str, float]:
    """``distance_to_gold`` of one model, on the attack rate averaged over the repeats."""

    def as_eval(r: dict, p: dict[str, torch.Tensor]) -> ModelEval:
        return ModelEval(dict(r, mia_member_rate=r["attack_rate"]), p)

    return distance_to_gold(as_eval(row, probs), as_eval(ref_row, ref_probs))


def build_samples(data_params: dict) -> tuple[SampleSet, object]:
    """The sample bundle and index exactly as the data pipeline builds them."""
    params = dict(data_params, root=str(ROOT / data_params["root"]))
    raw = load_raw_data(params)
    index = split_samples(raw, params)
    return SampleSet.from_tensors(bundle_samples(raw, index, params).tensors), index


def evaluate(
    model: nn.Module,
    sets: dict[str, SampleSet],
    reference: dict[str, torch.Tensor] | None,
    forget_class: int | None,
    seed: int,
    attack_repeats: int,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Accuracies, attack rate, forget entropy and JS to the reference outputs of one model.

    The attack is fitted ``attack_repeats`` times (members subsampled with seeds seed*100+r)
    and its member rate and AUC averaged: on digits it is close to chance, so one fit's rate
    moves by several points with the subsample alone.
    """
    probs = {name: softmax_outputs(model, s) for name, s in sets.items()}
    row: dict = {}
    for name, s in sets.items():
        row[f"{name}_acc"] = (probs[name].argmax(1) == s.y).double().mean().item()
    if forget_class is not None:
        test, p = sets["test"], probs["test"]
        hit = p.argmax(1) == test.y
        in_class = test.y == forget_class
        row["test_acc_class"] = hit[in_class].double().mean().item()
        row["test_acc_other"] = hit[~in_class].double().mean().item()
    attacks = [
        entropy_attack(
            probs["retain"],
            sets["retain"].y,
            probs["test"],
            sets["test"].y,
            probs["forget"],
            sets["forget"].y,
            seed=seed * 100 + r,
        )
        for r in range(attack_repeats)
    ]
    row["attack_rate"] = statistics.fmean(a["member_rate"] for a in attacks)
    row["attack_auc"] = statistics.fmean(a["auc"] for a in attacks)
    row["forget_entropy"] = entropy(probs["forget"]).mean().item()
    if reference is not None:
        row["js_forget"] = js_divergence(probs["forget"], reference["forget"]).mean().item()
        row["js_test"] = js_divergence(probs["test"], reference["test"]).mean().item()
    return row, probs


def run_scenario(
    name: str,
    original: nn.Module,
    r_full: dict,
    train: SampleSet,
    test: SampleSet,
    val: SampleSet,
    forget_ids: torch.Tensor,
    forget_class: int | None,
    spec: dict,
    recipe: TrainRecipe,
    config: UnlearnConfig,
    gamma: float,
    seed: int,
    attack_repeats: int,
    request_repeats: int,
    baselines: list[str],
    finetune_recipe: TrainRecipe,
    shadow: int = 0,
) -> dict:
    """Retrain, unlearn and run the baselines on one request; return metrics and timings.

    Times are wall-clock (``perf_counter``) and process CPU (``process_time``). The request
    (deterministic, so every repeat gives the same model) is timed ``request_repeats`` times
    and the median kept: it lasts well under a second, so one burst of load from another
    process on a shared machine would otherwise decide its time. Retraining is timed once.
    Each baseline (deterministic too) is timed the same way as the request; its time is what
    the baseline itself does (none of them needs the forget statistics or the bases).
    """
    forget, retain = train.with_ids(forget_ids), train.without_ids(forget_ids)
    w0, c0 = time.perf_counter(), time.process_time()
    retrained, _ = fit_from_scratch(spec, retain, recipe)
    retrain_s, retrain_cpu = time.perf_counter() - w0, time.process_time() - c0

    classes = None if forget_class is None else [forget_class]
    timings = []
    for _ in range(request_repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        r_forget = collect_representations(original, forget.batches(512))
        w1 = time.perf_counter()
        bases, _ = compute_bases(retain_statistics(r_full, r_forget), gamma)
        w2 = time.perf_counter()
        result = unlearn(original, bases, forget, val, config, forget_classes=classes)
        w3 = time.perf_counter()
        timings.append((w3 - w0, time.process_time() - c0, w1 - w0, w2 - w1, w3 - w2))
    request_s, request_cpu, stats_s, bases_s, unlearn_s = (
        statistics.median(t[i] for t in timings) for i in range(5)
    )

    sets = {"retain": retain, "forget": forget, "test": test}
    out: dict = {"scenario": name, "seed": seed, "n_forget": len(forget)}
    ref_row, ref_probs = evaluate(retrained, sets, None, forget_class, seed, attack_repeats)
    out["original"], orig_probs = evaluate(
        original, sets, ref_probs, forget_class, seed, attack_repeats
    )
    out["pgu"], pgu_probs = evaluate(
        result.model, sets, ref_probs, forget_class, seed, attack_repeats
    )
    out["retrained"] = dict(ref_row, js_forget=0.0, js_test=0.0)
    accs = ("retain_acc", "forget_acc", "test_acc")
    for label in MODELS:
        out[label]["tow"] = tug_of_war(
            {k: out[label][k] for k in accs}, {k: out["retrained"][k] for k in accs}
        )
    out["retrained"].update(time_s=retrain_s, cpu_s=retrain_cpu)
    out["pgu"].update(
        time_s=request_s,
        cpu_s=request_cpu,
        forget_stats_s=stats_s,
        bases_s=bases_s,
        unlearn_s=unlearn_s,
        tries=len(result.history) - 1,
    )
    out["pgu"].update(
        stop_reason=result.stop_reason,
        epochs_run=result.epochs_run,
        kept_epoch=result.kept_epoch,
        lr_scale=result.lr_scale,
    )
    out["time_ratio"] = request_s / retrain_s
    out["cpu_ratio"] = request_cpu / retrain_cpu
    logger.info(
        "%s seed %d: %s after %d epochs; request %.2fs vs retraining %.2fs",
        name,
        seed,
        result.stop_reason,
        result.epochs_run,
        request_s,
        retrain_s,
    )

    ctx_args = dict(
        forget=forget,
        val=val,
        config=config,
        forget_classes=classes,
        device=torch.device("cpu"),
        finetune_recipe=finetune_recipe,
    )
    ref = out["retrained"]
    distances = {
        "pgu": gold_distance(out["pgu"], pgu_probs, ref, ref_probs),
        "original": gold_distance(out["original"], orig_probs, ref, ref_probs),
    }
    distances["pgu"].update(time_ratio=request_s / retrain_s, cpu_ratio=request_cpu / retrain_cpu)
    forget_probs = {"pgu": pgu_probs["forget"], "original": orig_probs["forget"]}
    out["baselines"] = {}
    for method in baselines:
        ctx = BaselineContext(retain=retain if method in NEEDS_RETAIN else None, **ctx_args)
        timings = []
        for _ in range(request_repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            outcome = run_baseline(method, original, ctx)
            timings.append((time.perf_counter() - w0, time.process_time() - c0))
        wall, cpu = (statistics.median(t[i] for t in timings) for i in range(2))
        row, probs = evaluate(outcome.model, sets, ref_probs, forget_class, seed, attack_repeats)
        row["tow"] = tug_of_war({k: row[k] for k in accs}, {k: ref[k] for k in accs})
        out["baselines"][method] = dict(row, time_s=wall, cpu_s=cpu, stopped=outcome.stopped)
        forget_probs[method] = probs["forget"]
        distances[method] = dict(
            gold_distance(row, probs, ref, ref_probs),
            time_ratio=wall / retrain_s,
            cpu_ratio=cpu / retrain_cpu,
        )
        logger.info(
            "%s seed %d: %s %.2fs (%.3f x retraining)", name, seed, method, wall, wall / retrain_s
        )
    if shadow:
        attack = shadow_attack(spec, train, retain, forget, recipe, seed, shadow)
        out["shadow_held_out_auc"] = attack.held_out_auc
        for method, probs in forget_probs.items():
            distances[method]["shadow_auc"] = attack.auc_against(probs, ref_probs["forget"])
        logger.info("%s seed %d: shadow attack held-out AUC %.3f", name, seed, attack.held_out_auc)
    out["distance"] = distances
    return out


def shadow_attack(
    spec: dict,
    train: SampleSet,
    retain: SampleSet,
    forget: SampleSet,
    recipe: TrainRecipe,
    seed: int,
    pairs: int,
):
    """The evaluate pipeline's shadow-model attack: ``pairs`` pairs trained on train / retain."""
    with_set, without = [], []
    for s in range(pairs):
        shadow_recipe = TrainRecipe.from_params(dict(recipe.__dict__, seed=1000 * (seed + 1) + s))
        for data, outputs in ((train, with_set), (retain, without)):
            model, _ = fit_from_scratch(spec, data, shadow_recipe)
            outputs.append(softmax_outputs(model, forget))
    return fit_shadow_attack(with_set, without, forget.y)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], scenario: str) -> dict:
    """{model: {metric: (mean, std)}} over the seeds of one scenario."""
    rows = [r for r in runs if r["scenario"] == scenario]
    out: dict = {}
    for label in MODELS:
        keys = [k for k, v in rows[0][label].items() if isinstance(v, (int, float))]
        out[label] = {k: mean_std([r[label][k] for r in rows]) for k in keys}
    out["time_ratio"] = mean_std([r["time_ratio"] for r in rows])
    out["cpu_ratio"] = mean_std([r["cpu_ratio"] for r in rows])
    out["stop_reasons"] = [r["pgu"]["stop_reason"] for r in rows]
    if "shadow_held_out_auc" in rows[0]:
        out["shadow_held_out_auc"] = mean_std([r["shadow_held_out_auc"] for r in rows])
    out["distance"] = {
        method: {k: mean_std([r["distance"][method][k] for r in rows]) for k in values}
        for method, values in rows[0]["distance"].items()
    }
    return out


COLUMNS = {
    "classes": (
        "retain_acc",
        "forget_acc",
        "test_acc_class",
        "test_acc_other",
        "attack_rate",
        "attack_auc",
        "forget_entropy",
        "js_forget",
        "js_test",
        "tow",
        "time_s",
        "cpu_s",
    ),
    "samples": (
        "retain_acc",
        "forget_acc",
        "test_acc",
        "attack_rate",
        "attack_auc",
        "forget_entropy",
        "js_forget",
        "js_test",
        "tow",
        "time_s",
        "cpu_s",
    ),
}


def table(summary: dict, scenario: str, title: str) -> str:
    cols = COLUMNS[scenario]
    lines = [
        f"**{title}**",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for label in MODELS:
        cells = []
        for c in cols:
            if c in summary[label]:
                m, s = summary[label][c]
                cells.append(f"{m:.4f} ± {s:.4f}")
            else:
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DISTANCE_COLUMNS = (
    ("d_acc_retain", "Δacc retain (pt)", 100, 2),
    ("d_acc_forget", "Δacc forget (pt)", 100, 2),
    ("d_acc_test", "Δacc test (pt)", 100, 2),
    ("tow", "ToW", 1, 4),
    ("js_forget", "JS forget", 1, 4),
    ("js_test", "JS test", 1, 4),
    ("d_mia_member_rate", "Δattack rate (pt)", 100, 2),
    ("shadow_auc", "shadow AUC", 1, 3),
    ("time_ratio", "time ÷ retraining", 1, 3),
)
DISTANCE_ROWS = ("pgu", *BASELINES, "original")
DISPLAY_NAMES = {"pgu": "PGU", "ft": "FT", "ng": "NG", "rl": "RL"}


def distance_table(summary: dict, title: str) -> str:
    """Every method's distance to the retrained model (mean ± std over seeds), and its time."""
    columns = [  # the shadow AUC only when the attack ran
        c for c in DISTANCE_COLUMNS if any(c[0] in row for row in summary["distance"].values())
    ]
    lines = [
        f"**{title}**",
        "",
        "| method | " + " | ".join(label for _, label, _, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method in DISTANCE_ROWS:
        if method not in summary["distance"]:
            continue
        cells = []
        for key, _, scale, digits in columns:
            if key in summary["distance"][method]:
                m, s = summary["distance"][method][key]
                cells.append(f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}")
            else:
                cells.append("–")
        name = DISPLAY_NAMES.get(method, method)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "shadow_held_out_auc" in summary:
        m, s = summary["shadow_held_out_auc"]
        lines += [
            "",
            f"Shadow attack's AUC on a held-out shadow pair (its power): {m:.3f} ± {s:.3f}",
        ]
    return "\n".join(lines)


def targets(classes: dict, samples: dict) -> list[tuple[str, bool, str]]:
    """The issue's targets (means over seeds): (description, holds, numbers)."""
    c, s = classes, samples
    pc, rc = c["pgu"], c["retrained"]
    ps, rs, os_ = s["pgu"], s["retrained"], s["original"]

    def closer(key: str) -> tuple[bool, str]:
        d_pgu = abs(ps[key][0] - rs[key][0])
        d_orig = abs(os_[key][0] - rs[key][0])
        return d_pgu < d_orig, f"|pgu-retr| {d_pgu:.4f} vs |orig-retr| {d_orig:.4f}"

    rate_ok, rate_txt = closer("attack_rate")
    ent_ok, ent_txt = closer("forget_entropy")
    d_other = abs(pc["test_acc_other"][0] - rc["test_acc_other"][0])
    d_test = abs(ps["test_acc"][0] - rs["test_acc"][0])
    return [
        (
            "class: train forget acc <= 1%",
            pc["forget_acc"][0] <= 0.01,
            f"{pc['forget_acc'][0]:.4f}",
        ),
        (
            "class: test acc on the class <= 5%",
            pc["test_acc_class"][0] <= 0.05,
            f"{pc['test_acc_class'][0]:.4f}",
        ),
        (
            "class: other classes' test acc within 1 pt of retrained",
            d_other <= 0.01,
            f"|Δ| {d_other:.4f}",
        ),
        ("random: test acc within 1 pt of retrained", d_test <= 0.01, f"|Δ| {d_test:.4f}"),
        ("random: attack rate closer to retrained than original", rate_ok, rate_txt),
        ("random: forget entropy closer to retrained than original", ent_ok, ent_txt),
        (
            "class: request <= 1/10 of retraining (wall)",
            c["time_ratio"][0] <= 0.1,
            f"{c['time_ratio'][0]:.3f} (CPU time: {c['cpu_ratio'][0]:.3f})",
        ),
        (
            "random: request <= 1/10 of retraining (wall)",
            s["time_ratio"][0] <= 0.1,
            f"{s['time_ratio'][0]:.3f} (CPU time: {s['cpu_ratio'][0]:.3f})",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one on")
    parser.add_argument("--gamma", type=float, default=0.95, help="CGS threshold")
    parser.add_argument("--forget-class", type=int, default=3, help="class of scenario (a)")
    parser.add_argument("--fraction", type=float, default=0.1, help="random share, scenario (b)")
    parser.add_argument(
        "--attack-repeats",
        type=int,
        default=5,
        help="attack fits averaged per model (different member subsamples)",
    )
    parser.add_argument(
        "--request-repeats",
        type=int,
        default=3,
        help="timed repeats of each PGU request (the median is reported)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for everything timed (0: torch's default)",
    )
    parser.add_argument(
        "--unlearn",
        default="{}",
        help="JSON overrides of UnlearnConfig (default: none, the defaults)",
    )
    parser.add_argument(
        "--baselines",
        default=None,
        help="comma list of baselines to run, or 'none' "
        "(default: evaluate.baselines of conf/base/parameters_evaluate.yml)",
    )
    parser.add_argument(
        "--shadow",
        type=int,
        default=0,
        help="pairs of shadow models per request and seed for the shadow-model attack "
        "(0: off; else >= 2)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args()
    if args.shadow == 1 or args.shadow < 0:
        parser.error("--shadow must be 0 (off) or at least 2")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logger.setLevel(logging.INFO)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data_params, model_params, train_params = load_params()
    evaluate_params = load_evaluate_params()
    baselines = parse_baselines(args.baselines, evaluate_params.get("baselines") or [])
    config = UnlearnConfig.from_params(json.loads(args.unlearn))
    samples, index = build_samples(data_params)
    train, val, test = (split_set(samples, index, s) for s in ("train", "val", "test"))
    spec = model_spec(
        model_params["name"],
        samples.in_shape,
        samples.num_classes,
        **(model_params.get("kwargs") or {}),
    )
    runs: list[dict] = []
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        recipe = TrainRecipe.from_params(dict(train_params["recipe"], seed=seed))
        original, _ = fit_from_scratch(spec, train, recipe)
        r_full = collect_representations(original, train.batches(512))
        class_ids = train.sample_id[train.y == args.forget_class]
        generator = torch.Generator().manual_seed(seed)
        n_random = round(args.fraction * len(train))
        random_ids = train.sample_id[torch.randperm(len(train), generator=generator)[:n_random]]
        common = dict(
            original=original,
            r_full=r_full,
            train=train,
            test=test,
            val=val,
            spec=spec,
            recipe=recipe,
            config=config,
            gamma=args.gamma,
            seed=seed,
            attack_repeats=args.attack_repeats,
            request_repeats=args.request_repeats,
            baselines=baselines,
            finetune_recipe=TrainRecipe.from_params(
                dict(evaluate_params["finetune_recipe"], seed=seed)
            ),
            shadow=args.shadow,
        )
        runs.append(
            run_scenario("classes", forget_ids=class_ids, forget_class=args.forget_class, **common)
        )
        runs.append(run_scenario("samples", forget_ids=random_ids, forget_class=None, **common))

    classes, samples_ = summarise(runs, "classes"), summarise(runs, "samples")
    print(
        f"\nPGU vs retraining on digits ({model_params['name']}), seeds {seeds[0]}–{seeds[-1]}, "
        f"gamma {args.gamma}, {torch.get_num_threads()} torch thread(s), request time = "
        f"median of {args.request_repeats}, config {config}\n"
    )
    print(
        table(
            classes,
            "classes",
            f"(a) class removal: all train samples of class "
            f"{args.forget_class}; stops: {classes['stop_reasons']}",
        )
    )
    print()
    print(
        table(
            samples_,
            "samples",
            f"(b) random {args.fraction:.0%} of the train split; stops: {samples_['stop_reasons']}",
        )
    )
    print()
    checks = targets(classes, samples_)
    for text, ok, numbers in checks:
        print(f"- [{'x' if ok else ' '}] {text}: {numbers}")
    per_scenario = [
        f"{name}: {summary['pgu']['tries'][0]:.1f} tries; forget statistics "
        f"{summary['pgu']['forget_stats_s'][0]:.2f}s, bases {summary['pgu']['bases_s'][0]:.2f}s,"
        f" unlearning {summary['pgu']['unlearn_s'][0]:.2f}s"
        for name, summary in (("class", classes), ("random", samples_))
    ]
    print("\nPGU request, mean per scenario: " + "; ".join(per_scenario))
    print(
        f"\nDistance to the retrained model, mean ± std over seeds {seeds[0]}–{seeds[-1]} "
        f"(Δ in points; "
        f"ToW 1 is ideal; time = wall time of the method ÷ that seed's retraining, PGU's "
        f"including forget statistics and bases); baselines {baselines or 'none'}\n"
    )
    print(distance_table(classes, f"(a) class removal: class {args.forget_class}"))
    print()
    print(distance_table(samples_, f"(b) random {args.fraction:.0%} of the train split"))
    print()
    print(
        f"wall time {time.perf_counter() - t_start:.0f}s; load average (1 min) at start "
        f"{load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        json.dumps(
            {
                "config": config.__dict__,
                "gamma": args.gamma,
                "seeds": list(seeds),
                "baselines": baselines,
                "finetune_recipe": dict(
                    evaluate_params["finetune_recipe"], seed="the benchmark seed"
                ),
                "summary": {"classes": classes, "samples": samples_},
                "targets": {t: ok for t, ok, _ in checks},
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
