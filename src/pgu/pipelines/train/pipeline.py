"""Wiring of the ``train`` pipeline."""

from kedro.pipeline import Node, Pipeline

from pgu.pipelines.train.nodes import evaluate_original, plot_learning_curve, train_original


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_original,
                ["samples", "sample_index", "params:model", "params:train"],
                ["original_model", "train_history"],
                name="train_original",
            ),
            Node(
                evaluate_original,
                ["original_model", "samples", "sample_index", "params:train"],
                "train_metrics",
                name="evaluate_original",
            ),
            Node(
                plot_learning_curve, "train_history", "learning_curve", name="plot_learning_curve"
            ),
        ]
    )
