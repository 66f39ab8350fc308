"""Where a request's time goes on a GPU, phase by phase (torch.profiler; run by hand).

Issue 6's GPU targets still missed (H200, bench/speed.py, 50k CIFAR-shaped samples): full-data
statistics x4.5 against the reference code (x5 asked), an unlearning epoch x3.2 (x5 asked), a
request 3.14 s (2 s asked). None of these phases was ever profiled on a GPU. This script, on
SmallVGG with CIFAR-shaped synthetic data and bases of the sizes the H200 run chose (``--k``;
random orthonormal columns in the lean stored form; per-batch costs do not depend on what the
model learnt, so nothing is trained), prints for each phase the median wall time and the
profiler's table of the operators that take the most time (self time on the device when there
is one), with the kernels' share of the wall time and the host calls that wait on the device:

- full-data statistics over ``--n-full`` samples (``collect_representations_sharded``, data
  on the CPU as the representation node reads it), also timed with conv rows from
  ``layer_rows`` instead of kernel-major (``KERNEL_MAJOR_DEVICES``);
- forget statistics (R_forget of ``--n-forget`` samples, kept on the device as a request does);
- the retain space: R_full - R_forget and every layer's eigendecomposition (gamma 0.95); not
  profiled (under the profiler it ran for minutes on an H200; eigh through MAGMA, 7.2 s against
  cuSOLVER's 0.7 on an H200 in run 5, is no longer timed);
- one unlearning epoch (batches of 64), also with its full batches replayed as one captured
  CUDA graph (``unlearn(..., cuda_graph=True)``, experimental), and one stop check (forget +
  val predictions).

Run 4 of ``bench/results/h200-2026-11-27`` also timed Gram split depths 0, 1, 2 and unlimited
(1.10, 1.04, 1.12, 2.48 s: a GPU keeps 1), TF32 matrix products and channels-last for the
descent (no gain); README has the figures.

One JSON line closes the output.

    PYTHONPATH=src python3 bench/profile_request.py               # GPU sizes
    .venv/bin/python bench/profile_request.py --device cpu --n-forget 128 --n-val 256 \
        --n-full 256 --repeats 1                                 # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from pgu.core import representation
from pgu.core.cgs import COMPLEMENT_SUFFIX, compute_bases, retain_statistics
from pgu.core.data import SampleSet
from pgu.core.models import build_model
from pgu.core.projection import projected_parameters
from pgu.core.representation import (
    collect_representations,
    collect_representations_sharded,
    layer_dim,
    tracked_layers,
)
from pgu.core.training import resolve_device
from pgu.core.unlearning import UnlearnConfig, capture_step, descent_epoch, evaluate_sets

# k per tracked layer that the H200 speed run chose for SmallVGG (conv1..3, fc1, fc2)
H200_K = "25,1035,2138,7446,222"


def synthetic(n: int, seed: int, size: int = 32) -> SampleSet:
    """n uint8 3 x size x size images with labels of 10 classes (their content does not matter)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    return SampleSet(x, y, torch.arange(n), mean, std, 10)


