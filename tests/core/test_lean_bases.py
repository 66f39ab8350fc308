"""Lean bases: each layer stores the smaller of its CGS basis M and its complement N.

The reference is math: G - (G M) M^T equals (G N) N^T, so which form is stored must not change
the projected gradient, the updated weights, or what a stored file means.
"""

import pytest
import torch
from torch import nn

from pgu.core.cgs import COMPLEMENT_SUFFIX, basis_bytes, compute_bases, spectrum
from pgu.core.checkpoint import tensors_from_bytes, tensors_to_bytes
from pgu.core.losses import unlearning_loss
from pgu.core.projection import (
    layer_bases,
    project_gradients,
    project_onto,
    project_out,
    projected_parameters,
)
from pgu.core.representation import collect_representations


def random_psd(d: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rank, d, generator=g, dtype=torch.float64)
    return a.T @ a


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # "0": d = 27
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 6),  # "3": d = 100
    ).eval()


def test_project_onto_complement_equals_project_out():
    torch.manual_seed(1)
    _, u = spectrum(random_psd(20, 20, seed=1))
    m, n = u[:, :13].float(), u[:, 13:].float()
    g = torch.randn(7, 20)
    torch.testing.assert_close(project_onto(g, n), project_out(g, m), atol=1e-5, rtol=1e-5)
    assert not project_onto(g, torch.zeros(20, 0)).any()  # frozen: nothing moves
    with pytest.raises(ValueError, match="complement"):
        project_onto(g, torch.zeros(19, 2))


@pytest.mark.parametrize("gamma", [0.3, 0.9, 0.999, 1.0])
def test_lean_choice_is_the_smaller_form_and_projects_the_same(gamma):
    model = net()
    x = torch.randn(40, 3, 5, 5)
    retain = collect_representations(model, [x])
    full, summary = compute_bases(retain, gamma, lean=False)
    lean, lean_summary = compute_bases(retain, gamma)
    assert lean_summary == summary  # k is the CGS dimension, whichever form is stored
    for s in summary:
        d, k = s["d"], s["k"]
        if d - k < k:
            stored = lean[s["layer"] + COMPLEMENT_SUFFIX]
            assert stored.shape == (d, d - k) and s["layer"] not in lean
        else:
            stored = lean[s["layer"]]
            assert stored.shape == (d, k)
        torch.testing.assert_close(stored.T @ stored, torch.eye(stored.shape[1]))
    assert basis_bytes(lean) <= basis_bytes(full)
    assert basis_bytes(lean) <= sum(s["d"] ** 2 for s in summary) * 4 / 2

    # the same projected gradients, and the same trainable weights
    assert projected_parameters(model, lean) == projected_parameters(model, full)
    y = torch.randint(0, 6, (40,), generator=torch.Generator().manual_seed(2))
    grads = {}
    for name, bases in (("full", full), ("lean", lean)):
        model.zero_grad()
        unlearning_loss(model(x), y).backward()
        project_gradients(model, bases)
        grads[name] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["full"], grads["lean"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_frozen_layer_stores_empty_complement_that_survives_a_file():
    model = net()
    retain = collect_representations(model, [torch.randn(8, 3, 5, 5)])
    bases, _ = compute_bases(retain, 0.9, overrides={"3": 1.0})
    assert bases["3" + COMPLEMENT_SUFFIX].shape == (100, 0)
    assert projected_parameters(model, bases) == [model[0].weight]
    back, _ = tensors_from_bytes(tensors_to_bytes(bases))
    assert {k: tuple(v.shape) for k, v in back.items()} == {
        k: tuple(v.shape) for k, v in bases.items()
    }
    model.zero_grad()
    unlearning_loss(model(torch.randn(4, 3, 5, 5)), torch.zeros(4, dtype=torch.long)).backward()
    project_gradients(model, back)
    assert not model[3].weight.grad.any()


def test_layer_bases_resolves_keys_and_rejects_both_forms_or_unknown_names():
    model = net()
    resolved = layer_bases(model, {"0": torch.zeros(27, 2), "3.complement": torch.zeros(100, 1)})
    assert {k: v[2] for k, v in resolved.items()} == {"0": False, "3": True}
    with pytest.raises(ValueError, match="both"):
        layer_bases(model, {"0": torch.zeros(27, 1), "0.complement": torch.zeros(27, 26)})
    with pytest.raises(ValueError, match="nope.complement"):
        project_gradients(model, {"nope.complement": torch.zeros(3, 1)})


def test_eigendecomposition_device_argument_keeps_results():
    retain = {"a": random_psd(12, 12, seed=3)}
    here, _ = compute_bases(retain, 0.7)
    there, _ = compute_bases(retain, 0.7, device="cpu")
    assert here.keys() == there.keys()
    for key in here:
        assert torch.equal(here[key], there[key])
