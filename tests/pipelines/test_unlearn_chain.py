"""The audit trail is checked before it is built on: request files, state files, the ledger."""

import pandas as pd
import pytest
import yaml
from conftest import KedroProject

from pgu.core.data import split_ids
from pgu.core.requests import file_request

pytestmark = pytest.mark.slow
REQUESTS = "data/01_raw/deletion_requests"
STATES = "data/06_models/states"
LEDGER = "data/08_reporting/ledger.csv"


@pytest.fixture(scope="module")
def processed(trained_project, tmp_path_factory) -> KedroProject:
    """Two small requests processed: states original, req-0001, req-0002 and two ledger rows."""
    project = trained_project.clone(tmp_path_factory.mktemp("chain") / "p")
    index = pd.read_csv(project.path / "data/02_intermediate/sample_index.csv")
    train = split_ids(index, "train")
    file_request(project.path / REQUESTS, sample_ids=train[:20].tolist())
    file_request(project.path / REQUESTS, sample_ids=train[20:40].tolist())
    project.run("unlearn")
    return project


@pytest.fixture
def project(processed, tmp_path) -> KedroProject:
    return processed.clone(tmp_path / "p")


def _refused(project: KedroProject, message: str, **params) -> None:
    """The run fails with ``message`` and leaves every file as it was."""
    before = project.files()
    with pytest.raises(Exception, match=message):
        project.run("unlearn", params=params or None)
    assert project.files() == before


def test_an_edited_processed_request_is_refused(project):
    # an id taken out of a processed request would otherwise be subtracted a second time
    path = project.path / REQUESTS / "req-0001.yml"
    doc = yaml.safe_load(path.read_text())
    removed = doc["forget"]["sample_ids"].pop()
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    file_request(project.path / REQUESTS, sample_ids=[removed])
    _refused(project, r"request req-0001 was processed, but .* has changed .* cannot be edited")
