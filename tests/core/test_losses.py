"""Tests for pgu.core.losses against per-sample loops of METHOD.md's formulas."""

import math

import pytest
import torch

from pgu.core import losses
from pgu.core.losses import depoison_loss, unlearning_loss


def softmax_list(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    s = sum(e)
    return [v / s for v in e]


def unlearning_reference(logits, y, delta, w1, w2) -> float:
    """METHOD.md section 4, one sample at a time."""
    forget, neg_ent = [], []
    for row, label in zip(logits.tolist(), y.tolist(), strict=True):
        p = softmax_list(row)
        forget.append(-math.log(1.0 - (p[label] - delta)))
        neg_ent.append(sum(pc * math.log(pc) for pc in p))
    n = len(forget)
    return w1 * sum(forget) / n + w2 * sum(neg_ent) / n


def depoison_reference(logits, y_wrong, delta, w1, w2) -> float:
    """METHOD.md section 7: forget term on the wrong label + w2 * H(softmax over the others)."""
    forget, ent = [], []
    for row, wrong in zip(logits.tolist(), y_wrong.tolist(), strict=True):
        p = softmax_list(row)
        forget.append(-math.log(1.0 - (p[wrong] - delta)))
        q = softmax_list([v for c, v in enumerate(row) if c != wrong])
        ent.append(-sum(qc * math.log(qc) for qc in q))
    n = len(forget)
    return w1 * sum(forget) / n + w2 * sum(ent) / n


def random_batch(b: int = 16, c: int = 10, seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=g)
    return logits, y


@pytest.mark.parametrize(
    ("delta", "w1", "w2"), [(0.05, 1.0, 0.2), (0.1, 0.5, 1.0), (0.0, 1.0, 0.0), (0.3, 0.0, 1.0)]
)
def test_unlearning_loss_matches_loop(delta, w1, w2):
    for seed in range(3):
        logits, y = random_batch(seed=seed)
        got = unlearning_loss(logits, y, delta=delta, w_forget=w1, w_entropy=w2)
        assert got.shape == ()
        assert got.item() == pytest.approx(unlearning_reference(logits, y, delta, w1, w2), rel=1e-6)


def test_unlearning_loss_float32_matches_loop():
    logits, y = random_batch(seed=5)
    got = unlearning_loss(logits.float(), y)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(unlearning_reference(logits, y, 0.05, 1.0, 0.2), rel=1e-5)


def test_unlearning_loss_gradient_finite_and_forget_term_lowers_true_class():
    logits, y = random_batch(seed=1)
    logits.requires_grad_(True)
    unlearning_loss(logits, y).backward()
    assert torch.isfinite(logits.grad).all()
    # the forget term alone lowers p_y on every sample (the entropy term may raise a small p_y)
    logits.grad = None
    unlearning_loss(logits, y, w_entropy=0.0).backward()
    stepped = (logits - 0.5 * logits.grad).detach()
    p_before = torch.softmax(logits.detach(), 1).gather(1, y[:, None])
    p_after = torch.softmax(stepped, 1).gather(1, y[:, None])
    assert (p_after < p_before).all()


def test_unlearning_loss_extreme_logits_are_safe():
    logits = torch.tensor([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    for delta in (0.0, 0.05):
        loss = unlearning_loss(logits, y, delta=delta)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        logits.grad = None
    # p_y = 1 exactly: the forget term is -log(delta)
    only_forget = unlearning_loss(logits, y, delta=0.05, w_entropy=0.0)
    assert only_forget.item() == pytest.approx(-math.log(0.05), rel=1e-6)


def test_effects_of_delta_and_weights():
    logits, y = random_batch(seed=2)
    forget_small = unlearning_loss(logits, y, delta=0.01, w_entropy=0.0)
    forget_large = unlearning_loss(logits, y, delta=0.2, w_entropy=0.0)
    assert forget_large < forget_small  # a larger offset lowers -log(1 - p_y + delta)
    f = unlearning_loss(logits, y, w_forget=1.0, w_entropy=0.0)
    e = unlearning_loss(logits, y, w_forget=0.0, w_entropy=1.0)
    torch.testing.assert_close(
        unlearning_loss(logits, y, w_forget=2.0, w_entropy=0.3), 2 * f + 0.3 * e
    )
    assert e <= 0  # negative entropy
    uniform = torch.zeros(3, 10, dtype=torch.float64)
    ent_uniform = unlearning_loss(
        uniform, torch.zeros(3, dtype=torch.long), w_forget=0.0, w_entropy=1.0
    )
    assert ent_uniform.item() == pytest.approx(-math.log(10))


def test_entropy_term_gradient_flattens_the_output():
    logits, y = random_batch(seed=3)
    logits.requires_grad_(True)
    unlearning_loss(logits, y, w_forget=0.0, w_entropy=1.0).backward()
    stepped = (logits - 0.1 * logits.grad).detach()

    def entropy(z):
        p = torch.softmax(z, 1)
        return -(p * p.log()).sum(1)

    assert (entropy(stepped) > entropy(logits.detach())).all()


@pytest.mark.parametrize(("delta", "w1", "w2"), [(0.1, 1.0, 0.2), (0.05, 0.7, 1.5)])
def test_depoison_loss_matches_loop(delta, w1, w2):
    for seed in range(3):
        logits, y = random_batch(seed=10 + seed)
        got = depoison_loss(logits, y, delta=delta, w_forget=w1, w_entropy=w2)
        assert got.item() == pytest.approx(depoison_reference(logits, y, delta, w1, w2), rel=1e-6)


def test_depoison_entropy_term_commits_to_another_class():
    logits, y = random_batch(seed=4, scale=0.5)
    logits.requires_grad_(True)
    depoison_loss(logits, y, w_forget=0.0, w_entropy=1.0).backward()
    assert torch.isfinite(logits.grad).all()
    # the wrong label's logit does not enter the other-class entropy
    assert torch.all(logits.grad.gather(1, y[:, None]) == 0)
    stepped = (logits - 0.5 * logits.grad).detach()
    before = depoison_loss(logits.detach(), y, w_forget=0.0, w_entropy=1.0)
    after = depoison_loss(stepped, y, w_forget=0.0, w_entropy=1.0)
    assert after < before


def test_depoison_two_classes_has_zero_other_entropy():
    logits = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0])
    assert depoison_loss(logits, y, w_forget=0.0).item() == pytest.approx(0.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        unlearning_loss(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        unlearning_loss(torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        depoison_loss(torch.randn(0, 3), torch.zeros(0, dtype=torch.long))


# --- quantile matching (sample_loss="quantile") ----------------------------------------------


def test_quantile_targets_map_ranks_onto_held_out_quantiles():
    forget = torch.tensor([0.3, 0.01, 0.2, 0.02])  # ranks 3, 0, 2, 1
    held_out = torch.tensor([4.0, 0.5, 1.0, 2.0, 0.6, 0.7, 3.0, 0.8])  # sorted: .5 .6 .7 .8 1 2 3 4
    # quantile (r + 1/2) / 4 of 8 values: indices 1, 3, 5, 7 for ranks 0..3
    expected = torch.tensor([4.0, 0.6, 2.0, 0.8])
    assert torch.equal(losses.quantile_targets(forget, held_out), expected)


def test_quantile_targets_never_ask_for_more_confidence_and_keep_the_order():
    gen = torch.Generator().manual_seed(0)
    forget = torch.rand(50, generator=gen) * 3
    held_out = torch.rand(200, generator=gen)  # mostly below the forget losses
    targets = losses.quantile_targets(forget, held_out)
    assert (targets >= forget).all()
    order = torch.argsort(forget)
    assert (targets[order].diff() >= 0).all()  # rank-preserving
    same = losses.quantile_targets(torch.full((4,), 0.1), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(same, torch.tensor([1.0, 2.0, 3.0, 4.0]))  # ties keep their order
    with pytest.raises(ValueError, match="at least one"):
        losses.quantile_targets(forget, held_out[:0])


def test_quantile_loss_is_zero_on_target_and_pushes_each_loss_towards_it():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none").detach()
    assert losses.quantile_loss(logits, y, ce).item() == pytest.approx(0.0, abs=1e-12)
    # sample 0 below its target, sample 1 above: descent lowers the first's true logit and
    # raises the second's
    loss = losses.quantile_loss(logits, y, torch.stack([ce[0] * 10, ce[1] / 10]))
    loss.backward()
    assert logits.grad[0, 0] > 0 and logits.grad[1, 1] < 0
    with pytest.raises(ValueError, match="targets must be"):
        losses.quantile_loss(logits, y, ce[:1])
