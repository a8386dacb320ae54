"""The IDX loader on the real MNIST files and on broken copies of the data; the download; splits, limits, batches."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from snn.config import ConfigError, RunConfig
from snn.data import (
    FILES,
    VAL_SPLIT_SEED,
    DataError,
    Dataset,
    Split,
    as_dataset,
    batches,
    default_data_dir,
    make_splits,
    random_shift,
    raw_folder,
    read_dataset,
)
from tests.idx_files import (
    IMAGES_MAGIC,
    synthetic_images,
    synthetic_labels,
    write_bytes,
    write_idx,
    write_synthetic_dataset,
)

# MNIST's published label counts (train, test)
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- the files --------------------------------------------------------------------------------------


def test_reads_the_real_mnist_files(mnist):
    assert mnist.train.images.shape == (60_000, 1, 28, 28)
    assert mnist.test.images.shape == (10_000, 1, 28, 28)
    assert (mnist.classes, mnist.name, mnist.input_shape) == (10, "mnist", (1, 28, 28))
    assert mnist.train.images.dtype == torch.uint8 and mnist.train.labels.dtype == torch.int64
    assert torch.bincount(mnist.train.labels).tolist() == TRAIN_LABEL_COUNTS
    assert torch.bincount(mnist.test.labels).tolist() == TEST_LABEL_COUNTS
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first digits, in file order
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert int(mnist.train.images.min()) == 0 and int(mnist.train.images.max()) == 255
    assert mnist.val is None


def test_float_images_are_intensities_in_0_1(dataset):
    x = dataset.test.float_images(slice(0, 100))
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.equal(x[3] * 255, dataset.test.images[3].float())


def test_gzip_files_read_the_same_as_plain_ones(dataset, data_copy):
    raw = raw_folder(data_copy)
    originals = {}
    for key in ("test_images", "test_labels"):
        plain = raw / FILES[key]
        originals[key] = plain.read_bytes()
        write_bytes(raw / f"{FILES[key]}.gz", originals[key])
        plain.unlink()
    data = read_dataset(data_copy, download=False)
    assert torch.equal(data.test.images, dataset.test.images)
    assert torch.equal(data.test.labels, dataset.test.labels)
    for key, content in originals.items():  # a .gz alone is unpacked beside it, whole, and kept
        assert (raw / FILES[key]).read_bytes() == content
        assert (raw / f"{FILES[key]}.gz").exists()
    assert sorted(p.name for p in raw.iterdir()) == sorted([*FILES.values(), *(f"{FILES[k]}.gz" for k in originals)])


# --- broken copies ----------------------------------------------------------------------------------


def test_missing_files_name_the_folder_and_all_four_files(tmp_path):
    with pytest.raises(DataError) as error:
        read_dataset(tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in FILES.values():
        assert name in message
    assert "\n" not in message


def test_one_missing_file_is_named(data_copy):
    (raw_folder(data_copy) / FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match=r"\(missing: t10k-labels-idx1-ubyte\)"):
        read_dataset(data_copy, download=False)


@pytest.mark.parametrize("keep_bytes", [16 + 5000 * 784, 16 + 5000 * 784 + 300, 7, 0])
def test_a_truncated_images_file_is_rejected(data_copy, plain_raw, keep_bytes):
    name = FILES["test_images"]
    write_bytes(raw_folder(data_copy) / name, (plain_raw / name).read_bytes()[:keep_bytes])
    with pytest.raises(
        DataError,
        match=r"t10k-images-idx3-ubyte: not a readable IDX file \(.+\); the file is "
        r"truncated or corrupt$",
    ) as error:
        read_dataset(data_copy, download=False)
    assert "\n" not in str(error.value)


def test_a_truncated_gzip_file_is_rejected_and_nothing_is_unpacked(data_copy, plain_raw):
    name = FILES["test_images"]
    compressed = gzip.compress((plain_raw / name).read_bytes(), compresslevel=1)
    (raw_folder(data_copy) / name).unlink()
    (raw_folder(data_copy) / f"{name}.gz").write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: not a readable gzip file \(") as error:
        read_dataset(data_copy, download=False)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in raw_folder(data_copy).iterdir()) == sorted(
        [*(set(FILES.values()) - {name}), f"{name}.gz"]
    ), "no partial file or temporary folder is left"


def test_a_wrong_magic_number_is_rejected(data_copy, plain_raw):
    name = FILES["test_labels"]
    raw = bytearray((plain_raw / name).read_bytes())
    raw[:4] = IMAGES_MAGIC.to_bytes(4, "big")  # an images header on a labels file
    write_bytes(raw_folder(data_copy) / name, bytes(raw))
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte: not a readable IDX file \(RuntimeError: .+\); "
        r"the file is truncated or corrupt$",
    ) as error:
        read_dataset(data_copy, download=False)
    assert "\n" not in str(error.value)


def test_a_label_count_mismatch_is_rejected(data_copy, dataset):
    write_idx(raw_folder(data_copy) / FILES["test_labels"], dataset.test.labels[:9_999].numpy())
    with pytest.raises(DataError, match=r"9999 labels for 10000 images; the files do not match"):
        read_dataset(data_copy, download=False)


def test_swapped_train_and_test_labels_are_rejected(data_copy, plain_raw):
    raw = raw_folder(data_copy)
    (raw / FILES["test_labels"]).unlink()
    (raw / FILES["test_labels"]).symlink_to(plain_raw / FILES["train_labels"])
    with pytest.raises(DataError, match=r"60000 labels for 10000 images"):
        read_dataset(data_copy, download=False)


def test_a_label_out_of_range_is_rejected(data_copy, dataset):
    labels = dataset.test.labels.numpy().copy()
    labels[123] = 11
    write_idx(raw_folder(data_copy) / FILES["test_labels"], labels)
    with pytest.raises(DataError, match=r"label 11 out of range 0\.\.9"):
        read_dataset(data_copy, download=False)


def test_a_small_but_consistent_dataset_is_not_accepted_as_mnist(tmp_path):
    write_synthetic_dataset(tmp_path, n_train=600, n_test=100)
    with pytest.raises(DataError, match=r"600 train examples, expected 60000"):
        read_dataset(tmp_path, download=False)


# --- fashion-mnist and the data root ----------------------------------------------------------------


def test_fashion_mnist_is_read_from_fashionmnist_raw(tmp_path):
    raw = write_synthetic_dataset(tmp_path, folder="FashionMNIST", gz=True)
    assert raw == raw_folder(tmp_path, "fashion-mnist") == tmp_path / "FashionMNIST" / "raw"
    data = read_dataset(tmp_path, "fashion-mnist", download=False)
    assert len(data.train) == 60_000 and len(data.test) == 10_000
    assert torch.equal(data.train.labels, torch.from_numpy(synthetic_labels(60_000).astype(np.int64)))
    assert torch.equal(data.test.images, torch.from_numpy(synthetic_images(10_000)).unsqueeze(1))
    assert (data.name, data.classes, data.input_shape) == ("fashion-mnist", 10, (1, 28, 28))
    with pytest.raises(DataError, match=r"mnist files not found in .*/MNIST/raw"):
        read_dataset(tmp_path, "mnist", download=False)  # the MNIST folder is not the Fashion-MNIST one


def test_missing_fashion_mnist_names_its_folder(tmp_path):
    with pytest.raises(DataError, match=r"fashion-mnist files not found in .*/FashionMNIST/raw"):
        read_dataset(tmp_path, "fashion-mnist", download=False)


def test_default_data_dir_is_the_environment_variable_else_data(monkeypatch, tmp_path):
    monkeypatch.setenv("SNN_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("SNN_DATA_DIR")
    assert default_data_dir() == Path("data")


# --- tensors from Python: as_dataset and its checks --------------------------------------------------


def tensors(n_train: int = 6, n_test: int = 4, shape: tuple[int, ...] = (1, 5, 5), classes: int = 3):
    """Float images in [0, 1] and labels 0..classes-1 (every class present in train)."""
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n_train, *shape, generator=g),
        torch.arange(n_train) % classes,
        torch.rand(n_test, *shape, generator=g),
        torch.arange(n_test) % classes,
    )


def test_every_form_of_tensors_gives_the_same_dataset():
    x, y, xt, yt = tensors()
    forms = [
        (x, y, xt, yt),
        ((x, y), (xt, yt)),
        {"train": (x, y), "test": (xt, yt)},
        ((x.numpy(), y.numpy()), (xt.numpy(), yt.numpy())),
        (torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(xt, yt)),
    ]
    for form in forms:
        data = as_dataset(form)
        assert torch.equal(data.train.images, x) and torch.equal(data.test.labels, yt), type(form)
        assert data.train.labels.dtype == torch.int64
        assert (data.classes, data.input_shape) == (3, (1, 5, 5))
    assert as_dataset({"train": (x, y), "test": (xt, yt), "classes": 7}).classes == 7


def test_images_without_a_channel_get_one_and_uint8_stays_uint8():
    images = torch.randint(0, 256, (4, 6, 6), dtype=torch.uint8)
    data = as_dataset((images, torch.tensor([0, 1, 0, 1]), images[:2], torch.tensor([1, 0])))
    assert data.train.images.shape == (4, 1, 6, 6) and data.train.images.dtype == torch.uint8
    assert torch.equal(data.train.float_images(slice(None)), images.unsqueeze(1).float() / 255)
    assert data.input_shape == (1, 6, 6) and data.classes == 2


def test_scale_min_max_scales_by_the_training_splits_range():
    x = torch.tensor([0.0, 10.0, 20.0, 40.0]).view(4, 1, 1, 1)
    xt = torch.tensor([-10.0, 30.0, 50.0]).view(3, 1, 1, 1)
    data = as_dataset((x, torch.tensor([0, 1, 0, 1]), xt, torch.tensor([0, 1, 1])), scale=True)
    assert data.train.images.flatten().tolist() == [0.0, 0.25, 0.5, 1.0]
    assert data.test.images.flatten().tolist() == [0.0, 0.75, 1.0]  # clamped to the training range


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, y, xt, yt: (x, y[:5], xt, yt), "the data: 6 train images but 5 labels; lengths must match"),
        (
            lambda x, y, xt, yt: (x, y, xt, torch.tensor([0, 1, 2, 3])),
            "the data: test label 3 is outside [0, 3) (classes: 3)",
        ),
        (lambda x, y, xt, yt: (x, y - 1, xt, yt), "the data: label -1 is negative; labels must lie in [0, classes)"),
        (
            lambda x, y, xt, yt: (x.index_fill(0, torch.tensor([2]), float("nan")), y, xt, yt),
            "the data: the train images hold NaN or infinite pixels",
        ),
        (
            lambda x, y, xt, yt: (x, y, xt.index_fill(0, torch.tensor([1]), float("inf")), yt),
            "the data: the test images hold NaN or infinite pixels",
        ),
        (lambda x, y, xt, yt: (x * 2, y, xt, yt), "the data: train pixels span [0"),
        (lambda x, y, xt, yt: (x[:0], y[:0], xt, yt), "the data: the train split is empty"),
        (lambda x, y, xt, yt: (x, y, xt[:0], yt[:0]), "the data: the test split is empty"),
        (
            lambda x, y, xt, yt: (x, y.float(), xt, yt),
            "the data: train labels must be a 1-D integer tensor, got torch.float32",
        ),
        (lambda x, y, xt, yt: (x, y.view(6, 1), xt, yt), "the data: train labels must be a 1-D integer tensor"),
        (
            lambda x, y, xt, yt: ((x * 100).to(torch.int32), y, (xt * 100).to(torch.int32), yt),
            "the data: images must be uint8 (0..255) or floats in [0, 1], got torch.int32",
        ),
        (lambda x, y, xt, yt: (x.flatten(1), y, xt.flatten(1), yt), "the data: train images have shape (6, 25)"),
        (lambda x, y, xt, yt: (x, y, xt[:, :, :4], yt), "the data: train and test images differ in shape"),
        (lambda x, y, xt, yt: ((x, y), (xt, yt), (x, y)), "the data: expected train and test splits"),
        (lambda x, y, xt, yt: {"train": (x, y)}, "the data: a mapping needs the keys train and test"),
        (
            lambda x, y, xt, yt: {"train": (x, y), "test": (xt, yt), "classes": 0},
            "the data: classes must be an integer >= 1",
        ),
        (
            lambda x, y, xt, yt: ((x.tolist(), y), (xt, yt)),
            "the data: the train split's images: expected a torch tensor or a numpy array, got list",
        ),
    ],
)
def test_bad_tensors_are_one_line_naming_the_rule(change, message):
    with pytest.raises(DataError) as error:
        as_dataset(change(*tensors()))
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_floats_outside_0_1_are_refused_unless_scaled():
    _, y, xt, yt = tensors()
    x = torch.linspace(-1, 1, 6 * 25).view(6, 1, 5, 5)
    with pytest.raises(
        DataError,
        match=r"^the data: train pixels span \[-1, 1\], outside \[0, 1\]; scale them, or set "
        r"scale_data: true to min-max scale them by the training split's range$",
    ):
        as_dataset((x, y, xt, yt))
    scaled = as_dataset((x, y, xt, yt), scale=True)
    assert (scaled.train.images.min(), scaled.train.images.max()) == (0.0, 1.0)


# --- splits, limits, batches -----------------------------------------------------------------------


def indexed_dataset() -> Dataset:
    """A dataset whose labels are the images' positions, so a split shows which images it holds."""
    return Dataset(
        train=Split(torch.zeros(60_000, 1, 28, 28, dtype=torch.uint8), torch.arange(60_000)),
        test=Split(torch.zeros(10_000, 1, 28, 28, dtype=torch.uint8), torch.arange(10_000)),
    )


