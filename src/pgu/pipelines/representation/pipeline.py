"""Wiring of the ``representation`` pipeline."""

from kedro.pipeline import Node, Pipeline

from pgu.pipelines.representation.nodes import collect_full_statistics


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                collect_full_statistics,
                [
                    "original_model",
                    "samples",
                    "sample_index",
                    "params:representation",
                    "params:train",
                    "workspace",
                ],
                "representation_full",
                name="collect_full_statistics",
            )
        ]
    )
