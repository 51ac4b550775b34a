"""Every dataset node through the engine: shapes of the data, labels / captions, seeded batching."""

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import Session
from nodes.data.dataset import Dataset

from .helpers import link, wf


def run(nodes: dict, outputs: list[str], tmp_path):
    return Session(device="cpu", output_dir=tmp_path).run(wf(nodes), outputs=outputs)


def batch_node(source: str, **inputs) -> dict:
    return {"type": "core/dataset_batch", "inputs": {"dataset": link(source, "dataset"), **inputs}}


def test_digits_dataset_node(tmp_path):
    data = run({"d": {"type": "core/digits_dataset", "inputs": {"size": 12}}}, ["d"], tmp_path).value("d.dataset")
    assert data.images.shape == (1797, 1, 12, 12) and data.num_classes == 10
    assert sorted(data.labels.unique().tolist()) == list(range(10)) and data.name == "sklearn_digits_12"


def test_shapes_dataset_node_and_dataset_images(tmp_path):
    result = run({"d": {"type": "core/shapes_dataset", "inputs": {"count": 5, "seed": 3, "size": 16}},
                  "img": {"type": "core/dataset_images", "inputs": {"dataset": link("d", "dataset"),
                                                                    "start": 1, "count": 2}}},
                 ["d", "img"], tmp_path)
    data, images = result.value("d.dataset"), result.value("img.image")
    assert data.images.shape == (5, 3, 16, 16) and len(data.captions) == 5
    assert all(c.startswith("a ") and c.endswith(" background") for c in data.captions)
    assert torch.equal(images, (data.images[1:3] + 1) / 2)  # [-1, 1] -> [0, 1]


def test_array_file_dataset_node(tmp_path):
    file = tmp_path / "a.npz"
    np.savez(file, images=np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2) * 10,
             labels=np.array([0, 2, 1, 2]), captions=np.array(["w", "x", "y", "z"]))
    data = run({"d": {"type": "core/array_file_dataset", "inputs": {"file": str(file)}}},
               ["d"], tmp_path).value("d.dataset")
    assert data.images.shape == (4, 1, 2, 2) and data.labels.tolist() == [0, 2, 1, 2] and data.num_classes == 3
    assert data.captions == ("w", "x", "y", "z")
    assert float(data.images[0, 0, 0, 0]) == -1.0 and float(data.images[3, 0, 1, 1]) == pytest.approx(150 / 255 * 2 - 1)


def test_image_folder_dataset_node_with_class_subfolders(tmp_path):
    for cls, colour in (("cats", 0), ("dogs", 255)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (6, 6), (colour, colour, colour)).save(tmp_path / "imgs" / cls / f"{i}.png")
    data = run({"d": {"type": "core/image_folder_dataset", "inputs": {"folder": str(tmp_path / "imgs"), "size": 4}}},
               ["d"], tmp_path).value("d.dataset")
    assert data.images.shape == (4, 3, 4, 4) and data.class_names == ("cats", "dogs")
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert data.images[:2].eq(-1).all() and data.images[2:].eq(1).all()  # black -> -1, white -> 1


def test_dataset_batch_node_is_seeded_and_carries_labels_and_captions(tmp_path):
    nodes = {"d": {"type": "core/shapes_dataset", "inputs": {"count": 10, "seed": 0, "size": 8}},
             "a": batch_node("d", batch_size=4, seed=5), "b": batch_node("d", batch_size=4, seed=5),
             "c": batch_node("d", batch_size=4, seed=6), "next": batch_node("d", batch_size=4, seed=5, index=1),
             "ordered": batch_node("d", batch_size=4, shuffle=False, index=2)}
    result = run(nodes, ["d", "a", "b", "c", "next", "ordered"], tmp_path)
    data: Dataset = result.value("d.dataset")

    def rows(node: str) -> list[int]:
        images = result.value(f"{node}.images")
        return [next(i for i in range(10) if torch.equal(data.images[i], image)) for image in images]

    assert result.value("a.images").shape == (4, 3, 8, 8)
    assert rows("a") == rows("b") and rows("a") != rows("c")  # same seed, same batch; other seed, other batch
    assert not set(rows("a")) & set(rows("next"))  # batches of one epoch do not repeat examples
    assert rows("ordered") == [8, 9, 0, 1]  # unshuffled batch 2 of size 4 wraps around the end
    assert result.value("a.captions") == [data.captions[i] for i in rows("a")]
    assert result.value("a.labels").prompts == tuple(result.value("a.captions"))


def test_dataset_batch_labels_from_a_labelled_dataset(tmp_path):
    result = run({"d": {"type": "core/digits_dataset", "inputs": {"size": 8}},
                  "a": batch_node("d", batch_size=6, shuffle=False)}, ["d", "a"], tmp_path)
    assert result.value("a.labels").labels.tolist() == result.value("d.dataset").labels[:6].tolist()


def test_class_labels_node(tmp_path):
    result = run({"l": {"type": "core/class_labels", "inputs": {"labels": [3, 1], "repeat": 2, "interleave": True}}},
                 ["l"], tmp_path)
    assert result.value("l.conditioning").labels.tolist() == [3, 3, 1, 1]