def lean_bases(model: torch.nn.Module, ks: list[int], device: torch.device) -> dict:
    """Random orthonormal bases of the given CGS sizes, each in the smaller stored form."""
    g = torch.Generator().manual_seed(0)
    bases = {}
    for (name, layer), k in zip(tracked_layers(model).items(), ks, strict=True):
        d = layer_dim(layer)
        cols = d - k if d - k < k else k
        q, _ = torch.linalg.qr(torch.randn(d, max(cols, 1), generator=g, dtype=torch.float64))
        key = name + COMPLEMENT_SUFFIX if d - k < k else name
        bases[key] = q[:, :cols].float().contiguous().to(device)  # (d, cols)
    return bases


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def top_ops(prof, device: torch.device, rows: int) -> str:
    """The profiler's operator tables: by self time where the work runs, and on a GPU also by
    host self time (launch and synchronisation overhead shows there, not in kernel time)."""
    events = prof.key_averages()
    if device.type != "cuda":
        return events.table(sort_by="self_cpu_time_total", row_limit=rows)
    by_device = events.table(sort_by="self_cuda_time_total", row_limit=rows)
    by_host = events.table(sort_by="self_cpu_time_total", row_limit=rows // 2)
    return f"{by_device}\nby host time:\n{by_host}"


# host calls whose counts tell a launch- or synchronisation-bound phase
HOST_CALLS = ("LaunchKernel", "Synchronize", "Memcpy", "Malloc", "Free")


def busy_summary(prof, wall_s: float) -> str:
    """Kernel time against the profiled wall time, and the host calls that cost time there.

    A phase whose kernels fill a small part of its wall time waits on the host (launches,
    synchronisations, allocations), not on arithmetic.
    """
    try:
        events = prof.key_averages()
        # the kernels' own rows only: the profiler also credits each kernel's time to the op
        # that launched it, so a sum over every row counts it twice (runs 4 and 5 printed
        # double), and user annotations span whole ranges
        kernel_us = sum(
            getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
            for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        )
        calls = {}
        for e in events:
            hit = next((c for c in HOST_CALLS if c in e.key), None)
            if hit is not None:
                n, us = calls.get(e.key, (0, 0.0))
                calls[e.key] = (n + e.count, us + e.self_cpu_time_total)
        listed = ", ".join(f"{k} x{n} ({us / 1e3:.1f} ms)" for k, (n, us) in sorted(calls.items()))
        return (
            f"profiled wall {wall_s * 1e3:.1f} ms, kernels {kernel_us / 1e3:.1f} ms "
            f"({100 * kernel_us / 1e6 / max(wall_s, 1e-9):.0f}% busy); host calls: {listed}"
        )
    except Exception as err:  # a summary must not cost the run's other figures
        return f"(no summary: {err!r})"


@contextmanager
def patched(obj: object, **values: object) -> Iterator[None]:
    """Set attributes of ``obj`` (module constants, backend flags) for the block, then restore."""
    saved = {k: getattr(obj, k) for k in values}
    for k, v in values.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(obj, k, v)


def default_ks(model: torch.nn.Module) -> list[int]:
    """The H200 run's k per layer, as the same fraction of d for this model's layers."""
    h200 = tracked_layers(build_model("small_vgg", (3, 32, 32), 10))
    fractions = [
        int(k) / layer_dim(m) for k, m in zip(H200_K.split(","), h200.values(), strict=True)
    ]
    return [
        round(f * layer_dim(m))
        for f, m in zip(fractions, tracked_layers(model).values(), strict=True)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--n-forget", type=int, default=1000, help="samples of the forget set")
    p.add_argument("--n-val", type=int, default=5000, help="samples of the val split")
    p.add_argument(
        "--n-full", type=int, default=10_000, help="samples for the full-data statistics"
    )
    p.add_argument("--chunk", type=int, default=256, help="statistics chunk (as bench/speed.py)")
    p.add_argument(
        "--k",
        default=None,
        help="CGS size per tracked layer, comma-separated (default: the H200 run's, as fractions "
        "of d when --image-size is not 32)",
    )
    p.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    p.add_argument("--repeats", type=int, default=3, help="timed calls (medians reported)")
    p.add_argument("--rows", type=int, default=20, help="operators listed per table")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    size = args.image_size
    model = build_model("small_vgg", (3, size, size), 10).to(device).eval()
    ks = [int(k) for k in args.k.split(",")] if args.k else default_ks(model)
    bases = lean_bases(model, ks, device)
    params = projected_parameters(model, bases)
    chosen = {id(q) for q in params}
    for q in model.parameters():  # as unlearn() prepares the model
        q.requires_grad_(id(q) in chosen)
    full = synthetic(args.n_full, 3, size)  # on the CPU, as the representation node reads it
    forget = synthetic(args.n_forget, 1, size).to(device)
    val = synthetic(args.n_val, 2, size).to(device)
    config = UnlearnConfig()
    lr = 1e-4  # tiny steps: the weights barely move over the repeats
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None

    def full_stats() -> dict:
        return collect_representations_sharded(model, full, args.chunk, device=device)

    def forget_stats() -> dict:
        batches = forget.batches(args.chunk)
        return collect_representations(model, batches, device=device, keep_on_device=True)

    def epoch() -> float:
        return descent_epoch(model, params, bases, forget, config, lr, 0, device, loss_fn=None)

    def stop_check() -> dict:
        return evaluate_sets(model, forget, val, device=device)

    phases = {
        "full statistics": full_stats,
        "forget statistics": forget_stats,
        "epoch": epoch,
        "stop check": stop_check,
    }
    batches = -(-args.n_forget // config.batch_size)
    print(
        f"device {device} ({gpu or 'cpu'}); SmallVGG {size}x{size}, k {ks}; full statistics "
        f"over {args.n_full} in chunks of {args.chunk}; forget {args.n_forget} "
        f"({batches} batches of {config.batch_size}); val {args.n_val}\n"
        f"| phase | median s |\n|---|---:|",
        flush=True,
    )
    seconds: dict[str, float] = {}

    def measure(name: str, fn: Callable[[], object]) -> None:  # printed at once: a timeout
        seconds[name] = timed(fn, device, args.repeats)  # keeps what was measured
        print(f"| {name} | {seconds[name]:.4f} |", flush=True)

    for name, fn in phases.items():
        measure(name, fn)
    # R_full - R_forget and every layer's eigendecomposition, as a request derives its bases
    full_r, forget_r = full_stats(), forget_stats()

    def retain_space() -> tuple:
        r_retain = retain_statistics(full_r, forget_r, device=device)
        return compute_bases(r_retain, 0.95, device=device)

    measure("retain space", retain_space)  # not profiled: eigh ran for minutes under the profiler
    # the choice this run re-checks: conv rows from layer_rows instead of kernel-major (decided
    # on an H200 in run 4 of bench/results/h200-2026-11-27, as were the Gram split depth, TF32
    # and channels-last, which README lists)
    others = tuple(t for t in representation.KERNEL_MAJOR_DEVICES if t != device.type)
    with patched(representation, KERNEL_MAJOR_DEVICES=others):
        measure("full statistics, rows from layer_rows", full_stats)
    if device.type == "cuda":  # unlearn(..., cuda_graph=True)'s epoch: full batches replayed
        captured = capture_step(model, params, bases, forget, config, device, None, None)
        if captured is not None:
            measure(
                "epoch, CUDA graph",
                lambda: descent_epoch(
                    model, params, bases, forget, config, lr, 0, device, None, None, captured
                ),
            )
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    for name, fn in phases.items():
        with profile(activities=activities) as prof:
            begin = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - begin
        print(f"\n## {name}\n{busy_summary(prof, wall)}\n{top_ops(prof, device, args.rows)}")
    print(
        json.dumps(
            {
                "bench": "profile_request",
                "device": str(device),
                "gpu": gpu,
                "image_size": size,
                "k": ks,
                "n_full": args.n_full,
                "chunk": args.chunk,
                "n_forget": args.n_forget,
                "n_val": args.n_val,
                "batches": batches,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
