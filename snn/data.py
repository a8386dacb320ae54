"""Image datasets held as tensors and batched by indexing: torchvision's, a factory of your own, or tensors.

``read_dataset(root, name)`` gives a ``Dataset`` of train and test ``Split`` tensors on the CPU:

* ``mnist``, ``fashion-mnist``, ``kmnist``, ``cifar10``: torchvision's dataset classes, their files
  in torchvision's layout under ``root`` (``root/MNIST/raw/...``, ``root/cifar-10-batches-py/...``);
  missing files are downloaded from torchvision's mirrors with torchvision's downloader, checked
  against torchvision's MD5 sums and moved into place whole (nothing half-written is left);
* ``package.module:function``: a factory of your own (``root=`` is passed when it takes it) that
  returns train and test images (``[N, C, H, W]`` or ``[N, H, W]``; uint8 0..255, or floats in
  [0, 1]) and integer labels, as ``((x, y), (x, y))``, ``(x, y, x, y)`` or
  ``{"train": (x, y), "test": (x, y), "classes": K}`` (numpy arrays or torch tensors).

``as_dataset`` turns tensors, numpy arrays or torch ``Dataset`` objects into one (the Python API).
Every dataset is checked (``check_dataset``): matching lengths, labels in [0, classes), finite
pixels in [0, 1] unless ``scale`` min-max scales them, no empty split; anything else is one
``DataError`` line. Image shape and the number of classes come from the data alone.

``make_splits`` carves the validation split and the size limits and moves the tensors to the
training device; ``batches`` draws index batches of a shuffled permutation on that device.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import socket
import sys
import tempfile
import urllib.error
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DATASETS, RunConfig, is_reference
from .errors import SnnTuneError

VAL_SPLIT_SEED = 12345  # fixed, so every run and trial holds out the same validation images
DOWNLOAD_TIMEOUT_S = 60.0  # a download gives up after this many seconds without receiving a byte
# The MNIST-like datasets' files in torchvision's layout (ROOT/<class name>/raw/<file>) and split sizes
MNIST_LIKE = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_EXPECTED_COUNT = {"train": 60_000, "test": 10_000}
_CIFAR_COUNT = {"train": 50_000, "test": 10_000}


class DataError(SnnTuneError, RuntimeError):
    """The data is missing, truncated, corrupt or breaks a rule; the message is one line."""


@dataclass(frozen=True)
class Split:
    """One split: images [N, C, H, W] (uint8 0..255, or float intensities in [0, 1]) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.images[:n], self.labels[:n])

    def float_images(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Images at index as float [n, C, H, W] intensities in [0, 1]."""
        images = self.images[index]
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.float()


@dataclass(frozen=True)
class Dataset:
    """The splits a run uses (``val`` is None when no validation split is held out) and what they hold."""

    train: Split
    test: Split
    val: Split | None = None
    classes: int = 10
    name: str = field(default="", compare=False)  # where it came from: mnist, a factory's reference, "tensors"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image's shape (C, H, W)."""
        return tuple(self.train.images.shape[1:])

    def splits(self) -> dict[str, Split]:
        named = {"train": self.train, "test": self.test}
        if self.val is not None:
            named["val"] = self.val
        return named


def default_data_dir() -> Path:
    """The data root: $SNN_DATA_DIR, else ./data."""
    return Path(os.environ.get("SNN_DATA_DIR", "data"))


def raw_folder(root: Path | str, name: str = "mnist") -> Path:
    """Where torchvision keeps an MNIST-like dataset's files under ``root``."""
    return Path(root) / MNIST_LIKE[name] / "raw"


def read_dataset(
    root: Path | str,
    name: str = "mnist",
    download: bool = True,
    *,
    scale: bool = False,
    download_timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Dataset:
    """The train and test splits of ``name`` (a torchvision dataset or a factory reference), checked, on the CPU.

    Missing files of a torchvision dataset are downloaded when ``download`` is true
    (``download_timeout``: seconds without data before a mirror is given up on). DataError, one
    line naming the folder and the files (and why a download failed), when they cannot be had.
    """
    if is_reference(name):
        return check_dataset(_from_factory(name, Path(root)), scale, name)
    if name not in DATASETS:
        raise DataError(f"dataset {name!r}: must be one of {', '.join(DATASETS)} or package.module:function")
    if name == "cifar10":
        return check_dataset(_read_cifar10(Path(root), download, download_timeout), scale, name)
    folder = raw_folder(root, name)
    missing = _missing(folder)
    if missing and download:
        try:
            _download_mnist_like(folder, name, missing, download_timeout)
        except _DownloadFailed as e:
            raise DataError(_missing_message(name, folder, missing, f"the download failed ({e})")) from None
        missing = _missing(folder)
    if missing:
        raise DataError(_missing_message(name, folder, missing))
    train, test = _read_mnist_like(folder, "train"), _read_mnist_like(folder, "test")
    return check_dataset(Dataset(train=train, test=test, classes=10, name=name), scale, name)


def read_config_dataset(config: RunConfig, root: Path | str | None = None, download: bool = True) -> Dataset:
    """The dataset a config names (``config.dataset``, scaled when ``config.scale_data``), read from ``root``."""
    return read_dataset(root or default_data_dir(), config.dataset, download=download, scale=config.scale_data)


def _missing_message(name: str, folder: Path, missing: list[str], why: str = "") -> str:
    return (
        f"{name} files not found in {folder}: expected {', '.join(FILES.values())} "
        f"(missing: {', '.join(missing)}){'; ' + why if why else ''}; set --data-dir or SNN_DATA_DIR "
        f"to the folder that holds {MNIST_LIKE[name]}/raw"
    )


# --- checks ---------------------------------------------------------------------------------------


def check_dataset(data: Dataset, scale: bool = False, where: str = "the data") -> Dataset:
    """``data`` checked (DataError, one line, naming ``where``), its images [N, C, H, W] and scaled when asked."""
    splits = {"train": data.train, "test": data.test}
    shapes = set()
    for split_name, split in splits.items():
        images, labels = split.images, split.labels
        if len(labels) == 0 or len(images) == 0:
            raise DataError(f"{where}: the {split_name} split is empty")
        if len(images) != len(labels):
            raise DataError(f"{where}: {len(images)} {split_name} images but {len(labels)} labels; lengths must match")
        if images.dim() not in (3, 4):
            raise DataError(
                f"{where}: {split_name} images have shape {tuple(images.shape)}; expected [N, C, H, W] or [N, H, W]"
            )
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise DataError(
                f"{where}: {split_name} labels must be a 1-D integer tensor, got {labels.dtype} of shape "
                f"{tuple(labels.shape)}"
            )
        shapes.add(tuple(images.shape[-3:]) if images.dim() == 4 else (1, *images.shape[-2:]))
    if len(shapes) != 1:
        raise DataError(f"{where}: train and test images differ in shape ({' vs '.join(map(str, sorted(shapes)))})")
    classes = data.classes
    smallest = min(int(s.labels.min()) for s in splits.values())
    if smallest < 0:
        raise DataError(f"{where}: label {smallest} is negative; labels must lie in [0, classes)")
    for split_name, split in splits.items():
        largest = int(split.labels.max())
        if largest >= classes:
            raise DataError(f"{where}: {split_name} label {largest} is outside [0, {classes}) (classes: {classes})")
    images = {n: s.images if s.images.dim() == 4 else s.images.unsqueeze(1) for n, s in splits.items()}
    if any(i.is_floating_point() for i in images.values()):
        images = _checked_intensities(images, scale, where)
    elif any(i.dtype != torch.uint8 for i in images.values()):
        raise DataError(
            f"{where}: images must be uint8 (0..255) or floats in [0, 1], got "
            f"{', '.join(sorted({str(i.dtype) for i in images.values()}))}"
        )
    return Dataset(
        train=Split(images["train"], splits["train"].labels.long()),
        test=Split(images["test"], splits["test"].labels.long()),
        val=data.val,
        classes=classes,
        name=data.name or where,
    )


def _checked_intensities(images: dict[str, torch.Tensor], scale: bool, where: str) -> dict[str, torch.Tensor]:
    """Float images as float32 intensities in [0, 1]: checked, or min-max scaled by the training split's range."""
    images = {n: i.float() for n, i in images.items()}
    for split_name, split in images.items():
        if not torch.isfinite(split).all():
            raise DataError(f"{where}: the {split_name} images hold NaN or infinite pixels")
    if scale:
        low, high = float(images["train"].min()), float(images["train"].max())
        if high <= low:
            raise DataError(f"{where}: the training images are all {low:g}; nothing to scale")
        return {n: ((i - low) / (high - low)).clamp_(0.0, 1.0) for n, i in images.items()}
    for split_name, split in images.items():
        low, high = float(split.min()), float(split.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"{where}: {split_name} pixels span [{low:g}, {high:g}], outside [0, 1]; scale them, "
                f"or set scale_data: true to min-max scale them by the training split's range"
            )
    return images


# --- from Python and from factories ------------------------------------------------------------------


def as_dataset(value: Any, scale: bool = False, where: str = "the data") -> Dataset:
    """A checked Dataset from what Python code passes: a Dataset, ((x, y), (x, y)), (x, y, x, y),
    {"train": ..., "test": ..., "classes": K}, or a pair of torch ``Dataset`` objects of (image, label) items."""
    if isinstance(value, Dataset):
        return check_dataset(value, scale, where)
    classes = None
    if isinstance(value, Mapping):
        if not {"train", "test"} <= set(value):
            raise DataError(f"{where}: a mapping needs the keys train and test, got {', '.join(map(str, value))}")
        classes = value.get("classes")
        train, test = value["train"], value["test"]
    elif isinstance(value, (tuple, list)) and len(value) == 4:
        train, test = (value[0], value[1]), (value[2], value[3])
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        train, test = value
    else:
        raise DataError(
            f"{where}: expected train and test splits, as ((images, labels), (images, labels)), "
            f"(images, labels, images, labels) or {{'train': ..., 'test': ...}}, got {type(value).__name__}"
        )
    splits = {name: _split(part, f"{where}: the {name} split") for name, part in (("train", train), ("test", test))}
    if classes is None:
        classes = int(splits["train"].labels.max()) + 1 if len(splits["train"].labels) else 0
    elif not (isinstance(classes, int) and not isinstance(classes, bool) and classes >= 1):
        raise DataError(f"{where}: classes must be an integer >= 1, got {classes!r}")
    return check_dataset(Dataset(train=splits["train"], test=splits["test"], classes=classes, name=where), scale, where)


def _split(part: Any, where: str) -> Split:
    if isinstance(part, torch.utils.data.Dataset) and not isinstance(part, (tuple, list)):
        return _from_torch_dataset(part, where)
    if not (isinstance(part, (tuple, list)) and len(part) == 2):
        raise DataError(f"{where}: expected (images, labels) or a torch Dataset, got {type(part).__name__}")
    images, labels = (_tensor(v, f"{where}'s {what}") for v, what in zip(part, ("images", "labels")))
    return Split(images, labels)


def _tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise DataError(f"{where}: a numpy array of Python objects; expected numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    raise DataError(f"{where}: expected a torch tensor or a numpy array, got {type(value).__name__}")


def _from_torch_dataset(dataset: torch.utils.data.Dataset, where: str) -> Split:
    """A torch Dataset of (image, label) items, stacked once into tensors."""
    try:
        items = [dataset[i] for i in range(len(dataset))]
    except Exception as e:  # a user's __getitem__
        raise DataError(f"{where}: reading its items raised {type(e).__name__}: {_first_line(e)}") from None
    if not items:
        return Split(torch.empty(0, 1, 1, 1), torch.empty(0, dtype=torch.long))
    try:
        images = torch.stack([_tensor(item[0], where) for item in items])
        labels = torch.tensor([int(item[1]) for item in items], dtype=torch.long)
    except (TypeError, ValueError, IndexError, RuntimeError) as e:
        raise DataError(f"{where}: its items are not (image tensor, integer label) pairs ({_first_line(e)})") from None
    return Split(images, labels)


def _from_factory(reference: str, root: Path) -> Dataset:
    """What a ``package.module:function`` data factory returns, as a Dataset (unchecked)."""
    factory = import_reference(reference, "dataset", DataError)
    try:
        takes_root = "root" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_root = False
    try:
        value = factory(root=root) if takes_root else factory()
    except Exception as e:
        raise DataError(f"dataset {reference}: the factory raised {type(e).__name__}: {_first_line(e)}") from None
    return as_dataset(value, where=f"dataset {reference}")


def import_reference(reference: str, what: str, error: type[Exception]):
    """The callable ``package.module:function`` names, imported from the current folder or PYTHONPATH."""
    module_name, _, qualname = reference.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # "importable from the current folder", also for console commands
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise error(
            f"{what} {reference}: cannot import {module_name} ({e}); the module must be importable "
            f"from the current folder or PYTHONPATH"
        ) from None
    except Exception as e:  # the module's own code failed
        raise error(
            f"{what} {reference}: importing {module_name} raised {type(e).__name__}: {_first_line(e)}"
        ) from None
    target: Any = module
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise error(f"{what} {reference}: {module_name} has no {qualname}") from None
        target = getattr(target, part)
    if not callable(target):
        raise error(f"{what} {reference}: {qualname} is a {type(target).__name__}, not a function") from None
    return target


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# --- torchvision's datasets --------------------------------------------------------------------------


def _torchvision_class(name: str):
    import torchvision  # only here: a factory's or your own tensors need none of it

    return {
        "mnist": torchvision.datasets.MNIST,
        "fashion-mnist": torchvision.datasets.FashionMNIST,
        "kmnist": torchvision.datasets.KMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
    }[name]


def _missing(folder: Path) -> list[str]:
    return [f for f in FILES.values() if not (folder / f).exists() and not (folder / f"{f}.gz").exists()]


def _read_mnist_like(folder: Path, split: str) -> Split:
    """One split's two IDX files, read by torchvision's readers (a ``.gz`` alone is unpacked beside it first)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    prefix = "train" if split == "train" else "test"
    images_path, labels_path = folder / FILES[f"{prefix}_images"], folder / FILES[f"{prefix}_labels"]
    _check_image_header(images_path)
    images = _read_idx(images_path, read_image_file)
    labels = _read_idx(labels_path, read_label_file)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images; the files do not match")
    if len(labels) != _EXPECTED_COUNT[split]:
        raise DataError(f"{labels_path}: {len(labels)} {split} examples, expected {_EXPECTED_COUNT[split]}")
    if tuple(images.shape[1:]) != (28, 28):
        raise DataError(f"{images_path}: images of {'x'.join(map(str, images.shape[1:]))}, expected 28x28")
    if int(labels.max()) > 9 or int(labels.min()) < 0:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range 0..9; the file is corrupt")
    return Split(images.unsqueeze(1), labels)


def _check_image_header(path: Path) -> None:
    """An images file whose IDX header declares images of another size than 28x28 is named before it is read."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        header = f.read(16)
    if len(header) == 16 and header[2:4] == b"\x08\x03":  # uint8, three dimensions: N, H, W
        height, width = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
        if (height, width) != (28, 28):
            raise DataError(
                f"{path}: its header declares images of {height}x{width}, expected 28x28; not this dataset's files"
            )


def _read_idx(path: Path, reader) -> torch.Tensor:
    if not path.exists():
        _unpack(path.with_name(path.name + ".gz"), path)
    try:
        return reader(str(path))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # torchvision's reader asserts on a bad header; a short file fails its reshape
        raise DataError(
            f"{path}: not a readable IDX file ({type(e).__name__}: {_first_line(e)}); the file is truncated or corrupt"
        ) from None


def _unpack(packed: Path, target: Path) -> None:
    """A gzip file unpacked beside it with torchvision's extract_archive (into a temporary name, then renamed)."""
    from torchvision.datasets.utils import extract_archive

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as scratch:
        try:
            extract_archive(str(packed), scratch)
            os.replace(Path(scratch) / target.name, target)
        except OSError as e:
            raise DataError(f"{packed}: cannot be unpacked ({getattr(e, 'strerror', None) or e})") from None
        except EOFError as e:
            raise DataError(f"{packed}: not a readable gzip file ({e})") from None


def _read_cifar10(root: Path, download: bool, timeout: float) -> Dataset:
    """CIFAR-10 by torchvision's class: its batch files are loaded only once their MD5 matches the official files'."""
    source = _torchvision_class("cifar10")
    folder = root / source.base_folder
    probe = object.__new__(source)
    probe.root = str(root)
    if not probe._check_integrity():
        if not download:
            raise DataError(
                f"cifar10 files not found or not the official ones in {folder}; set --data-dir or "
                f"SNN_DATA_DIR to the folder that holds {source.base_folder}"
            )
        _download_cifar10(root, source, timeout)
    try:
        train, test = source(str(root), train=True), source(str(root), train=False)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise DataError(f"cifar10 in {folder}: {_first_line(e)}") from None
    splits = {}
    for name, part in (("train", train), ("test", test)):
        images = torch.from_numpy(np.ascontiguousarray(part.data.transpose(0, 3, 1, 2)))  # HWC -> [N, 3, 32, 32]
        splits[name] = Split(images, torch.tensor(part.targets, dtype=torch.long))
        if len(images) != _CIFAR_COUNT[name]:
            raise DataError(f"cifar10 in {folder}: {len(images)} {name} images, expected {_CIFAR_COUNT[name]}")
    return Dataset(train=splits["train"], test=splits["test"], classes=len(train.classes), name="cifar10")


def _download_cifar10(root: Path, source, timeout: float) -> None:
    """torchvision's CIFAR-10 archive into ``root``, unpacked there with torchvision's extract_archive."""
    from torchvision.datasets.utils import extract_archive

    made = _make_folders(root)
    try:
        archive = _fetch(
            root,
            source.filename,
            source.tgz_md5,
            [source.url.rsplit("/", 1)[0] + "/"],
            timeout,
            _announcer("cifar10", root),
        )
        try:
            extract_archive(str(archive), str(root))
        except (OSError, EOFError) as e:
            raise DataError(f"{archive}: cannot be unpacked ({e})") from None
        finally:
            archive.unlink(missing_ok=True)
    except _DownloadFailed as e:
        raise DataError(
            f"cifar10 files not found in {root / source.base_folder}; the download failed ({e}); set "
            f"--data-dir or SNN_DATA_DIR to the folder that holds {source.base_folder}"
        ) from None
    finally:
        _remove_if_empty(made)


class _DownloadFailed(Exception):
    """No mirror gave a file; the message says, per mirror, why."""


def _download_mnist_like(folder: Path, name: str, files: list[str], timeout: float) -> None:
    """Fetch ``files`` (plain IDX names) of ``name`` from torchvision's mirrors into ``folder``, unpacked;
    folders made for nothing are removed again."""
    source = _torchvision_class(name)
    checksums = dict(source.resources)  # {"train-images-idx3-ubyte.gz": md5, ...}
    made = _make_folders(folder)
    announce = _announcer(name, folder)
    try:
        for file in files:
            packed = _fetch(folder, f"{file}.gz", checksums[f"{file}.gz"], list(source.mirrors), timeout, announce)
            try:
                _unpack(packed, folder / file)
            finally:
                packed.unlink(missing_ok=True)
    except DataError as e:
        raise _DownloadFailed(str(e)) from None
    finally:
        _remove_if_empty(made)


def _announcer(name: str, folder: Path):
    """A function that says once, on stderr, where the files go and from which mirror."""
    said = []

    def announce(mirror: str) -> None:
        if not said:
            print(f"downloading {name} into {folder} from {mirror}", file=sys.stderr, flush=True)
            said.append(mirror)

    return announce


def _fetch(folder: Path, file: str, md5: str, mirrors: list[str], timeout: float, announce) -> Path:
    """``folder/file`` from the first mirror that serves it intact, by torchvision's ``download_url``.

    The file arrives in a private temporary folder and is moved into place once its MD5 is
    torchvision's, so a failed download leaves nothing. _DownloadFailed says, per mirror, why not.
    """
    from torchvision.datasets.utils import calculate_md5, download_url

    failures = []
    for mirror in mirrors:
        url = f"{mirror}{file}"
        try:
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch, _socket_timeout(timeout):
                download_url(url, scratch, file, md5=None)
                found = calculate_md5(Path(scratch) / file)
                if found != md5:
                    raise _DownloadFailed(f"MD5 {found}, expected {md5}: not the file torchvision knows")
                os.replace(Path(scratch) / file, folder / file)
            announce(mirror)  # once a mirror has served a file: an offline attempt stays one line
            return folder / file
        except (OSError, urllib.error.URLError, _DownloadFailed, RuntimeError) as e:
            failures.append(f"{url}: {_describe(e, timeout)}")
    raise _DownloadFailed("; ".join(failures) or "no mirror known")


def _remove_if_empty(made: list[Path]) -> None:
    for made_folder in reversed(made):
        if made_folder.exists() and not any(made_folder.iterdir()):
            made_folder.rmdir()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's downloader waits on a socket forever; for the download, give up after ``seconds``."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _describe(error: BaseException, timeout: float) -> str:
    """Why a fetch failed, in a few words."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, (TimeoutError, socket.timeout)):
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
        raise DataError(f"cannot create {folder}: {e.strerror or e}") from None
    return made


# --- splits and batches ------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """The torch device a config's ``device`` names: ``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_splits(
    data: Dataset,
    config: RunConfig | None = None,
    *,
    val_size: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    device: torch.device | str | None = None,
) -> Dataset:
    """The splits one run trains on: ``config``'s val_size, limits and device (keywords without one).

    Holds out ``val_size`` training images (a fixed seed, so every run holds out the same
    images), keeps the first ``limit_train`` / ``limit_test`` images and moves all to the device;
    a config's ``augment_shift`` that would move an image off its frame is a DataError.
    """
    if config is not None:
        val_size, limit_train, limit_test = config.val_size, config.limit_train, config.limit_test
        device = resolve_device(config.device) if device is None else device
    device = device or "cpu"
    train, val = data.train, None
    if val_size >= len(train):
        raise DataError(f"val_size {val_size} leaves no training image of the {len(train):,}")
    if config is not None:
        check_shift(config.augment_shift, data.input_shape)
    if val_size:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
        val = Split(train.images[order[:val_size]], train.labels[order[:val_size]]).to(device)
        keep = order[val_size:].sort().values
        train = Split(train.images[keep], train.labels[keep])
    return Dataset(
        train=train.head(limit_train).to(device),
        test=data.test.head(limit_test).to(device),
        val=val,
        classes=data.classes,
        name=data.name,
    )


def batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Index tensors covering range(n) in batches; a fresh permutation when shuffle is true."""
    if shuffle:
        order = torch.randperm(n, generator=generator, device="cpu").to(device)
    else:
        order = torch.arange(n, device=device)
    yield from order.split(batch_size)


def check_shift(pixels: int, input_shape: tuple[int, ...]) -> None:
    """Raise DataError when a shift of ``pixels`` would move a whole (C, H, W) image off its frame."""
    if pixels >= min(input_shape[1:]):
        raise DataError(
            f"augment_shift {pixels} moves a {'x'.join(map(str, input_shape[1:]))} image off its frame: "
            f"it must be below {min(input_shape[1:])}"
        )


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``images`` [B, C, H, W] moved by its own random (dy, dx) in [-pixels, pixels], zero-filled.

    The shifts are drawn on the CPU from ``generator`` (the run's shuffling stream, which a checkpoint saves).
    """
    if pixels == 0:
        return images
    b, _, h, w = images.shape
    offsets = torch.randint(0, 2 * pixels + 1, (b, 2), generator=generator).to(images.device)
    padded = torch.nn.functional.pad(images, (pixels, pixels, pixels, pixels))
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # [B, H]: the padded rows each image keeps
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # [B, W]
    picked = padded[torch.arange(b, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2).contiguous()  # [B, H, W, C] -> [B, C, H, W]


__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "FILES",
    "Split",
    "as_dataset",
    "batches",
    "check_dataset",
    "check_shift",
    "default_data_dir",
    "import_reference",
    "make_splits",
    "random_shift",
    "raw_folder",
    "read_config_dataset",
    "read_dataset",
    "resolve_device",
]
