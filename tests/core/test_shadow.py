"""The shadow-model attack: its features, its power on separable and exchangeable outputs."""

import numpy as np
import pytest

from pgu.core.audit import check_shadow_params
from pgu.core.metrics import FEATURE_FLOOR
from pgu.core.shadow import fit_shadow_attack, shadow_features

C = 5


def _outputs(rng: np.random.Generator, y: np.ndarray, confidence: float) -> np.ndarray:
    """Softmax outputs (N, C) whose label logit is ``confidence`` above noise."""
    logits = rng.normal(size=(len(y), C))
    logits[np.arange(len(y)), y] += confidence + rng.normal(scale=1.0, size=len(y))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_features_are_sorted_log_probs_the_label_and_its_one_hot():
    p = np.array([[0.1, 0.7, 0.2, 0.0, 0.0], [0.5, 0.1, 0.1, 0.1, 0.2]])
    y = np.array([2, 0])
    f = shadow_features(p, y)
    assert f.shape == (2, 2 * C + 1)
    floor = np.log(FEATURE_FLOOR)
    np.testing.assert_allclose(f[0, :C], np.log([0.7, 0.2, 0.1, FEATURE_FLOOR, FEATURE_FLOOR]))
    assert f[0, C] == pytest.approx(np.log(0.2)) and f[1, C] == pytest.approx(np.log(0.5))
    np.testing.assert_array_equal(f[:, C + 1 :], np.eye(C)[y])
    assert np.isfinite(f).all() and f.min() == pytest.approx(floor)


def test_features_reject_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="must be"):
        shadow_features(np.ones((3, C)) / C, np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        shadow_features(np.ones((2, C)) / C, np.array([0, 5]))


def test_the_attack_tells_trained_with_from_without_and_ranks_targets():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, 300)
    with_set = [_outputs(rng, y, 6.0) for _ in range(3)]  # confident: trained on the samples
    without = [_outputs(rng, y, 2.0) for _ in range(3)]
    attack = fit_shadow_attack(with_set, without, y)
    assert attack.n_pairs == 3 and attack.held_out_auc > 0.9
    memorised, unseen = _outputs(rng, y, 6.0), _outputs(rng, y, 2.0)
    assert attack.member_rate(memorised) > 0.8 and attack.member_rate(unseen) < 0.2
    assert attack.auc_against(memorised, unseen) > 0.9  # the original against retrained
    assert attack.auc_against(unseen, memorised) < 0.1  # flatter than retrained: also told apart
    assert attack.auc_against(unseen, unseen) == pytest.approx(0.5)  # identical: a coin toss
    again = fit_shadow_attack(with_set, without, y)
    np.testing.assert_array_equal(again.scores(memorised), attack.scores(memorised))


def test_the_attack_has_no_power_on_exchangeable_outputs():
    rng = np.random.default_rng(1)
    y = rng.integers(0, C, 2000)
    same = [_outputs(rng, y, 3.0) for _ in range(4)]
    attack = fit_shadow_attack(same[:2], same[2:], y)
    assert abs(attack.held_out_auc - 0.5) < 0.05
    assert abs(attack.auc_against(_outputs(rng, y, 3.0), _outputs(rng, y, 3.0)) - 0.5) < 0.05


def test_the_attack_needs_two_pairs_and_matching_inputs():
    rng = np.random.default_rng(2)
    y = rng.integers(0, C, 20)
    p = _outputs(rng, y, 3.0)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        fit_shadow_attack([p], [p], y)
    with pytest.raises(ValueError, match="2 'with' outputs but 3"):
        fit_shadow_attack([p, p], [p, p, p], y)
    with pytest.raises(ValueError, match="non-empty"):
        fit_shadow_attack([p[:0]] * 2, [p[:0]] * 2, y[:0])


@pytest.mark.parametrize("n", [0, 2, 5])
def test_shadow_params_accept_off_or_two_pairs_and_more(n):
    assert check_shadow_params({"n_shadow": n}) == n


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_shadow": 1}, "0 .no shadow-model attack. or an integer >= 2"),
        ({"n_shadow": -2}, "integer >= 2"),
        ({"n_shadow": "two"}, "integer >= 2"),
        ({"n_shadow": True}, "integer >= 2"),
        ({"n_shadow": 2, "shadow_min_power": 0.4}, r"AUC in \[0.5, 1\]"),
    ],
)
def test_shadow_params_name_what_is_wrong(params, match):
    with pytest.raises(ValueError, match=match):
        check_shadow_params(params)
