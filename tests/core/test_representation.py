"""Tests for pgu.core.representation.

The reference is math: the unfolded rows reproduce the conv, and R_full - R_forget equals the
matrix collected directly on the retain samples.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import HostReads
from torch import nn

from pgu.core.models import build_model
from pgu.core.representation import (
    collect_representations,
    collect_representations_sharded,
    gram,
    layer_dim,
    layer_gram,
    layer_rows,
    tracked_layers,
)


def small_net() -> nn.Module:
    """Conv net with a strided conv, a dilated conv, BatchNorm and a linear head (9x9 input)."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("strided", nn.Conv2d(3, 4, 3, stride=2, padding=1))  # 9x9 -> 5x5
    net.add_module("bn", nn.BatchNorm2d(4))
    net.add_module("relu", nn.ReLU())
    net.add_module("dilated", nn.Conv2d(4, 5, 3, dilation=2, padding=2, bias=False))  # 5x5
    net.add_module("relu2", nn.ReLU())
    net.add_module("flatten", nn.Flatten())
    net.add_module("head", nn.Linear(5 * 5 * 5, 3))
    # non-trivial BN statistics, so eval mode matters
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 2.0)
    return net


def batched(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Split x along dim 0 into consecutive chunks of the given sizes (must sum to len(x))."""
    assert sum(sizes) == x.shape[0]
    return list(torch.split(x, sizes))


@pytest.mark.parametrize(
    ("stride", "dilation", "padding"),
    [(2, 2, 1), (1, 1, 1), (2, 1, 0), ((1, 2), (2, 1), (0, 2))],
)
def test_unfolded_rows_reproduce_conv(stride, dilation, padding):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 6, 3, stride=stride, dilation=dilation, padding=padding)
    x = torch.randn(4, 3, 11, 10)
    out = conv(x)  # (B, out, Ho, Wo)
    rows = layer_rows(conv, x)  # (B*L, d)
    assert rows.shape[1] == layer_dim(conv) == 3 * 3 * 3
    b, c_out, ho, wo = out.shape
    y = rows @ conv.weight.view(c_out, -1).T + conv.bias  # (B*L, out)
    y = y.view(b, ho * wo, c_out).transpose(1, 2).reshape(b, c_out, ho, wo)
    torch.testing.assert_close(y, out, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_string_padding_rows_reproduce_conv(padding):
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, (2, 3), padding=padding, dilation=(1, 2), bias=False)
    x = torch.randn(2, 2, 7, 8)
    out = conv(x)
    b, c_out, ho, wo = out.shape
    y = layer_rows(conv, x) @ conv.weight.view(c_out, -1).T
    y = y.view(b, ho * wo, c_out).transpose(1, 2).reshape(b, c_out, ho, wo)
    torch.testing.assert_close(y, out, atol=1e-5, rtol=1e-5)


def test_unfold_matches_weight_view_identity():
    """W.view(out, -1) @ unfold(x) (+ bias) is the conv, with the layer's own parameters."""
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 5, 3, stride=2, dilation=2, padding=1)
    x = torch.randn(2, 3, 12, 12)
    out = conv(x)
    cols = F.unfold(x, 3, dilation=2, padding=1, stride=2)  # (B, d, L)
    y = conv.weight.view(5, -1) @ cols + conv.bias[:, None]  # (B, out, L)
    torch.testing.assert_close(y.view_as(out), out, atol=1e-5, rtol=1e-5)


def test_linear_rows_flatten_leading_dims():
    lin = nn.Linear(4, 2)
    a = torch.randn(3, 5, 4)
    assert layer_rows(lin, a).shape == (15, 4)


def test_unsupported_convs():
    with pytest.raises(NotImplementedError):
        layer_rows(nn.Conv2d(4, 4, 3, groups=2), torch.randn(1, 4, 5, 5))
    with pytest.raises(NotImplementedError):
        layer_rows(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), torch.randn(1, 2, 5, 5))


def test_full_minus_forget_equals_retain():
    net = small_net().double()
    torch.manual_seed(4)
    x = torch.randn(23, 3, 9, 9, dtype=torch.float64)
    forget_idx = torch.tensor([0, 3, 4, 10, 17, 22])
    is_forget = torch.zeros(23, dtype=torch.bool)
    is_forget[forget_idx] = True
    x_forget, x_retain = x[is_forget], x[~is_forget]

    r_full = collect_representations(net, batched(x, [7, 7, 7, 2]))
    r_forget = collect_representations(net, batched(x_forget, [4, 1, 1]))
    r_retain = collect_representations(net, batched(x_retain, [17]))

    assert list(r_full) == ["strided", "dilated", "head"]
    for name in r_full:
        assert r_full[name].dtype == torch.float64 and r_full[name].device.type == "cpu"
        diff = r_full[name] - r_forget[name] - r_retain[name]
        rel = torch.linalg.norm(diff) / torch.linalg.norm(r_retain[name])
        assert rel <= 1e-10, (name, rel.item())


