"""What the evaluation measures on a request's sets (pgu.core.evaluation)."""

import torch
from torch import nn

from pgu.core.data import SampleSet
from pgu.core.evaluation import EvalSets, evaluate_model


def _set(labels: list[int]) -> SampleSet:
    y = torch.tensor(labels)
    x = nn.functional.one_hot(y, 3).float()  # (N, 3): the label, as features
    return SampleSet(x, y, torch.arange(len(y)), torch.zeros(3), torch.ones(3), 3)


def test_the_other_classes_leave_out_classes_an_earlier_request_removed():
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():  # right on classes 1 and 2, always wrong on class 0 (an earlier removal)
        model.weight.copy_(torch.diag(torch.tensor([-10.0, 10.0, 10.0])))
    data = _set([0, 0, 1, 1, 2, 2])
    sets = EvalSets(retain=data, forget=data, val=data, test=data, forget_classes=(2,))
    assert evaluate_model(model, sets).metrics["test_other_acc"] == 0.5  # class 0 counted
    later = EvalSets(**{**sets.__dict__, "removed_before": (0,)})
    metrics = evaluate_model(model, later).metrics
    assert metrics["test_other_acc"] == 1.0  # class 1 only: what a retrained model can get right
    assert metrics["test_forget_class_acc"] == 1.0 and metrics["test_acc"] == 4 / 6
    # a sample request after a class removal: test accuracy on the classes left is kept too
    samples = EvalSets(**{**sets.__dict__, "forget_classes": (), "removed_before": (0,)})
    metrics = evaluate_model(model, samples).metrics
    assert metrics["test_other_acc"] == 1.0 and "test_forget_class_acc" not in metrics
    plain = EvalSets(**{**sets.__dict__, "forget_classes": ()})
    assert "test_other_acc" not in evaluate_model(model, plain).metrics
