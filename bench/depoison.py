"""De-poisoning benchmark on digits (METHOD.md section 7; run by hand).

For each seed: draw a label-flip scenario (``--pairs`` class pairs, ``--per-class`` flipped
samples per class; scenario seed = training seed = the seed), train the poisoned model and the
clean reference with the recipe of conf/base/parameters_train.yml, then de-poison with the
configuration of conf/base/parameters_depoison.yml, as the depoison pipeline does: the
poisoned model's training-time statistics R_full (collected right after training, not timed),
R_clean = R_full - R_poisoned (METHOD section 2), bases, the TRGP loop. The same loop without
the trust region is run as an ablation.

Times are CPU seconds of this process (``time.process_time``, one torch thread), which a busy
machine disturbs far less than wall-clock time; wall-clock ratios are printed too. The
de-poisoning time is split into: R_poisoned (the poisoned samples' representation matrices),
bases (the subtraction and eigh) and the loop. Also timed: collecting the clean samples'
matrices directly, the alternative when no statistics were stored at training time. As in
bench/speed.py, a warm-up first pays the process's one-off costs (kernel set-up, BLAS thread
discovery: about 0.1 s, 0.01 of clean training), and the de-poisoning of each seed runs
``--repeats`` times: each phase is reported as its median, the total as the median of the
repeats' totals (all in the JSON); the clean model's training is timed ``--train-repeats``
times (median; every run must give the same weights), since this machine's speed drifts by
up to 20% between minutes and one training is a single draw of that drift.

Prints a markdown table (mean ± std over seeds), the issue's targets with whether they hold,
and one JSON line with every number.

    .venv/bin/python bench/depoison.py --seeds 3
    .venv/bin/python bench/depoison.py --seeds 3 --first-seed 3 --config '{"epochs": 4}'
    .venv/bin/python bench/depoison.py --seeds 3 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from pgu.core.cgs import retain_statistics
from pgu.core.checkpoint import model_spec
from pgu.core.data import SampleSet, split_set
from pgu.core.depoisoning import (
    DepoisonConfig,
    accuracies,
    depoison,
    depoison_bases,
    gap_recovered,
)
from pgu.core.poisoning import (
    flip_labels,
    poisoned_copy,
    poisoned_ids,
    poisoned_samples,
)
from pgu.core.representation import collect_representations
from pgu.core.training import TrainRecipe, fit_from_scratch
from pgu.pipelines.data.nodes import bundle_samples, load_raw_data, split_samples

# One thread: MKL/OpenMP threads thrash on a shared machine, and CPU times stay comparable.
torch.set_num_threads(1)

logger = logging.getLogger("bench.depoison")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("poisoned", "depoisoned", "no_trgp", "clean")
METRICS = ("test_acc", "poisoned_true_acc", "poisoned_wrong_acc", "clean_train_acc")


def load_params() -> tuple[dict, dict, dict, dict]:
    """The ``data``, ``model``, ``train`` and ``depoison`` parameters of conf/base."""
    conf = ROOT / "conf" / "base"
    data = yaml.safe_load((conf / "parameters_data.yml").read_text())["data"]
    train_file = yaml.safe_load((conf / "parameters_train.yml").read_text())
    dp = yaml.safe_load((conf / "parameters_depoison.yml").read_text())["depoison"]
    return data, train_file["model"], train_file["train"], dp


def build_samples(data_params: dict) -> tuple[SampleSet, object]:
    """The sample bundle and index exactly as the data pipeline builds them."""
    params = dict(data_params, root=str(ROOT / data_params["root"]))
    raw = load_raw_data(params)
    index = split_samples(raw, params)
    return SampleSet.from_tensors(bundle_samples(raw, index, params).tensors), index


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(result, CPU seconds, wall seconds) of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def warm_up(samples: SampleSet, index, model_p: dict, train_p: dict, dp: dict) -> None:
    """One small de-poisoning, untimed: the process's first calls pay for set-up, not work."""
    train, val = (split_set(samples, index, s) for s in ("train", "val"))
    small = train.take(torch.arange(min(len(train), 128)))
    scenario = flip_labels(small, 1, 4, seed=0)
    wrong, _ = poisoned_samples(small, scenario)
    spec = model_spec(model_p["name"], samples.in_shape, samples.num_classes, **model_p["kwargs"])
    recipe = TrainRecipe.from_params(dict(train_p["recipe"], epochs=1))
    model, _ = fit_from_scratch(spec, poisoned_copy(small, scenario), recipe)
    config = DepoisonConfig.from_params(dict(dp["config"], epochs=1))
    r_full = collect_representations(model, small.batches(dp["batch_size"]))
    r_clean = retain_statistics(r_full, collect_representations(model, wrong.batches(64)))
    bases, _ = depoison_bases(r_clean, 0.95, {}, config.trust_region_name(model))
    depoison(model, bases, wrong, val, config)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models hold the same tensors, bit for bit."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def median_run(fn: Callable[[], tuple], repeats: int) -> tuple[tuple, dict, dict, list]:
    """Run ``fn`` (returning (result, {phase: (cpu, wall)})) ``repeats`` times.

    Returns (the last result, per-phase median CPU seconds, per-phase median wall seconds, every
    repeat's CPU total). De-poisoning is deterministic: every repeat must return the same model.
    """
    results, cpu, wall = [], [], []
    for _ in range(repeats):
        out, phases = fn()
        results.append(out)
        cpu.append({k: v[0] for k, v in phases.items()})
        wall.append({k: v[1] for k, v in phases.items()})
    if any(not same_weights(results[0][-1].model, out[-1].model) for out in results[1:]):
        raise RuntimeError("two repeats of the same de-poisoning returned different models")

    def medians(rows: list[dict]) -> dict:
        out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        return out | {"total": statistics.median(sum(r.values()) for r in rows)}

    return results[-1], medians(cpu), medians(wall), [sum(r.values()) for r in cpu]


