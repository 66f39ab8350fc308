"""Deletion requests: parsing, validation against the sample index, and filing new ones.

A request is one YAML file ``<folder>/<id>.yml``::

    id: req-0001
    forget:
      sample_ids: [12, 40, 7]     # training samples to forget, and/or
      classes: [3]                # every not-yet-forgotten training sample of these classes
    note: free text for the audit trail
    purpose: depoison             # optional: the named samples carry wrong labels (below)

A request's ``purpose`` is ``forget`` (the default: unlearn the samples) or ``depoison``: the
listed training samples were found to carry wrong labels, and the model is de-poisoned (METHOD
section 7, ``pgu.core.depoisoning``) instead of made to forget them. Either way the samples leave
the retain statistics and the ledger records the request (kind ``depoison`` for the latter).

Requests are processed in the order of ``queue.yml`` beside them, which also tells DVC which
state each request starts from. Validation happens for every pending request before anything is
touched, and each problem raises one :class:`RequestError` naming the request and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pgu.core.checkpoint import atomic_write_bytes, sha256_bytes
from pgu.core.ledger import read_ledger

QUEUE_FILE = "queue.yml"
PURPOSES = ("forget", "depoison")
ORIGINAL = "original"  # name of the state every queue starts from
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


QUEUE_SHAPE = "a mapping `requests: {<id>: {after: <state>}}`"


class RequestError(ValueError):
    """A deletion request is malformed or cannot be honoured as written."""


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last one
    silently, which would drop part of a request)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _DuplicateKeyError(key, key_node.start_mark.line + 1)
                seen.add(key)
            except TypeError:  # unhashable: SafeLoader reports it itself
                pass
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path, data: bytes, shape: str) -> object:
    """The document of ``data`` (read from ``path``); one RequestError naming the file if not
    YAML or if a key repeats."""
    try:
        return yaml.load(data, Loader=_StrictLoader)
    except _DuplicateKeyError as exc:
        raise RequestError(
            f"{path}: key {exc.key!r} appears twice (the second at line {exc.line}); YAML "
            "would keep only the last, so merge them into one"
        ) from None  # the message says it all: no chained traceback above it
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # one line, not PyYAML's multi-line report
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise RequestError(
            f"{path} is not valid YAML ({problem}{where}); expected {shape}"
        ) from None


@dataclass(frozen=True)
class DeletionRequest:
    """One parsed request file.

    Attributes:
        id: request id, equal to the file's stem.
        sample_ids: explicitly named training sample ids, in file order (duplicates kept so
            that validation can report them).
        classes: classes whose remaining training samples are to be forgotten.
        note: free text.
        sha256: hash of the file's bytes (recorded in the ledger).
        purpose: "forget" (unlearn the samples) or "depoison" (they carry wrong labels).
    """

    id: str
    sample_ids: tuple[int, ...]
    classes: tuple[int, ...]
    note: str
    sha256: str
    purpose: str = "forget"

    @property
    def kind(self) -> str:
        """'depoison' for a de-poisoning request; else 'classes' when whole classes are removed,
        and 'samples' (random-sample removal) otherwise."""
        if self.purpose == "depoison":
            return "depoison"
        return "classes" if self.classes else "samples"


def _check_int64(values: Sequence[int], where: str) -> None:
    """Refuse integers numpy cannot hold (an OverflowError deep inside otherwise)."""
    huge = [v for v in values if not -(2**63) <= v < 2**63]
    if huge:
        raise RequestError(f"{where}: {huge[:10]} out of range; no sample or class has such an id")


def _int_list(value: object, what: str, path: Path) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise RequestError(f"{path}: forget.{what} must be a list of integers, got {value!r}")
    _check_int64(value, f"{path}: forget.{what}")
    return tuple(value)


def _check_id(request_id: str, where: str) -> None:
    if request_id == ORIGINAL:
        raise RequestError(
            f"{where}: request id {ORIGINAL!r} is reserved (the state every queue starts "
            "from); choose another id"
        )
    if not ID_PATTERN.match(request_id):
        raise RequestError(f"{where}: request id {request_id!r} must be letters, digits, - _ .")


def parse_request(path: str | Path) -> DeletionRequest:
    """Read and structurally check one request file (ids are checked by :func:`resolve`)."""
    path = Path(path)
    data = path.read_bytes()
    doc = _load_yaml(path, data, "a mapping with keys id, forget, note (and purpose)")
    if not isinstance(doc, dict):
        raise RequestError(f"{path} must be a mapping with keys id, forget, note (and purpose)")
    unknown = set(doc) - {"id", "forget", "note", "purpose"}
    if unknown:
        raise RequestError(
            f"{path}: unknown keys {sorted(unknown, key=str)}; allowed: id, forget, note, purpose"
        )
    if "id" not in doc:
        raise RequestError(f"{path}: the id is missing; add `id: {path.stem}`")
    if doc["id"] != path.stem:
        raise RequestError(
            f"{path}: id {doc['id']!r} differs from the file name {path.stem!r}; "
            "rename the file or fix the id"
        )
    _check_id(path.stem, str(path))
    forget = doc.get("forget")
    if not isinstance(forget, dict):
        raise RequestError(f"{path}: forget must be a mapping with sample_ids and/or classes")
    unknown = set(forget) - {"sample_ids", "classes"}
    if unknown:
        raise RequestError(
            f"{path}: unknown keys {sorted(unknown, key=str)} under forget; "
            "it takes sample_ids and/or classes"
        )
    ids = _int_list(forget.get("sample_ids"), "sample_ids", path)
    classes = _int_list(forget.get("classes"), "classes", path)
    if not ids and not classes:
        raise RequestError(f"{path}: the request is empty; list sample_ids or classes to forget")
    purpose = doc.get("purpose", "forget")
    if purpose not in PURPOSES:
        raise RequestError(f"{path}: purpose {purpose!r} is not one of {list(PURPOSES)}")
    if purpose == "depoison" and classes:
        raise RequestError(
            f"{path}: a de-poisoning request names the mislabelled samples; list them under "
            "forget.sample_ids (a whole class cannot be mislabelled against itself)"
        )
    note = str(doc.get("note") or "")
    return DeletionRequest(path.stem, ids, classes, note, sha256_bytes(data), purpose)


def read_queue(folder: str | Path) -> list[dict]:
    """The ordered queue: ``[{id, after}, ...]`` where ``after`` is the state it starts from.

    On disk (``queue.yml``) it is a mapping ``requests: {<id>: {after: <state>}}`` in
    processing order, which DVC's ``foreach`` turns into one stage per request id.
    """
    path = Path(folder) / QUEUE_FILE
    if not path.is_file():
        return []
    doc = _load_yaml(path, path.read_bytes(), QUEUE_SHAPE) or {}
    if not isinstance(doc, dict) or not set(doc) <= {"requests"}:
        raise RequestError(f"{path} must be {QUEUE_SHAPE}, got {doc!r}")
    entries = doc.get("requests") or {}
    if not isinstance(entries, dict):
        raise RequestError(f"{path}: requests must be a mapping {{id: {{after: state}}}}")
    queue, expected = [], ORIGINAL
    for request_id, item in entries.items():
        if not isinstance(item, dict) or set(item) != {"after"}:
            raise RequestError(f"{path}: {request_id} must map to {{after: <state>}}, got {item!r}")
        # YAML reads 0003 as the integer 3, which names no file; say how to write it
        if not isinstance(request_id, str) or not isinstance(item["after"], str):
            raise RequestError(
                f"{path}: request ids must be strings, got {request_id!r}: {item!r}; "
                "quote ids that YAML would read as numbers, e.g. '0003': {after: '0002'}"
            )
        if item["after"] != expected:
            raise RequestError(
                f"{path}: {request_id} must start from {expected!r} (the previous request), "
                f"not {item['after']!r}; requests are processed strictly in queue order"
            )
        queue.append({"id": str(request_id), "after": item["after"]})
        expected = str(request_id)
    return queue


def _request_files(folder: Path) -> set[str]:
    """The ids of the request files in ``folder``, refusing YAML files that would be skipped."""
    # only <id>.yml is read: a req-0003.yaml would otherwise be ignored without a word
    misnamed = sorted(
        p.name
        for p in folder.glob("*")
        if p.suffix.lower() in (".yml", ".yaml") and p.suffix != ".yml"
    )
    if misnamed:
        raise RequestError(
            f"{folder}: {misnamed} would not be read; requests must be named <id>.yml (and the "
            f"queue {QUEUE_FILE}): rename them"
        )
    return {p.stem for p in folder.glob("*.yml")} - {Path(QUEUE_FILE).stem}


def load_requests(folder: str | Path) -> list[DeletionRequest]:
    """Every request of the queue, parsed, in queue order."""
    folder = Path(folder)
    queue = read_queue(folder)
    files = _request_files(folder)
    missing = [q["id"] for q in queue if q["id"] not in files]
    if missing:
        raise RequestError(
            f"{folder}: queued requests {missing} have no file <id>.yml; restore the files (`git "
            "checkout`, your backup), or, for a request not yet processed, take it out of the "
            f"queue (`pgu-admin withdraw {missing[0]}`)"
        )
    unqueued = sorted(files - {q["id"] for q in queue})
    if unqueued and not (folder / QUEUE_FILE).is_file():
        raise RequestError(
            f"{folder}: {QUEUE_FILE} is missing, and it holds the order of the requests "
            f"{unqueued}: restore it (`git checkout -- {folder / QUEUE_FILE}`, your backup)"
        )
    if unqueued:
        raise RequestError(
            f"{folder}: request files {unqueued} are not in {QUEUE_FILE}; file requests with "
            "`pgu-admin file-request` so they are queued in order"
        )
    return [parse_request(folder / f"{q['id']}.yml") for q in queue]


def resolve(
    request: DeletionRequest,
    index: pd.DataFrame,
    already_forgotten: np.ndarray,
    num_classes: int,
    never_trained: np.ndarray | None = None,
) -> np.ndarray:
    """The sorted training sample ids a request forgets, after checking every id.

    Args:
        request: the parsed request.
        index: the sample index table (sample_id, label, split).
        already_forgotten: ids forgotten by earlier requests of the queue.
        num_classes: number of classes of the task.
        never_trained: training ids the original model was not trained on
            (``train.exclude_sample_ids``): not retained either.

    Returns:
        (n,) int64 sorted unique ids.

    Raises:
        RequestError: duplicate, unknown, non-train or already-forgotten ids; classes out of
            range; a request that resolves to no sample, or to every training sample left.
    """
    where = f"request {request.id}"
    _check_int64(request.sample_ids, f"{where}: sample ids")
    ids = np.asarray(request.sample_ids, dtype=np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise RequestError(f"{where}: duplicate sample ids {uniq[counts > 1][:10].tolist()}")
    known = index.set_index("sample_id")
    unknown = np.setdiff1d(uniq, known.index.to_numpy())
    if unknown.size:
        raise RequestError(
            f"{where}: {unknown.size} unknown sample id{'' if unknown.size == 1 else 's'} "
            f"{unknown[:10].tolist()}{' and more' if unknown.size > 10 else ''} (not in the "
            "sample index; "
            "ids are the sample_id column of data/02_intermediate/sample_index.csv, or of "
            "data/02_intermediate/cifar10/sample_index.csv under `--env cifar10`; a queue filed "
            "against other data, such as the bundled digits examples, is set aside with "
            "`pgu-admin archive`)"
        )
    splits = known.loc[uniq, "split"].to_numpy()
    held_out = uniq[splits != "train"]
    if held_out.size:
        raise RequestError(
            f"{where}: ids {held_out[:10].tolist()} are in the val/test splits, which the model "
            "never trained on; only training samples can be forgotten (if this request was "
            "processed before, the sample index has been rebuilt since, e.g. with another "
            "split: restore it with `dvc checkout`, or retrain and start a new queue with "
            "`pgu-admin archive`)"
        )
    repeat = np.intersect1d(uniq, already_forgotten)
    if repeat.size:
        raise RequestError(
            f"{where}: ids {repeat[:10].tolist()} are already named by an earlier request of "
            "the queue (processed, or pending and to be processed first): take them out of this "
            "one; if the earlier request is pending and should not run, `pgu-admin withdraw` it"
        )
    bad = [c for c in request.classes if not 0 <= c < num_classes]
    if bad:
        raise RequestError(f"{where}: classes {bad} out of range 0..{num_classes - 1}")
    if len(set(request.classes)) != len(request.classes):
        raise RequestError(f"{where}: a class is listed twice in {list(request.classes)}")
    train = index[(index["split"] == "train") & index["label"].isin(request.classes)]
    class_ids = np.setdiff1d(train["sample_id"].to_numpy(dtype=np.int64), already_forgotten)
    if request.classes and class_ids.size == 0:
        raise RequestError(
            f"{where}: classes {list(request.classes)} have no training samples left"
        )
    forget = np.union1d(uniq, class_ids).astype(np.int64)
    all_train = index.loc[index["split"] == "train", "sample_id"].to_numpy(dtype=np.int64)
    gone = np.union1d(forget, already_forgotten)
    if never_trained is not None:
        gone = np.union1d(gone, never_trained)
    if np.setdiff1d(all_train, gone).size == 0:
        raise RequestError(
            f"{where}: it would forget every training sample still retained ({forget.size}), "
            "leaving no data for the model to keep; there is nothing to unlearn towards: train "
            "a new model on new data instead"
        )
    return forget


def beside_requests(folder: str | Path, layer: str, name: str) -> Path | None:
    """The file ``name`` in data layer ``layer`` that belongs to a requests folder laid out as in
    the catalog, else None.

    ``<root>/01_raw/<sub>/deletion_requests`` -> ``<root>/<layer>/<sub>/<name>`` (``<sub>`` is
    empty in conf/base and ``cifar10`` in conf/cifar10).
    """
    parts = Path(folder).parts
    if not parts or parts[-1] != "deletion_requests" or "01_raw" not in parts:
        return None
    raw = len(parts) - 1 - parts[::-1].index("01_raw")
    return Path(*parts[:raw], layer, *parts[raw + 1 : -1], name)


def laid_out_beside(folder: str | Path, layer: str, name: str) -> Path:
    """:func:`beside_requests`, or a ValueError where ``folder`` is not laid out as the catalog
    lays a queue out (so nothing beside it can be found)."""
    path = beside_requests(folder, layer, name)
    if path is None:
        raise ValueError(
            f"--requests {folder} is not a <root>/01_raw/<sub>/deletion_requests folder, so "
            "where its ledger, states, reports and index are cannot be told"
        )
    return path


def default_ledger(folder: str | Path) -> Path | None:
    """The ledger of a requests folder: ``<root>/08_reporting/<sub>/ledger.csv``, or None."""
    return beside_requests(folder, "08_reporting", "ledger.csv")


def _next_id(taken: set[str]) -> str:
    """``req-NNNN`` past every such id taken, so a request deleted by hand is never reused."""
    numbers = [int(m[1]) for t in taken if (m := re.fullmatch(r"req-(\d+)", t))]
    return f"req-{max(numbers, default=0) + 1:04d}"


def check_new_request(sample_ids: Sequence[int], classes: Sequence[int], purpose: str) -> None:
    """What :func:`parse_request` would refuse in a request's shape, refused before it is filed
    (and before its ids are checked against the index)."""
    if not sample_ids and not classes:
        raise RequestError("the request is empty; give sample_ids or classes to forget")
    if purpose not in PURPOSES:
        raise RequestError(f"purpose {purpose!r} is not one of {list(PURPOSES)}")
    if purpose == "depoison" and classes:
        raise RequestError("a de-poisoning request names mislabelled samples: give sample_ids")


def file_request(
    folder: str | Path,
    sample_ids: Sequence[int] = (),
    classes: Sequence[int] = (),
    note: str = "",
    request_id: str | None = None,
    purpose: str = "forget",
    ledger: str | Path | None = None,
) -> Path:
    """Write a new request file and append it to the queue; returns the file's path.

    The id defaults to ``req-NNNN``, past every such id in the queue, the request files and the
    ledger (``ledger``, by default :func:`default_ledger` of ``folder``), whose ids are never
    reused: a request the ledger lists is treated as done. Ids are only checked against the
    sample index when the request is processed. ``purpose="depoison"`` files the samples as
    mislabelled (see the module docstring).
    """
    folder = Path(folder)
    # any sequence of integers: a list, a numpy array, a tensor
    sample_ids, classes = [int(i) for i in sample_ids], [int(c) for c in classes]
    check_new_request(sample_ids, classes, purpose)
    _check_int64(sample_ids, "sample ids")
    _check_int64(classes, "classes")
    if request_id is not None:
        _check_id(request_id, str(folder))
    if not folder.parent.is_dir():  # not a project's data/01_raw: refuse to grow a tree there
        raise RequestError(
            f"requests folder {folder}: {folder.parent} does not exist; run from the project "
            "root or pass the project's requests folder (pgu-admin: --requests)"
        )
    queue = read_queue(folder)
    ledger = default_ledger(folder) if ledger is None else Path(ledger)
    done = set() if ledger is None else set(read_ledger(ledger)["request_id"].astype(str))
    if request_id in done:
        raise RequestError(
            f"request id {request_id!r} is in the ledger {ledger} (already processed); ids are "
            "never reused, choose another"
        )
    request_id = request_id or _next_id({q["id"] for q in queue} | _request_files(folder) | done)
    path = folder / f"{request_id}.yml"
    if path.exists() or any(q["id"] == request_id for q in queue):
        raise RequestError(f"{path} already exists; requests are immutable once filed")
    forget: dict = {}
    if sample_ids:
        forget["sample_ids"] = sample_ids
    if classes:
        forget["classes"] = classes
    doc = {"id": request_id, "forget": forget, "note": note}
    if purpose != "forget":  # a plain request's file stays as it always was
        doc["purpose"] = purpose
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
    folder.mkdir(exist_ok=True)
    atomic_write_bytes(path, text.encode())
    try:
        parse_request(path)  # refuse to queue what could not be read back
    except RequestError:
        path.unlink()  # and leave nothing behind: an unqueued file blocks every later run
        raise
    after = queue[-1]["id"] if queue else ORIGINAL
    queue.append({"id": request_id, "after": after})
    write_queue(folder, queue)
    return path


def withdraw_request(folder: str | Path, request_id: str, ledger: str | Path | None = None) -> Path:
    """Take a pending request out of the queue: its file goes, and the request after it starts
    from the one before it. Returns the deleted file's path.

    Raises:
        RequestError: the id is not queued, it was processed (its ledger row and state are the
            record; file a new request instead), or the ledger cannot be found.
    """
    folder = Path(folder)
    queue = read_queue(folder)
    ids = [q["id"] for q in queue]
    if request_id not in ids:
        raise RequestError(f"request {request_id!r} is not in {folder / QUEUE_FILE}; queued: {ids}")
    ledger = default_ledger(folder) if ledger is None else Path(ledger)
    if ledger is None:  # without it a processed request could not be told from a pending one
        raise RequestError(
            f"cannot tell which ledger belongs to {folder} (not a <root>/01_raw/<sub>/"
            "deletion_requests folder); pass --ledger"
        )
    if request_id in set(read_ledger(ledger)["request_id"].astype(str)):
        raise RequestError(
            f"request {request_id} was processed (the ledger {ledger} lists it): it stays in the "
            "record; file a new request for what it should have been"
        )
    at = ids.index(request_id)
    rest = queue[:at] + queue[at + 1 :]
    if at < len(rest):  # the next one starts from the one before the withdrawn request
        rest[at] = {"id": rest[at]["id"], "after": queue[at]["after"]}
    path = folder / f"{request_id}.yml"
    write_queue(folder, rest)
    path.unlink(missing_ok=True)
    return path


def write_queue(folder: str | Path, queue: list[dict]) -> None:
    """Write ``queue`` (``[{id, after}, ...]``, possibly empty) as the folder's queue.yml."""
    header = "# Processing order of deletion requests; `after` is the state each one starts from.\n"
    entries = {q["id"]: {"after": q["after"]} for q in queue}
    body = yaml.safe_dump({"requests": entries}, sort_keys=False, default_flow_style=None)
    atomic_write_bytes(Path(folder) / QUEUE_FILE, (header + body).encode())
