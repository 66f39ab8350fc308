"""``evaluate`` pipeline: audit every processed request against the retrained gold standard."""

from pgu.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
