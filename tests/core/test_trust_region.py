"""Tests for pgu.core.trust_region (TRGP): exactness at S = I, and which subspace each kind
of update moves the effective weight in."""

import pytest
import torch
from torch import nn

from pgu.core.projection import project_gradients
from pgu.core.trust_region import TrustRegion, effective_weight, final_layer_name


def orthonormal(d: int, k: int, seed: int = 0) -> torch.Tensor:
    """A (d, k) float32 matrix with orthonormal columns."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return q.float()


def layers() -> list[tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return [
        (nn.Linear(12, 5), torch.randn(7, 12)),
        (nn.Conv2d(3, 4, 3, padding=1, stride=2), torch.randn(2, 3, 9, 9)),
    ]


@pytest.mark.parametrize("case", [0, 1])
def test_identity_scale_computes_exactly_the_plain_layer(case):
    layer, x = layers()[case]
    d = layer.weight[0].numel()
    tr = TrustRegion(layer, orthonormal(d, 4))
    assert torch.equal(tr.scale, torch.eye(4))
    assert torch.equal(tr.effective_weight(), layer.weight)
    assert torch.equal(tr(x), layer(x))


def test_installed_hook_reroutes_the_model_and_keeps_its_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 6)
    plain = model(x)
    keys = list(model.state_dict())
    assert final_layer_name(model) == "2"
    tr = TrustRegion(model[2], orthonormal(8, 3)).install()
    assert torch.equal(model(x), plain)  # S = I
    with torch.no_grad():
        tr.scale.mul_(1.5)
    shifted = model(x)
    assert not torch.allclose(shifted, plain)
    assert torch.equal(shifted, tr(torch.relu(model[0](x))))
    assert list(model.state_dict()) == keys and list(tr.parameters()) == [tr.scale]
    tr.fold()
    tr.remove()
    # folded: the plain model computes exactly what the re-parametrised one did
    assert torch.equal(model(x), shifted)
    assert torch.equal(tr.scale, torch.eye(3))


def test_fold_at_identity_leaves_the_weight_bit_for_bit():
    layer, _ = layers()[1]
    before = layer.weight.detach().clone()
    TrustRegion(layer, orthonormal(27, 10)).fold()
    assert torch.equal(layer.weight, before)


def test_scale_update_moves_the_effective_weight_only_inside_span_m():
    torch.manual_seed(2)
    w, m = torch.randn(5, 12), orthonormal(12, 4, seed=2)
    s = torch.eye(4) + 0.1 * torch.randn(4, 4)
    ds = torch.randn(4, 4)
    change = effective_weight(w, m, s + ds) - effective_weight(w, m, s)  # (out, d)
    assert torch.linalg.norm(change) > 0.1
    outside = change - (change @ m) @ m.T  # component of the rows outside span(M)
    assert torch.linalg.norm(outside) <= 1e-5 * torch.linalg.norm(change)


@pytest.mark.parametrize("case", [0, 1])
def test_gradient_steps_on_w_and_s_move_complementary_subspaces(case):
    layer, x = layers()[case]
    d = layer.weight[0].numel()
    m = orthonormal(d, 4, seed=case)
    tr = TrustRegion(layer, m)
    model = nn.Sequential(layer)
    tr.install()
    with torch.no_grad():
        tr.scale.add_(0.2 * torch.randn(4, 4))  # away from I, so the W-part is not trivial
    w_eff_0 = tr.effective_weight().detach().reshape(layer.weight.shape[0], -1)

    model(x).square().sum().backward()
    project_gradients(model, {"0": m})
    with torch.no_grad():
        layer.weight.sub_(0.1 * layer.weight.grad)
    w_eff_1 = tr.effective_weight().detach().reshape_as(w_eff_0)
    dw = w_eff_1 - w_eff_0
    assert torch.linalg.norm(dw) > 1e-3
    assert torch.linalg.norm(dw @ m) <= 1e-5 * torch.linalg.norm(dw)  # only outside span(M)

    with torch.no_grad():
        tr.scale.sub_(0.1 * tr.scale.grad)
    ds = tr.effective_weight().detach().reshape_as(w_eff_0) - w_eff_1
    assert torch.linalg.norm(ds) > 1e-3
    outside = ds - (ds @ m) @ m.T
    assert torch.linalg.norm(outside) <= 1e-5 * torch.linalg.norm(ds)  # only inside span(M)


def test_rejects_mismatched_bases_and_layer_types():
    with pytest.raises(ValueError, match="does not fit"):
        TrustRegion(nn.Linear(6, 2), orthonormal(5, 2))
    with pytest.raises(TypeError, match="Linear or Conv2d"):
        TrustRegion(nn.BatchNorm1d(4), orthonormal(4, 2))
    with pytest.raises(ValueError, match="shapes do not fit"):
        effective_weight(torch.randn(3, 6), orthonormal(6, 2), torch.eye(3))
