"""MNIST and Fashion-MNIST from their IDX files, held as tensors, batched by indexing.

Files are read once (``read_dataset``) into uint8 tensors; ``make_splits`` carves the
validation split and the size limits and moves everything to the training device;
``batches`` draws index batches of a shuffled permutation on that device. Missing files
are downloaded from torchvision's mirrors (its URLs and checksums) into torchvision's layout.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import RunConfig
from .io import atomic_write_bytes

# torchvision's layout: ROOT/<folder>/raw/<file>
_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
IMAGE_SHAPE = (28, 28)  # pixels, height x width, of every image the models take
_EXPECTED_COUNT = {"train": 60_000, "test": 10_000}
VAL_SPLIT_SEED = 12345  # fixed, so every run and trial holds out the same validation images
DOWNLOAD_TIMEOUT_S = 60.0  # a download gives up after this many seconds without receiving a byte
_DOWNLOAD_CHUNK = 1 << 16


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


def read_dataset(root: Path | str, name: str = "mnist", download: bool = True, *,
                 download_timeout: float = DOWNLOAD_TIMEOUT_S) -> Dataset:
    """Read the four IDX files of ``name`` under ``root`` (train and test, on the CPU).

    Missing files are downloaded into ``raw_folder(root, name)`` when ``download`` is true
    (``download_timeout``: seconds without data before giving up). If files are still missing,
    or any file is truncated or corrupt, raises DataError with one line that names the folder
    and the files (and, when a download failed, why).
    """
    folder = raw_folder(root, name)
    missing = _missing(folder)
    if missing and download:
        try:
            _download(folder, name, missing, timeout=download_timeout)
        except _DownloadFailed as e:
            raise DataError(_missing_message(name, folder, missing, f"the download failed ({e})")) from None
        missing = _missing(folder)
    if missing:
        raise DataError(_missing_message(name, folder, missing))
    train = _read_pair(folder, "train")
    test = _read_pair(folder, "test")
    return Dataset(train=train, test=test)


def _missing_message(name: str, folder: Path, missing: list[str], why: str = "") -> str:
    return (f"{name} files not found in {folder}: expected {', '.join(FILES.values())} "
            f"(missing: {', '.join(missing)}){'; ' + why if why else ''}; set --data-dir or SNN_DATA_DIR "
            f"to the folder that holds {_FOLDERS[name]}/raw")


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


class _DownloadFailed(Exception):
    """No mirror gave a file; the message says, per mirror, why."""


def _download(folder: Path, name: str, files: list[str], *, timeout: float) -> None:
    """Fetch ``files`` (plain IDX names) from torchvision's mirrors for ``name`` into ``folder``.

    Each file is fetched gzip-compressed, checked against torchvision's MD5, decompressed and
    written atomically, so an interrupted download leaves no partial file; folders it made for
    nothing are removed again. A line on stderr says where the files go once a mirror answers.
    """
    import torchvision  # only here: reading files that are present does not need it

    source = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    checksums = dict(source.resources)  # {"train-images-idx3-ubyte.gz": md5, ...}
    announced = False

    def announce(mirror: str) -> None:
        nonlocal announced
        if not announced:
            print(f"downloading {name} into {folder} from {mirror}", file=sys.stderr, flush=True)
            announced = True

    made = _make_folders(folder)
    try:
        for file in files:
            content = _fetch(f"{file}.gz", list(source.mirrors), checksums[f"{file}.gz"], timeout, announce)
            try:
                atomic_write_bytes(folder / file, content)
            except OSError as e:
                raise _DownloadFailed(f"cannot write {folder / file}: {e.strerror or e}") from None
    finally:
        for made_folder in reversed(made):
            if not any(made_folder.iterdir()):
                made_folder.rmdir()


def _fetch(file: str, mirrors: list[str], md5: str, timeout: float, on_connect) -> bytes:
    """The unpacked content of the gzip file ``file`` from the first mirror that serves it intact."""
    failures = []
    for mirror in mirrors:
        url = f"{mirror}{file}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "snn-tune"}),
                                        timeout=timeout) as response:
                on_connect(mirror)
                return _checked_and_unpacked(_receive(response, file), md5)
        except (OSError, http.client.HTTPException, _DownloadFailed) as e:
            failures.append(f"{url}: {_describe(e, timeout)}")
    raise _DownloadFailed("; ".join(failures) or "no mirror known")


def _receive(response, label: str) -> bytes:
    """The whole body of an HTTP response, with a progress bar on a terminal."""
    size = int(response.headers.get("Content-Length") or 0) or None
    buffer = io.BytesIO()
    with tqdm(total=size, desc=label, unit="B", unit_scale=True, file=sys.stderr, disable=None, leave=False) as bar:
        while chunk := response.read(_DOWNLOAD_CHUNK):
            buffer.write(chunk)
            bar.update(len(chunk))
    if size is not None and buffer.tell() != size:
        raise _DownloadFailed(f"connection closed after {buffer.tell()} of {size} bytes")
    return buffer.getvalue()


def _checked_and_unpacked(payload: bytes, md5: str) -> bytes:
    found = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    if found != md5:
        raise _DownloadFailed(f"MD5 {found}, expected {md5}: not the file torchvision knows")
    try:
        return gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as e:
        raise _DownloadFailed(f"not a readable gzip file ({e})") from None


def _describe(error: BaseException, timeout: float) -> str:
    """Why a fetch failed, in a few words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"no data for {timeout:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _make_folders(folder: Path) -> list[Path]:
    """Create folder and its missing parents; returns those it created, outermost first."""
    made = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _DownloadFailed(f"cannot create {folder}: {e.strerror or e}") from None
    return made


def _read_pair(folder: Path, split: str) -> Split:
    prefix = "train" if split == "train" else "test"
    images = _read_idx(folder / FILES[f"{prefix}_images"], _IMAGES_MAGIC, IMAGE_SHAPE)
    labels = _read_idx(folder / FILES[f"{prefix}_labels"], _LABELS_MAGIC, ())
    where = folder / FILES[f"{prefix}_labels"]
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images; the files do not match")
    if len(labels) != _EXPECTED_COUNT[split]:
        raise DataError(f"{where}: {len(labels)} {split} examples, expected {_EXPECTED_COUNT[split]}")
    if labels.max() > 9:
        raise DataError(f"{where}: label {int(labels.max())} out of range 0..9; the file is corrupt")
    return Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """An IDX file of uint8 items of ``item_shape`` ([N, *item_shape]), checked against its header; else DataError."""
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header; the file is truncated")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: magic number {found}, expected {magic}; not an MNIST IDX file or corrupt")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if tuple(dims[1:]) != item_shape:
        shape = "x".join(map(str, dims[1:])) or "scalars"
        want = "x".join(map(str, item_shape)) or "scalars"
        raise DataError(f"{path}: its header declares items of {shape}, expected {want}; not MNIST's format")
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
