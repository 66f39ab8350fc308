"""Tests for pgu.core.depoisoning: the §7 loss, the configuration, and the loop on a small
label-flip problem (blobs, an MLP) where the answers are known."""

import copy
import logging
import math

import pytest
import torch

from pgu.core.cgs import COMPLEMENT_SUFFIX, compute_bases
from pgu.core.checkpoint import model_from_bytes, model_spec, model_to_bytes
from pgu.core.data import SampleSet
from pgu.core.depoisoning import (
    DepoisonConfig,
    accuracies,
    depoison,
    depoison_bases,
    gap_recovered,
)
from pgu.core.losses import depoison_loss
from pgu.core.poisoning import flip_labels, poisoned_copy, poisoned_ids, poisoned_samples
from pgu.core.representation import collect_representations
from pgu.core.training import TrainRecipe, fit_from_scratch

CLASSES, FEATURES = 4, 32


def loss_reference(logits, wrong, delta, w1, w2) -> float:
    """§7 one sample at a time: -log(1 - (p_wrong - delta)) + w2 * H(softmax over the others)."""
    total = 0.0
    for row, w in zip(logits.tolist(), wrong.tolist(), strict=True):
        z = sum(math.exp(v) for v in row)
        p_wrong = math.exp(row[w]) / z
        others = [v for c, v in enumerate(row) if c != w]
        zo = sum(math.exp(v) for v in others)
        h = -sum(math.exp(v) / zo * math.log(math.exp(v) / zo) for v in others)
        total += w1 * -math.log(1.0 - (p_wrong - delta)) + w2 * h
    return total / len(wrong)


@pytest.mark.parametrize(("delta", "w1", "w2"), [(0.1, 1.0, 0.2), (0.0, 0.5, 1.0)])
def test_loss_equals_the_per_sample_formula(delta, w1, w2):
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(9, 5, generator=g, dtype=torch.float64)
    wrong = torch.randint(0, 5, (9,), generator=g)
    got = depoison_loss(logits, wrong, delta=delta, w_forget=w1, w_entropy=w2)
    assert got.item() == pytest.approx(loss_reference(logits, wrong, delta, w1, w2), rel=1e-9)
    # the entropy term ignores the wrong class's logit entirely
    bumped = logits.clone()
    bumped[torch.arange(9), wrong] += 3.0
    ent = depoison_loss(bumped, wrong, delta=delta, w_forget=0.0, w_entropy=1.0)
    assert ent.item() == pytest.approx(
        depoison_loss(logits, wrong, delta=delta, w_forget=0.0, w_entropy=1.0).item(), rel=1e-9
    )


def test_config_validation_and_schedule():
    with pytest.raises(ValueError, match="unknown de-poisoning parameters"):
        DepoisonConfig.from_params({"epochz": 3})
    with pytest.raises(ValueError, match="step must be one of"):
        DepoisonConfig(step="adam")
    with pytest.raises(ValueError, match="epochs"):
        DepoisonConfig(epochs=0)
    c = DepoisonConfig.from_params({"epochs": 4, "lr_start": 0.4, "lr_end": 0.1})
    assert c.lr(0) == pytest.approx(0.4) and c.lr(2) == pytest.approx(0.2)
    assert DepoisonConfig(trust_region=False).trust_region_name(torch.nn.Linear(2, 2)) is None


def test_gap_recovered():
    assert gap_recovered(0.7, 0.9, 1.0) == pytest.approx(2 / 3)
    assert math.isnan(gap_recovered(0.9, 0.95, 0.9))


def blobs(n_per_class: int, seed: int) -> SampleSet:
    """Four Gaussian blobs in 32-D, overlapping enough that an MLP memorises flipped labels."""
    g = torch.Generator().manual_seed(seed)
    centres = 0.8 * torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(99))
    y = torch.arange(CLASSES).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), FEATURES, generator=g)
    ids = torch.arange(len(y)) + 1000 * seed
    return SampleSet(x, y, ids, torch.zeros(FEATURES), torch.ones(FEATURES), CLASSES)


@pytest.fixture(scope="module")
def problem() -> dict:
    """A poisoned MLP (it memorised the flips), its clean-data bases, and the data."""
    train, val, test = blobs(50, 0), blobs(30, 1), blobs(30, 2)
    scenario = flip_labels(train, n_pairs=2, per_class=12, seed=0)
    spec = model_spec("mlp", (FEATURES,), CLASSES, hidden=[128])
    recipe = TrainRecipe(epochs=60, batch_size=32, lr=0.05, lr_end=0.01, weight_decay=0.0)
    model, _ = fit_from_scratch(spec, poisoned_copy(train, scenario), recipe)
    clean = train.without_ids(poisoned_ids(scenario))
    wrong, true = poisoned_samples(train, scenario)
    r_clean = collect_representations(model, clean.batches(64))
    bases, _ = depoison_bases(r_clean, 0.95, trust_region_layer="head")
    sets = {"test": test, "clean_train": clean, "poisoned_true": true, "poisoned_wrong": wrong}
    return {"model": model, "bases": bases, "r": r_clean, "val": val, "sets": sets}


