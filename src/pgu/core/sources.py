"""One interface over every raw data source of the project.

``load_source(name, root, **options)`` reads a data set from disk (or, for ``digits``, from
scikit-learn's bundled copy) and returns a :class:`RawData`: the samples as one array, their
integer labels, a stable human-readable key per sample, the split the source itself put each
sample in, and the class names.

Sample order is deterministic and stable across runs and machines (sorted paths, file order of
batches), because later code numbers samples by their position.

Sources:

- ``digits``: scikit-learn's 8x8 handwritten digits, ``x`` float32 (N, 1, 8, 8) in [0, 1].
- ``cifar10`` / ``cifar100``: the python-pickle batches of the official archives.
- ``image_folder``: a class-per-folder tree of images, optionally split into train/ and test/.
- ``csv``: a table with one label column and numeric feature columns.

Every problem with a source raises :class:`DataSourceError` with one message that says what was
expected, where it was looked for, and how to get it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

logger = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("digits", "cifar10", "cifar100", "image_folder", "csv")

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
IMAGE_MODES: tuple[str, ...] = ("RGB", "L")
# Pillow's modes for 16-bit images, which convert() would clip to 255 (all white).
_IMAGE_16BIT_MODES: tuple[str, ...] = ("I;16", "I;16B", "I;16L", "I;16N")
ORIGINS: tuple[str, ...] = ("train", "test")

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR_PIXELS = 3 * 32 * 32


class DataSourceError(ValueError):
    """A data source is missing or malformed.

    The message says what was expected, where, and how to get it.
    """


@dataclass(frozen=True, eq=False)
class RawData:
    """Samples of one data source, in a stable order.

    Attributes:
        x: Samples. (N, C, H, W) uint8 for images; (N, F) float32 for tabular data;
            (N, 1, 8, 8) float32 in [0, 1] for ``digits``.
        y: (N,) int64 class index in [0, len(classes)).
        keys: (N,) stable, unique, human-readable key per sample, e.g. ``"digits/0012"``,
            ``"cifar10/data_batch_1/17"``, ``"train/cat/0001.jpg"``, ``"csv/row/12"``.
        origin: (N,) str, ``"train"`` or ``"test"``: the split the source itself put the
            sample in (``"train"`` for sources without one).
        classes: Class names, index = label.
    """

    x: np.ndarray
    y: np.ndarray
    keys: list[str]
    origin: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.y.shape != (n,) or len(self.keys) != n or self.origin.shape != (n,):
            raise DataSourceError(
                f"RawData is inconsistent: x has {n} samples but y has shape {self.y.shape}, "
                f"keys has {len(self.keys)} entries and origin has shape {self.origin.shape}."
            )
        if self.y.dtype != np.int64:
            raise DataSourceError(f"RawData.y must be int64, got {self.y.dtype}.")
        if n > 0 and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise DataSourceError(
                f"RawData labels must lie in [0, {len(self.classes)}), "
                f"got [{self.y.min()}, {self.y.max()}]."
            )
        if len(set(self.keys)) != n:
            raise DataSourceError("RawData.keys must be unique.")
        unknown = sorted(set(self.origin.tolist()) - set(ORIGINS))
        if unknown:
            raise DataSourceError(f"RawData.origin must be 'train' or 'test', got {unknown}.")


def load_source(name: str, root: str | Path = "data/01_raw", **options: Any) -> RawData:
    """Load a data source by name.

    Args:
        name: One of :data:`SOURCES`.
        root: Folder the source's files are looked for in (relative paths in the options are
            relative to it).
        **options: Source-specific options:

            - ``digits``: none.
            - ``cifar10`` / ``cifar100``: ``subdir`` (default ``"cifar-10-batches-py"`` /
              ``"cifar-100-python"``).
            - ``image_folder``: ``path`` (required), ``mode`` (``"RGB"`` or ``"L"``, default
              ``"RGB"``), ``image_size`` (``[H, W]``, default None: all images must have the
              same size), ``workers`` (decoding threads, default 4).
            - ``csv``: ``path`` (required), ``label_column`` (default ``"label"``),
              ``feature_columns`` (default: every other column).

    Returns:
        The samples of the source, in a deterministic order.

    Raises:
        DataSourceError: The name or an option is unknown, or the source is missing or
            malformed.
    """
    if name not in _LOADERS:
        raise DataSourceError(
            f"Unknown data source {name!r}: expected one of {', '.join(SOURCES)}."
        )
    loader, allowed = _LOADERS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise DataSourceError(
            f"Unknown option(s) {', '.join(unknown)} for data source {name!r}: "
            f"valid options are {valid}."
        )
    raw = loader(Path(root), **options)
    logger.info(
        "Loaded data source %r: %d samples, %d classes, x %s %s",
        name,
        len(raw.y),
        len(raw.classes),
        raw.x.dtype,
        tuple(raw.x.shape),
    )
    return raw


# --------------------------------------------------------------------------------------------
# digits


def _load_digits(root: Path) -> RawData:
    """scikit-learn's bundled 8x8 digits (1797 samples, no download)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = np.asarray(bunch.data, dtype=np.float32)  # (N, 64), values 0..16
    x = (data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)  # (N, 1, 8, 8) in [0, 1]
    y = np.asarray(bunch.target, dtype=np.int64)  # (N,)
    n = len(y)
    return RawData(
        x=x,
        y=y,
        keys=[f"digits/{i:04d}" for i in range(n)],
        origin=np.full(n, "train", dtype="<U5"),
        classes=[str(c) for c in range(10)],
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


@dataclass(frozen=True)
class _CifarLayout:
    source: str  # "cifar10"
    title: str  # "CIFAR-10"
    archive: str  # "cifar-10-python.tar.gz"
    default_subdir: str  # "cifar-10-batches-py"
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    labels_key: str

    def expected(self) -> str:
        files = (
            "data_batch_1..5, test_batch and batches.meta"
            if self.source == "cifar10"
            else "train, test and meta"
        )
        return f"expected {files} (the python version of the official archive)"

    def how_to_get(self, root: Path) -> str:
        return f"Download {self.archive} from {_CIFAR_URL} and extract it under {root}/."


_CIFAR10 = _CifarLayout(
    source="cifar10",
    title="CIFAR-10",
    archive="cifar-10-python.tar.gz",
    default_subdir="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    names_key="label_names",
    labels_key="labels",
)
_CIFAR100 = _CifarLayout(
    source="cifar100",
    title="CIFAR-100",
    archive="cifar-100-python.tar.gz",
    default_subdir="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    names_key="fine_label_names",
    labels_key="fine_labels",
)


def _load_cifar10(root: Path, subdir: str | None = None) -> RawData:
    """CIFAR-10 from its python-pickle batches; see :func:`_load_cifar`."""
    return _load_cifar(root, _CIFAR10, subdir)


def _load_cifar100(root: Path, subdir: str | None = None) -> RawData:
    """CIFAR-100 (fine labels) from its python-pickle batches; see :func:`_load_cifar`."""
    return _load_cifar(root, _CIFAR100, subdir)


def _load_cifar(root: Path, layout: _CifarLayout, subdir: str | None) -> RawData:
    """Read the python-pickle batches of CIFAR-10 or CIFAR-100.

    This is the layout torchvision uses (``<root>/cifar-10-batches-py/data_batch_1`` ...), but
    the batches are read here directly rather than through ``torchvision.datasets``, which
    insists on the official md5 sums. The files are Python pickles, the format's only form; a
    plain unpickler runs code chosen by whoever wrote the file, so they are read with
    :class:`_CifarUnpickler`, which builds only the dicts, lists, strings, numbers and numpy
    arrays a batch holds and refuses any other object.

    Train batches get origin ``"train"``, test batches ``"test"``; keys are
    ``"<source>/<batch file>/<row in batch>"``.
    """
    folder = root / (subdir if subdir is not None else layout.default_subdir)
    expected = f"{layout.expected()}. {layout.how_to_get(root)}"
    if not folder.is_dir():
        raise DataSourceError(f"{layout.title} batches not found at {folder}: {expected}")
    files = [*layout.train_files, *layout.test_files, layout.meta_file]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataSourceError(
            f"{layout.title} batches incomplete at {folder}: missing {', '.join(missing)}; "
            f"{expected}"
        )

    meta = _read_pickle(folder / layout.meta_file, layout, root)
    names = meta.get(layout.names_key)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataSourceError(
            f"Corrupt {layout.title} file {folder / layout.meta_file}: expected a list "
            f"{layout.names_key!r} of class names. {layout.how_to_get(root)}"
        )
    classes = [_as_str(c) for c in names]

    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    keys: list[str] = []
    origins: list[np.ndarray] = []
    for origin, batch_files in (("train", layout.train_files), ("test", layout.test_files)):
        for batch_file in batch_files:
            x, y = _read_cifar_batch(folder / batch_file, layout, root, len(classes))
            xs.append(x)
            ys.append(y)
            keys.extend(f"{layout.source}/{batch_file}/{i}" for i in range(len(y)))
            origins.append(np.full(len(y), origin, dtype="<U5"))

    return RawData(
        x=np.concatenate(xs),  # (N, 3, 32, 32) uint8
        y=np.concatenate(ys),  # (N,) int64
        keys=keys,
        origin=np.concatenate(origins),
        classes=classes,
    )


# The globals a CIFAR pickle may name, each mapped to the (module, name) it is imported from:
# the file's own module string is never imported. The official batches were pickled by Python 2
# with numpy 1.x (numpy.core, which numpy 2 renamed numpy._core); pickles written by Python 3
# add _frombuffer (protocol 5) and _codecs.encode (bytes at protocol 2 and below).
_CIFAR_PICKLE_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that can build only what a CIFAR file holds.

    Dicts, lists, strings and numbers need no globals; numpy arrays need the few in
    :data:`_CIFAR_PICKLE_GLOBALS`. Any other global (``os.system`` in a crafted file) is refused
    before it is imported, so loading a file cannot run code chosen by its author.
    """

    def find_class(self, module: str, name: str) -> Any:
        target = _CIFAR_PICKLE_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a CIFAR file holds only dicts, lists, strings, "
                "numbers and numpy arrays"
            )
        return getattr(importlib.import_module(target[0]), target[1])


def _read_pickle(path: Path, layout: _CifarLayout, root: Path) -> dict[str, Any]:
    """Unpickle one CIFAR file, refusing anything but plain data, into a dict with str keys."""
    try:
        with path.open("rb") as f:
            # latin1 turns Python 2 strings (names, numpy's raw array bytes) into str losslessly.
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # unpickling can fail in many ways; all mean "corrupt file"
        raise DataSourceError(
            f"Corrupt {layout.title} file {path}: cannot unpickle it ({exc}). "
            f"{layout.how_to_get(root)}"
        ) from None  # the message quotes the cause: no chained traceback above it
    if not isinstance(entry, dict):
        raise DataSourceError(
            f"Corrupt {layout.title} file {path}: expected a pickled dict, got "
            f"{type(entry).__name__}. {layout.how_to_get(root)}"
        )
    return {_as_str(k): v for k, v in entry.items()}


def _read_cifar_batch(
    path: Path, layout: _CifarLayout, root: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch: x (n, 3, 32, 32) uint8 and y (n,) int64."""
    entry = _read_pickle(path, layout, root)
    how = layout.how_to_get(root)
    missing = [k for k in ("data", layout.labels_key) if k not in entry]
    if missing:
        raise DataSourceError(
            f"Corrupt {layout.title} batch {path}: missing key(s) {', '.join(missing)} "
            f"(expected 'data' and {layout.labels_key!r}). {how}"
        )
    data = np.asarray(entry["data"])  # (n, 3072)
    labels = np.asarray(entry[layout.labels_key])  # (n,)
    if data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise DataSourceError(
            f"Corrupt {layout.title} batch {path}: 'data' has shape {data.shape}, "
            f"expected (n, {_CIFAR_PIXELS}). {how}"
        )
    if labels.shape != (data.shape[0],):
        raise DataSourceError(
            f"Corrupt {layout.title} batch {path}: {layout.labels_key!r} has shape "
            f"{labels.shape}, expected ({data.shape[0]},) to match 'data'. {how}"
        )
    if data.dtype != np.uint8 and not (
        np.issubdtype(data.dtype, np.integer)
        and (data.size == 0 or (data.min() >= 0 and data.max() <= 255))
    ):
        raise DataSourceError(
            f"Corrupt {layout.title} batch {path}: 'data' must hold uint8 pixels, got "
            f"{data.dtype}. {how}"
        )
    if labels.size > 0 and (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise DataSourceError(
            f"Corrupt {layout.title} batch {path}: {layout.labels_key!r} must be integers in "
            f"[0, {num_classes}). {how}"
        )
    x = data.astype(np.uint8).reshape(-1, 3, 32, 32)  # (n, 3, 32, 32): rows are R, G, B planes
    return x, labels.astype(np.int64)


def _as_str(value: Any) -> str:
    """Pickle keys and names may be bytes (written by Python 3) or str (Python 2 + latin1)."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return str(value)


# --------------------------------------------------------------------------------------------
# image_folder


def _load_image_folder(
    root: Path,
    path: str | Path | None = None,
    mode: str = "RGB",
    image_size: Sequence[int] | None = None,
    workers: int = 4,
) -> RawData:
    """A class-per-folder tree of images.

    Two layouts are recognised under ``<root>/<path>``:

    - ``<class>/<image>``: every sample has origin ``"train"``;
    - ``train/<class>/<image>`` and ``test/<class>/<image>``: origin from the top folder; the
      class folders of both must match (e.g. the CIFAR-10 JPEG tree).

    Images may sit at any depth inside a class folder (TinyImageNet's
    ``train/<wnid>/images/*.JPEG``). Files with other extensions and hidden entries are ignored.
    Keys are image paths relative to ``<root>/<path>``, with POSIX separators.
    """
    if path is None:
        raise DataSourceError(
            "Data source 'image_folder' needs option 'path': the folder under "
            f"{root} that holds one sub-folder of images per class."
        )
    if mode not in IMAGE_MODES:
        raise DataSourceError(
            f"Option mode={mode!r} of data source 'image_folder' is not supported: "
            f"expected one of {', '.join(IMAGE_MODES)}."
        )
    size = _parse_image_size(image_size)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataSourceError(
            f"Option workers={workers!r} of data source 'image_folder' must be an integer >= 1."
        )

    folder = root / path
    layout_help = (
        f"expected {folder}/<class>/<image> or {folder}/train/<class>/<image> and "
        f"{folder}/test/<class>/<image>, images ending in {', '.join(IMAGE_EXTENSIONS)}"
    )
    if not folder.is_dir():
        raise DataSourceError(
            f"Image folder not found at {folder}: {layout_help}. Put the images there or set "
            "option 'path' to their folder."
        )

    top = _subfolders(folder)
    if not top:
        raise DataSourceError(f"Image folder {folder} has no class folders: {layout_help}.")
    names = {d.name for d in top}
    if names <= set(ORIGINS):
        # Split layout: train/<class>/..., test/<class>/...
        parts = [(d.name, d) for d in sorted(top, key=lambda d: ORIGINS.index(d.name))]
        class_sets = {origin: [d.name for d in _subfolders(d)] for origin, d in parts}
        for origin, d in parts:
            if not class_sets[origin]:
                raise DataSourceError(f"Image folder {d} has no class folders: {layout_help}.")
        if len(parts) == 2 and class_sets["train"] != class_sets["test"]:
            only_train = sorted(set(class_sets["train"]) - set(class_sets["test"]))
            only_test = sorted(set(class_sets["test"]) - set(class_sets["train"]))
            raise DataSourceError(
                f"Image folder {folder}: the class folders of train/ and test/ differ "
                f"(only in train: {only_train or 'none'}; only in test: {only_test or 'none'}); "
                "both must hold the same classes."
            )
        classes = class_sets[parts[0][0]]
    elif names & set(ORIGINS):
        others = sorted(names - set(ORIGINS))
        raise DataSourceError(
            f"Image folder {folder} mixes train/test folders with other folders ({others}): "
            f"{layout_help} (for TinyImageNet, set option 'path' to tiny-imagenet-200/train)."
        )
    else:
        parts = [("train", folder)]
        classes = sorted(names)

    # Gather (file, origin, label) in a deterministic order: origin, class, sorted path.
    files: list[Path] = []
    origins: list[str] = []
    labels: list[int] = []
    for origin, part in parts:
        for label, class_name in enumerate(classes):
            class_dir = part / class_name
            images = _images_in(class_dir)
            if not images:
                raise DataSourceError(
                    f"Class folder {class_dir} has no images: expected files ending in "
                    f"{', '.join(IMAGE_EXTENSIONS)} (at any depth). Add images or remove the "
                    "folder."
                )
            files.extend(images)
            origins.extend([origin] * len(images))
            labels.extend([label] * len(images))

    x = _decode_images(files, mode=mode, size=size, workers=workers, folder=folder)
    return RawData(
        x=x,  # (N, C, H, W) uint8
        y=np.asarray(labels, dtype=np.int64),
        keys=[f.relative_to(folder).as_posix() for f in files],
        origin=np.asarray(origins, dtype="<U5"),
        classes=list(classes),
    )


def _parse_image_size(image_size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validate option image_size: None or [H, W] of positive ints."""
    if image_size is None:
        return None
    ok = (
        not isinstance(image_size, (str, bytes))
        and isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    )
    if not ok:
        raise DataSourceError(
            f"Option image_size={image_size!r} of data source 'image_folder' must be [H, W], "
            "two positive integers."
        )
    return int(image_size[0]), int(image_size[1])


def _subfolders(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of ``folder``, sorted by name."""
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )


def _images_in(class_dir: Path) -> list[Path]:
    """Image files at any depth under ``class_dir``, sorted by relative POSIX path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if filename.startswith(".") or not filename.lower().endswith(IMAGE_EXTENSIONS):
                continue
            file = Path(dirpath) / filename
            found.append((file.relative_to(class_dir).as_posix(), file))
    found.sort(key=lambda item: item[0])
    return [file for _, file in found]


def _decode_image(file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one image into (C, H, W) uint8."""
    try:
        with Image.open(file) as opened:
            image = _to_8bit(opened, file).convert(mode)
            if size is not None and (image.height, image.width) != size:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)  # (H, W, C) or (H, W)
    except DataSourceError:
        raise  # already names the file and the fix; the image is not corrupt
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataSourceError(
            f"Cannot read image {file}: {exc}. Replace or delete the corrupt file."
        ) from None
    if array.ndim == 2:
        return array[None, :, :]  # (1, H, W)
    return np.ascontiguousarray(array.transpose(2, 0, 1))  # (C, H, W)


def _to_8bit(image: Image.Image, file: Path) -> Image.Image:
    """Rescale a 16-bit grayscale image to 8 bits ("L"); return other images unchanged.

    Pillow's convert() clips 16- and 32-bit integer pixels to 255 instead of rescaling them.
    Mode "I" is how some Pillow versions open 16-bit PNGs (and 16-bit PPMs), so it is rescaled
    too when its values fit 16 bits; wider or floating-point pixels have no agreed 8-bit scale.
    """
    if image.mode not in (*_IMAGE_16BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image)  # (H, W)
    if image.mode == "F" or (values.size > 0 and (values.min() < 0 or values.max() > 65535)):
        kind = (
            "floating-point pixels"
            if image.mode == "F"
            else f"values {values.min()}..{values.max()}, beyond 16 bits"
        )
        raise DataSourceError(
            f"Cannot read image {file}: mode {image.mode!r} ({kind}) has no standard 8-bit "
            "scale. Convert the images to 8-bit (e.g. 8-bit PNG or JPEG) first."
        )
    scaled = (values.astype(np.int64) + 128) // 257  # (H, W): value / 257, rounded
    return Image.fromarray(scaled.astype(np.uint8))  # mode "L"


def _decode_images(
    files: list[Path],
    mode: str,
    size: tuple[int, int] | None,
    workers: int,
    folder: Path,
    chunk: int = 256,
) -> np.ndarray:
    """Decode ``files`` in order into one (N, C, H, W) uint8 array, with ``workers`` threads.

    Each thread decodes ``chunk`` files per task: one task per file made the executor's own
    bookkeeping cost as much as decoding a 32x32 JPEG.
    """
    decode = functools.partial(_decode_image, mode=mode, size=size)
    first = decode(files[0])  # (C, H, W)
    x = np.empty((len(files), *first.shape), dtype=np.uint8)  # (N, C, H, W)
    x[0] = first

    def decode_chunk(start: int) -> list[np.ndarray]:
        return [decode(file) for file in files[start : start + chunk]]

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        # map() yields in input order, so the output order does not depend on thread timing.
        starts = range(1, len(files), chunk)
        for start, images in zip(starts, pool.map(decode_chunk, starts), strict=True):
            for i, image in enumerate(images, start=start):
                if image.shape != first.shape:
                    raise DataSourceError(
                        f"Images under {folder} differ in size: {files[0]} is "
                        f"{first.shape[1]}x{first.shape[2]} but {files[i]} is "
                        f"{image.shape[1]}x{image.shape[2]} (HxW). Set option image_size: "
                        "[H, W] to resize them all."
                    )
                x[i] = image
    finally:
        # On an error, do not decode the rest of a possibly huge folder.
        pool.shutdown(wait=True, cancel_futures=True)
    return x


# --------------------------------------------------------------------------------------------
# csv


def _load_csv(
    root: Path,
    path: str | Path | None = None,
    label_column: str = "label",
    feature_columns: Sequence[str] | None = None,
) -> RawData:
    """A table: one label column and numeric feature columns.

    Integer labels map their sorted unique values to 0..K-1 (class names are their str);
    other labels (strings) map their sorted unique str values. Keys are ``"csv/row/<i>"``
    with ``i`` the 0-based data row. Every sample has origin ``"train"``.
    """
    if path is None:
        raise DataSourceError(
            f"Data source 'csv' needs option 'path': the CSV file (relative to {root} or absolute)."
        )
    file = Path(path) if Path(path).is_absolute() else root / path
    if not file.is_file():
        raise DataSourceError(
            f"CSV file not found at {file}: expected a table with a {label_column!r} column "
            "and numeric feature columns. Put the file there or set option 'path'."
        )
    try:
        table = pd.read_csv(file)
    except pd.errors.EmptyDataError:
        raise DataSourceError(
            f"CSV file {file} is empty: expected a header row and at least one data row."
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"Cannot parse CSV file {file}: {exc}") from None
    if len(table) == 0:
        raise DataSourceError(
            f"CSV file {file} is empty: expected a header row and at least one data row."
        )
    columns = [str(c) for c in table.columns]
    table.columns = columns
    if label_column not in columns:
        # one column whose name holds another separator: the file is not comma-separated
        sep = next((c for c in ";\t|" if len(columns) == 1 and c in columns[0]), None)
        hint = f" The file seems {sep!r}-separated; this source reads commas." if sep else ""
        raise DataSourceError(
            f"CSV file {file} has no label column {label_column!r} (columns: {columns}); "
            f"set option label_column to the column that holds the labels.{hint}"
        )

    if feature_columns is None:
        features = [c for c in columns if c != label_column]
    else:
        if isinstance(feature_columns, str) or not isinstance(feature_columns, Sequence):
            raise DataSourceError(
                f"Option feature_columns={feature_columns!r} of data source 'csv' must be a "
                "list of column names."
            )
        features = [str(c) for c in feature_columns]
        absent = [c for c in features if c not in columns]
        if absent:
            raise DataSourceError(
                f"CSV file {file} has no feature column(s) {absent} (columns: {columns})."
            )
        if label_column in features:
            raise DataSourceError(
                f"Option feature_columns of data source 'csv' includes the label column "
                f"{label_column!r}; remove it."
            )
    if not features:
        raise DataSourceError(
            f"CSV file {file} has no feature columns besides the label column {label_column!r}."
        )
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise DataSourceError(
            f"CSV file {file} has non-numeric feature column(s) {non_numeric}: every feature "
            "must be a number; drop them or list the numeric ones in option feature_columns."
        )
    with np.errstate(over="ignore"):  # an overflow is reported below, with its column
        values = table[features].to_numpy(dtype=np.float32)  # (N, F)
    finite = np.isfinite(values)  # (N, F)
    if not finite.all():
        # Judge the float32 values, not the table's float64: a number beyond float32's range
        # (1e39) is finite in the table but infinite once cast.
        source_finite = np.isfinite(table[features].to_numpy(dtype=np.float64))  # (N, F)
        overflows = source_finite & ~finite  # (N, F)
        missing = [c for c, ok in zip(features, source_finite.all(axis=0), strict=True) if not ok]
        overflow = [c for c, bad in zip(features, overflows.any(axis=0), strict=True) if bad]
        problems = []
        if missing:
            rows = np.flatnonzero(~source_finite.all(axis=1))  # 0-based data rows
            shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
            problems.append(
                f"missing or infinite values in feature column(s) {missing}, in {len(rows)} "
                f"row(s) ({shown}; 0-based data rows) (fill or drop those rows)"
            )
        if overflow:
            problems.append(
                f"values beyond float32's range (|x| > {np.finfo(np.float32).max:.4g}) in "
                f"feature column(s) {overflow}; rescale them"
            )
        raise DataSourceError(f"CSV file {file} has {' and '.join(problems)}.")

    y, classes = _encode_labels(table[label_column], file, label_column)
    if len(classes) < 2:
        raise DataSourceError(
            f"CSV file {file}'s label column {label_column!r} holds one class only "
            f"({classes}): a classifier needs at least two; is label_column the right column?"
        )
    n = len(table)
    return RawData(
        x=np.ascontiguousarray(values),  # (N, F) float32
        y=y,
        keys=[f"csv/row/{i}" for i in range(n)],
        origin=np.full(n, "train", dtype="<U5"),
        classes=classes,
    )


def _encode_labels(column: pd.Series, file: Path, name: str) -> tuple[np.ndarray, list[str]]:
    """Map a label column to (N,) int64 indices and class names."""
    if column.isna().any():
        rows = [int(i) for i in np.flatnonzero(column.isna().to_numpy())[:5]]
        raise DataSourceError(
            f"CSV file {file} has missing labels in column {name!r} (rows {rows})."
        )
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        numbers = column.to_numpy()
        if not np.issubdtype(numbers.dtype, np.integer):
            as_float = numbers.astype(np.float64)
            if not all(math.isfinite(v) and float(v).is_integer() for v in as_float):
                raise DataSourceError(
                    f"CSV file {file}: label column {name!r} holds non-integer numbers; labels "
                    "must be integers or strings."
                )
            numbers = as_float.astype(np.int64)
        uniques = np.unique(numbers)  # sorted
        y = np.searchsorted(uniques, numbers).astype(np.int64)
        return y, [str(int(v)) for v in uniques]
    strings = column.astype(str).to_numpy(dtype=object)
    names = sorted(set(strings.tolist()))
    index = {c: i for i, c in enumerate(names)}
    y = np.asarray([index[s] for s in strings], dtype=np.int64)
    return y, names


# --------------------------------------------------------------------------------------------

_LOADERS: dict[str, tuple[Callable[..., RawData], tuple[str, ...]]] = {
    "digits": (_load_digits, ()),
    "cifar10": (_load_cifar10, ("subdir",)),
    "cifar100": (_load_cifar100, ("subdir",)),
    "image_folder": (_load_image_folder, ("path", "mode", "image_size", "workers")),
    "csv": (_load_csv, ("path", "label_column", "feature_columns")),
}
