"""Wiring of the ``data`` pipeline."""

from kedro.pipeline import Node, Pipeline

from pgu.pipelines.data.nodes import bundle_samples, load_raw_data, split_samples


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(load_raw_data, "params:data", "raw_data", name="load_raw_data"),
            Node(split_samples, ["raw_data", "params:data"], "sample_index", name="split_samples"),
            Node(
                bundle_samples,
                ["raw_data", "sample_index", "params:data"],
                "samples",
                name="bundle_samples",
            ),
        ]
    )
