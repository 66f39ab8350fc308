"""Tests for pgu.core.unlearning: what the loop may touch, what it must leave alone, and that
its stopping rule reports every ending explicitly.

The references are the method's guarantees: only projected weights move; a step orthogonal to
the retained inputs leaves a layer's response to them unchanged; the same seed gives the same
bytes.
"""

import copy
import io
import logging
import math
from dataclasses import replace

import pytest
import torch
from conftest import HostReads
from torch import nn

from pgu.core import unlearning as unlearning_module
from pgu.core.cgs import COMPLEMENT_SUFFIX, compute_bases, retain_statistics, spectrum
from pgu.core.data import SampleSet
from pgu.core.losses import quantile_targets, unlearning_loss
from pgu.core.models import build_model
from pgu.core.projection import project_gradients, projected_parameters
from pgu.core.representation import collect_representations, layer_dim, tracked_layers
from pgu.core.training import TrainRecipe, accuracy_and_loss, train_model
from pgu.core.unlearning import UnlearnConfig, evaluate_sets, unlearn, validation_metrics


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second OpenMP thread, which on a shared 2-core machine
    mostly spin-waits (10x slower tests under load); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sample_set(x: torch.Tensor, y: torch.Tensor, num_classes: int, first_id: int = 0) -> SampleSet:
    """Float features taken as they are (mean 0, std 1)."""
    c = x.shape[1]
    return SampleSet(
        x.float(),
        y.long(),
        torch.arange(first_id, first_id + len(y)),
        torch.zeros(c),
        torch.ones(c),
        num_classes,
    )


