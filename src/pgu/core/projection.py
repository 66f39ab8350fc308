"""Gradient projection onto the Residual Gradient Space (METHOD.md section 5).

For a layer with CGS basis M (d x k, orthonormal columns) its weight gradient G (out x d,
a conv kernel flattened to out x (C_in*kh*kw)) is replaced by G - (G M) M^T, the part of G
orthogonal to the retained inputs. A step along it leaves W r unchanged for every r in
span(M), i.e. the layer's response to the retained data. M M^T (d x d) is never formed:
two thin matmuls cost O(out * d * k).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from pgu.core.representation import tracked_layers


def project_out(g: Tensor, basis: Tensor) -> Tensor:
    """Remove from each row of ``g`` its component in span(basis).

    Args:
        g: (out, d) gradient (any leading shape (..., d) works).
        basis: (d, k) with orthonormal columns; k == 0 means nothing to remove.

    Returns:
        A new tensor g - (g M) M^T, shaped like ``g``.
    """
    if basis.dim() != 2 or g.shape[-1] != basis.shape[0]:
        raise ValueError(
            f"gradient shape {tuple(g.shape)} does not match basis shape {tuple(basis.shape)}"
        )
    if basis.shape[1] == 0:
        return g.clone()
    coeffs = g @ basis  # (out, k)
    return g - coeffs @ basis.T  # (out, d)


def _check_names(model: nn.Module, bases: Mapping[str, Tensor]) -> dict[str, nn.Module]:
    """The tracked layers of ``model``; a basis naming no tracked layer is an error."""
    tracked = tracked_layers(model)
    unknown = sorted(set(bases) - set(tracked))
    if unknown:
        raise ValueError(f"bases for unknown layers {unknown}; tracked layers: {list(tracked)}")
    return tracked


def project_gradients(model: nn.Module, bases: Mapping[str, Tensor]) -> None:
    """Project, in place, the weight gradient of every tracked layer that has a basis.

    Each ``layer.weight.grad`` is viewed as (out, d) and replaced by ``project_out`` of it;
    the basis is moved to the gradient's device and dtype. Layers without a basis, biases and
    all other parameters are left untouched; so are weights whose grad is None.

    Args:
        model: the model after ``loss.backward()``.
        bases: ``{layer_name: M (d, k)}`` as from ``pgu.core.cgs.compute_bases``.

    Raises:
        ValueError: a basis names no tracked layer, or its d does not match the layer.
    """
    tracked = _check_names(model, bases)
    for name, basis in bases.items():
        weight = tracked[name].weight
        if weight.grad is None:
            continue
        g = weight.grad.reshape(weight.shape[0], -1)  # (out, d)
        m = basis.to(device=g.device, dtype=g.dtype)  # (d, k)
        if m.shape[0] != g.shape[1]:
            raise ValueError(f"layer {name!r}: basis has d={m.shape[0]}, weight has d={g.shape[1]}")
        weight.grad.copy_(project_out(g, m).view_as(weight.grad))


def projected_parameters(model: nn.Module, bases: Mapping[str, Tensor]) -> list[nn.Parameter]:
    """The weights that unlearning updates, in ``tracked_layers`` order.

    These are the weights of the tracked layers that have a basis with k < d. Biases,
    BatchNorm affine parameters, layers without a basis and frozen layers (k == d) are
    excluded, so an optimiser built on this list cannot move them.

    Raises:
        ValueError: a basis names no tracked layer.
    """
    tracked = _check_names(model, bases)
    return [
        layer.weight
        for name, layer in tracked.items()
        if name in bases and bases[name].shape[1] < bases[name].shape[0]
    ]
