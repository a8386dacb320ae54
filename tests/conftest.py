"""Shared fixtures: the real MNIST files, skipped with a stated reason when no data folder is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from snn.data import FILES, Dataset, default_data_dir, raw_folder, read_dataset


def _has_mnist(root: Path) -> bool:
    folder = raw_folder(root, "mnist")
    return all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in FILES.values())


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding MNIST/raw ($SNN_DATA_DIR, else ./data); skips the test when absent."""
    root = default_data_dir().resolve()
    if not _has_mnist(root):
        pytest.skip(f"real MNIST not found in {raw_folder(root, 'mnist')}: set SNN_DATA_DIR to the folder "
                    f"that holds MNIST/raw (e.g. ../shared/datasets)")
    return root


@pytest.fixture(scope="session")
def mnist(mnist_root: Path) -> Dataset:
    """The real MNIST train and test splits, read once per session; tests must treat it as read-only."""
    return read_dataset(mnist_root, download=False)


@pytest.fixture
def mnist_copy(tmp_path: Path, mnist_root: Path) -> Path:
    """A fresh root in tmp_path whose MNIST/raw links to the real files; a test replaces one with write_bytes."""
    raw = tmp_path / "copy" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES.values():
        real = raw_folder(mnist_root) / name
        if not real.exists():
            pytest.skip(f"{real} is stored gzip-compressed; these tests need the plain IDX files")
        (raw / name).symlink_to(real)
    return tmp_path / "copy"
