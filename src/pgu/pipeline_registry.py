"""Project pipelines: every folder under ``pgu/pipelines`` registers itself by name."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# What the README's run command does: prepare the data, train the model, and collect the
# full-data statistics that deletion requests need (right after training, METHOD §1).
DEFAULT = ("data", "train", "representation")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Kedro 1.7 imports only the pipelines a run asks for, so the default pipeline is assembled
    only when its parts were found (that is, when ``__default__`` itself was requested).

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    if all(name in pipelines for name in DEFAULT):
        pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT), Pipeline([]))
    return pipelines