def test_bases_hold_m_itself_for_the_trust_region_layer(problem):
    bases, r = problem["bases"], problem["r"]
    full, summary = compute_bases(r, 0.95, lean=False)
    torch.testing.assert_close(bases["head"], full["head"])
    assert "head" + COMPLEMENT_SUFFIX not in bases
    _, lean_summary = depoison_bases(r, 0.95, trust_region_layer="head")
    assert [s["layer"] for s in lean_summary] == list(r)
    with pytest.raises(ValueError, match="has no statistics"):
        depoison_bases(r, 0.95, trust_region_layer="nope")
    # the cgs block's eigh_dtype reaches every layer's decomposition, the trust region's too
    f32, _ = depoison_bases(r, 0.95, trust_region_layer="head", eigh_dtype="float32")
    want, _ = compute_bases({"head": r["head"]}, 0.95, lean=False, eigh_dtype="float32")
    assert torch.equal(f32["head"], want["head"])
    with pytest.raises(ValueError, match="eigh_dtype"):
        depoison_bases(r, 0.95, trust_region_layer="head", eigh_dtype="float16")


def test_depoisoning_undoes_the_flips_and_returns_a_plain_model(problem):
    model, sets = problem["model"], problem["sets"]
    before = copy.deepcopy(model.state_dict())
    start = accuracies(model, sets)
    assert start["poisoned_wrong_acc"] > 0.8  # the flips were memorised
    config = DepoisonConfig(epochs=6, lr_start=0.3, lr_end=0.15, batch_size=16)
    result = depoison(model, problem["bases"], sets["poisoned_wrong"], problem["val"], config)
    end = accuracies(result.model, sets)
    assert end["poisoned_true_acc"] > 0.5 > start["poisoned_true_acc"]
    assert end["poisoned_wrong_acc"] < 0.2
    assert end["test_acc"] >= start["test_acc"]
    assert result.trust_region_layer == "head" and result.kept_epoch >= 1
    assert result.history[-1]["scale_dev"] > 0  # S moved, and was folded in
    # the input model is untouched; the output is a plain registry model with no hook
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not result.model.head._forward_hooks
    reloaded = model_from_bytes(model_to_bytes(result.model))
    x = sets["test"].inputs()
    assert torch.equal(reloaded(x), result.model(x))
    # biases and BatchNorm never move; hidden weights move only outside their CGS
    after = result.model.state_dict()
    for k in before:
        if not k.endswith("weight") or ".bn" in k or k.startswith("features.bn"):
            assert torch.equal(after[k], before[k]), k
    dw = after["features.fc1.weight"] - before["features.fc1.weight"]
    m = problem["bases"].get("features.fc1")
    if m is not None:
        assert torch.linalg.norm(dw @ m) <= 1e-4 * torch.linalg.norm(dw)
    else:  # stored as its complement N: the change lies in span(N)
        n = problem["bases"]["features.fc1" + COMPLEMENT_SUFFIX]
        assert torch.linalg.norm(dw - (dw @ n) @ n.T) <= 1e-4 * torch.linalg.norm(dw)
    # deterministic: the same run gives the same bytes
    again = depoison(model, problem["bases"], sets["poisoned_wrong"], problem["val"], config)
    assert model_to_bytes(again.model) == model_to_bytes(result.model)


def test_observe_is_recorded_but_never_steers(problem):
    sets = problem["sets"]
    config = DepoisonConfig(epochs=2, batch_size=16)
    seen = []
    plain = depoison(
        problem["model"], problem["bases"], sets["poisoned_wrong"], problem["val"], config
    )
    watched = depoison(
        problem["model"],
        problem["bases"],
        sets["poisoned_wrong"],
        problem["val"],
        config,
        observe=lambda m: accuracies(m, sets),
        on_epoch=seen.append,
    )
    assert model_to_bytes(plain.model) == model_to_bytes(watched.model)
    assert [r["epoch"] for r in seen] == [0, 1, 2]
    assert all("poisoned_true_acc" in r and "test_acc" in r for r in watched.history)


def test_a_step_that_wrecks_val_is_halved_then_stops_keeping_the_poisoned_model(problem, caplog):
    sets, model = problem["sets"], problem["model"]
    config = DepoisonConfig(
        epochs=3, lr_start=30.0, lr_end=30.0, stop_drop=0.0, max_backtracks=1, batch_size=16
    )
    with caplog.at_level(logging.WARNING, logger="pgu.core.depoisoning"):
        result = depoison(model, problem["bases"], sets["poisoned_wrong"], problem["val"], config)
    assert result.stop_reason == "val_drop" and result.kept_epoch == 0
    assert [r["accepted"] for r in result.history] == [True, False, True]
    assert result.lr_scale == 0.5
    assert "POISONED model is returned unchanged" in caplog.text
    assert model_to_bytes(result.model) == model_to_bytes(model)  # bit for bit, S = I folded


def test_plain_pgu_without_trust_region(problem):
    sets = problem["sets"]
    config = DepoisonConfig(epochs=2, trust_region=False, batch_size=16)
    result = depoison(
        problem["model"], problem["bases"], sets["poisoned_wrong"], problem["val"], config
    )
    assert result.trust_region_layer is None
    assert "scale_dev" not in result.history[-1]
    with pytest.raises(ValueError, match="needs its CGS basis M"):
        depoison(problem["model"], {}, sets["poisoned_wrong"], problem["val"], DepoisonConfig())
