"""Tests for pgu.core.projection.

The reference is math: the projected gradient is orthogonal to the basis, projection is
idempotent, and a projected SGD step leaves a layer's response to the retained inputs
unchanged.
"""

import pytest
import torch
from torch import nn

from pgu.core.cgs import compute_bases, spectrum
from pgu.core.losses import unlearning_loss
from pgu.core.projection import project_gradients, project_out, projected_parameters
from pgu.core.representation import collect_representations


def orthonormal(d: int, k: int, seed: int = 0) -> torch.Tensor:
    """A (d, k) float32 matrix with orthonormal columns."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return q.float()


def test_projected_gradient_is_orthogonal_to_basis():
    torch.manual_seed(0)
    g = torch.randn(7, 20)
    m = orthonormal(20, 6)
    gp = project_out(g, m)
    assert gp.shape == g.shape
    assert torch.linalg.norm(gp @ m) <= 1e-5 * torch.linalg.norm(g)
    # the removed part lies in span(M)
    torch.testing.assert_close(g - gp, (g @ m) @ m.T, atol=1e-5, rtol=1e-5)


def test_projection_is_idempotent():
    torch.manual_seed(1)
    g = torch.randn(5, 12)
    m = orthonormal(12, 4, seed=1)
    once = project_out(g, m)
    torch.testing.assert_close(project_out(once, m), once, atol=1e-5, rtol=1e-5)


def test_empty_and_full_bases():
    g = torch.randn(3, 8)
    out = project_out(g, torch.zeros(8, 0))
    torch.testing.assert_close(out, g, atol=0, rtol=0)
    assert out is not g
    full = project_out(g, orthonormal(8, 8, seed=2))
    assert torch.linalg.norm(full) <= 1e-5 * torch.linalg.norm(g)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="basis"):
        project_out(torch.randn(3, 8), torch.zeros(7, 2))


def tiny_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("bn", nn.BatchNorm2d(4))
    net.add_module("relu", nn.ReLU())
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(4 * 6 * 6, 5))
    return net.eval()


def low_rank_images(n: int, seed: int) -> torch.Tensor:
    """Images whose channel vector at every pixel lies in a fixed 2-D subspace of R^3.

    Every 3x3 patch is then in span(c_1, c_2) (x) R^9: rank 18 of d = 27.
    """
    g = torch.Generator().manual_seed(seed)
    channels = torch.tensor([[1.0, 0.5, -1.0], [0.0, 1.0, 2.0]])  # (2, 3)
    spatial = torch.randn(n, 2, 6, 6, generator=g)  # (n, 2, H, W)
    return torch.einsum("njhw,jc->nchw", spatial, channels)  # (n, 3, H, W)


def test_projected_step_keeps_first_layer_response_on_retain_samples():
    net = tiny_net()
    x_retain = low_rank_images(32, seed=4)
    x_forget = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    y_forget = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(6))

    retain = collect_representations(net, [x_retain[:10], x_retain[10:]])
    # basis of the whole retained input space: k = numerical rank of R_retain
    bases = {}
    for name, r in retain.items():
        lam, u = spectrum(r)
        k = int((lam > 1e-9 * lam[0]).sum())
        bases[name] = u[:, :k].float().contiguous()
    assert bases["conv"].shape == (27, 18)

    params = projected_parameters(net, bases)
    assert params == [net.conv.weight, net.fc.weight]
    opt = torch.optim.SGD(params, lr=1.0)
    with torch.no_grad():
        before = net.conv(x_retain).clone()
    w_before = net.conv.weight.detach().clone()

    opt.zero_grad()
    unlearning_loss(net(x_forget), y_forget).backward()
    project_gradients(net, bases)
    opt.step()

    step = torch.linalg.norm(net.conv.weight - w_before)
    assert step > 1e-3 * torch.linalg.norm(w_before)  # the weights did move
    with torch.no_grad():
        after = net.conv(x_retain)
        forget_change = torch.linalg.norm(
            net.conv(x_forget)
            - (nn.functional.conv2d(x_forget, w_before, net.conv.bias, padding=1))
        )
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert forget_change > 1e-3  # ... and the response to the forget samples changed


def test_frozen_layers_do_not_move():
    net = tiny_net()
    x = torch.randn(10, 3, 6, 6)
    bases, _ = compute_bases(collect_representations(net, [x]), gamma=0.9, overrides={"fc": 1.0})
    assert projected_parameters(net, bases) == [net.conv.weight]
    net.zero_grad()
    unlearning_loss(net(x), torch.zeros(10, dtype=torch.long)).backward()
    project_gradients(net, bases)
    assert torch.linalg.norm(net.fc.weight.grad) <= 1e-5 * torch.linalg.norm(net.fc.weight)


def test_layers_without_basis_keep_their_gradients():
    net = tiny_net()
    x = torch.randn(4, 3, 6, 6)
    net.zero_grad()
    unlearning_loss(net(x), torch.zeros(4, dtype=torch.long)).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    project_gradients(net, {"conv": orthonormal(27, 5, seed=7)})
    for name, p in net.named_parameters():
        if name == "conv.weight":
            assert not torch.allclose(p.grad, grads[name])
            flat = p.grad.view(4, -1)
            assert torch.linalg.norm(flat @ orthonormal(27, 5, seed=7)) <= 1e-5 * flat.norm()
        else:
            torch.testing.assert_close(p.grad, grads[name], atol=0, rtol=0)


def test_projected_parameters_excludes_bias_bn_and_unbased_layers():
    net = tiny_net()
    params = projected_parameters(net, {"conv": orthonormal(27, 3)})
    assert len(params) == 1 and params[0] is net.conv.weight
    ids = {id(p) for p in params}
    assert id(net.conv.bias) not in ids and id(net.bn.weight) not in ids
    assert projected_parameters(net, {"conv": torch.zeros(27, 0)}) == [net.conv.weight]
    assert projected_parameters(net, {}) == []


def test_unknown_basis_name_raises():
    net = tiny_net()
    with pytest.raises(ValueError, match="conv"):
        project_gradients(net, {"nope": torch.zeros(3, 1)})
    with pytest.raises(ValueError, match="nope"):
        projected_parameters(net, {"nope": torch.zeros(3, 1)})
