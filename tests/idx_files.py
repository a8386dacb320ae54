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


def uncompressed(raw: Path, folder: Path) -> Path:
    """``folder`` holding MNIST's four files of ``raw`` uncompressed: linked where ``raw`` has them so, unpacked from
    their .gz where it does not."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        if (raw / name).exists():
            (folder / name).symlink_to(raw / name)
        else:
            (folder / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
    return folder


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


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n learnable stand-ins for MNIST digits: images [n, 28, 28] uint8 and labels [n] uint8 (0..9).

    Each class is a prototype of three anti-aliased strokes (drawn once from a fixed seed, so
    train and test share them), shifted by up to 2 pixels, with about 3% of the pixels replaced
    by random grey levels. Like MNIST, most pixels are 0, a stroke's core is 255 and its edges
    are fractional. Generating 70,000 takes under a second.
    """
    rng = np.random.default_rng(seed)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    templates = np.stack(
        [np.stack([np.roll(prototype, shift, axis=(0, 1)) for shift in shifts]) for prototype in _digit_prototypes()]
    )  # [10, 25, 28, 28]
    templates = np.rint(templates * 255).astype(np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = templates[labels, rng.integers(0, len(shifts), n)]
    noise = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images = np.where(noise < 8, noise * 30, images).astype(np.uint8)
    return images, labels


def _digit_prototypes() -> np.ndarray:
    """Ten [28, 28] float images in [0, 1], each a polyline of three strokes about 4 pixels wide."""
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    prototypes = np.zeros((10, 28, 28), np.float32)
    for k in range(10):
        points = rng.uniform(7, 21, size=(4, 2))
        for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
            dy, dx = y1 - y0, x1 - x0
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
            distance = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))  # to the nearest point of the stroke
            prototypes[k] = np.maximum(prototypes[k], np.clip(2.2 - distance, 0, 1))
    return prototypes


def write_synthetic_digits(root: Path, folder: str = "MNIST") -> Path:
    """A full-size dataset of ``synthetic_digits`` (60,000 train, 10,000 test, plain IDX) under root/folder/raw."""
    raw = Path(root) / folder / "raw"
    for split, n, seed in (("train", 60_000, 1), ("test", 10_000, 2)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / FILES[f"{split}_images"], images)
        write_idx(raw / FILES[f"{split}_labels"], labels)
    return raw


def write_synthetic_dataset(
    root: Path, folder: str = "MNIST", gz: bool = True, n_train: int = 60_000, n_test: int = 10_000
) -> Path:
    """The four IDX files of a full-size synthetic dataset under root/folder/raw; returns that folder."""
    raw = Path(root) / folder / "raw"
    suffix = ".gz" if gz else ""
    write_idx(raw / (FILES["train_images"] + suffix), synthetic_images(n_train))
    write_idx(raw / (FILES["train_labels"] + suffix), synthetic_labels(n_train))
    write_idx(raw / (FILES["test_images"] + suffix), synthetic_images(n_test))
    write_idx(raw / (FILES["test_labels"] + suffix), synthetic_labels(n_test))
    return raw
