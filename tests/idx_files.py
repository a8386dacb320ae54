"""Write IDX files (MNIST's format) for tests: valid ones, synthetic full-size datasets, broken copies."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from snn.data import FILES

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX: 0x08 (uint8) << 8 | number of dimensions


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return write_bytes(path, header + array.tobytes())


def write_bytes(path: Path, payload: bytes) -> Path:
    """Write payload to path (gzip-compressed for .gz), replacing a link rather than its target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def synthetic_images(n: int) -> np.ndarray:
    """n images [n, 28, 28] uint8 whose pixel (0, 0) is n's index mod 251 and the rest a stripe."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 251
    images[:, 10:18, :] = 200
    return images


def synthetic_labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def write_synthetic_dataset(root: Path, folder: str = "MNIST", gz: bool = True,
                            n_train: int = 60_000, n_test: int = 10_000) -> Path:
    """The four IDX files of a full-size synthetic dataset under root/folder/raw; returns that folder."""
    raw = Path(root) / folder / "raw"
    suffix = ".gz" if gz else ""
    write_idx(raw / (FILES["train_images"] + suffix), synthetic_images(n_train))
    write_idx(raw / (FILES["train_labels"] + suffix), synthetic_labels(n_train))
    write_idx(raw / (FILES["test_images"] + suffix), synthetic_images(n_test))
    write_idx(raw / (FILES["test_labels"] + suffix), synthetic_labels(n_test))
    return raw