def test_validation_split_is_disjoint_from_train_and_covers_it():
    data = make_splits(indexed_dataset(), val_size=5_000)
    val, train = data.val.labels, data.train.labels
    assert len(val) == 5_000 and len(train) == 55_000
    assert len(set(val.tolist()) | set(train.tolist())) == 60_000  # disjoint and complete
    assert torch.equal(train, train.sort().values), "training images keep their file order"
    assert len(data.test) == 10_000
    assert sorted(data.splits()) == ["test", "train", "val"]


def test_validation_split_is_fixed_across_calls_and_seeds(dataset):
    first = make_splits(dataset, val_size=1_000)
    torch.manual_seed(999)  # the global seed (a run's seed) does not move the split
    second = make_splits(dataset, val_size=1_000)
    assert torch.equal(first.val.images, second.val.images)
    assert torch.equal(first.val.labels, second.val.labels)
    expected = torch.randperm(60_000, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))[:1_000]
    assert torch.equal(first.val.labels, dataset.train.labels[expected])
    assert len(first.train) == 59_000


def test_a_smaller_validation_split_is_a_prefix_of_a_larger_one():
    small, large = make_splits(indexed_dataset(), val_size=100), make_splits(indexed_dataset(), val_size=1_000)
    assert torch.equal(small.val.labels, large.val.labels[:100])


