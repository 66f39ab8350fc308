"""``representation`` pipeline: full-data representation matrices R_l of the original model."""

from pgu.pipelines.representation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
