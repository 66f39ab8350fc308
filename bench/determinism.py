"""Are a request's phases bit-reproducible on this device, and what does making them so cost?

On the CPU every output keeps its bytes run after run (tested; every ``make repro``). On an H200,
three repeats of one request read the same inputs and differed from their first unlearning epoch
on (README, "Devices, precision and scale"). This script runs each phase ``--repeats`` times from
the same inputs and compares the bytes of its outputs, with the median wall time of each phase:

- one training epoch (SGD, batch 64) of a fresh SmallVGG on ``--n-train`` synthetic images;
- forget statistics: R_forget of ``--n-forget`` samples (float64, kept on the device);
- the retain space: every layer's eigendecomposition of R_full - R_forget (``compute_bases``);
- three unlearning epochs (calibrated step) from the same weights, with random orthonormal
  bases of the sizes the H200 speed run chose (``bench/profile_request.py``'s);
- a stop check: logits of the forget and val sets.

Run it twice on a GPU, each time in a fresh process:

    PYTHONPATH=src python3 bench/determinism.py                  # PyTorch's defaults
    PYTHONPATH=src python3 bench/determinism.py --deterministic  # the candidate remedy

``--deterministic`` sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before CUDA starts, then
``torch.use_deterministic_algorithms(True, warn_only=True)``, ``cudnn.deterministic`` and no
cuDNN benchmarking. With ``warn_only`` an operator that has no deterministic kernel warns
instead of failing; the warnings are printed at the end, so one run names every such operator
on the request's path. One JSON line closes the output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # profile_request, beside this file

import torch  # noqa: E402
from profile_request import default_ks, lean_bases, synthetic  # noqa: E402

from pgu.core.cgs import compute_bases, retain_statistics  # noqa: E402
from pgu.core.models import build_model  # noqa: E402
from pgu.core.projection import projected_parameters  # noqa: E402
from pgu.core.representation import collect_representations  # noqa: E402
from pgu.core.training import TrainRecipe, predict_logits, resolve_device, train_model  # noqa: E402
from pgu.core.unlearning import UnlearnConfig, descent_epoch  # noqa: E402


def digest(tensors: list[torch.Tensor]) -> str:
    """sha256 (first 12 hex digits) of the tensors' bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def repeat(fn: Callable[[], list[torch.Tensor]], device: torch.device, n: int) -> dict:
    """Run ``fn`` n times after one untimed call: distinct digests and the median seconds."""
    fn()
    digests, times = [], []
    for _ in range(n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        digests.append(digest(out))
    return {
        "identical": len(set(digests)) == 1,
        "distinct": len(set(digests)),
        "median_s": statistics.median(times),
        "digests": digests,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--deterministic", action="store_true", help="the candidate remedy (above)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each phase compared")
    p.add_argument("--n-train", type=int, default=5000, help="samples of the training epoch")
    p.add_argument("--n-forget", type=int, default=1000, help="samples of the forget set")
    p.add_argument("--n-val", type=int, default=5000, help="samples of the val split")
    p.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    if args.deterministic:  # read when cuBLAS creates its handles, so before any CUDA work
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = args.image_size
    shape = (3, size, size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(0)
        model = build_model("small_vgg", shape, 10).to(device).eval()
        start_weights = {k: v.clone() for k, v in model.state_dict().items()}
        train = synthetic(args.n_train, 2, size).to(device)
        forget = synthetic(args.n_forget, 1, size).to(device)
        val = synthetic(args.n_val, 4, size).to(device)
        recipe = TrainRecipe(epochs=1, batch_size=64, lr=0.01, seed=0)

        def training() -> list[torch.Tensor]:
            model.load_state_dict(start_weights)
            torch.manual_seed(0)  # dropout draws from the global generator
            train_model(model, train, recipe, device=device)
            return list(model.state_dict().values())

        results = {"training_epoch": repeat(training, device, args.repeats)}
        model.load_state_dict(start_weights)
        model.eval()

        def forget_statistics() -> list[torch.Tensor]:
            r = collect_representations(
                model, forget.batches(256), device=device, keep_on_device=True
            )
            return [r[k] for k in sorted(r)]

        results["forget_statistics"] = repeat(forget_statistics, device, args.repeats)
        r_forget = collect_representations(
            model, forget.batches(256), device=device, keep_on_device=True
        )
        # R_full stand-in: the forget set's statistics over the val samples added (PSD)
        r_val = collect_representations(model, val.batches(256), device=device, keep_on_device=True)
        r_full = {k: r_forget[k] + r_val[k] for k in r_forget}

        def retain_space() -> list[torch.Tensor]:
            bases, _ = compute_bases(
                retain_statistics(r_full, r_forget, device=device), 0.95, device=device
            )
            return [bases[k] for k in sorted(bases)]

        results["retain_space"] = repeat(retain_space, device, args.repeats)
        bases = lean_bases(model, default_ks(model), device)  # the H200 run's k, as fractions
        params = projected_parameters(model, bases)
        chosen = {id(q) for q in params}
        for q in model.parameters():  # as unlearn() prepares the model
            q.requires_grad_(id(q) in chosen)
        config = UnlearnConfig()
        w0 = [q.detach().clone() for q in params]

        def descent() -> list[torch.Tensor]:
            with torch.no_grad():
                for q, w in zip(params, w0, strict=True):
                    q.copy_(w)
            for epoch in range(3):
                descent_epoch(model, params, bases, forget, config, 0.05, epoch, device, None)
            return [q.detach() for q in params]

        results["unlearning_3_epochs"] = repeat(descent, device, args.repeats)

        def stop_check() -> list[torch.Tensor]:
            return [predict_logits(model, s, device=device) for s in (forget, val)]

        results["stop_check"] = repeat(stop_check, device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    mode = "deterministic" if args.deterministic else "PyTorch defaults"
    print(f"## {name}, {mode}, {args.repeats} repeats of each phase\n")
    print("| phase | same bytes every repeat | distinct outputs | median s |")
    print("|---|---|---:|---:|")
    for phase, r in results.items():
        same = "yes" if r["identical"] else "NO"
        print(f"| {phase} | {same} | {r['distinct']} | {r['median_s']:.4f} |")
    ops = sorted({str(w.message).splitlines()[0] for w in caught if "determinis" in str(w.message)})
    print(
        "\nwarnings about nondeterministic operators:"
        if ops
        else "\nno warnings about nondeterministic operators"
    )
    for line in ops:
        print(f"- {line}")
    print(
        json.dumps(
            {
                "device": name,
                "deterministic": args.deterministic,
                "phases": results,
                "nondeterministic_ops": ops,
            }
        )
    )


if __name__ == "__main__":
    main()
