"""The evaluate pipeline checks its parameters before it trains anything."""

import pytest

from pgu.core.audit import check_baseline_params
from pgu.pipelines.evaluate.nodes import evaluate_requests


def test_known_baselines_pass_in_their_order():
    params = {"baselines": ["no_projection", "ft"], "finetune_recipe": {"epochs": 1}}
    assert check_baseline_params(params) == ["no_projection", "ft"]
    assert check_baseline_params({"baselines": None}) == []


@pytest.mark.parametrize(
    "params, match",
    [
        ({"baselines": ["xx", "ng"]}, r"unknown baselines \['xx'\]; valid: \['ft'"),
        ({"baselines": "ng"}, "must be a list of names"),
        ({"baselines": ["ng", "ng"]}, "lists a baseline twice"),
        ({"baselines": ["ft"], "finetune_recipe": {"epoch": 3}}, "finetune_recipe.*unknown"),
    ],
)
def test_bad_baselines_name_what_is_wrong(params, match):
    with pytest.raises(ValueError, match=match):
        check_baseline_params(params)


def test_the_node_refuses_an_unknown_baseline_before_reading_anything():
    # no workspace, data or model at all: the check must come first, before the gold standard
    # (a whole training) is trained and cached
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluate_requests(None, None, None, {}, {}, {"baselines": ["xx"], "n_shadow": 0})