def state_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def conv_net() -> nn.Module:
    """conv - ReLU - BN - flatten - linear - ReLU - BN - linear, untrained."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 16),
        nn.ReLU(),
        nn.BatchNorm1d(16),
        nn.Linear(16, 3),
    )


def images(n: int, seed: int) -> SampleSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 5, 5, generator=g)
    return SampleSet(
        x, torch.randint(0, 3, (n,), generator=g), torch.arange(n), torch.zeros(1), torch.ones(1), 3
    )


def bases_for(model: nn.Module, full: SampleSet, forget: SampleSet, **kw) -> dict:
    r_full = collect_representations(model, full.batches(64))
    r_forget = collect_representations(model, forget.batches(64))
    return compute_bases(retain_statistics(r_full, r_forget), **kw)[0]


@pytest.fixture(scope="module")
def conv_case():
    """A small conv net that memorised random labels (so forgetting has work to do)."""
    model = conv_net()
    train = images(60, seed=1)
    train_model(model, train, TrainRecipe(epochs=40, batch_size=20, lr=0.05, lr_end=0.01))
    forget = train.take(torch.arange(10))
    val = images(30, seed=2)
    bases = bases_for(model, train, forget, gamma=0.9, overrides={"4": 1.0})  # freeze "4"
    return model, forget, val, bases


def test_unlearn_never_mutates_input_and_moves_only_projected_weights(conv_case):
    model, forget, val, bases = conv_case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = UnlearnConfig(epochs=3, lr_start=0.05, lr_end=0.05, sample_tolerance=0.0)
    result = unlearn(model, bases, forget, val, config)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"input model changed at {k}"
    assert not result.model.training
    after = result.model.state_dict()
    assert set(tracked_layers(model)) == {"0", "4", "7"}
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    # conv "0" and linear "7" are projected and updated; linear "4" is frozen (k = d);
    # biases, BatchNorm affine parameters and running statistics never move
    assert moved == {"0.weight", "7.weight"}, moved
    assert result.epochs_run >= 1 and result.kept_epoch >= 1


def test_full_retain_basis_keeps_first_layer_output_on_retain_samples():
    """With M spanning all of the retain inputs, a projected step is invisible on them."""
    g = torch.Generator().manual_seed(0)
    d, rank = 12, 7
    span = torch.linalg.qr(torch.randn(d, rank, generator=g))[0]  # (d, rank) orthonormal
    retain_x = torch.randn(80, rank, generator=g) @ span.T  # (80, d) inside span
    forget_x = torch.randn(20, d, generator=g)  # generic: leaves the span
    y = torch.randint(0, 3, (100,), generator=g)
    full = sample_set(torch.cat([retain_x, forget_x]), y, 3)
    forget = full.take(torch.arange(80, 100))
    retain = full.take(torch.arange(80))
    torch.manual_seed(1)
    model = build_model("mlp", (d,), 3, hidden=(32,))
    train_model(model, full, TrainRecipe(epochs=60, batch_size=20, lr=0.05, lr_end=0.01))
    r_retain = retain_statistics(
        collect_representations(model, full.batches(50)),
        collect_representations(model, forget.batches(50)),
    )
    bases = {}
    for name, r in r_retain.items():  # the exact range of R_retain (nonzero eigenvalues)
        lam, u = spectrum(r)
        k = int((lam > 1e-9 * lam[0]).sum())
        bases[name] = u[:, :k].float().contiguous()
    assert bases["features.fc1"].shape == (d, rank)
    val = sample_set(torch.randn(40, d, generator=g), torch.randint(0, 3, (40,), generator=g), 3)
    config = UnlearnConfig(epochs=2, lr_start=0.1, lr_end=0.1, sample_tolerance=0.0)
    result = unlearn(model, bases, forget, val, config)
    assert result.kept_epoch >= 1, result.history
    fc1_before, fc1_after = model.features.fc1, result.model.features.fc1
    assert not torch.equal(fc1_before.weight, fc1_after.weight)
    with torch.no_grad():
        torch.testing.assert_close(
            fc1_after(retain.inputs()), fc1_before(retain.inputs()), atol=1e-4, rtol=1e-4
        )


@pytest.fixture(scope="module")
def memorised():
    """An MLP that memorised noisy labels: train accuracy 1, validation clearly below."""
    g = torch.Generator().manual_seed(0)
    n, d, c = 300, 10, 3
    w = torch.randn(d, c, generator=g)
    x = torch.randn(n, d, generator=g)
    y = (x @ w).argmax(1)
    flip = torch.rand(n, generator=g) < 0.25
    y = torch.where(flip, torch.randint(0, c, (n,), generator=g), y)
    data = sample_set(x, y, c)
    train, val = data.take(torch.arange(200)), data.take(torch.arange(200, 300))
    torch.manual_seed(0)
    model = build_model("mlp", (d,), c, hidden=(128,))
    train_model(model, train, TrainRecipe(epochs=60, batch_size=32, lr=0.1, lr_end=0.01))
    forget = train.take(torch.arange(40))
    bases = bases_for(model, train, forget, gamma=0.95)
    return model, forget, val, bases


def test_samples_mode_moves_forget_accuracy_toward_validation(memorised):
    model, forget, val, bases = memorised
    start = evaluate_sets(model, forget, val)
    assert start["forget_acc"] == 1.0 and start["val_acc"] < 0.9
    result = unlearn(model, bases, forget, val, UnlearnConfig())
    assert result.stop_reason == "target_reached", result.history
    end = result.history[-1]
    assert result.kept_epoch == end["epoch"] >= 1
    assert end["forget_acc"] < start["forget_acc"]
    assert abs(end["forget_acc"] - end["val_acc"]) < abs(start["forget_acc"] - start["val_acc"])
    # the gap reads the reference's val loss: with no original given, the start model's
    ref_loss = result.history[0]["ref_val_loss"]
    assert ref_loss == start["val_loss"]
    assert abs(math.log(end["forget_loss"] / ref_loss)) <= UnlearnConfig().sample_tolerance
    # the kept model is the one the last record describes
    assert result.kept_record() is end
    acc, _ = accuracy_and_loss(result.model, forget)
    assert acc == end["forget_acc"]
    for rec in result.history:
        assert {"epoch", "lr", "loss", "forget_acc", "val_acc"} <= set(rec)


def test_log_loss_measure_is_the_gap_of_mean_log_losses(memorised):
    model, forget, val, bases = memorised
    m = evaluate_sets(model, forget, val)
    for name, data in (("forget", forget), ("val", val)):
        per_sample = torch.nn.functional.cross_entropy(
            model.eval()(data.inputs()), data.y, reduction="none"
        ).detach()
        expected = per_sample.clamp_min(1e-8).log().mean().item()
        assert m[f"{name}_log_loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # "current": the held-out side moves with the model (this toy's val loss rises fast)
    config = UnlearnConfig(sample_measure="log_loss", sample_tolerance=0.5, reference="current")
    result = unlearn(model, bases, forget, val, config)
    assert result.stop_reason == "target_reached", result.history
    end = result.history[-1]
    gap = end["forget_log_loss"] - end["val_log_loss"]
    assert abs(gap) <= 0.5
    assert m["forget_log_loss"] - m["val_log_loss"] < -0.5  # it started short of the band


def test_too_large_step_is_halved_not_reported_as_done(memorised):
    model, forget, val, bases = memorised
    result = unlearn(model, bases, forget, val, UnlearnConfig(lr_start=5.0, lr_end=5.0))
    assert result.lr_scale < 1.0
    assert any(not rec["accepted"] for rec in result.history)
    assert result.stop_reason in {"target_reached", "overshoot"}
    assert result.kept_epoch >= 1
    # the scale reported is the one the last try ran with
    assert result.lr_scale == result.history[-1]["scale"]


def _scripted(monkeypatch, statuses: list[tuple[str, float]]) -> None:
    """Make the stopping rule answer ``statuses`` in turn: (status, distance), epoch 0 first."""
    script = iter(statuses)
    monkeypatch.setattr(unlearning_module, "_assess", lambda *a, **k: next(script))


def _tiny() -> tuple[nn.Module, dict, SampleSet]:
    torch.manual_seed(0)
    n = 8
    data = SampleSet(
        torch.randn(n, 4), torch.arange(n) % 3, torch.arange(n), torch.zeros(4), torch.ones(4), 3
    )
    return nn.Sequential(nn.Linear(4, 3)), {"0": torch.zeros(4, 0)}, data


@pytest.mark.parametrize(("statuses", "warned"), [
    ([("short", 1.0), ("over", 0.5)], True),  # the first epoch jumps the band
    ([("short", 1.0), ("short", 0.8), ("over", 0.5)], False),  # a later one does
])  # fmt: skip
def test_a_first_epoch_that_jumps_the_band_says_the_rate_is_too_high(
    monkeypatch, caplog, statuses, warned
):
    """METHOD section 6: a crossing at the very first epoch means the learning rate is too
    high, and the run must say so; a crossing later is the rule's ordinary overshoot."""
    model, bases, data = _tiny()
    _scripted(monkeypatch, statuses)
    with caplog.at_level(logging.WARNING, logger="pgu.core.unlearning"):
        result = unlearn(model, bases, data, data, UnlearnConfig(epochs=5, step="fixed"))
    assert result.stop_reason == "overshoot" and result.epochs_run == len(statuses) - 1
    said = any("learning rate is too high" in r.getMessage() for r in caplog.records)
    assert said is warned


