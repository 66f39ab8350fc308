"""``data`` pipeline: raw source → stable sample ids → seeded stratified split → tensor bundle."""

from pgu.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
