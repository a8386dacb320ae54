"""Shared fixtures: the data a test reads.

Tests of mechanics (reading, splitting, training, checkpoints, the CLI) take ``data_root`` /
``dataset``: the real MNIST when it is found, else a synthetic stand-in in the same IDX files,
so they run on a machine without MNIST. Tests of accuracy on real digits take ``mnist_root`` /
``mnist`` and skip, with the reason, when the real files are absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snn.data import FILES, Dataset, default_data_dir, raw_folder, read_dataset
from tests.idx_files import uncompressed, write_synthetic_digits


def _has_mnist(root: Path) -> bool:
    folder = raw_folder(root, "mnist")
    return all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in FILES.values())


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding the real MNIST/raw ($SNN_DATA_DIR, else ./data); skips the test when absent."""
    root = default_data_dir().resolve()
    if not _has_mnist(root):
        pytest.skip(
            f"real MNIST not found in {raw_folder(root, 'mnist')}: set SNN_DATA_DIR to the folder that holds MNIST/raw"
        )
    return root


@pytest.fixture(scope="session")
def mnist(mnist_root: Path) -> Dataset:
    """The real MNIST train and test splits, read once per session; tests must treat it as read-only."""
    return read_dataset(mnist_root, download=False)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root whose MNIST/raw holds ``tests.idx_files.synthetic_digits`` (60,000 + 10,000), written once."""
    root = tmp_path_factory.mktemp("synthetic-data")
    write_synthetic_digits(root)
    return root


@pytest.fixture(scope="session")
def data_root(request: pytest.FixtureRequest) -> Path:
    """The folder holding MNIST/raw for tests of mechanics: the real MNIST when found, else synthetic digits."""
    root = default_data_dir().resolve()
    return root if _has_mnist(root) else request.getfixturevalue("synthetic_root")


@pytest.fixture(scope="session")
def dataset(data_root: Path) -> Dataset:
    """The splits under ``data_root``, read once per session; tests must treat it as read-only."""
    return read_dataset(data_root, download=False)


@pytest.fixture(scope="session")
def plain_raw(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with data_root's four MNIST files uncompressed: its MNIST/raw itself when it holds them so, else
    (a folder of .gz files, as torchvision leaves them) a copy with the compressed ones unpacked once."""
    raw = raw_folder(data_root)
    if all((raw / name).exists() for name in FILES.values()):
        return raw
    return uncompressed(raw, tmp_path_factory.mktemp("plain-raw"))


@pytest.fixture
def data_copy(tmp_path: Path, plain_raw: Path) -> Path:
    """A fresh root in tmp_path whose MNIST/raw links to the four uncompressed files; a test replaces one with
    write_bytes (which replaces the link, never its target)."""
    raw = tmp_path / "copy" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES.values():
        (raw / name).symlink_to(plain_raw / name)
    return tmp_path / "copy"
