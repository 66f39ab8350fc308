"""``cgs`` pipeline: preview the core gradient space the next pending request would use."""

from pgu.pipelines.cgs.pipeline import create_pipeline

__all__ = ["create_pipeline"]