def test_the_reported_scale_is_that_of_the_last_epoch_run(monkeypatch):
    """Epoch 1 overshoots and is redone at half the step; epoch 2, the last, falls short at
    its first try, so the loop doubles the scale for a next epoch that never runs:
    ``lr_scale`` is the scale that last ran (0.5), as the history says."""
    model, bases, data = _tiny()
    _scripted(monkeypatch, [("short", 1.0), ("over", 0.5), ("short", 0.8), ("short", 0.7)])
    result = unlearn(model, bases, data, data, UnlearnConfig(epochs=2))
    assert result.stop_reason == "budget_exhausted"
    assert [r["scale"] for r in result.history[1:]] == [1.0, 0.5, 0.5]
    assert result.lr_scale == 0.5


def test_classes_mode_reaches_target_and_holds_guard():
    """Each class lives in its own 4 input dims, so class 0 can go without touching the rest."""
    g = torch.Generator().manual_seed(3)
    d, c = 12, 3
    y = torch.arange(300) % c
    x = torch.zeros(300, d)
    for k in range(c):
        rows = y == k
        x[rows, 4 * k : 4 * k + 4] = torch.randn(int(rows.sum()), 4, generator=g) + 2.0
    data = sample_set(x, y, c)
    train, val = data.take(torch.arange(210)), data.take(torch.arange(210, 300))
    torch.manual_seed(0)
    model = build_model("mlp", (d,), c, hidden=(32,))
    train_model(model, train, TrainRecipe(epochs=10, batch_size=32, lr=0.05, lr_end=0.01))
    forget = train.take(train.y == 0)
    bases = bases_for(model, train, forget, gamma=0.95)
    config = UnlearnConfig()
    result = unlearn(model, bases, forget, val, config, forget_classes=[0])
    end = result.kept_record()
    assert result.stop_reason == "target_reached", result.history
    assert end["forget_acc"] <= config.class_target_acc
    assert end["forget_class_val_acc"] <= config.class_target_acc
    assert result.history[0]["other_val_acc"] - end["other_val_acc"] <= config.class_guard_drop


