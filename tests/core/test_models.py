"""Tests for pgu.core.models: output shapes, digits_cnn's exact layout, registry errors."""

import pytest
import torch
from torch import nn

from pgu.core.models import MODELS, MaxPool2d, build_model


@pytest.mark.parametrize(
    ("name", "in_shape", "num_classes"),
    [
        ("digits_cnn", (1, 8, 8), 10),
        ("small_vgg", (3, 32, 32), 10),
        ("small_vgg", (3, 32, 32), 100),
        ("all_cnn", (3, 32, 32), 10),
        ("all_cnn", (3, 32, 32), 100),
        ("resnet18", (3, 32, 32), 10),
        ("resnet18", (3, 32, 32), 100),
        ("mlp", (20,), 10),
        ("mlp", (7,), 3),
    ],
)
def test_forward_shape(name, in_shape, num_classes):
    torch.manual_seed(0)
    model = build_model(name, in_shape, num_classes).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, *in_shape))
    assert logits.shape == (2, num_classes)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_forward_shape_in_train_mode():
    model = build_model("digits_cnn", (1, 8, 8), 10).train()
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_digits_cnn_layout_and_parameter_count():
    model = build_model("digits_cnn", (1, 8, 8), 10)
    expected = [
        ("features.conv1", nn.Conv2d),
        ("features.relu1", nn.ReLU),
        ("features.bn1", nn.BatchNorm2d),
        ("features.conv2", nn.Conv2d),
        ("features.relu2", nn.ReLU),
        ("features.pool2", MaxPool2d),
        ("features.bn2", nn.BatchNorm2d),
        ("features.conv3", nn.Conv2d),
        ("features.relu3", nn.ReLU),
        ("features.pool3", MaxPool2d),
        ("features.bn3", nn.BatchNorm2d),
        ("classifier.fc1", nn.Linear),
        ("classifier.relu1", nn.ReLU),
        ("classifier.bn1", nn.BatchNorm1d),
        ("classifier.fc2", nn.Linear),
    ]
    leaves = [(n, type(m)) for n, m in model.named_modules() if not list(m.children())]
    assert leaves == expected
    convs = [model.features.conv1, model.features.conv2, model.features.conv3]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 32), (32, 64), (64, 128)]
    for conv in convs:
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
    assert model.classifier.fc1.in_features == 512
    assert model.classifier.fc1.out_features == 256
    assert model.classifier.fc2.out_features == 10
    conv_params = (1 * 9 + 1) * 32 + (32 * 9 + 1) * 64 + (64 * 9 + 1) * 128
    bn_params = 2 * (32 + 64 + 128 + 256)
    fc_params = (512 + 1) * 256 + (256 + 1) * 10
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == conv_params + bn_params + fc_params == 227_530


def test_small_vgg_flatten_size_and_dropout():
    model = build_model("small_vgg", (3, 32, 32), 10, dropout=0.3)
    assert model.classifier.fc1.in_features == 8192
    assert model.classifier.dropout.p == 0.3
    assert build_model("small_vgg", (3, 16, 16), 10).classifier.fc1.in_features == 512 * 2 * 2


def test_all_cnn_width():
    model = build_model("all_cnn", (3, 32, 32), 10, width=0.5)
    assert model.features.conv1.out_channels == 48
    assert model.features.conv9.out_channels == 10
    assert model.features.conv3.stride == (2, 2) and model.features.conv6.stride == (2, 2)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_small_image_stem():
    model = build_model("resnet18", (1, 16, 16), 7)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 16, 16)).shape == (2, 7)


def test_mlp_hidden_sizes_and_flattening():
    model = build_model("mlp", (4, 5), 3, hidden=(8,)).eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 8), (8, 3)]
    with torch.no_grad():
        assert model(torch.randn(2, 4, 5)).shape == (2, 3)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="digits_cnn") as info:
        build_model("lenet", (1, 8, 8), 10)
    for name in MODELS:
        assert name in str(info.value)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="depth"):
        build_model("mlp", (5,), 2, depth=3)
    with pytest.raises(TypeError, match="dropout"):
        build_model("digits_cnn", (1, 8, 8), 10, dropout=0.1)


def test_image_model_rejects_flat_shape():
    with pytest.raises(ValueError, match=r"got \(3072,\): for tabular data .*name: mlp"):
        build_model("small_vgg", (3072,), 10)  # a csv source's features: name the fix
    with pytest.raises(ValueError, match=r"got \(8, 8\)$"):
        build_model("digits_cnn", (8, 8), 10)


def _pool_input(seed: int) -> torch.Tensor:
    """ReLU'd activations with many tied zeros, a tied positive pair and a NaN: (4, 6, 7, 9)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(4, 6, 7, 9, generator=g))
    x[0, 0, 0, :2] = 3.0  # a tie on a window's maximum
    x[1, 2, 3, 4] = float("nan")
    return x


@pytest.mark.parametrize(
    "kwargs", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1}]
)
def test_max_pool_without_grad_matches_torch_bit_for_bit(kwargs):
    x = _pool_input(0)
    with torch.no_grad():
        ours, ref = MaxPool2d(**kwargs)(x), nn.MaxPool2d(**kwargs)(x)
    assert ours.is_contiguous()  # the next layer sees the default memory order
    assert ours.shape == ref.shape
    assert torch.equal(ours.nan_to_num(-1.0), ref.nan_to_num(-1.0))
    assert torch.equal(ours.isnan(), ref.isnan())


def test_max_pool_with_grad_takes_torch_path_and_gradient():
    x1 = _pool_input(1).nan_to_num(0.0).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    out1, out2 = MaxPool2d(2)(x1), nn.MaxPool2d(2)(x2)
    assert torch.equal(out1, out2)
    w = torch.randn(out1.shape, generator=torch.Generator().manual_seed(2))
    (out1 * w).sum().backward()
    (out2 * w).sum().backward()
    assert torch.equal(x1.grad, x2.grad)  # ties routed exactly as torch's kernel routes them


def test_models_pool_with_the_fast_module_and_give_the_same_logits():
    for name, shape in [("digits_cnn", (1, 8, 8)), ("small_vgg", (3, 32, 32))]:
        torch.manual_seed(0)
        model = build_model(name, shape, 10).eval()
        pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
        assert pools and all(isinstance(m, MaxPool2d) for m in pools)
        x = torch.randn(5, *shape)
        with torch.no_grad():
            fast = model(x)
        plain = model(x).detach()  # grad enabled: torch's own kernel
        assert torch.equal(fast, plain)
