"""``train`` pipeline: the original model on the train split, its metrics and learning curve."""

from pgu.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