def run_seed(
    seed: int, samples: SampleSet, index, model_p: dict, train_p: dict, dp: dict, args
) -> dict:
    """Scenario, the two trained models, de-poisoning with and without TRGP; every number."""
    train, val, test = (split_set(samples, index, s) for s in ("train", "val", "test"))
    scenario = flip_labels(train, args.pairs, args.per_class, seed=seed)
    clean = train.without_ids(poisoned_ids(scenario))
    wrong, true = poisoned_samples(train, scenario)
    sets = {"test": test, "poisoned_true": true, "poisoned_wrong": wrong, "clean_train": clean}
    spec = model_spec(model_p["name"], samples.in_shape, samples.num_classes, **model_p["kwargs"])
    recipe = TrainRecipe.from_params(dict(train_p["recipe"], seed=seed))
    (poisoned, _), _, _ = timed(
        lambda: fit_from_scratch(spec, poisoned_copy(train, scenario), recipe)
    )
    trainings = [
        timed(lambda: fit_from_scratch(spec, clean, recipe)) for _ in range(args.train_repeats)
    ]
    clean_model = trainings[0][0][0]
    if any(not same_weights(clean_model, t[0][0]) for t in trainings[1:]):
        raise RuntimeError("two trainings of the clean model returned different weights")
    clean_cpu = statistics.median(t[1] for t in trainings)
    clean_wall = statistics.median(t[2] for t in trainings)

    config = DepoisonConfig.from_params(dp["config"])
    batch, gamma, overrides = dp["batch_size"], dp["cgs"]["gamma"], dp["cgs"]["overrides"]
    r_full = collect_representations(poisoned, train.batches(batch))  # at training time
    _, r_clean_cpu, _ = timed(lambda: collect_representations(poisoned, clean.batches(batch)))
    tr_layer = config.trust_region_name(poisoned)

    def once() -> tuple[tuple, dict]:
        r_poisoned, r_cpu, r_wall = timed(
            lambda: collect_representations(poisoned, wrong.batches(batch))
        )
        (r_clean, (bases, _)), b_cpu, b_wall = timed(
            lambda: (
                (rc := retain_statistics(r_full, r_poisoned)),
                depoison_bases(rc, gamma, overrides, tr_layer),
            )
        )
        result, loop_cpu, loop_wall = timed(lambda: depoison(poisoned, bases, wrong, val, config))
        phases = {
            "r_poisoned": (r_cpu, r_wall),
            "bases": (b_cpu, b_wall),
            "loop": (loop_cpu, loop_wall),
        }
        return (r_clean, result), phases

    (r_clean, result), cpu_med, wall_med, totals = median_run(once, args.repeats)

    plain = DepoisonConfig.from_params(dict(dp["config"], trust_region=False))
    plain_bases, _ = depoison_bases(r_clean, gamma, overrides, None)
    ablation = depoison(poisoned, plain_bases, wrong, val, plain)

    models = {
        "poisoned": poisoned,
        "depoisoned": result.model,
        "no_trgp": ablation.model,
        "clean": clean_model,
    }
    out: dict = {"seed": seed, "n_poisoned": len(scenario)}
    for name, model in models.items():
        out[name] = accuracies(model, sets)
    out["gap_recovered"] = gap_recovered(
        *(out[m]["test_acc"] for m in ("poisoned", "depoisoned", "clean"))
    )
    out["gap_recovered_no_trgp"] = gap_recovered(
        *(out[m]["test_acc"] for m in ("poisoned", "no_trgp", "clean"))
    )
    out["run"] = {
        "stop_reason": result.stop_reason,
        "epochs_run": result.epochs_run,
        "kept_epoch": result.kept_epoch,
        "no_trgp_kept_epoch": ablation.kept_epoch,
    }
    out["cpu_s"] = {"clean_training": clean_cpu, "r_clean": r_clean_cpu, **cpu_med}
    out["wall_s"] = {"clean_training": clean_wall, **wall_med}
    out["cpu_totals"] = totals  # every repeat's R_poisoned + bases + loop
    out["clean_training_cpu_all"] = [t[1] for t in trainings]
    cpu = out["cpu_s"]
    out["ratio"] = {
        "total": cpu["total"] / clean_cpu,
        "via_clean": (cpu["r_clean"] + cpu["bases"] + cpu["loop"]) / clean_cpu,
        "loop": cpu["loop"] / clean_cpu,
        "total_wall": wall_med["total"] / clean_wall,
    }
    logger.info(
        "seed %d: test %.4f -> %.4f (clean %.4f); total time ratio %.3f",
        seed,
        out["poisoned"]["test_acc"],
        out["depoisoned"]["test_acc"],
        out["clean"]["test_acc"],
        out["ratio"]["total"],
    )
    return out


