"""Speed benchmark: one deletion request, phase by phase, against retraining from scratch.

Workloads:

- ``digits``: digits_cnn on the CPU, with the data split and training recipe of conf/base and a
  request for a random 10% of the train split (like the bundled req-0001).
- ``cifar``: small_vgg on synthetic CIFAR-10-shaped data (3x32x32 uint8, 10 classes; class
  templates under noise, with 20% of the labels flipped so that the model has something to
  memorise), on the device of ``--device`` (auto: CUDA when present). Sample counts are
  parameters: the issue's setting is 50,000 train samples and a 1,000-sample request.

Phases of a request, as ``pgu.core.deletion.execute_request`` runs them: forget statistics
(R_forget with the original model), eigendecomposition (R_retain = R_full - R_forget and the lean
CGS bases), unlearning (``pgu.core.unlearning.unlearn``, its per-epoch stop checks included) and
evaluation (accuracy of the result on the forget, val and test samples). Also timed: training
the original and retraining from scratch on the retain samples with the same recipe, the
full-data statistics (once per model), one epoch of projected descent alone, and one stop check.
Reports the memory of the stored bases (lean, M only, and d x d projectors).

Prints a markdown table and one JSON line. Every process runs with ``--threads`` torch threads
(default 1: on a shared CPU, MKL threads that wait on a busy core slow everything down).

    PYTHONPATH=src .venv/bin/python bench/speed.py                       # GPU-sized defaults
    PYTHONPATH=src .venv/bin/python bench/speed.py --cifar-train 1000 --cifar-forget 100 \\
        --cifar-val 200 --cifar-test 200 --cifar-epochs 1                # a CPU-sized run

Only the framework-free core is imported (no Kedro), so the script also runs where only torch,
numpy, pandas, scikit-learn (with its scipy and threadpoolctl) and safetensors are installed;
without PyYAML the digits recipe falls back to the values below, which mirror conf/base.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgu.core.cgs import (
    basis_bytes,
    compute_bases,
    retain_statistics,
    spectrum,
    spectrum_columns,
)
from pgu.core.checkpoint import model_spec
from pgu.core.data import SampleSet, indexed_samples, normalisation_stats, split_set
from pgu.core.projection import projected_parameters
from pgu.core.representation import collect_representations, collect_representations_sharded
from pgu.core.sources import load_source
from pgu.core.splits import split_index
from pgu.core.training import (
    TrainRecipe,
    accuracy_and_loss,
    fit_from_scratch,
    predict_logits,
    resolve_device,
)
from pgu.core.unlearning import (
    CapturedStep,
    UnlearnConfig,
    capture_step,
    descent_epoch,
    unlearn,
)

logger = logging.getLogger("bench.speed")

ROOT = Path(__file__).resolve().parents[1]

# The reference code's phases on one H200, 50k CIFAR-10-sized samples, SmallVGG (issue 6), s.
REFERENCE_H200 = {
    "full_statistics": 14.5,
    "eigendecomposition": 11.6,  # 10.9 s of it torch.svd of the 8192 x 8192 head matrix
    "unlearning_epoch": 0.27,  # 1,000 samples; a vectorised loss with thin bases: 0.043 s
    "training_epoch": 0.71,
    "paper_epochs": 200,
}

# conf/base values, used when PyYAML is not installed
DIGITS_DEFAULTS = {
    "split": {"fractions": {"train": 0.7, "val": 0.15, "test": 0.15}, "seed": 0},
    "model": {"name": "digits_cnn", "kwargs": {}},
    "recipe": {
        "epochs": 20,
        "batch_size": 64,
        "lr": 0.05,
        "lr_end": 0.001,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "crop_padding": 0,
        "horizontal_flip": False,
        "seed": 0,
    },
    "gamma": 0.95,
    "chunk_size": 256,
}


@dataclass
class Workload:
    """Everything one request needs: data on the CPU, the model, the recipe, the device."""

    name: str
    spec: dict
    train: SampleSet
    val: SampleSet
    test: SampleSet
    forget_ids: np.ndarray
    recipe: TrainRecipe
    gamma: float
    chunk_size: int
    device: torch.device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn(), wall seconds), with the device's queued work finished at both ends."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


# --- workloads ------------------------------------------------------------------------------


def _conf() -> dict:
    """The digits split, model, recipe, gamma and chunk size from conf/base (or the defaults)."""
    try:
        import yaml
    except ImportError:
        logger.warning("PyYAML is missing: digits uses the built-in copy of conf/base")
        return DIGITS_DEFAULTS
    conf = ROOT / "conf" / "base"
    data = yaml.safe_load((conf / "parameters_data.yml").read_text())["data"]
    train = yaml.safe_load((conf / "parameters_train.yml").read_text())
    cgs = yaml.safe_load((conf / "parameters_cgs.yml").read_text())["cgs"]
    rep = yaml.safe_load((conf / "parameters_representation.yml").read_text())["representation"]
    return {
        "split": data["split"],
        "model": train["model"],
        "recipe": train["train"]["recipe"],
        "gamma": cgs["gamma"],
        "chunk_size": rep["batch_size"],
    }


def digits_workload(forget_fraction: float, seed: int) -> Workload:
    """The project's digits setting, on the CPU; forget a seeded random part of train."""
    conf = _conf()
    raw = load_source("digits")
    index = split_index(raw.y, raw.origin, raw.keys, conf["split"])
    data = indexed_samples(raw.x, raw.y, index, len(raw.classes))
    train, val, test = (split_set(data, index, s) for s in ("train", "val", "test"))
    rng = np.random.default_rng(seed)
    n_forget = round(forget_fraction * len(train))
    forget_ids = np.sort(rng.choice(train.sample_id.numpy(), n_forget, replace=False))
    spec = model_spec(
        conf["model"]["name"],
        data.in_shape,
        data.num_classes,
        **(conf["model"].get("kwargs") or {}),
    )
    return Workload(
        "digits",
        spec,
        train,
        val,
        test,
        forget_ids,
        TrainRecipe.from_params(conf["recipe"]),
        float(conf["gamma"]),
        int(conf["chunk_size"]),
        torch.device("cpu"),
    )


