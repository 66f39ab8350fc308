"""``pgu-admin``: file, withdraw, verify, purge and archive deletion requests.

    pgu-admin file-request --ids 12,16,17 --note "ticket 4711"
    pgu-admin file-request --ids-file ids.txt
    pgu-admin file-request --classes 3
    pgu-admin file-request --random-fraction 0.1 --seed 0     # a random share of the train split
    pgu-admin purge [--dry-run]
    pgu-admin withdraw req-0003         # take a pending (unprocessed) request out of the queue
    pgu-admin archive [--dry-run]       # start over: move the queue's whole history aside
    pgu-admin verify                    # check the audit trail from hashes (any machine)

Filing only writes ``data/01_raw/deletion_requests/<id>.yml`` and queues it; the next
``kedro run --pipelines unlearn`` (or ``dvc repro``) processes it. The ids and classes are checked
against the sample index (which must exist) and the requests already queued first: a request
cannot be edited once filed, so a bad one is refused before it is written. ``--ids``,
``--ids-file`` and ``--classes`` may be repeated; their values add up. Another environment's
queue is checked against that environment's index, found beside it like its ledger::

    pgu-admin file-request --ids 5000 --requests data/01_raw/cifar10/deletion_requests
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pgu.core.checkpoint import CheckpointError, file_meta
from pgu.core.ledger import LedgerError
from pgu.core.requests import (
    DeletionRequest,
    RequestError,
    beside_requests,
    check_new_request,
    file_request,
    load_requests,
    resolve,
    withdraw_request,
)
from pgu.core.retention import archive_queue, purge_superseded
from pgu.core.verification import verify_queue

REQUESTS = "data/01_raw/deletion_requests"
INDEX_COLUMNS = ("sample_id", "label", "split")


def _default_index(folder: str | Path) -> Path | None:
    """The sample index beside a requests folder laid out as in the catalog, else None:
    ``<root>/02_intermediate/<sub>/sample_index.csv``, as its ledger is found."""
    return beside_requests(folder, "02_intermediate", "sample_index.csv")


def _read_index(path: Path, env: str) -> pd.DataFrame:
    """The sample index table, or a RequestError naming the file, what is wrong and the fix."""
    fix = f"rebuild it with `kedro run{env} --pipelines data`, or restore it with `dvc checkout`"
    try:
        index = pd.read_csv(path)
    except ValueError as exc:  # empty, binary, malformed CSV
        reason = str(exc).strip()
        raise RequestError(f"sample index {path} is not a CSV table ({reason}); {fix}") from exc
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise RequestError(f"sample index {path} lacks the column(s) {missing}; {fix}")
    if index.empty:
        raise RequestError(f"sample index {path} has no rows; {fix}")
    return index


def _already_requested(folder: str, index: pd.DataFrame) -> np.ndarray:
    forgotten = np.empty(0, dtype=np.int64)
    num_classes = int(index["label"].max()) + 1
    for request in load_requests(folder):
        forgotten = np.union1d(forgotten, resolve(request, index, forgotten, num_classes))
    return forgotten


def _ints(text: str, source: str) -> list[int]:
    """The integers of comma/space-separated ``text``; a bad token is named with its source."""
    values = []
    for token in text.replace(",", " ").split():
        try:
            values.append(int(token))
        except ValueError:
            raise RequestError(f"{source}: {token!r} is not an integer") from None
    return values


def _class_names(index_path: Path) -> list[str]:
    """The class names the data pipeline stored beside the index (in samples.safetensors's
    header: only the header is read), or [] where there is no such file."""
    try:
        names = file_meta(index_path.with_name("samples.safetensors")).get("classes")
    except CheckpointError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def _classes(text: str, names: list[str]) -> list[int]:
    """The classes of ``--classes`` text: integer labels (the sample index's ``label``), class
    names (a CSV's string labels, an image folder's class folders) where the names are known, or
    either spelled out as ``label:N`` / ``name:X``.

    A number that is both a label and the name of another class (a CSV's labels 1, 2, 3 are
    stored as 0, 1, 2 named '1', '2', '3') is refused, naming both readings, rather than guessed.
    """
    known = ", ".join(f"{i}={n}" for i, n in enumerate(names)) or "unknown here"

    def by_name(name: str) -> int:
        if name not in names:
            raise RequestError(
                f"--classes: {name!r} is neither an integer label nor a class name (the classes, "
                f"label=name: {known})"
            )
        return names.index(name)

    values = []
    for token in text.replace(",", " ").split():
        kind, _, value = token.partition(":") if ":" in token else ("", "", token)
        if kind == "name":
            values.append(by_name(value))
            continue
        try:
            label = int(value)
        except ValueError:
            if kind == "label":
                raise RequestError(f"--classes: {token!r}: a label is an integer") from None
            values.append(by_name(value))
            continue
        named = names.index(value) if value in names else None
        if not kind and named is not None and named != label and 0 <= label < len(names):
            raise RequestError(
                f"--classes: {token!r} is ambiguous: the label {label} or the class named "
                f"{value!r}, whose label is {named}; write label:{label} or name:{value} "
                f"(label=name: {known})"
            )
        values.append(named if not kind and named is not None and label >= len(names) else label)
    return values


def _file(args: argparse.Namespace) -> Path:
    env = "" if Path(args.requests) == Path(REQUESTS) else " --env <env>"
    path = _default_index(args.requests) if args.index is None else Path(args.index)
    if path is None:
        raise RequestError(
            f"cannot tell which sample index belongs to --requests {args.requests} (not a "
            "<root>/01_raw/<sub>/deletion_requests folder); pass --index"
        )
    if not path.is_file():  # without it nothing could be checked before filing
        raise RequestError(
            f"sample index {path} not found; run `kedro run{env} --pipelines data` first (from "
            "the project root), or pass --index"
        )
    index = _read_index(path, env)
    ids: list[int] = []
    for text in args.ids or []:
        ids += _ints(text, "--ids")
    for name in args.ids_file or []:
        if not Path(name).is_file():
            raise RequestError(f"--ids-file {name} not found")
        try:
            text = Path(name).read_text()
        except UnicodeDecodeError:
            raise RequestError(
                f"--ids-file {name} is not a text file; it should hold sample ids as decimal "
                "numbers separated by spaces, commas or lines"
            ) from None
        ids += _ints(text, f"--ids-file {name}")
    if args.random_fraction is not None:
        if not 0 < args.random_fraction <= 1:  # NaN fails this too
            raise RequestError(
                f"--random-fraction must be a share in (0, 1], got {args.random_fraction}; give "
                "the share of the train split to forget, e.g. 0.1"
            )
        train = index.loc[index["split"] == "train", "sample_id"].to_numpy(dtype=np.int64)
        pool = np.setdiff1d(train, _already_requested(args.requests, index))
        n = round(args.random_fraction * len(train))
        if not 0 < n <= len(pool):
            raise RequestError(
                f"cannot draw {n} of the {len(pool)} train samples not yet forgotten"
            )
        rng = np.random.default_rng(args.seed)
        ids += sorted(rng.choice(pool, size=n, replace=False).tolist())
    names = _class_names(path) if args.classes else []
    classes = [c for text in args.classes or [] for c in _classes(text, names)]
    # the shape of the request first, then its ids; in the words of this command's options
    if not ids and not classes:
        raise RequestError(
            "nothing to forget: give --ids, --ids-file, --random-fraction or --classes"
        )
    if args.purpose == "depoison" and classes:
        raise RequestError(
            "--purpose depoison names mislabelled samples: give them with --ids or --ids-file, "
            "not --classes"
        )
    check_new_request(ids, classes, args.purpose)
    new = DeletionRequest(args.id or "(new)", tuple(ids), tuple(classes), args.note, "")
    num_classes = int(index["label"].max()) + 1
    resolve(new, index, _already_requested(args.requests, index), num_classes)
    return file_request(
        args.requests,
        ids,
        classes,
        note=args.note,
        request_id=args.id,
        purpose=args.purpose,
        ledger=args.ledger,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgu-admin", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("file-request", help="write and queue a new deletion request")
    # action="append": a repeated option adds its values instead of replacing the earlier ones
    f.add_argument("--ids", action="append", help="comma-separated sample ids (repeatable)")
    f.add_argument(
        "--ids-file",
        action="append",
        help="file with sample ids separated by spaces, commas or lines (repeatable)",
    )
    f.add_argument(
        "--classes",
        action="append",
        help="comma-separated classes to forget entirely, by label or by name (repeatable)",
    )
    f.add_argument("--random-fraction", type=float, help="forget this share of the train split")
    f.add_argument("--seed", type=int, default=0, help="seed of --random-fraction")
    f.add_argument("--note", default="", help="free text for the audit trail")
    f.add_argument(
        "--purpose",
        choices=("forget", "depoison"),
        default="forget",
        help="depoison: the samples carry wrong labels; de-poison the model instead",
    )
    f.add_argument("--id", help="request id (default req-NNNN)")
    f.add_argument("--requests", default=REQUESTS, help="request folder")
    f.add_argument(
        "--index",
        help="sample index table (default: the one beside --requests, "
        "data/02_intermediate/sample_index.csv for data/01_raw/deletion_requests)",
    )
    f.add_argument(
        "--ledger",
        help="ledger whose ids are never reused (default: the one beside --requests, "
        "data/08_reporting/ledger.csv for data/01_raw/deletion_requests)",
    )
    p = sub.add_parser(
        "purge",
        help="delete superseded model states and evaluation models that saw forgotten samples "
        "(the ledger keeps hashes)",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument("--states", default="data/06_models/states", help="the state store")
    p.add_argument(
        "--ledger", default="data/08_reporting/ledger.csv", help="the ledger of those states"
    )
    p.add_argument(
        "--dvc-cache", default=".dvc/cache", help="DVC's cache, whose copies are deleted too"
    )
    a = sub.add_parser(
        "archive",
        help="start a new queue (new data, a retrained model): move the requests, ledger, "
        "reports, request states and evaluation caches to <root>/archive/<stamp>/",
    )
    a.add_argument("--dry-run", action="store_true", help="only list what would be moved")
    a.add_argument("--requests", default=REQUESTS, help="the request folder of the queue")
    w = sub.add_parser("withdraw", help="take a pending (unprocessed) request out of the queue")
    w.add_argument("request_id", help="the request's id, e.g. req-0003")
    w.add_argument("--requests", default=REQUESTS, help="the request folder of the queue")
    w.add_argument("--ledger", help="its ledger (default: the one beside --requests)")
    v = sub.add_parser(
        "verify",
        help="check the audit trail from hashes: request files, forgotten ids, the states' "
        "chain, the original model (exit 1 if any check fails)",
    )
    v.add_argument("--requests", default=REQUESTS, help="the request folder of the queue")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "file-request":
            path = _file(args)
            if Path(args.requests) == Path(REQUESTS):
                how = "`kedro run --pipelines unlearn` (with your --env, if any) or `dvc repro`"
            else:  # another environment's queue (DVC tracks only conf/base's)
                how = "`kedro run --env <env> --pipelines unlearn` (the env whose catalog has it)"
            print(f"filed {path}; process it with {how}")
        elif args.command == "withdraw":
            path = withdraw_request(args.requests, args.request_id, args.ledger)
            print(f"withdrew {args.request_id}: deleted {path}, and the queue skips it")
        elif args.command == "verify":
            results = verify_queue(args.requests)
            for passed, line in results:
                print(f"{'skip' if passed is None else 'ok  ' if passed else 'FAIL'}  {line}")
            return 1 if any(passed is False for passed, _ in results) else 0
        elif args.command == "archive":
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            for line in archive_queue(args.requests, stamp, args.dry_run):
                print(line)
        else:
            for line in purge_superseded(args.states, args.ledger, args.dvc_cache, args.dry_run):
                print(line)
    except (RequestError, LedgerError, OSError, ValueError) as exc:
        print(f"pgu-admin: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