def test_float32_model_batching_invariance():
    """For a float32 model the accumulation is float64: batching changes R only at fp32 noise."""
    net = small_net()
    x = torch.randn(20, 3, 9, 9)
    one = collect_representations(net, [x])
    many = collect_representations(net, batched(x, [3, 9, 8]))
    for name in one:
        rel = torch.linalg.norm(one[name] - many[name]) / torch.linalg.norm(one[name])
        assert rel <= 1e-5


def test_representation_is_symmetric_psd_with_expected_shapes():
    net = small_net()
    r = collect_representations(net, [torch.randn(10, 3, 9, 9)])
    assert {k: tuple(v.shape) for k, v in r.items()} == {
        "strided": (27, 27),
        "dilated": (36, 36),
        "head": (125, 125),
    }
    for mat in r.values():
        torch.testing.assert_close(mat, mat.T, atol=0.0, rtol=0.0)
        assert torch.linalg.eigvalsh(mat).min() >= -1e-9 * mat.diagonal().sum()


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
        ),
    ],
)
def test_keep_on_device_returns_the_same_symmetric_matrices_where_they_were_made(device):
    net = small_net()
    x = torch.randn(10, 3, 9, 9)
    on_cpu = collect_representations(net, [x[:4], x[4:]], device=device)
    kept = collect_representations(net, [x[:4], x[4:]], device=device, keep_on_device=True)
    assert list(kept) == list(on_cpu)
    for name, mat in kept.items():
        assert mat.device.type == device and on_cpu[name].device.type == "cpu"
        assert torch.equal(mat.cpu(), on_cpu[name])  # symmetrised by the same exact operations
        assert torch.equal(mat, mat.T)


def test_first_layer_matches_explicit_rows():
    net = small_net()
    x = torch.randn(6, 3, 9, 9)
    r = collect_representations(net, [x[:2], x[2:]])
    rows = layer_rows(net.strided, x).double()
    torch.testing.assert_close(r["strided"], rows.T @ rows)


def test_layer_selection_and_unknown_layer():
    net = small_net()
    r = collect_representations(net, [torch.randn(2, 3, 9, 9)], layers=["head"])
    assert list(r) == ["head"]
    with pytest.raises(ValueError, match="bn"):
        collect_representations(net, [torch.randn(2, 3, 9, 9)], layers=["bn"])


def test_no_batches_gives_zeros():
    r = collect_representations(small_net(), [])
    assert r["head"].shape == (125, 125) and not r["head"].any()


@pytest.mark.parametrize("sharded", [False, True])
def test_non_finite_activations_are_refused_naming_the_first_layer_they_reach(sharded):
    # a diverged model: the dilated conv's input is NaN from the first conv on; the first
    # conv's own input (the data) is finite, so the error names "dilated"
    net = small_net()
    with torch.no_grad():
        net.strided.weight[0, 0, 0, 0] = float("nan")
    x = torch.randn(6, 3, 9, 9)
    with pytest.raises(ValueError, match="layer 'dilated': the representation matrix has NaN"):
        if sharded:
            collect_representations_sharded(net, x, chunk_size=4)
        else:
            collect_representations(net, [x])


@pytest.mark.parametrize("sharded", [False, True])
def test_collection_reads_nothing_back_per_chunk(sharded):
    """On a GPU each host read inside the chunk loop would wait for the device, so the next
    chunk's copy could not overlap this one's products: the only reads are the finished
    matrices' finiteness checks, one per layer, whatever the number of chunks."""
    net = small_net()
    counts = []
    for n in (8, 24):  # 2 and 6 chunks
        x = torch.randn(n, 3, 9, 9)
        with HostReads() as reads:
            if sharded:
                collect_representations_sharded(net, x, chunk_size=4)
            else:
                collect_representations(net, x.split(4))
        counts.append(reads.seen)
    assert counts[0] == counts[1] == ["_local_scalar_dense"] * len(tracked_layers(net))


def test_tuple_batches_are_accepted():
    net = small_net()
    x = torch.randn(5, 3, 9, 9)
    a = collect_representations(net, [x])
    b = collect_representations(net, [(x, torch.zeros(5, dtype=torch.long))])
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_hooks_removed_and_modes_restored():
    net = small_net()
    net.train()
    net.bn.eval()  # mixed modes must come back exactly
    r = collect_representations(net, [torch.randn(4, 3, 9, 9)])
    assert r
    assert net.training and not net.bn.training and net.head.training
    for m in net.modules():
        assert not m._forward_pre_hooks

    # and on error: a batch with the wrong shape fails inside the forward pass
    with pytest.raises(RuntimeError):
        collect_representations(net, [torch.randn(4, 3, 9, 9), torch.randn(4, 2, 9, 9)])
    assert net.training and not net.bn.training
    for m in net.modules():
        assert not m._forward_pre_hooks


