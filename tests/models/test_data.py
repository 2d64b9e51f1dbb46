"""Data readers on the real data sets and on small files written here, good and broken."""

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import (
    DATASETS,
    Dataset,
    load_dataset,
    read_idx_split,
    read_image_folder,
    read_npz,
    stratified_indices,
)
from models.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from models.data.transforms import resize, rotate, to_channels, to_grey
from models.errors import DataError, GGAUserError

DIGITS = tuple(str(i) for i in range(10))


# ---------------------------------------------------------------- helpers writing real files


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An unsigned-byte IDX file: magic, one big-endian uint32 per dimension, data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_split(
    folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool = True
) -> tuple[Path, Path]:
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, array, magic in (
        (f"{prefix}-images-idx3-ubyte", images, IMAGES_MAGIC),
        (f"{prefix}-labels-idx1-ubyte", labels, LABELS_MAGIC),
    ):
        data = idx_bytes(array, magic)
        path = folder / (stem + ".gz" if gz else stem)
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths[0], paths[1]


def small_idx(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_tree(n_per_class: dict[str, int], side: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Relative paths ``<class>/<i>.png`` -> RGB pixels (PNG is lossless: exact round trip)."""
    rng = np.random.default_rng(seed)
    return {
        f"{cls}/{i:03d}.png": rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        for cls, n in n_per_class.items()
        for i in range(n)
    }


def write_tree_dir(root: Path, split: str, tree: dict[str, np.ndarray]) -> None:
    for rel, array in tree.items():
        path = root / split / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(array))


def write_tree_tar(path: Path, splits: dict[str, dict[str, np.ndarray]], top: str = "") -> None:
    with tarfile.open(path, "w:gz") as tar:
        for split, tree in splits.items():
            for rel, array in tree.items():
                data = png_bytes(array)
                info = tarfile.TarInfo(f"{top}{split}/{rel}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- the real data sets


def test_real_mnist_train_is_the_balanced_5000(shared_data_dir):
    data = load_dataset("mnist", "train", data_dir=shared_data_dir)
    assert data.x.shape == (5000, 1, 28, 28) and data.x.dtype == torch.uint8
    assert data.y.dtype == torch.int64
    assert data.class_counts() == [500] * 10
    assert data.class_names == DIGITS


def test_real_mnist_test_has_the_official_class_counts(shared_data_dir):
    data = load_dataset("mnist", "test", data_dir=shared_data_dir)
    assert len(data) == 10000
    assert data.class_counts() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = data.float()
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_real_fashion_mnist_test_and_a_limited_train_read(shared_data_dir):
    test = load_dataset("fashion-mnist", "test", data_dir=shared_data_dir)
    assert test.x.shape == (10000, 1, 28, 28)
    assert test.class_counts() == [1000] * 10
    assert test.class_names[0] == "T-shirt/top" and test.class_names[9] == "Ankle boot"
    head = load_dataset("fashion-mnist", "train", data_dir=shared_data_dir, limit=300)
    assert head.x.shape == (300, 1, 28, 28) and int(head.y.min()) >= 0 and int(head.y.max()) <= 9


def test_real_cifar10_from_the_tarball_balanced_subset(shared_data_dir):
    data = load_dataset("cifar10", "test", data_dir=shared_data_dir, limit=200)
    assert data.x.shape == (200, 3, 32, 32) and data.x.dtype == torch.uint8
    assert data.class_counts() == [20] * 10 and data.drawn == "a class-balanced subset, seed 0"
    assert data.class_names == DATASETS["cifar10"].class_names
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    # Natural photos: channel means near the test set's (126.0, 123.7, 114.8), blue lowest.
    means = data.x.float().mean(dim=(0, 2, 3))
    assert ((means > 90) & (means < 160)).all() and means[2] < means[0]


# ---------------------------------------------------------------- IDX files written here


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_gzipped_and_plain(tmp_path, gz):
    images, labels = small_idx()
    write_idx_split(tmp_path, "test", images, labels, gz=gz)
    data = read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")
    assert torch.equal(data.x[:, 0], torch.from_numpy(images))
    assert data.y.tolist() == labels.tolist()
    head = read_idx_split(tmp_path, "test", class_names=DIGITS, name="t", limit=5)
    assert len(head) == 5 and head.drawn == "the first 5 in file order" and data.drawn == "all"
    everything = read_idx_split(tmp_path, "test", class_names=DIGITS, name="t", limit=len(labels))
    assert everything.drawn == "all"


def test_idx_truncated_gzip_names_the_file(tmp_path):
    image_path, _ = write_idx_split(tmp_path, "test", *small_idx())
    image_path.write_bytes(image_path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*truncated"):
        read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")


def test_idx_short_data_names_the_file(tmp_path):
    images, labels = small_idx()
    _, label_path = write_idx_split(tmp_path, "test", images, labels, gz=False)
    label_path.write_bytes(label_path.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: truncated: expected 12 bytes"):
        read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")


def test_idx_wrong_magic_names_the_file(tmp_path):
    images, labels = small_idx()
    image_path, _ = write_idx_split(tmp_path, "test", images, labels)
    image_path.write_bytes(gzip.compress(idx_bytes(labels, LABELS_MAGIC)))  # a labels file
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: wrong magic number 2049"):
        read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")


def test_idx_not_gzip_names_the_file(tmp_path):
    images, labels = small_idx()
    image_path, _ = write_idx_split(tmp_path, "test", images, labels)
    image_path.write_bytes(idx_bytes(images, IMAGES_MAGIC))  # plain bytes under a .gz name
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: not a gzip file"):
        read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")


def test_idx_count_mismatch_names_both_files(tmp_path):
    images, labels = small_idx(12)
    write_idx_split(tmp_path, "train", images, labels[:10])
    with pytest.raises(DataError, match=r"train-images.*12 images.*train-labels.*10 labels"):
        read_idx_split(tmp_path, "train", class_names=DIGITS, name="t")


def test_idx_trailing_bytes_and_bad_labels_are_refused(tmp_path):
    images, labels = small_idx()
    _, label_path = write_idx_split(tmp_path, "test", images, labels, gz=False)
    label_path.write_bytes(idx_bytes(labels, LABELS_MAGIC) + b"\x00")
    with pytest.raises(DataError, match=r"labels-idx1-ubyte: has bytes after the 12 items"):
        read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")
    label_path.write_bytes(idx_bytes(labels + 5, LABELS_MAGIC))
    with pytest.raises(DataError, match=r"label 14 outside 0..9"):
        read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")


def test_idx_missing_labels_file_is_named(tmp_path):
    _, label_path = write_idx_split(tmp_path, "test", *small_idx())
    label_path.unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\.gz"):
        read_idx_split(tmp_path, "test", class_names=DIGITS, name="t")


# ---------------------------------------------------------------- image folders written here


def _expected(tree: dict[str, np.ndarray]) -> tuple[torch.Tensor, list[str]]:
    keys = sorted(tree, key=lambda k: tuple(k.split("/")))
    x = torch.from_numpy(np.stack([tree[k] for k in keys])).permute(0, 3, 1, 2)
    return x, [k.split("/")[0] for k in keys]


def test_image_folder_directory_reads_pixels_and_sorted_labels(tmp_path):
    tree = image_tree({"zebra": 2, "ant": 3})
    write_tree_dir(tmp_path, "train", tree)
    data = read_image_folder(tmp_path, "train")
    x, classes = _expected(tree)
    assert data.class_names == ("ant", "zebra")
    assert torch.equal(data.x, x)
    assert data.y.tolist() == [data.class_names.index(c) for c in classes] == [0, 0, 0, 1, 1]


def test_image_folder_tarball_streams_one_split_with_a_top_folder(tmp_path):
    train, test = image_tree({"a": 2, "b": 2}, seed=1), image_tree({"a": 3, "b": 1}, seed=2)
    tarball = tmp_path / "set.tar.gz"
    write_tree_tar(tarball, {"train": train, "test": test}, top="set/")
    data = read_image_folder(tarball, "test")
    x, _ = _expected(test)
    assert torch.equal(data.x, x) and data.y.tolist() == [0, 0, 0, 1]
    assert not (tmp_path / "set").exists()  # nothing unpacked


def test_image_folder_limit_is_a_balanced_seeded_subset(tmp_path):
    tarball = tmp_path / "set.tgz"
    write_tree_tar(tarball, {"test": image_tree({"a": 10, "b": 10, "c": 2})})
    data = read_image_folder(tarball, "test", limit=9, seed=3)
    assert data.class_counts() == [4, 3, 2]  # c runs out, a and b fill in
    assert data.drawn == "a class-balanced subset, seed 3"
    assert read_image_folder(tarball, "test", limit=22).drawn == "all"
    assert torch.equal(read_image_folder(tarball, "test", limit=9, seed=3).x, data.x)


def test_image_folder_errors_name_what_is_wrong(tmp_path):
    tarball = tmp_path / "set.tar.gz"
    write_tree_tar(tarball, {"train": image_tree({"a": 1})})
    with pytest.raises(DataError, match=r"no images under test/.*splits found: \['train'\]"):
        read_image_folder(tarball, "test")
    with pytest.raises(DataError, match=r"class folders \['a'\] .* not among"):
        read_image_folder(tarball, "train", class_names=("cat", "dog"))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tarball.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: truncated or not a tar archive"):
        read_image_folder(cut, "train")

    write_tree_dir(tmp_path / "tree", "train", image_tree({"a": 2}))
    (tmp_path / "tree" / "train" / "a" / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"bad\.png: not a readable PNG or JPEG"):
        read_image_folder(tmp_path / "tree", "train")
    with pytest.raises(DataError, match=r"no test/ folder .*found folders: \['train'\]"):
        read_image_folder(tmp_path / "tree", "test")


def test_image_folder_refuses_mixed_sizes_and_handles_grey(tmp_path):
    tree = image_tree({"a": 1}, side=8) | {"b/000.png": np.zeros((9, 8, 3), dtype=np.uint8)}
    write_tree_dir(tmp_path / "mixed", "train", tree)
    with pytest.raises(DataError, match=r"b/000\.png is 8x9 but a/000\.png is 8x8"):
        read_image_folder(tmp_path / "mixed", "train")
    grey = {"a/0.png": np.full((8, 8), 7, dtype=np.uint8)}
    write_tree_dir(tmp_path / "grey", "train", grey)
    assert read_image_folder(tmp_path / "grey", "train").x.shape == (1, 1, 8, 8)
    write_tree_dir(tmp_path / "grey", "train", image_tree({"b": 1}))
    both = read_image_folder(tmp_path / "grey", "train")
    assert both.x.shape == (2, 3, 8, 8) and (both.x[0] == 7).all()


# ---------------------------------------------------------------- npz files


@pytest.mark.parametrize(
    ("layout", "transform"),
    [
        ("nhw", lambda x: x[:, 0]),
        ("nchw", lambda x: x),
        ("nhwc", lambda x: x.transpose(0, 2, 3, 1)),
        ("float", lambda x: x.astype(np.float32) / 255.0),
    ],
)
def test_npz_layouts(tmp_path, layout, transform):
    rng = np.random.default_rng(0)
    channels = 1 if layout == "nhw" else 3
    x = rng.integers(0, 256, (6, channels, 5, 5), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=transform(x), y=y)
    data = read_npz(tmp_path / "d.npz")
    assert torch.equal(data.x, torch.from_numpy(x)) and data.y.tolist() == y.tolist()
    assert data.class_names == ("0", "1", "2") and data.name == "d.npz"


def test_npz_class_names_and_limit(tmp_path):
    x = np.zeros((4, 2, 2), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1, 0]), class_names=np.array(["no", "yes"]))
    data = read_npz(tmp_path / "d.npz", limit=3)
    assert data.class_names == ("no", "yes") and len(data) == 3
    assert data.drawn == "the first 3 in file order"
    assert read_npz(tmp_path / "d.npz", limit=4).drawn == "all"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 4, 4), np.uint8)}, r"no array y \(found \['x'\]\)"),
        ({"images": np.zeros((3, 4, 4), np.uint8)}, r"no array x or y"),
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(2, int)}, r"3 images but y holds 2"),
        ({"x": np.full((2, 4, 4), 2.0), "y": np.zeros(2, int)}, r"float x must lie in \[0, 1\]"),
        ({"x": np.zeros((2, 4, 4, 5), np.uint8), "y": np.zeros(2, int)}, r"x has shape"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0.0, 1.0])}, r"1-D integer"),
    ],
)
def test_npz_errors_name_the_file(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad\.npz: .*" + message):
        read_npz(tmp_path / "bad.npz")


def test_npz_not_an_archive(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz"):
        read_npz(tmp_path / "junk.npz")


# ---------------------------------------------------------------- the registry


def test_registry_finds_files_in_subfolder_or_directly_and_via_env(tmp_path, monkeypatch):
    images, labels = small_idx()
    write_idx_split(tmp_path / "mnist", "test", images, labels)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path)) == 12
    write_idx_split(tmp_path / "flat", "test", images[:5], labels[:5], gz=False)
    assert len(load_dataset("fashion-mnist", "test", data_dir=str(tmp_path / "flat"))) == 5
    monkeypatch.setenv("GGA_DATA_DIR", str(tmp_path))
    data = load_dataset("mnist", "test", limit=4)
    assert len(data) == 4 and data.name == "mnist"


def test_registry_cifar_from_a_directory_tree_and_npz_fallback(tmp_path):
    names = DATASETS["cifar10"].class_names
    write_tree_dir(tmp_path / "cifar10", "test", image_tree({names[1]: 2, names[7]: 1}, side=32))
    data = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert data.y.tolist() == [1, 1, 7] and data.x.shape == (3, 3, 32, 32)
    np.savez(tmp_path / "train.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.array([3, 4]))
    assert load_dataset("mnist", "train", data_dir=tmp_path).y.tolist() == [3, 4]


def test_registry_not_found_says_where_it_looked_and_what_it_expects(tmp_path, monkeypatch):
    monkeypatch.delenv("GGA_DATA_DIR", raising=False)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    message = str(err.value)
    assert f"looked in {tmp_path / 'fashion-mnist'}, {tmp_path} " in message
    assert "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz" in message
    assert "--data-dir" in message and "GGA_DATA_DIR" in message and "\n" not in message
    with pytest.raises(DataError, match=r"cifar10-jpeg\.tar\.gz or .* test/<class>/"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"no data directory: pass --data-dir DIR or set GGA_DATA"):
        load_dataset("mnist", "test")


def test_registry_unknown_name_split_and_wrong_shape(tmp_path):
    with pytest.raises(DataError, match=r"unknown data set 'svhn'; known data sets: mnist, fash"):
        load_dataset("svhn", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"unknown split 'val'"):
        load_dataset("mnist", "val", data_dir=tmp_path)
    np.savez(tmp_path / "test.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"\(3, 32, 32\) \(C, H, W\), expected \(1, 28, 28\)"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    assert issubclass(DataError, GGAUserError)


# ---------------------------------------------------------------- Dataset and subsets


def test_dataset_head_subset_and_stratified_indices():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    data = Dataset(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), y, ("a", "b", "c"), "d")
    assert data.head(3).x.flatten().tolist() == [0, 1, 2] and len(data.head(99)) == 10
    assert data.head(3).drawn == "the first 3 in file order" and data.head(99).drawn == "all"
    assert data.head(3).head(2).drawn == "the first 2 of the first 3 in file order"
    assert data.subset([9, 0]).drawn == "chosen by index"
    assert data.subset([9, 0]).y.tolist() == [2, 0]
    idx = stratified_indices(y, 7, seed=1)
    assert torch.bincount(y[idx], minlength=3).tolist() == [3, 3, 1]
    assert torch.equal(idx, stratified_indices(y, 7, seed=1))
    assert idx.tolist() == sorted(idx.tolist())
    with pytest.raises(ValueError, match="uint8"):
        Dataset(torch.zeros(2, 1, 1, 1), torch.zeros(2, dtype=torch.long), ("a",), "d")


# ---------------------------------------------------------------- transforms


def test_rotate_by_90_is_rot90_and_0_is_identity():
    x = torch.rand(3, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    # A quarter turn moves pixel centres onto pixel centres: exact up to float rounding.
    assert torch.allclose(rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(rotate(x, -90.0), torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(rotate(x, 0.0), x, atol=1e-6)
    wide = torch.rand(1, 1, 6, 10)
    assert torch.allclose(rotate(wide, 180.0), torch.rot90(wide, 2, dims=(2, 3)), atol=1e-5)


def test_rotate_per_sample_angles_zero_fill_and_gradient():
    x = torch.ones(2, 1, 16, 16, requires_grad=True)
    out = rotate(x, torch.tensor([0.0, 45.0]))
    values = out.detach()
    assert torch.allclose(values[0], x.detach()[0])
    assert float(values[1, 0, 0, 0]) == 0.0  # corner falls outside the rotated square
    assert float(values[1, 0, 8, 8]) == pytest.approx(1.0)
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="3 angles for a batch of 2"):
        rotate(x, torch.zeros(3))


def test_resize_and_grey_match_pil():
    rgb = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    pil_grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255.0
    assert np.abs(to_grey(x)[0, 0].numpy() - pil_grey).max() <= 1 / 255 + 1e-6
    assert resize(x, 5).shape == (1, 3, 5, 5) and resize(x, (12, 12)) is x
    flat = torch.full((1, 1, 7, 7), 0.25)
    assert torch.allclose(resize(flat, (3, 11)), torch.full((1, 1, 3, 11), 0.25))
    assert to_channels(to_grey(x), 3).shape == (1, 3, 12, 12)