def test_a_validation_split_that_leaves_no_training_image_is_refused():
    with pytest.raises(DataError, match=r"^val_size 60000 leaves no training image of the 60,000$"):
        make_splits(indexed_dataset(), val_size=60_000)
    assert len(make_splits(indexed_dataset(), val_size=59_999).train) == 1


def test_limits_keep_the_first_images(dataset):
    data = make_splits(dataset, limit_train=3_000, limit_test=500)
    assert len(data.train) == 3_000 and len(data.test) == 500 and data.val is None
    assert torch.equal(data.train.images, dataset.train.images[:3_000])
    assert torch.equal(data.test.labels, dataset.test.labels[:500])


def test_limit_train_applies_after_the_validation_split():
    data = make_splits(indexed_dataset(), val_size=2_000, limit_train=100)
    assert len(data.train) == 100 and len(data.val) == 2_000
    assert not set(data.train.labels.tolist()) & set(data.val.labels.tolist())


def test_batches_cover_every_index_once():
    ordered = list(batches(10, 4, shuffle=False))
    assert [b.tolist() for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = torch.cat(list(batches(1000, 128, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert sorted(shuffled.tolist()) == list(range(1000))
    assert not torch.equal(shuffled, torch.arange(1000))


def test_shuffled_batches_follow_their_generator():
    a = torch.cat(list(batches(500, 64, shuffle=True, generator=torch.Generator().manual_seed(7))))
    b = torch.cat(list(batches(500, 64, shuffle=True, generator=torch.Generator().manual_seed(7))))
    c = torch.cat(list(batches(500, 64, shuffle=True, generator=torch.Generator().manual_seed(8))))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pointing_at_the_raw_folder_itself_says_which_folder_to_give(data_root):
    """read_dataset takes the root (the folder holding MNIST/raw), not the raw folder itself."""
    with pytest.raises(DataError, match=r"set --data-dir or SNN_DATA_DIR to the folder that holds MNIST/raw"):
        read_dataset(raw_folder(data_root), download=False)


# --- the download ------------------------------------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that closes a connection mid-file (torchvision's downloader looks for a redirect with a GET
    it does not read) is no error of the mirror's: nothing on stderr, where the download's own lines go."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP mirror, torchvision's only one for MNIST: put a file in it with ``serve(name, content)``.

    ``serve`` gzips the content under NAME.gz and records its MD5 as torchvision's checksum.
    """
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = QuietServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    checksums = dict(torchvision.datasets.MNIST.resources)
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", checksums)

    def serve(name: str, content: bytes, md5: str | None = None) -> None:
        packed = gzip.compress(content, compresslevel=1)
        (folder / f"{name}.gz").write_bytes(packed)
        checksums[f"{name}.gz"] = md5 or hashlib.md5(packed).hexdigest()

    serve.url = url
    yield serve
    server.shutdown()
    server.server_close()
    thread.join()


def test_missing_files_are_downloaded_into_the_root_in_torchvisions_layout(mirror, synthetic_root, tmp_path, capsys):
    for name in FILES.values():
        mirror(name, (raw_folder(synthetic_root) / name).read_bytes())
    root = tmp_path / "data"  # does not exist yet
    data = read_dataset(root)
    assert sorted(p.name for p in raw_folder(root).iterdir()) == sorted(FILES.values())
    assert torch.equal(data.test.images, read_dataset(synthetic_root, download=False).test.images)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("downloading")]
    assert said == [f"downloading mnist into {root / 'MNIST' / 'raw'} from {mirror.url}"], "said once, where and from"


def test_only_the_missing_file_is_downloaded_and_a_dead_mirror_is_skipped(mirror, data_copy, monkeypatch):
    name = FILES["test_labels"]
    content = (raw_folder(data_copy) / name).read_bytes()
    (raw_folder(data_copy) / name).unlink()
    mirror(name, content)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{closed_port()}/", mirror.url])
    read_dataset(data_copy)
    assert (raw_folder(data_copy) / name).read_bytes() == content
    assert (raw_folder(data_copy) / FILES["train_images"]).is_symlink(), "present files are left alone"


def test_offline_the_download_fails_fast_with_one_line_and_leaves_nothing(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/"
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        read_dataset(tmp_path / "data")
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert "\n" not in message
    assert f"not found in {tmp_path / 'data' / 'MNIST' / 'raw'}" in message
    assert all(name in message for name in FILES.values())
    assert f"the download failed ({url}train-images-idx3-ubyte.gz: Connection refused)" in message
    assert "set --data-dir or SNN_DATA_DIR to the folder that holds MNIST/raw" in message
    assert list(tmp_path.iterdir()) == [], "no folder or partial file is left behind"


def test_a_mirror_that_stops_sending_times_out(monkeypatch, tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
        started = time.monotonic()
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: no data for 0\.5 s\)"):
            read_dataset(tmp_path / "data", download_timeout=0.5)
        assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_download_is_refused_by_its_checksum_and_not_written(mirror, data_copy):
    name = FILES["test_labels"]
    (raw_folder(data_copy) / name).unlink()
    mirror(name, b"\x00\x00\x08\x01 not the labels", md5="ec29112dd5afa0611ce80d1b7f02629c")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: MD5 [0-9a-f]{32}, expected ec2911"):
        read_dataset(data_copy)
    assert sorted(p.name for p in raw_folder(data_copy).iterdir()) == sorted(set(FILES.values()) - {name})


def test_the_copies_tests_make_work_from_compressed_files_too(plain_raw, tmp_path):
    """tests/conftest.py's data_copy, where the data folder holds only .gz files (as torchvision leaves them)."""
    from tests.idx_files import uncompressed

    gz_only = tmp_path / "gz"
    gz_only.mkdir()
    for name in FILES.values():
        (gz_only / f"{name}.gz").write_bytes(gzip.compress((plain_raw / name).read_bytes(), compresslevel=1))
    plain = uncompressed(gz_only, tmp_path / "plain")
    for name in FILES.values():
        assert (plain / name).read_bytes() == (plain_raw / name).read_bytes()


def test_random_shift_moves_each_image_by_its_own_offset_within_range_zero_filled():
    images = torch.rand(64, 3, 9, 7) + 0.5  # no zero pixel: a zero in the output is fill
    shifted = random_shift(images, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == images.shape and shifted.dtype == images.dtype and shifted.is_contiguous()
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = []
    for i in range(len(images)):
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(shifted[i], padded[i, :, dy : dy + 9, dx : dx + 7])
        ]
        assert len(found) == 1, f"image {i} is not one shift of its input"
        offsets.append(found[0])
    assert len(set(offsets)) > 10, "each image draws its own shift"
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == set(range(5)), "every shift in [-2, 2] occurs"
    again = random_shift(images, 2, torch.Generator().manual_seed(1))
    assert torch.equal(again, shifted), "the generator decides the shifts"
    assert random_shift(images, 0, torch.Generator()) is images


def test_augment_shift_is_checked_against_the_config_and_the_image_size(dataset):
    with pytest.raises(ConfigError, match="augment_shift"):
        RunConfig(model="csnn", augment_shift=-1)
    with pytest.raises(ConfigError, match="augment_shift"):
        RunConfig(model="csnn", augment_shift=1.5)
    with pytest.raises(DataError, match="augment_shift 28 moves a 28x28 image off its frame: it must be below 28"):
        make_splits(dataset, RunConfig(model="csnn", augment_shift=28, device="cpu"))
    assert len(make_splits(dataset, RunConfig(model="csnn", augment_shift=27, device="cpu")).train) == len(
        dataset.train
    )
