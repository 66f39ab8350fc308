"""torch.distributed: sharded collection is byte-identical to one process, DDP training keeps
every rank in step, and only rank 0 writes.

Multi-process tests start 2 processes with the gloo backend on the CPU (a file rendezvous, no
network); the end-to-end test launches ``torchrun`` on a copy of the Kedro project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from pgu.core import distributed
from pgu.core.checkpoint import (
    TensorBundle,
    build_from_spec,
    model_spec,
    model_to_bytes,
    sha256_file,
    tensors_to_bytes,
)
from pgu.core.data import SampleSet, normalisation_stats
from pgu.core.representation import collect_representations, collect_representations_sharded
from pgu.core.training import TrainRecipe, fit_from_scratch
from pgu.datasets import ModelDataset, TensorBundleDataset
from pgu.hooks import DistributedHooks

CHUNK = 96  # 1000 samples: 11 chunks, the last one ragged and alone in its round


def synthetic(n: int = 1000, seed: int = 0) -> SampleSet:
    """Learnable 8x8 grey images of 10 classes (a class template plus noise), uint8."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, 1, 8, 8, generator=g) * 200
    y = torch.randint(0, 10, (n,), generator=g)
    x = (templates[y] + torch.rand(n, 1, 8, 8, generator=g) * 55).to(torch.uint8)
    mean, std = normalisation_stats(x)
    return SampleSet(x, y, torch.arange(n), mean, std, 10)


def stats_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_from_spec(model_spec("digits_cnn", (1, 8, 8), 10))
    for m in model.modules():  # non-trivial BatchNorm statistics, used in eval mode
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


