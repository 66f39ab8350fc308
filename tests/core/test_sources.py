"""Tests for pgu.core.sources: every data source on tiny fixtures written to tmp_path."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pgu.core.sources import SOURCES, DataSourceError, RawData, load_source

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


# --------------------------------------------------------------------------------------------
# fixture writers


def _dump(path: Path, entry: object, protocol: int | None = None) -> None:
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=protocol)


def _cifar_rows(n: int, offset: int) -> np.ndarray:
    """(n, 3072) uint8 rows whose first pixel identifies the row."""
    data = np.zeros((n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(offset, offset + n, dtype=np.uint8)  # R plane, pixel (0, 0)
    data[:, 1024] = 200  # G plane, pixel (0, 0)
    return data


def _write_cifar10(
    root: Path,
    rows_per_batch: int = 3,
    subdir: str = "cifar-10-batches-py",
    protocol: int | None = None,
):
    folder = root / subdir
    folder.mkdir(parents=True)
    # A numpy scalar too, so the pickles name every numpy global a batch may use.
    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": np.int64(rows_per_batch)}
    _dump(folder / "batches.meta", meta, protocol)
    offset = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [(offset + i) % 10 for i in range(rows_per_batch)]
        _dump(
            folder / name,
            {"data": _cifar_rows(rows_per_batch, offset), "labels": labels, "batch_label": name},
            protocol,
        )
        offset += rows_per_batch
    return folder


def _write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [f"class_{i:02d}" for i in range(100)]
    _dump(folder / "meta", {"fine_label_names": fine, "coarse_label_names": ["c"] * 20})
    _dump(
        folder / "train",
        {"data": _cifar_rows(4, 0), "fine_labels": [0, 99, 5, 5], "coarse_labels": [0] * 4},
    )
    _dump(
        folder / "test",
        {"data": _cifar_rows(2, 4), "fine_labels": [7, 8], "coarse_labels": [0] * 2},
    )
    return folder


def _png(path: Path, value: int, size: tuple[int, int] = (4, 4), mode: str = "RGB") -> None:
    """Write a solid image of ``size`` (H, W)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = (value, value // 2, 255 - value) if mode == "RGB" else value
    Image.new(mode, (size[1], size[0]), color).save(path)


def _write_flat_folder(folder: Path) -> None:
    """3 classes of 4x4 PNGs: ant (2), bee (3), cat (1); written in non-sorted order."""
    _png(folder / "cat" / "c0.png", 30)
    _png(folder / "bee" / "b2.png", 22)
    _png(folder / "bee" / "b0.png", 20)
    _png(folder / "bee" / "b1.png", 21)
    _png(folder / "ant" / "a1.PNG", 11)
    _png(folder / "ant" / "a0.png", 10)
    (folder / "ant" / "notes.txt").write_text("not an image")


# --------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_dtypes_classes() -> None:
    raw = load_source("digits")
    assert isinstance(raw, RawData)
    assert raw.x.shape == (1797, 1, 8, 8)
    assert raw.x.dtype == np.float32
    assert 0.0 <= raw.x.min() and raw.x.max() <= 1.0 and raw.x.max() == 1.0
    assert raw.y.shape == (1797,) and raw.y.dtype == np.int64
    assert raw.classes == [str(i) for i in range(10)]
    assert set(raw.y.tolist()) == set(range(10))
    assert len(raw.keys) == 1797 and len(set(raw.keys)) == 1797
    assert raw.keys[12] == "digits/0012"
    assert raw.origin.shape == (1797,) and set(raw.origin.tolist()) == {"train"}


def test_digits_values_are_sklearn_over_16() -> None:
    from sklearn.datasets import load_digits

    raw = load_source("digits")
    expected = load_digits().data.reshape(-1, 1, 8, 8) / 16.0
    np.testing.assert_allclose(raw.x, expected, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------------------------
# CIFAR


def test_cifar10_batches(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    raw = load_source("cifar10", root=tmp_path)
    assert raw.x.shape == (18, 3, 32, 32) and raw.x.dtype == np.uint8
    assert raw.y.dtype == np.int64 and raw.y.tolist() == [i % 10 for i in range(18)]
    assert raw.classes == CIFAR10_CLASSES
    assert raw.origin.tolist() == ["train"] * 15 + ["test"] * 3
    assert raw.keys[0] == "cifar10/data_batch_1/0"
    assert raw.keys[4] == "cifar10/data_batch_2/1"
    assert raw.keys[-1] == "cifar10/test_batch/2"
    # Rows are R, G, B planes of 32x32 in row-major order.
    assert raw.x[:, 0, 0, 0].tolist() == list(range(18))
    assert (raw.x[:, 1, 0, 0] == 200).all()
    assert raw.x[:, 2].sum() == 0


def test_cifar10_subdir_option_and_bytes_keys(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path, subdir="my-cifar")
    # Files written by Python 3 with bytes keys (as with encoding="bytes") load too.
    entry = {b"data": _cifar_rows(2, 0), b"labels": [1, 2]}
    _dump(folder / "test_batch", entry)
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    raw = load_source("cifar10", root=tmp_path, subdir="my-cifar")
    assert raw.x.shape == (17, 3, 32, 32)
    assert raw.y[-2:].tolist() == [1, 2]
    assert raw.classes == CIFAR10_CLASSES


def test_cifar100_train_and_test(tmp_path: Path) -> None:
    _write_cifar100(tmp_path)
    raw = load_source("cifar100", root=tmp_path)
    assert raw.x.shape == (6, 3, 32, 32) and raw.x.dtype == np.uint8
    assert raw.y.tolist() == [0, 99, 5, 5, 7, 8]
    assert len(raw.classes) == 100 and raw.classes[99] == "class_99"
    assert raw.origin.tolist() == ["train"] * 4 + ["test"] * 2
    assert raw.keys == [f"cifar100/train/{i}" for i in range(4)] + [
        "cifar100/test/0",
        "cifar100/test/1",
    ]


def test_cifar10_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(
        DataSourceError, match=r"CIFAR-10 batches not found at .*cifar-10-batches-py"
    ):
        load_source("cifar10", root=tmp_path)
    with pytest.raises(DataSourceError, match=r"cifar-10-python\.tar\.gz.*kriz/cifar\.html"):
        load_source("cifar10", root=tmp_path)


def test_cifar100_missing_file(tmp_path: Path) -> None:
    folder = _write_cifar100(tmp_path)
    (folder / "test").unlink()
    with pytest.raises(DataSourceError, match=r"CIFAR-100 .*missing test.*cifar-100-python\.tar"):
        load_source("cifar100", root=tmp_path)


def test_cifar10_corrupt_pickle(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(DataSourceError, match=r"Corrupt CIFAR-10 file .*data_batch_3"):
        load_source("cifar10", root=tmp_path)


def test_cifar10_batch_missing_keys(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    _dump(folder / "data_batch_2", {"data": _cifar_rows(3, 0)})
    with pytest.raises(DataSourceError, match=r"data_batch_2: missing key\(s\) labels"):
        load_source("cifar10", root=tmp_path)


def test_cifar10_batch_wrong_shape(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    _dump(folder / "test_batch", {"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]})
    with pytest.raises(DataSourceError, match=r"test_batch: 'data' has shape \(3, 100\)"):
        load_source("cifar10", root=tmp_path)
    _dump(folder / "test_batch", {"data": _cifar_rows(3, 0), "labels": [0, 1]})
    with pytest.raises(DataSourceError, match=r"test_batch: 'labels' has shape \(2,\)"):
        load_source("cifar10", root=tmp_path)
    _dump(folder / "test_batch", {"data": _cifar_rows(3, 0), "labels": [0, 1, 10]})
    with pytest.raises(
        DataSourceError, match=r"test_batch: 'labels' must be integers in \[0, 10\)"
    ):
        load_source("cifar10", root=tmp_path)


@pytest.mark.parametrize(
    ("protocol", "legacy_names"),
    [(0, False), (2, False), (2, True), (pickle.HIGHEST_PROTOCOL, False)],
    ids=["protocol-0", "protocol-2", "protocol-2-numpy.core", "protocol-highest"],
)
def test_cifar10_pickle_protocols_load_the_same_arrays(
    tmp_path: Path, protocol: int, legacy_names: bool
) -> None:
    """The restricted unpickler still reads every protocol CIFAR files come in, including the
    numpy.core names of the official (Python 2, numpy 1.x) batches."""
    _write_cifar10(tmp_path / "reference")
    expected = load_source("cifar10", root=tmp_path / "reference")
    folder = _write_cifar10(tmp_path / "written", protocol=protocol)
    if legacy_names:
        for file in folder.iterdir():
            # Protocol 2 names globals as text lines, so this rewrite keeps the pickle valid.
            file.write_bytes(file.read_bytes().replace(b"numpy._core.", b"numpy.core."))
    batch = (folder / "data_batch_1").read_bytes()
    if legacy_names:
        assert b"numpy.core.multiarray\n_reconstruct" in batch
    if protocol == pickle.HIGHEST_PROTOCOL:
        assert b"_frombuffer" in batch

    raw = load_source("cifar10", root=tmp_path / "written")
    np.testing.assert_array_equal(raw.x, expected.x)
    np.testing.assert_array_equal(raw.y, expected.y)
    assert raw.classes == expected.classes == CIFAR10_CLASSES
    assert raw.x[:, 0, 0, 0].tolist() == list(range(18))


class _RunsAShellCommand:
    """Unpickling this with a plain pickle.load runs ``command``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_cifar10_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = _RunsAShellCommand(f"touch {shlex.quote(str(marker))}")
    _dump(folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "x": payload})
    with pytest.raises(
        DataSourceError,
        match=r"Corrupt CIFAR-10 file .*batches\.meta: cannot unpickle it "
        r"\(refused global \w+\.system: .*kriz/cifar\.html",
    ):
        load_source("cifar10", root=tmp_path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# image_folder


def test_image_folder_flat_layout(tmp_path: Path) -> None:
    _write_flat_folder(tmp_path / "pets")
    raw = load_source("image_folder", root=tmp_path, path="pets", workers=2)
    assert raw.classes == ["ant", "bee", "cat"]
    assert raw.keys == [
        "ant/a0.png",
        "ant/a1.PNG",
        "bee/b0.png",
        "bee/b1.png",
        "bee/b2.png",
        "cat/c0.png",
    ]
    assert raw.y.tolist() == [0, 0, 1, 1, 1, 2] and raw.y.dtype == np.int64
    assert raw.x.shape == (6, 3, 4, 4) and raw.x.dtype == np.uint8
    assert raw.x[:, 0, 0, 0].tolist() == [10, 11, 20, 21, 22, 30]  # R channel
    assert raw.x[:, 2, 3, 3].tolist() == [245, 244, 235, 234, 233, 225]  # B channel
    assert set(raw.origin.tolist()) == {"train"}


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10-jpg"
    for origin, base in (("test", 100), ("train", 0)):
        for c, name in enumerate(["airplane", "cat"]):
            for i in range(2):
                _png(folder / origin / name / f"{i:04d}.png", base + 10 * c + i)
    raw = load_source("image_folder", root=tmp_path, path="cifar10-jpg")
    assert raw.classes == ["airplane", "cat"]
    assert raw.origin.tolist() == ["train"] * 4 + ["test"] * 4
    assert raw.keys[0] == "train/airplane/0000.png"
    assert raw.keys[-1] == "test/cat/0001.png"
    assert raw.y.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert raw.x[:, 0, 0, 0].tolist() == [0, 1, 10, 11, 100, 101, 110, 111]


def test_image_folder_train_test_class_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "tree"
    _png(folder / "train" / "cat" / "0.png", 1)
    _png(folder / "train" / "dog" / "0.png", 2)
    _png(folder / "test" / "cat" / "0.png", 3)
    with pytest.raises(DataSourceError, match=r"train/ and test/ differ.*only in train: \['dog'\]"):
        load_source("image_folder", root=tmp_path, path="tree")


def test_image_folder_nested_tinyimagenet_layout(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-imagenet-200" / "train"
    for c, wnid in enumerate(["n01443537", "n01629819"]):
        (folder / wnid).mkdir(parents=True)
        (folder / wnid / f"{wnid}_boxes.txt").write_text("boxes")
        for i in range(2):
            _png(folder / wnid / "images" / f"{wnid}_{i}.JPEG", 100 * c, size=(8, 8))
    raw = load_source("image_folder", root=tmp_path, path="tiny-imagenet-200/train")
    assert raw.classes == ["n01443537", "n01629819"]
    assert raw.keys[0] == "n01443537/images/n01443537_0.JPEG"
    assert raw.x.shape == (4, 3, 8, 8)
    assert raw.y.tolist() == [0, 0, 1, 1]


def test_image_folder_jpeg_uppercase_extension(tmp_path: Path) -> None:
    folder = tmp_path / "jpgs"
    for name in ("a", "b"):
        path = folder / name / "x.JPEG"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (5, 6), (128, 128, 128)).save(path, format="JPEG")
    raw = load_source("image_folder", root=tmp_path, path="jpgs")
    assert raw.x.shape == (2, 3, 6, 5)


def test_image_folder_resize_and_grayscale(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    _png(folder / "a" / "0.png", 50, size=(4, 4))
    _png(folder / "b" / "0.png", 90, size=(6, 10))
    raw = load_source("image_folder", root=tmp_path, path="mixed", image_size=[8, 5], mode="L")
    assert raw.x.shape == (2, 1, 8, 5) and raw.x.dtype == np.uint8
    with pytest.raises(DataSourceError, match=r"differ in size.*Set option image_size"):
        load_source("image_folder", root=tmp_path, path="mixed")


def test_image_folder_bad_options(tmp_path: Path) -> None:
    _write_flat_folder(tmp_path / "pets")
    with pytest.raises(DataSourceError, match=r"image_size=\[4\] .*must be \[H, W\]"):
        load_source("image_folder", root=tmp_path, path="pets", image_size=[4])
    with pytest.raises(DataSourceError, match=r"mode='CMYK'"):
        load_source("image_folder", root=tmp_path, path="pets", mode="CMYK")
    with pytest.raises(DataSourceError, match=r"workers=0"):
        load_source("image_folder", root=tmp_path, path="pets", workers=0)
    with pytest.raises(DataSourceError, match=r"needs option 'path'"):
        load_source("image_folder", root=tmp_path)


def test_image_folder_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"Image folder not found at .*nowhere"):
        load_source("image_folder", root=tmp_path, path="nowhere")


def test_image_folder_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match=r"empty has no class folders"):
        load_source("image_folder", root=tmp_path, path="empty")


def test_image_folder_class_without_images(tmp_path: Path) -> None:
    _write_flat_folder(tmp_path / "pets")
    (tmp_path / "pets" / "dog").mkdir()
    (tmp_path / "pets" / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(DataSourceError, match=r"Class folder .*dog has no images"):
        load_source("image_folder", root=tmp_path, path="pets")


def test_image_folder_corrupt_image(tmp_path: Path) -> None:
    _write_flat_folder(tmp_path / "pets")
    (tmp_path / "pets" / "bee" / "b1.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataSourceError, match=r"Cannot read image .*bee/b1\.png"):
        load_source("image_folder", root=tmp_path, path="pets")


def _write_16bit(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> None:
    """Write a solid 16-bit grayscale image: a .png opens as "I;16", a .ppm as "I"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if path.suffix == ".png" else np.int32
    Image.fromarray(np.full(size, value, dtype=dtype)).save(path)


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3)])
def test_image_folder_16bit_images_are_rescaled_not_clipped(
    tmp_path: Path, mode: str, channels: int
) -> None:
    folder = tmp_path / "scans"
    for name, value in (("bright", 60000), ("dark", 1000)):
        _write_16bit(folder / name / "0.png", value)
        _write_16bit(folder / name / "1.ppm", value)
    with Image.open(folder / "dark" / "0.png") as png, Image.open(folder / "dark" / "1.ppm") as ppm:
        assert png.mode in ("I;16", "I") and ppm.mode == "I"  # the modes convert() clips
    raw = load_source("image_folder", root=tmp_path, path="scans", mode=mode)
    assert raw.keys == ["bright/0.png", "bright/1.ppm", "dark/0.png", "dark/1.ppm"]
    assert raw.x.shape == (4, channels, 8, 8) and raw.x.dtype == np.uint8
    # value / 257, rounded: 60000 -> 233, 1000 -> 4 (not 255 for both).
    expected = np.array([233, 233, 4, 4], dtype=np.uint8)[:, None, None, None]
    np.testing.assert_array_equal(raw.x, np.broadcast_to(expected, raw.x.shape))


@pytest.mark.parametrize(
    ("name", "array", "fmt", "problem"),
    [
        ("f.ppm", np.full((8, 8), 0.5, np.float32), "PPM", r"mode 'F' \(floating-point pixels\)"),
        # Pillow picks the decoder by content: a 32-bit TIFF saved as .png opens as mode "I".
        ("wide.png", np.full((8, 8), 70000, np.int32), "TIFF", r"mode 'I' \(values 70000\.\.70000"),
    ],
)
def test_image_folder_unsupported_image_mode_names_the_file(
    tmp_path: Path, name: str, array: np.ndarray, fmt: str, problem: str
) -> None:
    _write_flat_folder(tmp_path / "pets")
    Image.fromarray(array).save(tmp_path / "pets" / "bee" / name, format=fmt)
    with pytest.raises(DataSourceError, match=rf"image .*bee/{name}: {problem}") as info:
        load_source("image_folder", root=tmp_path, path="pets", mode="L")
    assert "Convert the images to 8-bit" in str(info.value)
    assert "corrupt" not in str(info.value)  # not wrapped in the unreadable-file message


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_decode_images_chunks_keep_order_and_name_the_bad_file(tmp_path: Path, chunk: int) -> None:
    """Chunked decoding gives the one-by-one result in file order, for any chunk size, and a
    size mismatch in a later chunk names that chunk's file."""
    from pgu.core.sources import _decode_images

    files = [tmp_path / f"{i:02d}.png" for i in range(7)]
    for i, file in enumerate(files):
        _png(file, 10 + i)
    one_by_one = np.stack([_decode_images([f], "RGB", None, 1, tmp_path) for f in files])
    chunked = _decode_images(files, "RGB", None, 3, tmp_path, chunk=chunk)
    np.testing.assert_array_equal(chunked, one_by_one[:, 0])
    assert chunked[:, 0, 0, 0].tolist() == [10 + i for i in range(7)]

    Image.new("RGB", (5, 4)).save(files[5])  # 4x5 instead of 4x4
    with pytest.raises(DataSourceError, match=r"differ in size: .*00\.png is 4x4 but .*05\.png"):
        _decode_images(files, "RGB", None, 3, tmp_path, chunk=chunk)


# --------------------------------------------------------------------------------------------
# csv


def test_csv_string_labels(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("f1,species,f2\n1.5,setosa,2\n0,virginica,3\n-1,setosa,4\n")
    raw = load_source("csv", root=tmp_path, path="t.csv", label_column="species")
    assert raw.x.dtype == np.float32 and raw.x.shape == (3, 2)
    np.testing.assert_array_equal(raw.x, [[1.5, 2], [0, 3], [-1, 4]])
    assert raw.classes == ["setosa", "virginica"]
    assert raw.y.tolist() == [0, 1, 0] and raw.y.dtype == np.int64
    assert raw.keys == ["csv/row/0", "csv/row/1", "csv/row/2"]
    assert set(raw.origin.tolist()) == {"train"}


def test_csv_numeric_labels_and_feature_columns(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "n.csv"
    path.parent.mkdir()
    path.write_text("a,b,label,c\n1,2,10,x\n3,4,-3,y\n5,6,10,z\n7,8,2,w\n")
    raw = load_source("csv", root="unused-root", path=str(path), feature_columns=["b", "a"])
    assert raw.classes == ["-3", "2", "10"]
    assert raw.y.tolist() == [2, 0, 2, 1]
    np.testing.assert_array_equal(raw.x[:, 0], [2, 4, 6, 8])  # column order as given


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"CSV file not found at .*missing\.csv"):
        load_source("csv", root=tmp_path, path="missing.csv")


def test_csv_missing_label_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("f1,target\n1,0\n")
    with pytest.raises(DataSourceError, match=r"t\.csv has no label column 'label'"):
        load_source("csv", root=tmp_path, path="t.csv")


def test_csv_with_another_separator_or_one_class_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "semi.csv").write_text("a;b;label\n1;2;0\n3;4;1\n")
    with pytest.raises(DataSourceError, match=r"The file seems ';'-separated; this source reads"):
        load_source("csv", root=tmp_path, path="semi.csv")
    (tmp_path / "one.csv").write_text("a,label\n1,cat\n2,cat\n")
    with pytest.raises(DataSourceError, match=r"one class only \(\['cat'\]\): a classifier"):
        load_source("csv", root=tmp_path, path="one.csv")
    (tmp_path / "nan.csv").write_text("a,b,label\n" + "1,2,0\n" * 3 + "1,,1\n" * 12)
    with pytest.raises(DataSourceError, match=r"in 12 row\(s\) \(3, 4, 5, .*, 12, \.\.\.; 0-based"):
        load_source("csv", root=tmp_path, path="nan.csv")


def test_csv_non_numeric_features(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("f1,name,color,label\n1,x,red,0\n2,y,blue,1\n")
    with pytest.raises(
        DataSourceError, match=r"non-numeric feature column\(s\) \['name', 'color'\]"
    ):
        load_source("csv", root=tmp_path, path="t.csv")


def test_csv_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataSourceError, match=r"empty\.csv is empty"):
        load_source("csv", root=tmp_path, path="empty.csv")
    (tmp_path / "header.csv").write_text("f1,label\n")
    with pytest.raises(DataSourceError, match=r"header\.csv is empty"):
        load_source("csv", root=tmp_path, path="header.csv")


def test_csv_float32_overflow_names_the_column(tmp_path: Path) -> None:
    """A value finite in float64 but not in float32 (1e39) is named, not reported as []."""
    (tmp_path / "big.csv").write_text("a,b,label\n1,-1e39,0\n2,3,1\n")
    with pytest.raises(
        DataSourceError,
        match=r"big\.csv has values beyond float32's range .* in feature column\(s\) \['b'\]",
    ):
        load_source("csv", root=tmp_path, path="big.csv")
    (tmp_path / "both.csv").write_text("a,b,c,label\n1,1e39,,0\n2,3,inf,1\n")
    with pytest.raises(
        DataSourceError,
        match=r"missing or infinite values in feature column\(s\) \['c'\], in 2 row\(s\) "
        r"\(0, 1; 0-based data rows\) \(fill or drop those rows\) and values beyond "
        r"float32's range .* in feature column\(s\) \['b'\]; rescale them",
    ):
        load_source("csv", root=tmp_path, path="both.csv")


# --------------------------------------------------------------------------------------------
# names, options, determinism


def test_unknown_source_lists_valid_ones() -> None:
    with pytest.raises(DataSourceError, match=r"Unknown data source 'mnist'.*digits, cifar10"):
        load_source("mnist")
    assert SOURCES == ("digits", "cifar10", "cifar100", "image_folder", "csv")


def test_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"Unknown option\(s\) subdir .*'digits'.*none"):
        load_source("digits", subdir="x")
    with pytest.raises(DataSourceError, match=r"Unknown option\(s\) size .*valid options are path"):
        load_source("image_folder", root=tmp_path, path="p", size=4)


def test_data_source_error_is_value_error() -> None:
    assert issubclass(DataSourceError, ValueError)


def test_loading_twice_is_identical(tmp_path: Path) -> None:
    _write_flat_folder(tmp_path / "pets")
    _write_cifar10(tmp_path)
    for name, options in (
        ("image_folder", {"path": "pets", "workers": 3}),
        ("cifar10", {}),
        ("digits", {}),
    ):
        first = load_source(name, root=tmp_path, **options)
        second = load_source(name, root=tmp_path, **options)
        np.testing.assert_array_equal(first.x, second.x)
        np.testing.assert_array_equal(first.y, second.y)
        np.testing.assert_array_equal(first.origin, second.origin)
        assert first.keys == second.keys and first.classes == second.classes


def test_image_folder_train_test_mixed_with_other_folders(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-imagenet-200"
    _png(folder / "train" / "n01" / "images" / "0.png", 1)
    _png(folder / "val" / "images" / "0.png", 2)
    with pytest.raises(DataSourceError, match=r"mixes train/test folders.*\['val'\]"):
        load_source("image_folder", root=tmp_path, path="tiny-imagenet-200")
