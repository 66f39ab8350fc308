"""``unlearn`` pipeline: process the queued deletion requests in order, atomically, with lineage."""

from pgu.pipelines.unlearn.pipeline import create_pipeline

__all__ = ["create_pipeline"]
