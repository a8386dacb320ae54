"""MNIST and Fashion-MNIST from their IDX files, held as tensors, batched by indexing.

Files are read once (``read_dataset``) into uint8 tensors; ``make_splits`` carves the
validation split and the size limits and moves everything to the training device;
``batches`` draws index batches of a shuffled permutation on that device.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig

# torchvision's layout: ROOT/<folder>/raw/<file>
_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_EXPECTED_COUNT = {"train": 60_000, "test": 10_000}
VAL_SPLIT_SEED = 12345  # fixed, so every run and trial holds out the same validation images


class DataError(RuntimeError):
    """The dataset files are missing, truncated or corrupt."""


@dataclass(frozen=True)
class Split:
    """One split: images uint8 [N, 28, 28] (0..255) and labels int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.images[:n], self.labels[:n])

    def float_images(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Images at index as float [n, 1, 28, 28] intensities in [0, 1]."""
        return self.images[index].unsqueeze(1).float().div_(255.0)


@dataclass(frozen=True)
class Dataset:
    """The splits a run uses; ``val`` is None when no validation split is held out."""

    train: Split
    test: Split
    val: Split | None = None

    def splits(self) -> dict[str, Split]:
        named = {"train": self.train, "test": self.test}
        if self.val is not None:
            named["val"] = self.val
        return named


def default_data_dir() -> Path:
    """The data root: $SNN_DATA_DIR, else ./data."""
    return Path(os.environ.get("SNN_DATA_DIR", "data"))


def raw_folder(root: Path | str, name: str = "mnist") -> Path:
    return Path(root) / _FOLDERS[name] / "raw"


def read_dataset(root: Path | str, name: str = "mnist", download: bool = True) -> Dataset:
    """Read the four IDX files of ``name`` under ``root`` (train and test, on the CPU).

    Missing files are fetched with torchvision's download when ``download`` is true;
    if they are still missing, or any file is truncated or corrupt, raises DataError
    with one line that names the folder and the files.
    """
    folder = raw_folder(root, name)
    if _missing(folder) and download:
        _try_download(root, name)
    missing = _missing(folder)
    if missing:
        raise DataError(
            f"{name} files not found in {folder}: expected {', '.join(FILES.values())} "
            f"(missing: {', '.join(missing)}); set --data-dir or SNN_DATA_DIR to the folder that holds "
            f"{_FOLDERS[name]}/raw"
        )
    train = _read_pair(folder, "train")
    test = _read_pair(folder, "test")
    return Dataset(train=train, test=test)


def resolve_device(name: str) -> torch.device:
    """The torch device a config's ``device`` names: ``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_splits(data: Dataset, config: RunConfig | None = None, *, val_size: int = 0,
                limit_train: int | None = None, limit_test: int | None = None,
                device: torch.device | str | None = None) -> Dataset:
    """The splits one run trains on: ``config``'s val_size, limits and device (keywords without one).

    Holds out ``val_size`` training images (a fixed seed, so every run holds out the same
    images), keeps the first ``limit_train`` / ``limit_test`` images and moves all to the device.
    """
    if config is not None:
        val_size, limit_train, limit_test = config.val_size, config.limit_train, config.limit_test
        device = resolve_device(config.device) if device is None else device
    device = device or "cpu"
    train, val = data.train, None
    if val_size:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
        val = Split(train.images[order[:val_size]], train.labels[order[:val_size]]).to(device)
        keep = order[val_size:].sort().values
        train = Split(train.images[keep], train.labels[keep])
    return Dataset(train=train.head(limit_train).to(device), test=data.test.head(limit_test).to(device), val=val)


def batches(n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Index tensors covering range(n) in batches; a fresh permutation when shuffle is true."""
    if shuffle:
        order = torch.randperm(n, generator=generator, device="cpu").to(device)
    else:
        order = torch.arange(n, device=device)
    yield from order.split(batch_size)


def _missing(folder: Path) -> list[str]:
    return [f for f in FILES.values() if not (folder / f).exists() and not (folder / f"{f}.gz").exists()]


def _try_download(root: Path | str, name: str) -> None:
    import torchvision

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    for train in (True, False):
        try:
            cls(str(root), train=train, download=True)
        except Exception:  # offline or unwritable: the caller reports the missing files
            return


def _read_pair(folder: Path, split: str) -> Split:
    prefix = "train" if split == "train" else "test"
    images = _read_idx(folder / FILES[f"{prefix}_images"], _IMAGES_MAGIC)
    labels = _read_idx(folder / FILES[f"{prefix}_labels"], _LABELS_MAGIC)
    where = folder / FILES[f"{prefix}_labels"]
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images; the files do not match")
    if len(labels) != _EXPECTED_COUNT[split]:
        raise DataError(f"{where}: {len(labels)} {split} examples, expected {_EXPECTED_COUNT[split]}")
    if labels.max() > 9:
        raise DataError(f"{where}: label {int(labels.max())} out of range 0..9; the file is corrupt")
    return Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file as a uint8 array, checked against its header; DataError if it is not one."""
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header; the file is truncated")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: magic number {found}, expected {magic}; not an MNIST IDX file or corrupt")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected} for shape {dims}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        path = path.with_name(path.name + ".gz")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
