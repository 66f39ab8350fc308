"""``depoison`` pipeline: a label-flip scenario, the poisoned and clean models, and de-poisoning
by projected unlearning with a trust-region final layer (METHOD.md section 7)."""

from pgu.pipelines.depoison.pipeline import create_pipeline

__all__ = ["create_pipeline"]
