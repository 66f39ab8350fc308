"""Tests for pgu.core.metrics: the divergences and scores have their textbook properties, and
the entropy attack separates what a model memorised from what it never saw - and only that."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgu.core.data import SampleSet
from pgu.core.metrics import (
    attack_features,
    cross_entropy,
    entropy,
    entropy_attack,
    js_divergence,
    softmax_outputs,
    tug_of_war,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second OpenMP thread, which on a shared 2-core machine
    mostly spin-waits (10x slower tests under load); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_probs(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(n, c, generator=g, dtype=torch.float64), dim=1)


def test_entropy_of_uniform_and_one_hot():
    probs = torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(
        entropy(probs), torch.tensor([math.log(4), 0.0, math.log(2)], dtype=torch.float64)
    )
    assert entropy(np.full((3, 10), 0.1)).shape == (3,)


def test_js_divergence_properties():
    p, q = random_probs(50, 6, seed=0), random_probs(50, 6, seed=1)
    torch.testing.assert_close(js_divergence(p, p), torch.zeros(50, dtype=torch.float64))
    torch.testing.assert_close(js_divergence(p, q), js_divergence(q, p))
    assert (js_divergence(p, q) > 0).all() and (js_divergence(p, q) <= math.log(2)).all()
    disjoint = js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert disjoint.item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="shapes"):
        js_divergence(p, q[:, :3])


def test_tug_of_war():
    acc = {"retain": 0.99, "forget": 0.2, "test": 0.9}
    assert tug_of_war(acc, dict(acc)) == 1.0
    other = {"retain": 0.98, "forget": 0.3, "test": 0.9}
    assert tug_of_war(acc, other) == pytest.approx(0.99 * 0.9 * 1.0)
    with pytest.raises(ValueError, match="sets"):
        tug_of_war(acc, {"retain": 0.9})


def test_attack_features_are_log_entropy_and_log_loss():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    feats = attack_features(probs, torch.tensor([0, 1]))
    assert feats.shape == (2, 2)
    assert feats[0, 1] == pytest.approx(math.log(-math.log(0.9)))
    assert feats[1, 0] == pytest.approx(math.log(math.log(2)))
    assert cross_entropy(probs, [1, 0]).tolist() == pytest.approx([-math.log(0.1), math.log(2)])


def sample_set(x: torch.Tensor, y: torch.Tensor, c: int) -> SampleSet:
    f = x.shape[1]
    return SampleSet(x, y, torch.arange(len(y)), torch.zeros(f), torch.ones(f), c)


@pytest.fixture(scope="module")
def overfit():
    """A tiny MLP that memorised random labels of its members; non-members are fresh draws."""
    g = torch.Generator().manual_seed(0)
    d, c, n = 20, 4, 150
    members = sample_set(torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g), c)
    fresh = sample_set(torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g), c)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, c))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(members.inputs()), members.y).backward()
        opt.step()
    return model.eval(), members, fresh


def test_attack_separates_memorised_members_from_unseen(overfit):
    model, members, fresh = overfit
    pm, pn = softmax_outputs(model, members), softmax_outputs(model, fresh)
    assert pm.dtype == torch.float64 and pm.shape == (len(members), 4)
    # the target: half members, half unseen -> about half called member
    target_p = torch.cat([pm[:40], pn[:40]])
    target_y = torch.cat([members.y[:40], fresh.y[:40]])
    out = entropy_attack(pm[40:], members.y[40:], pn[40:], fresh.y[40:], target_p, target_y)
    assert out["auc"] > 0.9
    assert out["n_per_class"] == len(members) - 40
    assert 0.3 < out["member_rate"] < 0.7
    only_members = entropy_attack(
        pm[40:], members.y[40:], pn[40:], fresh.y[40:], pm[:40], members.y[:40]
    )
    assert only_members["member_rate"] > 0.9


def test_attack_is_at_chance_on_exchangeable_sets(overfit):
    model, _, fresh = overfit
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(150, 20, generator=g), torch.randint(0, 4, (150,), generator=g)
    more = sample_set(x, y, 4)
    pa, pb = softmax_outputs(model, fresh), softmax_outputs(model, more)
    for seed in range(3):
        out = entropy_attack(pa, fresh.y, pb, more.y, pa[:20], fresh.y[:20], seed=seed)
        assert 0.35 <= out["auc"] <= 0.65, out


def test_attack_balances_by_subsampling_with_the_seed():
    pm, pn = random_probs(300, 5, seed=1), random_probs(60, 5, seed=2)
    ym, yn = torch.zeros(300, dtype=torch.long), torch.zeros(60, dtype=torch.long)
    a = entropy_attack(pm, ym, pn, yn, pn, yn, seed=3)
    b = entropy_attack(pm, ym, pn, yn, pn, yn, seed=3)
    assert a == b and a["n_per_class"] == 60
    with pytest.raises(ValueError, match=">= 2"):
        entropy_attack(pm[:1], ym[:1], pn, yn, pn, yn)
