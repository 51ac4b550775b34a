"""Data loaders: digits, image folders, .npz arrays, batching; clear errors for bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import Context
from nodes.data.array_file import read_array_file
from nodes.data.batching import dataset_batch
from nodes.data.dataset import Dataset
from nodes.data.digits import load_digits_tensors
from nodes.data.image_folder import read_image_folder


def test_digits_are_real_16x16_in_unit_range_with_10_classes():
    images, labels = load_digits_tensors(16)
    assert images.shape == (1797, 1, 16, 16)
    assert images.min() >= -1 and images.max() <= 1
    assert images.min() == -1 and images.max() > 0.9  # background and ink both present
    assert sorted(labels.unique().tolist()) == list(range(10))
    small, _ = load_digits_tensors(8)
    # bilinear resize of an 8x8 digit keeps its mean intensity up to border effects
    assert (images.mean(dim=(1, 2, 3)) - small.mean(dim=(1, 2, 3))).abs().max() < 0.1


def _write_png(path, value: int, size: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_labels_from_subfolders(tmp_path):
    _write_png(tmp_path / "cats" / "a.png", 0)
    _write_png(tmp_path / "cats" / "b.png", 0)
    _write_png(tmp_path / "dogs" / "c.jpg", 255)
    data = read_image_folder(str(tmp_path), size=4, channels=3)
    assert data.images.shape == (3, 3, 4, 4)
    assert data.labels.tolist() == [0, 0, 1] and data.num_classes == 2 and data.class_names == ("cats", "dogs")
    assert data.images[0].max() == -1 and data.images[2].min() > 0.95  # 0 -> -1, 255 -> 1


def test_image_folder_captions_file(tmp_path):
    _write_png(tmp_path / "x.png", 128)
    _write_png(tmp_path / "y.png", 128)
    (tmp_path / "captions.txt").write_text("x.png\ta grey square\ny.png\tanother one\n")
    data = read_image_folder(str(tmp_path), size=6, channels=1)
    assert data.captions == ("a grey square", "another one") and data.labels is None
    assert data.images.shape == (2, 1, 6, 6)


def test_image_folder_bad_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image_folder(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no PNG or JPEG"):
        read_image_folder(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        read_image_folder(str(tmp_path))


def test_array_file_scaling_labels_and_refusals(tmp_path):
    file = tmp_path / "d.npz"
    np.savez(file, images=np.array([[[0, 255]], [[255, 0]]], dtype=np.uint8), labels=np.array([1, 0]))
    data = read_array_file(str(file))
    assert data.images.shape == (2, 1, 1, 2)
    assert data.images.flatten().tolist() == [-1, 1, 1, -1]
    assert data.labels.tolist() == [1, 0] and data.num_classes == 2
    points = tmp_path / "p.npz"
    np.savez(points, images=np.array([[3.0, -4.0]]))
    assert read_array_file(str(points), "raw").images.tolist() == [[3.0, -4.0]]
    objects = tmp_path / "o.npz"
    np.savez(objects, images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="cannot read"):
        read_array_file(str(objects))
    with pytest.raises(FileNotFoundError):
        read_array_file(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "nokey.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="no 'images'"):
        read_array_file(str(tmp_path / "nokey.npz"))


def test_dataset_validates_labels_and_emptiness():
    with pytest.raises(ValueError, match="no examples"):
        Dataset(torch.zeros(0, 1, 2, 2))
    with pytest.raises(ValueError, match="labels must lie"):
        Dataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 3]), num_classes=3)


def test_batch_is_a_seeded_permutation_covering_the_epoch():
    data = Dataset(torch.arange(10.0).view(10, 1), torch.arange(10) % 2, num_classes=2)
    ctx = Context("b", "core/dataset_batch")
    seen = []
    for index in range(5):
        images, cond, captions = dataset_batch(ctx, data, batch_size=2, index=index, shuffle=True, seed=3)
        assert cond.labels.tolist() == (images.view(-1).long() % 2).tolist()
        seen += images.view(-1).tolist()
    assert sorted(seen) == list(range(10))  # one epoch = every example once
    again = dataset_batch(ctx, data, batch_size=2, index=0, shuffle=True, seed=3)
    assert again.images.view(-1).tolist() == seen[:2]
    plain = dataset_batch(ctx, data, batch_size=4, index=2, shuffle=False, seed=3)
    assert plain.images.view(-1).tolist() == [8, 9, 0, 1]
