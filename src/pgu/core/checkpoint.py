"""Safe, deterministic storage of tensors and models (safetensors, never pickle).

A model file is self-describing: its safetensors header carries the model's registry name,
input shape, class count and constructor arguments, so loading rebuilds the architecture from
the registry and fills in the weights. Writes are atomic (temporary file, then rename), and the
same tensors always serialise to the same bytes, so content hashes are stable lineage ids.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from pgu.core.models import build_model

UMASK = os.umask(0)
os.umask(UMASK)
META_KEY = "pgu"  # one header key holding sorted JSON: header bytes do not depend on dict order
RESTORE_HINT = "restore it with `dvc checkout`, or delete it and rerun the pipeline that writes it"


class CheckpointError(ValueError):
    """A stored tensor or model file is missing, corrupt or of the wrong kind."""


@dataclass
class TensorBundle:
    """Named tensors plus JSON-able metadata, stored together in one safetensors file."""

    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_bytes(obj: Any) -> bytes:
    """``obj`` as strict JSON (indent 1): NaN and infinities, which json.dumps would write as
    bare ``NaN``/``Infinity`` that strict parsers refuse, become null."""

    def finite(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [finite(v) for v in o]
        return o

    return json.dumps(finite(obj), indent=1, allow_nan=False).encode()


def stale_temporaries(path: str | Path) -> list[Path]:
    """The temporary files that :func:`atomic_write_bytes` calls for ``path`` left behind.

    A process killed between creating its temporary file and renaming it (SIGKILL, power loss)
    leaves ``.<name>.<8 random characters>.tmp`` beside ``path``: the whole file's size, hidden.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp$")
    return sorted(f for f in path.parent.iterdir() if pattern.match(f.name) and f.is_file())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tensors_to_bytes(tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> bytes:
    """Serialise CPU-contiguous copies of ``tensors`` with JSON ``meta`` in the header."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps(meta or {}, sort_keys=True)}
    return st_save(cpu, metadata=header)


def file_meta(path: str | Path) -> dict:
    """The JSON metadata of a safetensors file written by :func:`tensors_to_bytes`, read from its
    header alone (R_full of a large model is gigabytes).

    Raises:
        CheckpointError: the file is missing or its header is not safetensors' or not ours.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
    except Exception as exc:  # safetensors raises its own types for a damaged header
        raise CheckpointError(f"{path}: unreadable header ({exc}); {RESTORE_HINT}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a mapping; {RESTORE_HINT}")
    return meta


def tensors_from_bytes(data: bytes, what: str = "tensor file") -> tuple[dict[str, Tensor], dict]:
    """Inverse of :func:`tensors_to_bytes`; raises CheckpointError on corrupt input."""
    try:
        tensors = st_load(data)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{what} is not a valid safetensors file ({exc})") from exc
    text = (header.get("__metadata__") or {}).get(META_KEY, "{}")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{what}: its {META_KEY!r} header entry {text[:60]!r} is not a JSON object, so pgu "
            f"did not write it; {RESTORE_HINT}"
        )
    # safetensors hands tensors back in an order that varies between processes; sort them so
    # everything derived from the iteration order (reports, metadata, bytes) is reproducible.
    return {name: tensors[name] for name in sorted(tensors)}, meta


def save_tensors(path: str | Path, tensors: dict[str, Tensor], meta: dict | None = None) -> str:
    """Atomically write ``tensors`` to ``path``; returns the sha256 of the bytes written."""
    data = tensors_to_bytes(tensors, meta)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """Read a safetensors file written by :func:`save_tensors`: (tensors, meta)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; run the pipeline that produces it first")
    return tensors_from_bytes(path.read_bytes(), what=str(path))


def model_spec(name: str, in_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> dict:
    """The JSON-able description from which :func:`build_from_spec` rebuilds a model."""
    return {
        "name": name,
        "in_shape": list(in_shape),
        "num_classes": int(num_classes),
        "kwargs": kwargs,
    }


def build_from_spec(spec: dict) -> nn.Module:
    """Build an untrained model from its spec and remember the spec on the module."""
    model = build_model(
        spec["name"], tuple(spec["in_shape"]), spec["num_classes"], **spec["kwargs"]
    )
    model.pgu_spec = spec  # type: ignore[assignment]
    return model


def model_to_bytes(model: nn.Module) -> bytes:
    """Serialise a model built by :func:`build_from_spec` (weights, buffers and its spec)."""
    spec = getattr(model, "pgu_spec", None)
    if spec is None:
        raise CheckpointError(
            "model has no pgu_spec; build it with pgu.core.checkpoint.build_from_spec"
        )
    meta = {"kind": "model", "spec": spec}
    recipe = getattr(model, "pgu_recipe", None)  # how it was trained (training.fit_from_scratch)
    if recipe is not None:
        meta["recipe"] = recipe
    return tensors_to_bytes(dict(model.state_dict()), meta)


def model_from_bytes(data: bytes, what: str = "model file") -> nn.Module:
    """Rebuild a model from bytes written by :func:`model_to_bytes`; eval mode, CPU.

    The header's spec is checked against the stored weights before any memory is allocated, so
    a spec that cannot be built or does not fit them raises a CheckpointError naming the file.
    """
    tensors, meta = tensors_from_bytes(data, what)
    if meta.get("kind") != "model" or "spec" not in meta:
        raise CheckpointError(f"{what} holds tensors but no model spec; it is not a pgu model file")
    spec = meta["spec"]
    try:
        with torch.device("meta"):  # shapes without memory: a forged in_shape cannot allocate
            skeleton = build_from_spec(spec)
    except KeyError as exc:
        raise CheckpointError(f"{what}: its model spec has no {exc} entry; {RESTORE_HINT}") from exc
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        reason = str(exc).partition("\n")[0]  # torch may append a C++ stack
        raise CheckpointError(
            f"{what}: its model spec {spec} is invalid ({reason}); {RESTORE_HINT}"
        ) from exc
    expected = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: list(v.shape) for k, v in tensors.items()}
    wrong = [
        f"{k}: {stored.get(k, 'absent')} stored, {expected.get(k, 'absent')} expected"
        for k in sorted(expected.keys() | stored.keys())
        if stored.get(k) != expected.get(k)
    ]
    if wrong:
        raise CheckpointError(
            f"{what} does not match architecture {spec['name']} with in_shape "
            f"{spec['in_shape']} ({len(wrong)} tensors differ: {'; '.join(wrong[:3])}); "
            + RESTORE_HINT
        )
    model = build_from_spec(spec)
    model.load_state_dict(tensors, strict=True)
    if isinstance(meta.get("recipe"), dict):
        model.pgu_recipe = meta["recipe"]
    return model.eval()


def model_hash(model: nn.Module) -> str:
    """Content id of a model: sha256 of its serialised bytes (the same as its file's sha256)."""
    return sha256_bytes(model_to_bytes(model))
