"""Parameters are checked strictly: unknown keys and wrong values fail by name, before any work."""

import pytest

from pgu.core.depoisoning import DepoisonConfig
from pgu.core.training import TrainRecipe, resolve_device
from pgu.core.unlearning import UnlearnConfig
from pgu.pipelines.representation.nodes import collect_full_statistics


@pytest.mark.parametrize(
    "cls, params, match",
    [
        (
            UnlearnConfig,
            {"epochs": "abc"},
            "unlearning parameter epochs must be an integer, got 'abc'",
        ),
        (UnlearnConfig, {"epochs": 3.0}, "epochs must be an integer"),
        (UnlearnConfig, {"lr_start": True}, "lr_start must be a number, got True"),
        (UnlearnConfig, {"class_free_rows": "yes"}, "class_free_rows must be true or false"),
        (UnlearnConfig, {"sample_measure": 1}, "sample_measure must be a string"),
        (TrainRecipe, {"batch_size": None}, "training parameter batch_size must be an integer"),
        (DepoisonConfig, {"trust_region_layer": 3}, "must be a string or null, got 3"),
        (UnlearnConfig, {"epoch": 3}, r"unknown unlearning parameters \['epoch'\]"),
    ],
)
def test_a_bad_value_is_named_with_what_it_should_be(cls, params, match):
    with pytest.raises(ValueError, match=match):
        cls.from_params(params)


def test_values_of_the_right_type_pass_unchanged():
    config = UnlearnConfig.from_params({"lr_start": 1, "epochs": 4, "class_free_rows": False})
    assert (config.lr_start, config.epochs, config.class_free_rows) == (1, 4, False)
    assert DepoisonConfig.from_params({"trust_region_layer": None}).trust_region_layer is None
    assert DepoisonConfig.from_params({"trust_region_layer": "fc2"}).trust_region_layer == "fc2"


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda0", "", 3])
def test_an_unknown_device_is_named_with_the_valid_ones(device):
    with pytest.raises(ValueError, match=f"'auto', 'cpu', 'cuda' or 'cuda:N'.*got {device!r}"):
        resolve_device(device)


def test_the_representation_node_names_a_bad_batch_size_before_any_work():
    with pytest.raises(ValueError, match="representation.batch_size must be a positive integer"):
        collect_full_statistics(None, None, None, {"batch_size": 0, "device": "cpu"})
