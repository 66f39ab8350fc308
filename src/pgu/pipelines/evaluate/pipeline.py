"""Wiring of the ``evaluate`` pipeline."""

from kedro.pipeline import Node, Pipeline

from pgu.pipelines.evaluate.nodes import evaluate_requests, plot_latest_audit


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate_requests,
                [
                    "workspace",
                    "samples",
                    "sample_index",
                    "params:train",
                    "params:unlearn",
                    "params:evaluate",
                ],
                "evaluation_summary",
                name="evaluate_requests",
            ),
            Node(plot_latest_audit, "evaluation_summary", "audit_plot", name="plot_latest_audit"),
        ]
    )
