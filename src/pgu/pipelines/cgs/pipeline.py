"""Wiring of the ``cgs`` pipeline."""

from kedro.pipeline import Node, Pipeline

from pgu.pipelines.cgs.nodes import plan_pending_requests, preview_bases


def planning_node() -> Node:
    """Validate the queue and list what to process (shared with the ``unlearn`` pipeline)."""
    return Node(
        plan_pending_requests,
        ["workspace", "samples", "sample_index", "params:unlearn"],
        "request_plans",
        name="plan_pending_requests",
    )


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            planning_node(),
            Node(
                preview_bases,
                ["request_plans", "workspace", "samples", "params:cgs", "params:representation"],
                ["cgs_table", "cgs_spectrum"],
                name="preview_bases",
            ),
        ]
    )
