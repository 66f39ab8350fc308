"""Wiring of the ``depoison`` pipeline.

Two tags split it where DVC does (one stage each): ``poison`` draws the scenario, trains the
poisoned and the clean reference model and stores the poisoned model's training statistics (as
the ``representation`` pipeline does for the original); ``depoison`` de-poisons and reports.
``kedro run --pipelines depoison`` runs both; ``--tags depoison`` reruns only the second half.
"""

from kedro.pipeline import Node, Pipeline

from pgu.pipelines.depoison.nodes import (
    collect_training_statistics,
    depoison_poisoned_model,
    draw_scenario,
    evaluate_models,
    plot_depoisoning,
    train_clean_model,
    train_poisoned_model,
    write_report,
)

TRAIN_INPUTS = [
    "samples",
    "sample_index",
    "depoison_scenario",
    "params:model",
    "params:train",
    "params:depoison.cpu_threads",
]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                draw_scenario,
                ["samples", "sample_index", "params:depoison"],
                "depoison_scenario",
                name="draw_scenario",
                tags=["poison"],
            ),
            Node(
                train_poisoned_model,
                TRAIN_INPUTS,
                "poisoned_model",
                name="train_poisoned_model",
                tags=["poison"],
            ),
            Node(
                train_clean_model,
                TRAIN_INPUTS,
                "clean_model",
                name="train_clean_model",
                tags=["poison"],
            ),
            Node(
                collect_training_statistics,
                ["poisoned_model", "samples", "sample_index", "params:depoison"],
                "poisoned_model_stats",
                name="collect_training_statistics",
                tags=["poison"],
            ),
            Node(
                depoison_poisoned_model,
                [
                    "poisoned_model",
                    "poisoned_model_stats",
                    "samples",
                    "sample_index",
                    "depoison_scenario",
                    "params:depoison",
                ],
                ["depoisoned_model", "depoison_run"],
                name="depoison_poisoned_model",
                tags=["depoison"],
            ),
            Node(
                evaluate_models,
                [
                    "poisoned_model",
                    "depoisoned_model",
                    "clean_model",
                    "samples",
                    "sample_index",
                    "depoison_scenario",
                    "depoison_run",
                ],
                ["depoison_metrics", "depoison_history"],
                name="evaluate_models",
                tags=["depoison"],
            ),
            Node(
                plot_depoisoning,
                ["depoison_history", "depoison_metrics"],
                "depoison_curves",
                name="plot_depoisoning",
                tags=["depoison"],
            ),
            Node(
                write_report,
                "depoison_metrics",
                "depoison_report",
                name="write_report",
                tags=["depoison"],
            ),
        ]
    )