def test_eval_mode_used_during_collection():
    """BN running statistics are used (eval) and not updated."""
    net = small_net().train()
    mean_before = net.bn.running_mean.clone()
    x = torch.randn(8, 3, 9, 9)
    r = collect_representations(net, [x])
    torch.testing.assert_close(net.bn.running_mean, mean_before)
    net.eval()
    with torch.no_grad():
        a = net.relu(net.bn(net.strided(x)))
    rows = layer_rows(net.dilated, a).double()
    torch.testing.assert_close(r["dilated"], rows.T @ rows)


def test_tracked_layers_order_and_coverage():
    model = build_model("digits_cnn", (1, 8, 8), 10)
    names = list(tracked_layers(model))
    assert names == [
        "features.conv1",
        "features.conv2",
        "features.conv3",
        "classifier.fc1",
        "classifier.fc2",
    ]
    resnet = build_model("resnet18", (3, 8, 8), 10)
    tracked = tracked_layers(resnet)
    expected = [n for n, m in resnet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(tracked) == expected
    assert len(tracked) == 21  # 20 convs (incl. 3 downsample) + fc
    assert "layer2.0.downsample.0" in tracked and list(tracked)[-1] == "fc"


@pytest.mark.parametrize(("n", "d"), [(300, 5), (300, 64), (300, 129), (600, 300), (20, 300)])
def test_gram_equals_the_full_product(n, d):
    """Every path (one GEMM below the minimum width or for short wide rows, one split, nested
    splits) gives rows^T rows; the blocks above the diagonal are the transposes of those below."""
    g = torch.Generator().manual_seed(d)
    rows = torch.randn(n, d, generator=g, dtype=torch.float64)
    p = gram(rows)
    torch.testing.assert_close(p, rows.T @ rows, rtol=1e-12, atol=1e-10)
    if (
        d >= 64 and 8 * n >= d
    ):  # split on the CPU: the upper off-diagonal block is a copy, bit for bit
        h = d // 2
        assert torch.equal(p[:h, h:], p[h:, :h].T)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_gram_at_a_limited_depth_is_the_same_product(depth):
    """Fewer nested splits change only which float64 additions are grouped together."""
    g = torch.Generator().manual_seed(depth)
    rows = torch.randn(500, 300, generator=g, dtype=torch.float64)
    p = gram(rows, depth)
    torch.testing.assert_close(p, rows.T @ rows, rtol=1e-12, atol=1e-10)
    if depth == 0:
        assert torch.equal(p, rows.T @ rows)  # one product, not split
    else:
        assert torch.equal(p[:150, 150:], p[150:, :150].T)
    # the CPU's default is every split down to GRAM_SPLIT_MIN_D (300 -> 150 -> 75 -> 37)
    assert torch.equal(gram(rows), gram(rows, 3))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(32, 8, 3, padding=1),  # digits_cnn's conv2 shape (d = 288)
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Conv2d(4, 5, 3, dilation=2, padding=2),
        nn.Conv2d(3, 2, (2, 3), padding="same"),  # asymmetric padding
        nn.Conv2d(5, 3, (1, 3), stride=(2, 1), padding=(0, 1)),
        nn.Conv2d(6, 2, 1),
    ],
)
def test_layer_gram_equals_the_gram_of_the_unfolded_rows(conv):
    """The CPU path builds the rows kernel-major and puts the product back in layer_rows order:
    the same matrix (to float64 round-off; on this project's CPU, the same bytes)."""
    a = torch.relu(
        torch.randn(3, conv.in_channels, 9, 8, generator=torch.Generator().manual_seed(1))
    )
    want = gram(layer_rows(conv, a).double())  # (d, d)
    got = layer_gram(conv, a)
    assert got.dtype == torch.float64 and got.shape == (layer_dim(conv), layer_dim(conv))
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12)


def test_layer_gram_of_a_linear_and_of_too_small_an_input():
    lin = nn.Linear(7, 2)
    a = torch.randn(5, 7)
    torch.testing.assert_close(layer_gram(lin, a), a.double().T @ a.double(), rtol=1e-13, atol=0)
    with pytest.raises(RuntimeError):  # no output position: torch's own error, as before
        layer_gram(nn.Conv2d(1, 1, 5), torch.randn(1, 1, 3, 3))
    with pytest.raises(NotImplementedError, match="grouped"):
        layer_gram(nn.Conv2d(4, 4, 3, groups=2), torch.randn(1, 4, 5, 5))