@pytest.mark.parametrize("free", [True, False])
def test_class_rows_of_the_output_layer_are_the_only_unprojected_update(conv_case, free):
    model, forget, val, bases = conv_case  # conv "0" (basis), linear "4" frozen, head "7"
    config = UnlearnConfig(epochs=2, class_free_rows=free, class_target_acc=0.0)
    result = unlearn(model, bases, forget, val, config, forget_classes=[1])
    head = "7"
    delta = result.model.state_dict()[head + ".weight"] - model.state_dict()[head + ".weight"]
    inside = (delta @ cgs_basis(bases, head, 16)).norm(dim=1)  # (3,) moves within span(M)
    scale = delta.norm() + 1e-12
    assert delta.norm() > 0
    # rows 0 and 2 (kept classes) stay projected; row 1 moves within span(M) only when freed
    assert (inside[[0, 2]] <= 1e-4 * scale).all()
    assert (inside[1] > 1e-3 * scale) if free else (inside[1] <= 1e-4 * scale)
    # every other layer is projected as before: the conv "0" moves outside its CGS only
    conv = result.model.state_dict()["0.weight"] - model.state_dict()["0.weight"]
    conv_m = cgs_basis(bases, "0", 9)
    assert (conv.view(4, -1) @ conv_m).norm() <= 1e-4 * (conv.norm() + 1e-12)


@pytest.mark.parametrize(
    ("name", "in_shape", "kwargs"),
    [
        ("mlp", (6,), {}),
        ("digits_cnn", (1, 8, 8), {}),
        ("small_vgg", (3, 32, 32), {}),
        ("all_cnn", (3, 8, 8), {"width": 0.1}),  # ends in a conv: conv9 under a global pool
        ("resnet18", (3, 16, 16), {}),
    ],
)
def test_the_output_layer_of_every_registry_model_has_one_row_per_logit(name, in_shape, kwargs):
    """``class_free_rows`` frees the forgotten classes' rows of ``output_layer``: moving row 3
    there must move logit 3 and no other, for every model the registry builds."""
    torch.manual_seed(0)
    model = build_model(name, in_shape, 5, **kwargs).eval()
    found = unlearning_module.output_layer(model, 5)
    assert found is not None, name
    layer = found[1]
    x = torch.randn(4, *in_shape)
    with torch.no_grad():
        before = model(x)
        layer.weight[3] += 0.5 * torch.randn_like(layer.weight[3])
        moved = (model(x) - before).abs().amax(dim=0)  # (5,)
    assert moved[3] > 1e-3 and moved[[0, 1, 2, 4]].max() == 0.0, (name, moved)


