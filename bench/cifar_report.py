"""The report of ``bench/cifar.py``: tables over seeds, the reference code's figures, merging.

Framework-free like the bench itself (standard library only): it reads the run records the bench
writes (``results.json``'s ``runs``) and turns them into the markdown of ``results.md``, so a
report can be remade, or several runs of one setting merged (``bench/cifar.py --merge``), on a
machine without torch's GPU build.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

MODELS = ("original", "retrained", "pgu")  # then "pgu:<name>" per --variant, then baselines
SCENARIOS = ("a", "c", "b")  # the order they run in: (a) first, it is what the reference measured
PAPER_EPOCHS = 200

# Issue 7: the reference code, SmallVGG, scenario (a), training shortened to 60 epochs, seeds
# 0 and 1, one H200. Accuracies as fractions; JS = mean JS divergence to the retrained model.
REFERENCE = {
    "original": {
        "forget_acc": [0.968, 0.958],
        "test_acc": [0.856, 0.856],
        "js_forget": [0.036, 0.036],
    },
    "retrained": {"forget_acc": [0.866, 0.875], "test_acc": [0.852, 0.848]},
    "pgu_paper_lr": "returns the original model unchanged (the stop gap never turns positive)",
    "pgu_lr_x20": {
        "forget_acc": [0.881, 0.820],
        "test_acc": [0.855, 0.855],
        "js_forget": [0.033, 0.039],
    },
    "request_s": [85.0, 92.0],
    "request_over_200_epoch_retrain": 0.6,
}


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def labels(runs: list[dict]) -> list[str]:
    """The model labels of some runs: :data:`MODELS` first, then variants as they appear."""
    seen = [m for r in runs for m in r["models"]]
    extra = dict.fromkeys(m for m in seen if m not in MODELS)
    return [m for m in MODELS if m in seen] + list(extra)


def summarise(runs: list[dict]) -> dict:
    """{model: {metric: (mean, std)}}, timings and stop reasons over the seeds of some runs."""
    out: dict = {"seeds": [r["seed"] for r in runs], "models": labels(runs)}
    for label in labels(runs):
        present = [r["models"][label] for r in runs if label in r["models"]]
        if present:
            keys = [k for k, v in present[0].items() if isinstance(v, (int, float))]
            out[label] = {k: mean_std([p[k] for p in present]) for k in keys}
    out["timing"] = {
        k: mean_std([float(r["timing"][k]) for r in runs])
        for k in runs[0]["timing"]
        if not isinstance(runs[0]["timing"][k], bool)
    }
    out["times_from_state_dir"] = any(r.get("times_from_state_dir") for r in runs)
    out["stop_reasons"] = [r["unlearn"]["stop_reason"] for r in runs]
    out["epochs_run"] = [r["unlearn"]["epochs_run"] for r in runs]
    # how each baseline's run ended, seed by seed (results written before this have none)
    out["baseline_stops"] = {
        name: [r["baselines"][name].get("stopped", "?") for r in runs if name in r["baselines"]]
        for name in runs[0].get("baselines", {})
        if any("stopped" in r.get("baselines", {}).get(name, {}) for r in runs)
    }
    return out


COLUMNS = {
    "samples": (
        "forget_acc",
        "retain_acc",
        "test_acc",
        "attack_rate",
        "forget_entropy",
        "js_forget",
        "js_test",
        "time_s",
    ),
    "classes": (
        "forget_acc",
        "retain_acc",
        "test_class_acc",
        "test_other_acc",
        "attack_rate",
        "forget_entropy",
        "js_forget",
        "js_test",
        "time_s",
    ),
}
PERCENT = ("_acc", "attack_rate")


def cell(key: str, value: tuple[float, float] | None, seeds: int) -> str:
    if value is None or math.isnan(value[0]):
        return "-"
    m, s = value
    if key.endswith(PERCENT):
        m, s, fmt = 100 * m, 100 * s, "{:.1f}"
    elif key == "time_s":
        fmt = "{:.1f}"
    elif key.startswith("js_"):
        fmt = "{:.4f}"
    else:
        fmt = "{:.3f}"
    return fmt.format(m) + (" ± " + fmt.format(s) if seeds > 1 else "")


def table(summary: dict, cols: Sequence[str], title: str, label_prefix: str = "") -> list[str]:
    seeds = len(summary["seeds"])
    lines = [
        f"**{title}**",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for label in summary["models"]:
        cells = [cell(c, summary[label].get(c), seeds) for c in cols]
        lines.append(f"| {label_prefix}{label} | " + " | ".join(cells) + " |")
    return lines


# Issue 7's fidelity targets (means over seeds): (metric, heading, tolerance, against the
# retrained model's mean (True) or an absolute ceiling (False)). The 2 s request target is the
# time_s column of PGU's rows.
TARGETS = {
    "samples": (
        ("forget_acc", "forget − retrained (±1.5)", 0.015, True),
        ("test_acc", "test − retrained (±0.5)", 0.005, True),
        ("js_forget", "JS forget (≤ .030)", 0.030, False),
        ("attack_rate", "attack − retrained (±2)", 0.02, True),
    ),
    "classes": (
        ("forget_acc", "forget, train (≤ 1)", 0.01, False),
        ("test_class_acc", "class on test (≤ 1)", 0.01, False),
        ("test_other_acc", "others on test − retrained (±1)", 0.01, True),
    ),
}


def verdicts(summary: dict, kind: str) -> list[tuple[str, list[str], bool]]:
    """Each unlearned model's standing on the :data:`TARGETS` of ``kind``: (label, cells, all met).

    Empty without a retrained model (a step of (b) whose gold standard was not retrained).
    Points are percentage points; a target whose metric is missing counts as not met.
    """
    gold = summary.get("retrained")
    if gold is None:
        return []
    rows = []
    for label in summary["models"]:
        if label in ("original", "retrained") or label not in summary:
            continue
        cells, met = [], True
        for key, _, tol, relative in TARGETS[kind]:
            mean = summary[label].get(key, (math.nan,))[0]
            value = mean - gold.get(key, (math.nan,))[0] if relative else mean
            ok = abs(value) <= tol + 1e-12 if relative else value <= tol + 1e-12
            met = met and ok  # NaN compares False: a missing metric fails
            text = f"{100 * value:+.1f}" if relative else f"{100 * value:.1f}"
            if key.startswith("js_"):
                text = f"{value:.4f}"
            cells.append(f"{text} {'✓' if ok else '✗'}")
        rows.append((label, cells, met))
    return rows


def targets_table(summary: dict, kind: str, title: str) -> list[str]:
    """:func:`verdicts` as a markdown table (no lines without a retrained model)."""
    rows = verdicts(summary, kind)
    if not rows:
        return []
    heads = [head for _, head, _, _ in TARGETS[kind]]
    lines = [f"**{title}**", "", "| model | " + " | ".join(heads) + " | all |"]
    lines.append("|---|" + "---:|" * (len(heads) + 1))
    for label, cells, met in rows:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'✓' if met else '✗'} |")
    return lines + [""]


def timing_line(summary: dict, epochs: int) -> str:
    t = summary["timing"]
    retrain = t["retrain_s"][0]
    retrain_text = (
        f"retraining {retrain:.1f}"
        if not math.isnan(retrain)
        else "no retraining at this step (ratios against the original's training)"
    )
    # the baselines' rows: every label that is neither a model of MODELS nor a PGU variant
    reference = t["train_original_s"][0] if math.isnan(retrain) else retrain
    baselines = [
        f"{label} {summary[label]['time_s'][0] / reference:.3f}"
        for label in summary["models"]
        if label not in MODELS and not label.startswith("pgu:") and "time_s" in summary[label]
    ]
    return (
        f"times (s, mean over seeds): original training {t['train_original_s'][0]:.1f}, "
        f"R_full {t['full_stats_s'][0]:.1f}, {retrain_text}; PGU request "
        f"{t['request_s'][0]:.1f} = R_forget {t['forget_stats_s'][0]:.2f} + bases "
        f"{t['bases_s'][0]:.2f} + unlearning {t['unlearn_s'][0]:.2f}; request / retraining "
        f"{t['request_over_retrain'][0]:.3f} at {epochs} epochs, "
        f"{t['request_over_paper_retrain'][0]:.4f} of a {PAPER_EPOCHS}-epoch retraining "
        f"(extrapolated)"
        + (f"; baselines / retraining: {', '.join(baselines)}" if baselines else "")
        + (
            "; NOTE: training times loaded from --state-dir (an earlier run's): the ratios "
            "against them are not measured in one run"
            if summary.get("times_from_state_dir")
            else ""
        )
        + f"; stops {summary['stop_reasons']}, epochs run {summary['epochs_run']}"
        + "".join(
            f"; {name} {'; '.join(stops)}"
            for name, stops in summary.get("baseline_stops", {}).items()
        )
    )


def reference_table(runs: list[dict]) -> list[str]:
    """Scenario (a) per seed next to the reference code's measurements (issue 7)."""

    def ours(label: str, key: str) -> str:
        vals = [r["models"][label].get(key, math.nan) for r in runs]
        if key.endswith("_acc"):
            return " / ".join(f"{100 * v:.1f}" for v in vals)
        return " / ".join(f"{v:.3f}" for v in vals)

    def ref(values: list[float], acc: bool) -> str:
        return " / ".join(f"{100 * v:.1f}" if acc else f"{v:.3f}" for v in values)

    r = REFERENCE
    rows = [
        (
            "original forget acc",
            ref(r["original"]["forget_acc"], True),
            ours("original", "forget_acc"),
        ),
        ("original test acc", ref(r["original"]["test_acc"], True), ours("original", "test_acc")),
        (
            "original JS to retrained (forget)",
            ref(r["original"]["js_forget"], False),
            ours("original", "js_forget"),
        ),
        (
            "retrained forget acc",
            ref(r["retrained"]["forget_acc"], True),
            ours("retrained", "forget_acc"),
        ),
        (
            "retrained test acc",
            ref(r["retrained"]["test_acc"], True),
            ours("retrained", "test_acc"),
        ),
        (
            "PGU forget acc",
            "paper LR: = original; LR×20: " + ref(r["pgu_lr_x20"]["forget_acc"], True),
            ours("pgu", "forget_acc"),
        ),
        (
            "PGU test acc",
            "LR×20: " + ref(r["pgu_lr_x20"]["test_acc"], True),
            ours("pgu", "test_acc"),
        ),
        (
            "PGU JS to retrained (forget)",
            "LR×20: " + ref(r["pgu_lr_x20"]["js_forget"], False),
            ours("pgu", "js_forget"),
        ),
        (
            "PGU request time (s)",
            " / ".join(f"{v:.0f}" for v in r["request_s"]) + " (H200)",
            " / ".join(f"{x['timing']['request_s']:.1f}" for x in runs),
        ),
    ]
    lines = [
        "**(a) against the reference code (issue 7; 60 epochs, seeds 0 / 1, H200)**",
        "",
        "| quantity | reference | this run, per seed |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def report(runs: list[dict], args: argparse.Namespace, info: dict) -> tuple[str, dict]:
    """The markdown report and the per-scenario summaries."""
    lines: list[str] = []
    summaries: dict = {}
    single = {
        "a": (
            "samples",
            f"(a) {args.forget_per_class} random training images of every class, drawn per seed"
            if getattr(args, "forget_draw", "first") == "random"
            else f"(a) the first {args.forget_per_class} training images of every class",
        ),
        "c": (
            "classes",
            f"(c) every training image of class {args.forget_class} "
            f"({info['classes'][args.forget_class]})",
        ),
    }
    for scenario in args.scenarios:
        mine = [r for r in runs if r["scenario"] == scenario]
        if not mine:
            lines += [f"**({scenario})**: not run (time budget)", ""]
            continue
        if scenario in single:
            kind, title = single[scenario]
            s = summarise(mine)
            summaries[scenario] = s
            lines += table(s, COLUMNS[kind], f"{title}; {len(mine)} seed(s)")
            lines += ["", timing_line(s, args.epochs), ""]
            lines += targets_table(s, kind, f"({scenario}) against issue 7's targets")
            if scenario == "a":
                lines += reference_table(mine) + [""]
            continue
        summaries["b"] = {}
        cols = COLUMNS["samples"]
        head = [
            "**(b) incremental: request k forgets the next "
            f"{args.forget_per_class} training images of every class; accuracies on all "
            "images forgotten so far**",
            "",
            "| step | model | " + " | ".join(cols) + " | request acc |",
            "|---|---|" + "---:|" * (len(cols) + 1),
        ]
        lines += head
        timings = []
        for k in range(1, args.increments + 1):
            at_k = [r for r in mine if r["step"] == k]
            if not at_k:
                continue
            s = summarise(at_k)
            summaries["b"][k] = s
            seeds = len(at_k)
            for label in s["models"]:
                if label in s:
                    cells = [cell(c, s[label].get(c), seeds) for c in cols]
                    req = cell("request_acc", s[label].get("request_acc"), seeds)
                    lines.append(f"| {k} | {label} | " + " | ".join(cells) + f" | {req} |")
            timings.append(f"step {k}: " + timing_line(s, args.epochs))
        lines += [""] + [f"- {t}" for t in timings] + [""]
        for k, s in summaries["b"].items():
            lines += targets_table(s, "samples", f"(b) step {k} against issue 7's targets")
    return "\n".join(lines), summaries


def describe(
    args: argparse.Namespace,
    info: dict,
    env: dict,
    model: str,
    gamma: float,
    config: str,
    wall_s: float,
    skipped: list[str],
) -> str:
    """The report's first line: data, recipe, seeds, parameters, device and wall time."""
    seeds = sorted(
        set(
            getattr(args, "seed_list", None) or range(args.first_seed, args.first_seed + args.seeds)
        )
    )
    where = "" if env["device"].startswith("cuda") else " (CPU: a smoke run, not a fidelity result)"
    return (
        f"PGU vs retraining on CIFAR-10 ({model}, input {tuple(info['in_shape'])}), "
        f"{info['sizes']['train']} train / {info['sizes']['val']} val / {info['sizes']['test']} "
        f"test, {args.epochs} training epochs, seeds {', '.join(map(str, seeds))}, gamma {gamma}, "
        f"{config}, device {env['gpu'] or env['device']}{where}; wall {wall_s:.0f}s"
        + (f"; skipped for time: {skipped}" if skipped else "")
    )


def merge(paths: Sequence[str], out: Path | None) -> str:
    """One report from the results.json of several runs of the same settings (e.g. one seed
    each, run side by side on one GPU); written to ``out`` when given."""
    payloads = [json.loads(Path(path).read_text()) for path in paths]
    first = payloads[0]
    same = (
        "epochs",
        "forget_per_class",
        "increments",
        "forget_class",
        "train_per_class",
        "eval_per_class",
        "image_size",
        "unlearn",
        "variant",
        "incremental_gold",
        "model",
        "train",
        "forget_draw",
        "baselines",
    )
    for path, payload in zip(paths, payloads, strict=True):
        # `or None`: an option added later (absent from older results) means its default
        differ = [
            k for k in same if (payload["args"].get(k) or None) != (first["args"].get(k) or None)
        ]
        if differ or payload["config"] != first["config"] or payload["gamma"] != first["gamma"]:
            raise SystemExit(
                f"--merge: {path} was run with other settings than {paths[0]} "
                f"({differ or 'unlearning config or gamma'}); merge runs of one setting only"
            )
    runs = [r for payload in payloads for r in payload["runs"]]
    keys = [(r["scenario"], r["seed"], r["step"]) for r in runs]
    if len(set(keys)) != len(keys):
        raise SystemExit(
            "--merge: two runs hold the same scenario, seed and step; merge runs of different seeds"
        )
    runs.sort(key=lambda r: (r["scenario"], r["seed"], r["step"]))
    args = argparse.Namespace(**first["args"])
    args.scenarios = [s for s in SCENARIOS if any(s in p["args"]["scenarios"] for p in payloads)]
    args.seed_list = sorted({r["seed"] for r in runs})
    skipped = [item for payload in payloads for item in payload["skipped"]]
    text, summaries = report(runs, args, first["data"])
    header = (
        describe(
            args,
            first["data"],
            first["env"],
            first["model"],
            first["gamma"],
            first["config"],
            max(p["wall_s"] for p in payloads),
            skipped,
        )
        + f" (merged from {len(paths)} runs; wall = the longest)"
    )
    text = header + "\n\n" + text
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text + "\n")
        merged = {
            "merged_from": list(paths),
            "args": vars(args),
            "env": first["env"],
            "data": first["data"],
            "model": first["model"],
            "gamma": first["gamma"],
            "config": first["config"],
            "summary": summaries,
            "runs": runs,
            "skipped": skipped,
        }
        (out / "results.json").write_text(json.dumps(merged, indent=1, default=float))
    return text
