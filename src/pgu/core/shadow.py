"""Shadow-model membership inference: can an attacker tell the unlearned model from retrained?

The entropy/loss attack of ``pgu.core.metrics`` asks whether forget samples look like training
members to one model. This one (after Shokri et al., "Membership Inference Attacks against
Machine Learning Models", 2017) asks the question an auditor cares about directly:

1. Shadow models are trained with the project's recipe from seeds other than the original's,
   in pairs: one *with* the forget set (on the data the model knew before the request), one
   *without* it (on the data the retrained gold standard saw).
2. Each forget sample seen through each shadow model is one attack example, labelled 1 (the
   model trained on it) or 0. Its features are the model's softmax output and the sample's
   one-hot label: the log-probabilities sorted in descending order (C), the log-probability of
   the label (1) and the one-hot label (C); a logistic regression separates the two.
3. The attack's own power is its ROC AUC on a shadow pair it was not fitted on (leave one pair
   out); near 0.5 it cannot tell "trained with" from "without" on this forget set at all, and
   step 4 says nothing.
4. The fitted attack scores the forget set through a target model (PGU's, a baseline's) and
   through the retrained gold standard. The AUC of target versus gold is how well it tells
   their outputs apart: 0.5 is ideal; the original model should score clearly above 0.5.

All probabilities are float64 (N, C) arrays or tensors, as from ``metrics.softmax_outputs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from pgu.core.metrics import FEATURE_FLOOR

# Two pairs at least: the attack's power is measured on a pair it was not fitted on.
MIN_SHADOW_PAIRS = 2


def shadow_features(probs: Tensor | np.ndarray, y: Tensor | np.ndarray) -> np.ndarray:
    """Attack features of each sample: (N, 2C + 1) float64.

    Columns: ln p sorted in descending order (C), ln p_y (1), one-hot y (C); each ln p is
    floored at ``FEATURE_FLOOR`` first (a float64 softmax can give an exact 0).
    """
    p = np.asarray(probs, dtype=np.float64)  # (N, C)
    labels = np.asarray(y, dtype=np.int64)  # (N,)
    if p.ndim != 2 or labels.shape != (p.shape[0],):
        raise ValueError(f"probs must be (N, C) and y (N,), got {p.shape} and {labels.shape}")
    n, c = p.shape
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}), got {labels.min()}..{labels.max()}")
    log_p = np.log(np.maximum(p, FEATURE_FLOOR))  # (N, C)
    ranked = -np.sort(-log_p, axis=1)  # (N, C), most probable class first
    own = log_p[np.arange(n), labels][:, None]  # (N, 1)
    onehot = np.eye(c)[labels]  # (N, C)
    return np.concatenate([ranked, own, onehot], axis=1)


def _attacker() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _pair_examples(
    with_probs: Tensor | np.ndarray, without_probs: Tensor | np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([shadow_features(with_probs, y), shadow_features(without_probs, y)])
    t = np.concatenate([np.ones(len(y), dtype=np.int64), np.zeros(len(y), dtype=np.int64)])
    return x, t  # (2N, 2C + 1), (2N,)


@dataclass
class ShadowAttack:
    """A fitted shadow-model attack on one forget set.

    Attributes:
        model: the fitted scaler + logistic regression.
        y: (N,) labels of the forget set (the same samples every target is scored on).
        held_out_auc: mean ROC AUC on each shadow pair when fitted on the others (its power).
        n_pairs: shadow pairs it was fitted on.
    """

    model: Pipeline
    y: np.ndarray
    held_out_auc: float
    n_pairs: int

    def scores(self, probs: Tensor | np.ndarray) -> np.ndarray:
        """(N,) attack scores (log-odds of "trained on this sample") of a model's outputs."""
        return self.model.decision_function(shadow_features(probs, self.y))

    def member_rate(self, probs: Tensor | np.ndarray) -> float:
        """Fraction of the forget set that the attack says the model trained on."""
        return float((self.scores(probs) > 0).mean())

    def auc_against(self, probs: Tensor | np.ndarray, reference: Tensor | np.ndarray) -> float:
        """ROC AUC of a model's scores (positives) against a reference model's (negatives).

        0.5: the attack cannot tell the two models' outputs on the forget set apart; above 0.5
        the model looks more "trained on the forget set" than the reference, below less.
        """
        s, r = self.scores(probs), self.scores(reference)
        t = np.concatenate([np.ones(len(s), dtype=np.int64), np.zeros(len(r), dtype=np.int64)])
        return float(roc_auc_score(t, np.concatenate([s, r])))


def fit_shadow_attack(
    with_probs: Sequence[Tensor | np.ndarray],
    without_probs: Sequence[Tensor | np.ndarray],
    y: Tensor | np.ndarray,
) -> ShadowAttack:
    """Fit the attack on shadow pairs' outputs on the forget set.

    Args:
        with_probs: per pair, (N, C) softmax outputs on the forget set of the shadow model
            trained with it.
        without_probs: per pair, the same for the shadow model trained without it.
        y: (N,) labels of the forget set.

    Raises:
        ValueError: fewer than ``MIN_SHADOW_PAIRS`` pairs, unequal counts, or an empty set.
    """
    labels = np.asarray(y, dtype=np.int64)
    n_pairs = len(with_probs)
    if n_pairs != len(without_probs):
        raise ValueError(f"{n_pairs} 'with' outputs but {len(without_probs)} 'without' outputs")
    if n_pairs < MIN_SHADOW_PAIRS:
        raise ValueError(
            f"the shadow attack needs at least {MIN_SHADOW_PAIRS} pairs of shadow models, got "
            f"{n_pairs}: its power is measured on a pair it was not fitted on"
        )
    if not len(labels):
        raise ValueError("the shadow attack needs a non-empty forget set")
    pairs = [_pair_examples(w, wo, labels) for w, wo in zip(with_probs, without_probs, strict=True)]
    aucs = []
    for held in range(n_pairs):  # leave one pair out: generalisation to unseen models
        x = np.concatenate([p[0] for i, p in enumerate(pairs) if i != held])
        t = np.concatenate([p[1] for i, p in enumerate(pairs) if i != held])
        fitted = _attacker().fit(x, t)
        aucs.append(roc_auc_score(pairs[held][1], fitted.decision_function(pairs[held][0])))
    x = np.concatenate([p[0] for p in pairs])  # (2 N n_pairs, 2C + 1)
    t = np.concatenate([p[1] for p in pairs])
    return ShadowAttack(_attacker().fit(x, t), labels, float(np.mean(aucs)), n_pairs)