def test_class_removal_warns_when_no_row_can_be_freed(conv_case, caplog):
    """A frozen output layer (k = d) cannot have free rows: the run says so instead of
    silently projecting every row."""
    model, forget, val, bases = conv_case
    frozen = {k: v for k, v in bases.items() if not k.startswith("7")}
    frozen["7"] = torch.eye(16)
    config = UnlearnConfig(epochs=1, class_target_acc=0.0)
    with caplog.at_level(logging.WARNING, logger="pgu.core.unlearning"):
        unlearn(model, frozen, forget, val, config, forget_classes=[1])
    assert any("every row is projected" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgu.core.unlearning"):
        unlearn(model, bases, forget, val, config, forget_classes=[1])
    assert not any("every row is projected" in r.getMessage() for r in caplog.records)


def cgs_basis(bases: dict, name: str, d: int) -> torch.Tensor:
    """The CGS basis M (d, k) of a layer, whichever form the lean bases store."""
    if name in bases:
        return bases[name]
    n = bases[name + COMPLEMENT_SUFFIX]  # (d, d - k)
    u = torch.linalg.svd(torch.eye(d) - n @ n.T)[0]  # leading columns span the complement of N
    return u[:, : d - n.shape[1]]


def test_budget_exhausted_is_explicit_and_warns(memorised, caplog):
    model, forget, val, bases = memorised
    config = UnlearnConfig(epochs=2, lr_start=1e-6, lr_end=1e-6)
    with caplog.at_level(logging.WARNING, logger="pgu.core.unlearning"):
        result = unlearn(model, bases, forget, val, config)
    assert result.stop_reason == "budget_exhausted"
    assert result.epochs_run == 2
    assert any("budget_exhausted" in r.getMessage() for r in caplog.records)


def test_a_forget_set_already_past_the_target_is_returned_unchanged_without_blaming_the_rate(
    memorised, caplog
):
    model, _, val, bases = memorised
    wrong = replace(val, y=(val.y + 1) % val.num_classes)  # losses far above val's
    with caplog.at_level(logging.WARNING, logger="pgu.core.unlearning"):
        result = unlearn(model, bases, wrong, val, UnlearnConfig())
    assert result.stop_reason == "past_target_at_start"
    assert result.epochs_run == 0 and state_bytes(result.model) == state_bytes(model)
    assert not any("learning rate is too high" in r.getMessage() for r in caplog.records)
    assert any("NOTHING was unlearned" in r.getMessage() for r in caplog.records)


def test_returning_the_original_is_explicit_and_warns(memorised, caplog):
    model, _, val, bases = memorised
    # the validation split itself as "forget set": it already looks like held-out data
    with caplog.at_level(logging.WARNING, logger="pgu.core.unlearning"):
        result = unlearn(model, bases, val, val, UnlearnConfig())
    assert result.stop_reason == "target_at_start"
    assert result.kept_epoch == 0 and result.epochs_run == 0
    assert state_bytes(result.model) == state_bytes(model)
    assert any("NOTHING was unlearned" in r.getMessage() for r in caplog.records)

    # M = I (k = d) everywhere: every layer frozen
    frozen = {name: torch.eye(layer_dim(layer)) for name, layer in tracked_layers(model).items()}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pgu.core.unlearning"):
        result = unlearn(model, frozen, val.take(torch.arange(5)), val, UnlearnConfig())
    assert result.stop_reason == "no_trainable_layers" and result.kept_epoch == 0
    assert any("NOTHING was unlearned" in r.getMessage() for r in caplog.records)


def test_same_seed_gives_identical_bytes(conv_case):
    model, forget, val, bases = conv_case
    config = UnlearnConfig(epochs=3, sample_tolerance=0.0, batch_size=4, seed=5)
    a = unlearn(model, bases, forget, val, config)
    b = unlearn(model, bases, forget, val, config)
    assert a.kept_epoch >= 1
    assert state_bytes(a.model) == state_bytes(b.model)
    assert str(a.history) == str(b.history)


def test_fixed_step_is_plain_sgd(memorised):
    """One batch, one epoch: W <- W - lr * P(G), the paper's update, nothing re-scaled."""
    model, forget, val, bases = memorised
    config = UnlearnConfig(
        epochs=1, step="fixed", lr_start=0.05, lr_end=0.05, batch_size=len(forget)
    )
    result = unlearn(model, bases, forget, val, config)
    assert result.stop_reason == "budget_exhausted" and result.kept_epoch == 1
    assert result.history[1]["lr"] == pytest.approx(0.05) and result.lr_scale == 1.0

    ref = copy.deepcopy(model).eval()
    unlearning_loss(ref(forget.inputs()), forget.y).backward()
    project_gradients(ref, bases)
    for name in ("features.fc1", "head"):
        layer = ref.get_submodule(name)
        expected = layer.weight.detach() - 0.05 * layer.weight.grad
        got = result.model.get_submodule(name).weight.detach()
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_calibrated_step_scales_each_weight_by_its_norm_over_its_projected_gradient(memorised):
    """One batch, one epoch: W <- W - lr * ||W|| / ||P(G)|| * P(G), per weight (each its own
    scale, computed together as one vector by ``descent_epoch``)."""
    model, forget, val, bases = memorised
    lr = 0.05
    config = UnlearnConfig(epochs=1, lr_start=lr, lr_end=lr, batch_size=len(forget))
    result = unlearn(model, bases, forget, val, config)
    assert result.kept_epoch == 1 and result.history[1]["accepted"] and result.lr_scale == 1.0

    ref = copy.deepcopy(model).eval()
    unlearning_loss(ref(forget.inputs()), forget.y).backward()
    project_gradients(ref, bases)
    for name in ("features.fc1", "head"):
        w, g = ref.get_submodule(name).weight.detach(), ref.get_submodule(name).weight.grad
        expected = w - lr * (w.norm() / g.norm()) * g  # one batch: lr / n_batches = lr
        got = result.model.get_submodule(name).weight.detach()
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_descent_epoch_without_weights_moves_nothing(conv_case):
    model, forget, _, bases = conv_case
    before = state_bytes(model)
    loss = unlearning_module.descent_epoch(
        copy.deepcopy(model), [], bases, forget, UnlearnConfig(), 0.1, 0, "cpu", None
    )
    assert math.isfinite(loss) and state_bytes(model) == before


def test_cuda_graph_off_cuda_is_the_eager_loop_byte_for_byte(conv_case, caplog):
    model, forget, val, bases = conv_case
    config = UnlearnConfig(epochs=3, sample_tolerance=0.0, batch_size=4, seed=5)
    eager = unlearn(model, bases, forget, val, config)
    with caplog.at_level(logging.INFO, logger="pgu.core.unlearning"):
        asked = unlearn(model, bases, forget, val, config, cuda_graph=True)
    assert "cuda_graph: not used" in caplog.text
    assert state_bytes(asked.model) == state_bytes(eager.model)
    assert str(asked.history) == str(eager.history)


@pytest.mark.parametrize(
    "case", ["samples", "quantile", "classes"], ids=["pgu-loss", "quantile-loss", "free-rows"]
)
def test_a_descent_step_never_waits_on_tensor_values(conv_case, monkeypatch, case):
    """``unlearn(..., cuda_graph=True)`` captures ``_descent_step`` as a CUDA graph, where any
    host read of a value fails the capture (and eager, it stalls the launch queue each batch).
    Checked here on the CPU, op by op, for both losses and for class removal's free rows."""
    model, forget, val, bases = conv_case
    steps: list[HostReads] = []
    real = unlearning_module._descent_step

    def watched(*args, **kwargs):
        with HostReads() as reads:
            out = real(*args, **kwargs)
        steps.append(reads)
        return out

    monkeypatch.setattr(unlearning_module, "_descent_step", watched)
    config = UnlearnConfig(
        epochs=2, batch_size=4, sample_tolerance=0.0, class_target_acc=0.0,
        sample_loss="quantile" if case == "quantile" else "pgu",
    )  # fmt: skip
    classes = [1] if case == "classes" else None
    unlearn(model, bases, forget, val, config, forget_classes=classes)
    assert steps, "the loop never ran a descent step"
    assert [r.seen for r in steps if r.seen] == []


def test_an_epoch_reads_one_value_back_its_mean_loss(conv_case):
    """Eager on a GPU, an epoch is bound by kernel launches: a host read inside the pass would
    stall the launch queue at every batch. The one read is the mean loss at its end."""
    model, forget, _, bases = conv_case
    model = copy.deepcopy(model).eval()
    params = projected_parameters(model, bases)
    with HostReads() as reads:
        unlearning_module.descent_epoch(
            model, params, bases, forget, UnlearnConfig(batch_size=4), 0.05, 0, "cpu", None
        )
    assert reads.seen == ["_local_scalar_dense"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("sample_loss", ["pgu", "quantile", "classes"])
def test_cuda_graph_replays_the_same_epochs_as_the_eager_loop(conv_case, sample_loss, caplog):
    """Full batches replayed from one capture, the shorter last batch eager: the same weights
    as the eager loop (to GPU round-off: cuDNN is not bit-reproducible) and no fallback; for
    both sample losses, and for class removal with its unprojected output rows."""
    model, forget, val, bases = conv_case
    classes = [1] if sample_loss == "classes" else None
    config = UnlearnConfig(
        epochs=2,
        sample_tolerance=0.0,
        class_target_acc=0.0,
        batch_size=4,
        sample_loss="pgu" if classes else sample_loss,
    )
    assert len(forget) % config.batch_size  # a shorter last batch runs eagerly
    eager = unlearn(model, bases, forget, val, config, classes, device="cuda")
    with caplog.at_level(logging.INFO, logger="pgu.core.unlearning"):
        graphed = unlearn(model, bases, forget, val, config, classes, "cuda", cuda_graph=True)
    assert "cuda_graph" not in caplog.text
    assert [r["status"] for r in graphed.history] == [r["status"] for r in eager.history]
    for a, b in zip(graphed.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_loss_fn_replaces_the_loss_and_sees_sample_ids(conv_case):
    model, forget, val, bases = conv_case
    seen: list[int] = []

    def ascent(logits: torch.Tensor, y: torch.Tensor, sample_id: torch.Tensor) -> torch.Tensor:
        seen.extend(sample_id.tolist())
        return -nn.functional.cross_entropy(logits, y)

    config = UnlearnConfig(epochs=2, batch_size=3, sample_tolerance=0.0)
    result = unlearn(model, bases, forget, val, config, loss_fn=ascent)
    assert sorted(seen[: len(forget)]) == sorted(forget.sample_id.tolist())
    assert len(seen) == len(forget) * (len(result.history) - 1)


def test_config_rejects_unknown_and_invalid_values():
    cfg = UnlearnConfig.from_params({"epochs": 5, "lr_start": 0.1})
    assert cfg.epochs == 5 and cfg.lr_start == 0.1
    with pytest.raises(ValueError, match="learning_rate"):
        UnlearnConfig.from_params({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="step"):
        UnlearnConfig(step="adam")
    with pytest.raises(ValueError, match="epochs"):
        UnlearnConfig(epochs=0)
    assert UnlearnConfig(lr_start=0.2, lr_end=0.02, epochs=10).lr(0) == pytest.approx(0.2)
    assert UnlearnConfig(lr_start=0.2, lr_end=0.02, epochs=10).lr(5) == pytest.approx(
        0.2 * 0.1**0.5
    )


def test_samples_mode_guard_refuses_a_collapsed_model(memorised):
    """Nothing projected and a huge fixed step wreck the network; the guard must not accept it."""
    model, forget, val, _ = memorised
    empty = {name: torch.zeros(layer_dim(m), 0) for name, m in tracked_layers(model).items()}
    start = evaluate_sets(model, forget, val)
    config = UnlearnConfig(step="fixed", lr_start=50.0, lr_end=50.0)
    result = unlearn(model, empty, forget, val, config)
    collapsed = result.history[1]
    assert start["val_acc"] - collapsed["val_acc"] > config.sample_guard_drop
    assert result.stop_reason == "guard"
    kept_val, _ = accuracy_and_loss(result.model, val)
    assert kept_val >= start["val_acc"] - config.sample_guard_drop


def damaged(model: nn.Module, val: SampleSet, drop: float) -> nn.Module:
    """A copy of ``model`` whose validation accuracy is more than ``drop`` below its own:
    as after earlier requests that did damage. Seeded noise, grown until it is."""
    before = validation_metrics(model, val)["val_acc"]
    g = torch.Generator().manual_seed(1)
    noise = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    for scale in (0.1, 0.2, 0.3, 0.5, 0.8, 1.2):
        out = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in out.named_parameters():
                p.add_(noise[n] * scale * p.abs().mean())
        if before - validation_metrics(out, val)["val_acc"] > drop:
            return out
    raise AssertionError("noise did not damage the model enough")


def test_a_chain_guard_counts_from_the_original(memorised):
    """A later request's guard compares with the original's validation accuracy: damage done
    by earlier requests counts against it, and a start already beyond it stops at once."""
    model, forget, val, bases = memorised
    config = UnlearnConfig()
    start = damaged(model, val, config.sample_guard_drop)
    ref = validation_metrics(model, val)
    result = unlearn(start, bases, forget, val, config, original=model)
    assert {k: result.history[0][f"ref_{k}"] for k in ref} == ref
    assert result.stop_reason == "guard_at_start" and result.kept_epoch == 0
    assert result.epochs_run == 0 and len(result.history) == 1
    assert state_bytes(result.model) == state_bytes(start)
    # reference="current" guards each request against its own start only: it unlearns
    alone = unlearn(start, bases, forget, val, replace(config, reference="current"), original=model)
    assert alone.kept_epoch >= 1


@pytest.mark.parametrize(
    ("measure", "forget", "current_gap"),
    [("loss", 0.4, math.log(0.4 / 0.5)), ("log_loss", -1.0, -0.3), ("accuracy", 0.84, -0.04)],
)
def test_the_target_reads_the_references_validation_metrics(measure, forget, current_gap):
    """The original (ref) has val loss 0.4 / log-loss -1.0 / acc 0.84; the model, after
    earlier requests, 0.5 / -0.7 / 0.80. A forget set at the original's held-out level meets
    the target; with "current" it is still short of the drifted val metric, and the request
    would go on forgetting."""
    from pgu.core.unlearning import _assess

    key = {"loss": "forget_loss", "log_loss": "forget_log_loss", "accuracy": "forget_acc"}[measure]
    ref = {"val_acc": 0.84, "val_loss": 0.4, "val_log_loss": -1.0}
    start = {"val_acc": 0.80, "val_loss": 0.5, "val_log_loss": -0.7}
    m = {**start, key: forget}
    config = UnlearnConfig(sample_measure=measure, sample_tolerance=0.02, sample_guard_drop=0.05)
    assert _assess(m, start, ref, False, config) == ("hit", pytest.approx(0.0, abs=1e-12))
    current = replace(config, reference="current")
    assert _assess(m, start, ref, False, current) == ("short", pytest.approx(abs(current_gap)))
    # the guard counts from the original: 4 points are already spent, 5 allowed in all
    worse = {**m, "val_acc": 0.785}
    assert _assess(worse, start, ref, False, config)[0] == "over"
    assert _assess(worse, start, ref, False, current)[0] != "over"


@pytest.mark.parametrize("forget_acc", [0.89, 0.91])
def test_a_gap_of_exactly_the_tolerance_is_inside_the_band(forget_acc):
    """0.90 - 0.89 is 0.010000000000000009 in floats: the band's edge counts as inside, as the
    guards' and the class target's edges do, on both sides."""
    from pgu.core.unlearning import _assess

    ref = {"val_acc": 0.90, "val_loss": 0.4, "val_log_loss": -1.0}
    m = {**ref, "forget_acc": forget_acc}
    config = UnlearnConfig(sample_measure="accuracy", sample_tolerance=0.01)
    assert _assess(m, ref, ref, False, config)[0] == "hit"
    assert _assess({**m, "forget_acc": 2 * forget_acc - 0.9}, ref, ref, False, config)[0] != "hit"


def per_sample_losses(model: nn.Module, data: SampleSet) -> torch.Tensor:
    with torch.no_grad():
        return nn.functional.cross_entropy(model.eval()(data.inputs()), data.y, reduction="none")


def test_quantile_loss_targets_rank_the_start_forget_losses_against_the_references_val(
    memorised, monkeypatch
):
    """sample_loss="quantile": each batch is scored against quantile_targets(start losses on
    the forget set, the reference model's losses on val), looked up by sample id."""
    model, forget, val, bases = memorised
    reference = damaged(model, val, 0.0)  # another model: the original of a chain
    expected = quantile_targets(per_sample_losses(model, forget), per_sample_losses(reference, val))
    by_id = dict(zip(forget.sample_id.tolist(), expected.tolist(), strict=True))
    seen = []
    real = unlearning_module.quantile_loss

    def spy(logits, y, targets):
        seen.append(targets.clone())
        return real(logits, y, targets)

    monkeypatch.setattr(unlearning_module, "quantile_loss", spy)
    config = UnlearnConfig(sample_loss="quantile", epochs=1, batch_size=7)
    unlearn(model, bases, forget, val, config, original=reference)
    order = torch.randperm(len(forget), generator=torch.Generator().manual_seed(0))
    first = forget.sample_id[order[:7]].tolist()
    assert seen[0].tolist() == pytest.approx([by_id[i] for i in first], rel=1e-6)
    assert sum(len(t) for t in seen[: math.ceil(len(forget) / 7)]) == len(forget)
    with pytest.raises(ValueError, match="sample_loss"):
        UnlearnConfig(sample_loss="mse")
