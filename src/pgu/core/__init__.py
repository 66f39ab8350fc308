"""Framework-free core of PGU: data, models, training and the unlearning math.

Nothing under ``pgu.core`` imports Kedro, so the method can be used from a notebook or a
script. The Kedro pipelines under ``pgu.pipelines`` are thin wrappers around these modules.
"""