def cifar_shaped(n: int, seed: int, label_noise: float = 0.2) -> tuple[Tensor, Tensor]:
    """n synthetic 3x32x32 uint8 images of 10 classes and their (partly flipped) labels."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, 3, 8, 8, generator=g)  # coarse, upsampled: image-like blobs
    templates = torch.nn.functional.interpolate(templates, size=32, mode="bilinear")
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, n, 8192):  # bounded float memory
        stop = min(n, start + 8192)
        noise = torch.rand(stop - start, 3, 32, 32, generator=g)
        x[start:stop] = ((0.45 * templates[y[start:stop]] + 0.55 * noise) * 255).to(torch.uint8)
    flip = torch.rand(n, generator=g) < label_noise
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    return x, y


def cifar_workload(args: argparse.Namespace, device: torch.device) -> Workload:
    """Synthetic CIFAR-10-shaped data and small_vgg on ``device``."""
    sizes = (args.cifar_train, args.cifar_val, args.cifar_test)
    x, y = cifar_shaped(sum(sizes), args.seed)
    mean, std = normalisation_stats(x[: sizes[0]])
    data = SampleSet(x, y, torch.arange(len(y)), mean, std, 10)
    a, b = sizes[0], sizes[0] + sizes[1]  # train | val | test, in sample order
    train, val, test = (data.take(torch.arange(lo, hi)) for lo, hi in ((0, a), (a, b), (b, len(y))))
    rng = np.random.default_rng(args.seed)
    forget_ids = np.sort(rng.choice(args.cifar_train, args.cifar_forget, replace=False))
    recipe = TrainRecipe(epochs=args.cifar_epochs, batch_size=128, lr=0.05, lr_end=0.005)
    spec = model_spec("small_vgg", (3, 32, 32), 10)
    return Workload("cifar", spec, train, val, test, forget_ids, recipe, 0.95, 256, device)


# --- measurements ---------------------------------------------------------------------------


def warm_up(w: Workload) -> None:
    """First calls on a device pay for kernels, handles and allocator growth: not ours."""
    small = w.train.take(torch.arange(min(len(w.train), 2 * w.recipe.batch_size)))
    model, _ = fit_from_scratch(
        w.spec, small.to(w.device), replace(w.recipe, epochs=1), device=w.device
    )
    collect_representations(model, small.batches(8), device=w.device)
    for eigh_dtype in ("float64", "float32"):  # both are timed below (float32 once, not a median)
        eye = torch.eye(64, dtype=torch.float64, device=w.device)
        spectrum(eye, eigh_dtype)
        spectrum_columns(eye, lambda lam: (0, 8), eigh_dtype)


def descent_model(model: torch.nn.Module, bases: dict, device) -> tuple:
    """A copy of ``model`` prepared as ``unlearn`` prepares it: (copy, the weights it moves)."""
    model = copy.deepcopy(model).to(device).eval()
    params = projected_parameters(model, bases)
    chosen = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    return model, params


def profiled_request(w: Workload, original, bases: dict, config: UnlearnConfig) -> None:
    """One more request, untimed by the table: its unlearning loop's timeline (seconds from the
    call to each history record and to the return), then its forget statistics and unlearning
    under torch.profiler with the kernels' share of the wall time (``bench/profile_request.py``'s
    summaries; not the eigendecompositions, which ran for minutes under the profiler). ``bases``
    are those of the timed requests."""
    from profile_request import busy_summary, top_ops  # beside this script
    from torch.profiler import ProfilerActivity, profile

    dev = w.device
    forget = w.train.with_ids(w.forget_ids)
    marks: list[tuple[int, float]] = []
    _sync(dev)
    begin = time.perf_counter()
    unlearn(
        original,
        bases,
        forget,
        w.val,
        config,
        device=dev,
        on_epoch=lambda rec: marks.append((rec["epoch"], time.perf_counter() - begin)),
    )
    _sync(dev)
    end = time.perf_counter() - begin
    logger.info(
        "unlearn timeline (s from the call): %s; returned at %.3f",
        ", ".join(f"record {e} at {s:.3f}" for e, s in marks),
        end,
    )
    phases = {
        "forget statistics": lambda: collect_representations(
            original, forget.batches(w.chunk_size), device=dev, keep_on_device=True
        ),
        "unlearning": lambda: unlearn(original, bases, forget, w.val, config, device=dev),
    }
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    for name, fn in phases.items():
        with profile(activities=activities) as prof:
            _, wall = timed(fn, dev)
        print(f"\n## {w.name}: {name} (profiled)\n{busy_summary(prof, wall)}")
        print(top_ops(prof, dev, 16), flush=True)


def run(
    w: Workload, unlearn_params: dict | None = None, repeats: int = 3, profile: bool = False
) -> dict:
    """Every phase of one request on workload ``w``, against training from scratch.

    ``unlearn_params`` override ``UnlearnConfig``'s defaults (conf/base uses the defaults). The
    request runs ``repeats`` times: each phase is reported as its median, the request as the
    median of the repeats' totals (every total is in the JSON).
    """
    dev = w.device
    forget = w.train.with_ids(w.forget_ids)
    retain = w.train.without_ids(w.forget_ids)
    logger.info(
        "%s: %d train (%d forget), %d val, %d test on %s",
        w.name,
        len(w.train),
        len(forget),
        len(w.val),
        len(w.test),
        dev,
    )
    warm_up(w)
    t: dict[str, float] = {}
    (original, _), t["train_original"] = timed(
        lambda: fit_from_scratch(w.spec, w.train.to(dev), w.recipe, device=dev), dev
    )
    _, t["retrain"] = timed(
        lambda: fit_from_scratch(w.spec, retain.to(dev), w.recipe, device=dev), dev
    )
    full, t["full_statistics"] = timed(
        lambda: collect_representations_sharded(
            original, w.train.to(dev), w.chunk_size, device=dev
        ),
        dev,
    )
    if dev.type == "cuda":  # the representation node's path: samples in host memory, normalised
        full, t["full_statistics_host"] = timed(  # there chunk by chunk and copied over
            lambda: collect_representations_sharded(original, w.train, w.chunk_size, device=dev),
            dev,
        )  # the requests use these: their R_forget is normalised on the host too (on a GPU a
        # division by a scalar is a multiplication by its reciprocal), so R_retain is exact
    # --- the request, as pgu.core.deletion.execute_request runs it (median of the repeats)
    config = UnlearnConfig.from_params(unlearn_params or {})
    phases: list[tuple[float, float, float]] = []
    for _ in range(repeats):
        r_forget, t_stats = timed(
            lambda: collect_representations(
                original, forget.batches(w.chunk_size), device=dev, keep_on_device=True
            ),
            dev,
        )
        (bases, summary), t_bases = timed(
            lambda r=r_forget: compute_bases(
                retain_statistics(full, r, device=dev), w.gamma, device=dev
            ),
            dev,
        )
        result, t_unlearn = timed(
            lambda b=bases: unlearn(original, b, forget, w.val, config, device=dev), dev
        )
        phases.append((t_stats, t_bases, t_unlearn))
    t["forget_statistics"], t["eigendecomposition"], t["unlearning"] = (
        statistics.median(p) for p in zip(*phases, strict=True)
    )
    request_runs = [sum(p) for p in phases]
    if profile:
        profiled_request(w, original, bases, config)
    # the same request with float32 eigendecompositions (cgs.eigh_dtype: float32)
    (bases32, summary32), t["eigendecomposition_float32"] = timed(
        lambda: compute_bases(
            retain_statistics(full, r_forget, device=dev), w.gamma, device=dev, eigh_dtype="float32"
        ),
        dev,
    )
    result32, t["unlearning_float32"] = timed(
        lambda: unlearn(original, bases32, forget, w.val, config, device=dev), dev
    )
    t["request_float32"] = (
        t["forget_statistics"] + t["eigendecomposition_float32"] + t["unlearning_float32"]
    )
    accs32 = {
        name: accuracy_and_loss(result32.model, s.to(dev), device=dev)[0]
        for name, s in (("forget", forget), ("val", w.val), ("test", w.test))
    }
    accs, t["evaluation"] = timed(
        lambda: {
            name: accuracy_and_loss(result.model, s.to(dev), device=dev)[0]
            for name, s in (("forget", forget), ("val", w.val), ("test", w.test))
        },
        dev,
    )
    # --- per-epoch costs, apart from the stopping rule
    # one epoch of the loop's own update code (calibrated step), without the stop check
    model, params = descent_model(original, bases, dev)
    on_dev = {name: b.to(dev) for name, b in bases.items()}
    forget_dev = forget.to(dev)

    def epoch_seconds(captured: CapturedStep | None = None) -> float:
        """Median of three epochs, eager or replaying ``captured``."""
        return statistics.median(
            timed(
                lambda: descent_epoch(
                    model, params, on_dev, forget_dev, config, 1e-3, 0, dev, None, None, captured
                ),
                dev,
            )[1]
            for _ in range(3)
        )

    t["unlearning_epoch"] = epoch_seconds()
    if dev.type == "cuda" and torch.get_num_threads() != 1:
        # bench/profile_request.py (one torch thread, random weights) timed 0.057 s where this
        # script (--threads 8) timed 0.090 s on an H200: the same epoch on one thread tells
        # whether the thread count is the difference
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t["unlearning_epoch_1thread"] = epoch_seconds()
        finally:
            torch.set_num_threads(threads)
    if dev.type == "cuda":  # the experimental captured descent: unlearn(..., cuda_graph=True)
        graphed = [
            timed(
                lambda b=bases: unlearn(
                    original, b, forget, w.val, config, device=dev, cuda_graph=True
                ),
                dev,
            )
            for _ in range(repeats)
        ]
        t["unlearning_cuda_graph"] = statistics.median(g[1] for g in graphed)
        kept = graphed[-1][0].kept_record()  # to set beside the eager run's (GPU round-off apart)
        logger.info(
            "cuda_graph: %s after %d epochs, forget_acc %.4f val_acc %.4f (eager: %s after %d "
            "epochs, forget_acc %.4f val_acc %.4f)",
            graphed[-1][0].stop_reason,
            graphed[-1][0].epochs_run,
            kept["forget_acc"],
            kept["val_acc"],
            result.stop_reason,
            result.epochs_run,
            result.kept_record()["forget_acc"],
            result.kept_record()["val_acc"],
        )
        t["request_cuda_graph"] = (
            t["forget_statistics"] + t["eigendecomposition"] + t["unlearning_cuda_graph"]
        )
        captured = capture_step(model, params, on_dev, forget_dev, config, dev, None, None)
        if captured is not None:  # None: the capture failed (logged)
            t["unlearning_epoch_cuda_graph"] = epoch_seconds(captured)
    placed = copy.deepcopy(original).to(dev)  # where unlearn() keeps its model
    _, t["stop_check"] = timed(
        lambda: [predict_logits(placed, s, device=dev) for s in (forget, w.val)], dev
    )
    t["request"] = statistics.median(request_runs)
    t["request_full_budget"] = (
        t["forget_statistics"]
        + t["eigendecomposition"]
        + config.epochs * (t["unlearning_epoch"] + t["stop_check"])
    )
    d_k = [(s["d"], s["k"]) for s in summary]
    memory = {
        "lean_bytes": basis_bytes(bases),
        "cgs_only_bytes": 4 * sum(d * k for d, k in d_k),
        "projector_bytes": 4 * sum(d * d for d, _ in d_k),
    }
    return {
        "workload": w.name,
        "device": str(dev),
        "model": w.spec["name"],
        "n_train": len(w.train),
        "n_forget": len(forget),
        "n_val": len(w.val),
        "train_epochs": w.recipe.epochs,
        "seconds": t,
        "retrain_over_request": t["retrain"] / t["request"],
        "request_repeats": request_runs,
        "unlearn": {
            "epochs_run": result.epochs_run,
            "stop_reason": result.stop_reason,
            "budget": config.epochs,
        },
        "accuracy_after": accs,
        "float32_eigh": {
            "k": [s["k"] for s in summary32],
            "k_float64": [s["k"] for s in summary],
            "accuracy_after": accs32,
            "epochs_run": result32.epochs_run,
            "stop_reason": result32.stop_reason,
        },
        "bases": {
            **memory,
            "layers": [{"layer": s["layer"], "d": s["d"], "k": s["k"]} for s in summary],
        },
    }


# --- report ---------------------------------------------------------------------------------

ROWS = [
    ("forget_statistics", "forget statistics (R_forget)"),
    ("eigendecomposition", "eigendecomposition (R_retain, lean bases)"),
    ("unlearning", "unlearning (with its stop checks)"),
    ("request", "**request** (the three above)"),
    ("eigendecomposition_float32", "eigendecomposition with float32 eigh"),
    ("request_float32", "request with float32 eigh"),
    ("evaluation", "evaluation (forget, val, test accuracy)"),
    ("unlearning_epoch", "one epoch of projected descent"),
    ("unlearning_epoch_1thread", "the same on one torch CPU thread"),
    ("unlearning_epoch_cuda_graph", "the same, replayed as a CUDA graph (experimental)"),
    ("unlearning_cuda_graph", "unlearning with cuda_graph (capture included)"),
    ("request_cuda_graph", "request with cuda_graph"),
    ("stop_check", "one stop check (forget + val predictions)"),
    ("request_full_budget", "request if the whole epoch budget runs"),
    ("full_statistics", "full-data statistics (once per model)"),
    ("full_statistics_host", "the same from host memory (the representation node's path)"),
    ("train_original", "training the original"),
    ("retrain", "**retraining from scratch** on the retain set"),
]


def table(results: list[dict]) -> str:
    """Markdown: seconds and fraction of retraining per phase, one column pair per workload."""
    head = "| phase | " + " | ".join(f"{r['workload']} s | / retrain" for r in results) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(results)]
    for key, label in ROWS:
        cells = []
        for r in results:
            s = r["seconds"].get(key)  # the CUDA-graph rows exist on CUDA only
            cells.append("– | –" if s is None else f"{s:.3f} | {s / r['seconds']['retrain']:.4f}")
        if any(c != "– | –" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        mb = {k: v / 2**20 for k, v in r["bases"].items() if k.endswith("bytes")}
        lines.append(
            f"- {r['workload']} ({r['model']}, {r['device']}, {r['n_train']} train, "
            f"{r['n_forget']} forget, {r['train_epochs']} training epochs): the request takes "
            f"{100 / r['retrain_over_request']:.1f}% of retraining's time; unlearning ran "
            f"{r['unlearn']['epochs_run']}/{r['unlearn']['budget']} epochs "
            f"({r['unlearn']['stop_reason']}); bases {mb['lean_bytes']:.2f} MiB lean vs "
            f"{mb['cgs_only_bytes']:.2f} MiB as M only vs {mb['projector_bytes']:.2f} MiB as "
            "projectors"
        )
        f32 = r["float32_eigh"]
        lines.append(
            f"  float32 eigh: k per layer {f32['k']} (float64: {f32['k_float64']}); after "
            f"unlearning {f32['epochs_run']} epochs ({f32['stop_reason']}) accuracies "
            + ", ".join(f"{k} {v:.4f}" for k, v in f32["accuracy_after"].items())
            + " (float64: "
            + ", ".join(f"{k} {v:.4f}" for k, v in r["accuracy_after"].items())
            + ")"
        )
        if r["workload"] != "cifar":
            continue
        s, ref = r["seconds"], REFERENCE_H200
        per_epoch = s["retrain"] / r["train_epochs"]
        paper = per_epoch * ref["paper_epochs"]
        lines.append(
            f"  retraining for {ref['paper_epochs']} epochs (the paper's count) of this bench's "
            f"recipe (batch 128, no augmentation) ≈ {paper:.1f} s "
            f"({per_epoch:.3f} s/epoch measured): the request takes "
            f"{100 * s['request'] / paper:.2f}% of it"
        )
        if r["device"].startswith("cuda"):
            lines.append(
                f"  vs the reference code's phases on one H200 (50k samples, 1,000 to forget): "
                f"full statistics ×{ref['full_statistics'] / s['full_statistics']:.1f}"
                + (
                    f" (from host memory ×{ref['full_statistics'] / s['full_statistics_host']:.1f})"
                    if "full_statistics_host" in s
                    else ""
                )
                + ", "
                f"retain space ×{ref['eigendecomposition'] / s['eigendecomposition']:.1f} "
                f"(float32 eigh ×"
                f"{ref['eigendecomposition'] / s['eigendecomposition_float32']:.1f}), "
                f"unlearning epoch ×{ref['unlearning_epoch'] / s['unlearning_epoch']:.1f}"
                + (
                    f" (as a CUDA graph ×"
                    f"{ref['unlearning_epoch'] / s['unlearning_epoch_cuda_graph']:.1f})"
                    if "unlearning_epoch_cuda_graph" in s
                    else ""
                )
                + f", training epoch ×{ref['training_epoch'] / per_epoch:.2f} faster"
            )
    return "\n".join(lines)


def scalar(text: str) -> Any:
    """'0.05' -> 0.05, '3' -> 3, 'fixed' -> 'fixed' (a JSON scalar, else the string)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="digits,cifar", help="comma-separated")
    parser.add_argument("--device", default="auto", help="cifar workload: auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of the request (medians reported)"
    )
    parser.add_argument("--digits-forget", type=float, default=0.1, help="fraction of train")
    parser.add_argument("--cifar-train", type=int, default=50_000)
    parser.add_argument("--cifar-forget", type=int, default=1_000)
    parser.add_argument("--cifar-val", type=int, default=5_000)
    parser.add_argument("--cifar-test", type=int, default=5_000)
    parser.add_argument("--cifar-epochs", type=int, default=10, help="training recipe epochs")
    parser.add_argument(
        "--unlearn",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an UnlearnConfig field (repeatable), e.g. lr_start=0.05",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run one request under torch.profiler (tables printed, not in the JSON)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    logger.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    overrides = {k: scalar(v) for k, v in (kv.split("=", 1) for kv in args.unlearn)}
    results = []
    for name in args.workloads.split(","):
        if name == "digits":
            workload = digits_workload(args.digits_forget, args.seed)
            results.append(run(workload, overrides, args.repeats, args.profile))
        elif name == "cifar":
            workload = cifar_workload(args, resolve_device(args.device))
            results.append(run(workload, overrides, args.repeats, args.profile))
        else:
            parser.error(f"unknown workload {name!r}; choose digits and/or cifar")
    print(table(results))
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    print(json.dumps({"bench": "speed", "env": env, "unlearn": overrides, "results": results}))


if __name__ == "__main__":
    main()
