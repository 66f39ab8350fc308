"""Wiring of the ``unlearn`` pipeline (it plans with the ``cgs`` pipeline's planning node)."""

from kedro.pipeline import Node, Pipeline

from pgu.pipelines.cgs.pipeline import planning_node
from pgu.pipelines.unlearn.nodes import process_requests


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            planning_node(),
            Node(
                process_requests,
                [
                    "request_plans",
                    "workspace",
                    "samples",
                    "sample_index",
                    "params:cgs",
                    "params:unlearn",
                    "params:representation",
                    "params:depoison",
                ],
                "unlearn_run",
                name="process_requests",
            ),
        ]
    )