RECIPES = {
    # no BatchNorm: DDP computes the very same global-mean gradient, up to round-off; 1000 % 111
    # = 1 leaves a last batch of one sample, which one of two processes trains on alone
    "linear": (model_spec("mlp", (1, 8, 8), 10, hidden=[]), TrainRecipe(epochs=2, batch_size=111)),
    # BatchNorm normalises per shard; 1000 % 64 = 40 leaves a short last batch
    "cnn": (
        model_spec("digits_cnn", (1, 8, 8), 10),
        TrainRecipe(epochs=2, batch_size=64, crop_padding=1, horizontal_flip=True, seed=1),
    ),
}


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    """One rank: sharded collection and DDP training, results written to ``out``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = synthetic()
        stats = collect_representations_sharded(stats_model(), data, chunk_size=CHUNK)
        Path(out, f"stats{rank}.st").write_bytes(tensors_to_bytes(stats))
        for name, (spec, recipe) in RECIPES.items():
            model, history = fit_from_scratch(spec, data, recipe, val=data.take(torch.arange(200)))
            Path(out, f"{name}{rank}.st").write_bytes(model_to_bytes(model))
            Path(out, f"{name}{rank}.json").write_text(json.dumps(history))
            # the global generator, which dropout draws from: one stream per process
            Path(out, f"{name}{rank}.rng").write_bytes(torch.get_rng_state().numpy().tobytes())
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Run :func:`_worker` on 2 gloo processes once; the folder of their outputs."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(2, str(out / "rendezvous"), str(out)), nprocs=2, join=True)
    return out


def test_sharded_collection_is_byte_identical_for_one_and_two_processes(two_ranks):
    model, data = stats_model(), synthetic()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # collection runs single-threaded whatever the caller's setting
    try:
        one = tensors_to_bytes(collect_representations_sharded(model, data, chunk_size=CHUNK))
    finally:
        torch.set_num_threads(threads)
    assert (two_ranks / "stats0.st").read_bytes() == one
    assert (two_ranks / "stats1.st").read_bytes() == one
    # ... and one process is the plain batch loop with batches = chunks
    plain = collect_representations(model, data.batches(CHUNK))
    assert tensors_to_bytes(plain) == one


def test_ddp_training_keeps_ranks_in_step_and_matches_one_process(two_ranks):
    for name in RECIPES:
        rank0, rank1 = (two_ranks / f"{name}0.st").read_bytes(), (two_ranks / f"{name}1.st")
        assert rank0 == rank1.read_bytes(), name  # parameters and BatchNorm buffers
        h0 = json.loads((two_ranks / f"{name}0.json").read_text())
        assert h0 == json.loads((two_ranks / f"{name}1.json").read_text())
        assert h0[-1]["val_acc"] > 0.9, (name, h0[-1])
        # ... but their dropout masks are their own: process 1 does not repeat process 0's
        streams = [(two_ranks / f"{name}{r}.rng").read_bytes() for r in (0, 1)]
        assert streams[0] != streams[1], name
    # without BatchNorm, 2 processes follow the 1-process trajectory to round-off
    spec, recipe = RECIPES["linear"]
    data = synthetic()
    single, history = fit_from_scratch(spec, data, recipe, val=data.take(torch.arange(200)))
    ddp = ModelDataset(filepath=str(two_ranks / "linear0.st")).load()
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    h0 = json.loads((two_ranks / "linear0.json").read_text())
    assert [h["train_loss"] for h in h0] == pytest.approx(
        [h["train_loss"] for h in history], rel=1e-4
    )


def test_ordered_chunk_sum_single_process_is_the_plain_loop():
    parts = [torch.randn(3, 3, dtype=torch.float64) * 10**i for i in range(7)]
    zeros = {"a": torch.zeros(3, 3, dtype=torch.float64)}
    total = distributed.ordered_chunk_sum(len(parts), lambda c: {"a": parts[c]}, zeros)
    loop = torch.zeros(3, 3, dtype=torch.float64)
    for p in parts:
        loop += p
    assert torch.equal(total["a"], loop)
    assert not zeros["a"].any()  # the template is not modified


def test_sharded_full_minus_forget_equals_retain():
    model, data = stats_model().double(), synthetic(300)
    forget_mask = torch.zeros(300, dtype=torch.bool)
    forget_mask[::7] = True
    x = data.inputs().double()
    full = collect_representations_sharded(model, x, chunk_size=64)
    forget = collect_representations_sharded(model, x[forget_mask], chunk_size=64)
    retain = collect_representations(model, [x[~forget_mask]])
    for name in full:
        diff = full[name] - forget[name] - retain[name]
        assert torch.linalg.norm(diff) <= 1e-10 * torch.linalg.norm(retain[name]), name


def test_helpers_without_a_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.shard(10) == (0, 10)
    assert distributed.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    assert distributed.init_from_env() is False  # nothing launched: nothing to join
    distributed.barrier()
    monkeypatch.setenv("RANK", "1")  # launched by torchrun, before any process group
    assert not distributed.is_main_process()


def test_datasets_write_only_on_rank_zero(tmp_path, monkeypatch):
    bundle = TensorBundle({"a": torch.ones(2)}, {"k": 1})
    model = build_from_spec(model_spec("mlp", (3,), 2))
    monkeypatch.setenv("RANK", "1")
    TensorBundleDataset(filepath=str(tmp_path / "b.st")).save(bundle)
    ModelDataset(filepath=str(tmp_path / "m.st")).save(model)
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv("RANK", "0")
    TensorBundleDataset(filepath=str(tmp_path / "b.st")).save(bundle)
    ModelDataset(filepath=str(tmp_path / "m.st")).save(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.st", "m.st"]


def _pipeline(*names: str) -> Pipeline:
    """One node per name, reading "inp" and writing "out_<name>"."""
    return Pipeline([Node(_identity, "inp", f"out_{n}", name=n) for n in names])


def _identity(x: object) -> object:
    return x


def test_hook_keeps_outputs_in_memory_on_other_ranks(tmp_path, monkeypatch):
    catalog = DataCatalog(
        {
            "inp": TensorBundleDataset(filepath=str(tmp_path / "in.st")),
            "out_train_original": ModelDataset(filepath=str(tmp_path / "m.st")),
        }
    )
    hooks = DistributedHooks()
    monkeypatch.setattr(distributed, "init_from_env", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    hooks.before_pipeline_run({}, _pipeline("train_original"), catalog)
    assert isinstance(catalog["out_train_original"], ModelDataset)  # rank 0 writes
    monkeypatch.setenv("RANK", "1")
    hooks.before_pipeline_run({}, _pipeline("train_original", "collect_full_statistics"), catalog)
    for name in ("out_train_original", "out_collect_full_statistics"):
        assert isinstance(catalog[name], MemoryDataset), name
    assert isinstance(catalog["inp"], TensorBundleDataset)  # inputs are still read from disk
    # nodes that may write outside the catalog (the deletion workspace) are refused
    with pytest.raises(RuntimeError, match="process_requests"):
        hooks.before_pipeline_run({}, _pipeline("train_original", "process_requests"), catalog)
    hooks.after_pipeline_run({}, _pipeline("train_original"))


def test_hook_does_nothing_for_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    catalog = DataCatalog({"out_a": TensorBundleDataset(filepath="never/written.st")})
    DistributedHooks().before_pipeline_run({}, _pipeline("process_requests", "a"), catalog)
    assert isinstance(catalog["out_a"], TensorBundleDataset)


def test_settings_register_the_distributed_hooks():
    from pgu import settings

    assert any(isinstance(h, DistributedHooks) for h in getattr(settings, "HOOKS", ()))


# Runs `python -m pgu` with the hook registered even before settings.py lists it (the test
# above checks that it does).
LAUNCHER = """
import pgu.settings as settings
from pgu.hooks import DistributedHooks

hooks = tuple(getattr(settings, "HOOKS", ()))
if not any(isinstance(h, DistributedHooks) for h in hooks):
    settings.HOOKS = (*hooks, DistributedHooks())

from pgu.__main__ import main

main()
"""


@pytest.mark.slow
def test_torchrun_train_and_representation_match_one_process(kedro_project):
    kedro_project.run("data")
    launcher = kedro_project.path / "launch_pgu.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KEDRO_DISABLE_TELEMETRY": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = subprocess.run(
        [
            *torchrun,
            "--nproc_per_node=2",
            str(launcher),
            "--pipelines=train,representation",
            "--params=train.recipe.epochs=2",
        ],
        cwd=kedro_project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    states = kedro_project.path / "data/06_models/states/original"
    metrics = json.loads((kedro_project.path / "data/08_reporting/train/metrics.json").read_text())
    assert metrics["model_sha256"] == sha256_file(states / "model.safetensors")
    assert metrics["test_acc"] > 0.8
    assert not list(kedro_project.path.rglob("*.tmp"))
    two = sha256_file(states / "retain_stats.safetensors")
    kedro_project.run("representation")  # one process, the model trained by two
    assert sha256_file(states / "retain_stats.safetensors") == two