def ms(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """'mean ± std' (population std) of ``values`` times ``scale``."""
    mean = statistics.fmean(values) * scale
    std = (statistics.pstdev(values) if len(values) > 1 else 0.0) * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def report(runs: list[dict]) -> str:
    """The markdown tables and the targets."""
    labels = {
        "poisoned": "poisoned",
        "depoisoned": "de-poisoned (PGU + TRGP)",
        "no_trgp": "de-poisoned, no TRGP (ablation)",
        "clean": "clean (retrained)",
    }
    lines = [
        "| model | test acc (%) | poisoned, true labels (%) | poisoned, wrong labels (%) "
        "| clean train (%) |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS:
        cells = [ms([r[m][k] for r in runs], 100) for k in METRICS]
        lines.append(f"| {labels[m]} | " + " | ".join(cells) + " |")
    cpu = lambda k: [r["cpu_s"][k] for r in runs]  # noqa: E731
    lines += [
        "",
        "| time (CPU s) | value |",
        "|---|---|",
        f"| clean model training | {ms(cpu('clean_training'), digits=2)} |",
        f"| R of the poisoned samples | {ms(cpu('r_poisoned'), digits=2)} |",
        f"| bases (R_full − R_poisoned, eigh) | {ms(cpu('bases'), digits=2)} |",
        f"| de-poisoning loop | {ms(cpu('loop'), digits=2)} |",
        f"| (R of the clean samples, without stored statistics) | {ms(cpu('r_clean'), digits=2)} |",
    ]
    gap = [r["gap_recovered"] for r in runs]
    true = [r["depoisoned"]["poisoned_true_acc"] for r in runs]
    total = [r["ratio"]["total"] for r in runs]
    targets = [
        ("test-accuracy gap recovered ≥ 50%", ms(gap, 100) + " %", min(gap) >= 0.5),
        ("true-label accuracy on poisoned samples > 50%", ms(true, 100) + " %", min(true) > 0.5),
        (
            "time < 1/10 of clean training (R_poisoned + bases + loop)",
            ms(total, digits=3),
            max(total) < 0.1,
        ),
        ("  same, on the mean over seeds", ms(total, digits=3), statistics.fmean(total) < 0.1),
        (
            "  same, collecting the clean samples' R instead",
            ms([r["ratio"]["via_clean"] for r in runs], digits=3),
            max(r["ratio"]["via_clean"] for r in runs) < 0.1,
        ),
        (
            "  loop alone",
            ms([r["ratio"]["loop"] for r in runs], digits=3),
            max(r["ratio"]["loop"] for r in runs) < 0.1,
        ),
        (
            "  (wall clock, R_poisoned + bases + loop)",
            ms([r["ratio"]["total_wall"] for r in runs], digits=3),
            None,
        ),
    ]
    lines += ["", "| target (every seed) | mean ± std | holds |", "|---|---|---|"]
    for name, value, ok in targets:
        lines.append(f"| {name} | {value} | {'–' if ok is None else ('yes' if ok else 'NO')} |")
    gap_plain = [r["gap_recovered_no_trgp"] for r in runs]
    lines += [
        "",
        f"Gap recovered without TRGP: {ms(gap_plain, 100)} %. Stop reasons: "
        f"{[r['run']['stop_reason'] for r in runs]}, kept epochs "
        f"{[r['run']['kept_epoch'] for r in runs]}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one on")
    parser.add_argument(
        "--repeats", type=int, default=3, help="de-poisonings timed per seed (medians reported)"
    )
    parser.add_argument(
        "--train-repeats",
        type=int,
        default=3,
        help="timed trainings of the clean model per seed (median reported)",
    )
    parser.add_argument("--pairs", type=int, default=5, help="class pairs whose labels flip")
    parser.add_argument("--per-class", type=int, default=40, help="flipped samples per class")
    parser.add_argument(
        "--config",
        type=json.loads,
        default={},
        help="JSON overrides of depoison.config, e.g. '{\"epochs\": 4}'",
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.train_repeats < 1:
        parser.error("--repeats and --train-repeats must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for name in ("pgu", "pgu.core.training", "pgu.core.models"):
        logging.getLogger(name).setLevel(logging.WARNING)
    data_p, model_p, train_p, dp = load_params()
    dp = dict(dp, config=dict(dp["config"], **args.config))
    samples, index = build_samples(data_p)
    warm_up(samples, index, model_p, train_p, dp)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs = [run_seed(s, samples, index, model_p, train_p, dp, args) for s in seeds]
    print(
        f"\nDe-poisoning on digits, {args.pairs} class pairs × {args.per_class} flipped "
        f"samples per class, seeds {seeds[0]}–{seeds[-1]} (mean ± std), config overrides "
        f"{args.config or 'none'}; de-poisoning times: median of {args.repeats} after a "
        f"warm-up, clean training: median of {args.train_repeats}:\n"
    )
    print(report(runs))
    print("\n" + json.dumps({"args": vars(args), "config": dp, "runs": runs}))


if __name__ == "__main__":
    main()
