"""Captioned shapes: deterministic from the seed, captions agree with the attributes and the pixels."""

from pathlib import Path

import pytest
import torch

from nodes.data.shapes import ATTRIBUTES, BACKGROUNDS, COLOURS, POSITIONS, caption, make_shapes, measure_shapes, render


def test_same_seed_same_dataset_other_seed_differs():
    a, b, c = make_shapes(64, seed=3), make_shapes(64, seed=3), make_shapes(64, seed=4)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert a.captions != c.captions and not torch.equal(a.images, c.images)


def test_any_count_and_size_in_unit_range():
    data = make_shapes(5, seed=0, size=48)
    assert data.images.shape == (5, 3, 48, 48) and len(data.captions) == 5
    assert data.images.min() >= -1 and data.images.max() <= 1


def test_captions_spell_out_the_attributes():
    data = make_shapes(200, seed=1)
    for i in range(len(data)):
        names = data.attribute_names(i)
        assert data.captions[i] == caption(**names)
        for word in (names["shape"], names["colour"], names["size"], names["background"]):
            assert word in data.captions[i]
    assert caption("circle", "red", "small", "top left", "white") == \
        "a small red circle at the top left on a white background"
    assert caption("square", "blue", "large", "center", "black") == \
        "a large blue square in the center on a black background"


def test_pixels_agree_with_attributes():
    """Corner pixel = background colour; the shape's pixels carry its colour, centred near its position."""
    data = make_shapes(120, seed=2)
    images = (data.images + 1) / 2
    for i in range(len(data)):
        names = data.attribute_names(i)
        bg = torch.tensor(BACKGROUNDS[names["background"]])
        fg = torch.tensor(COLOURS[names["colour"]])
        corner = images[i, :, 0, 0] if names["position"] != "top left" else images[i, :, -1, -1]
        assert torch.allclose(corner, bg, atol=1e-5)
        weight = ((images[i] - bg[:, None, None]).abs().sum(0) / (fg - bg).abs().sum()).clamp(0, 1)
        assert weight.max() > 0.99  # fully covered pixels have exactly the shape's colour
        ys, xs = torch.meshgrid(torch.arange(32.0) + 0.5, torch.arange(32.0) + 0.5, indexing="ij")
        cx, cy = (weight * xs).sum() / weight.sum() / 32, (weight * ys).sum() / weight.sum() / 32
        px, py = POSITIONS[names["position"]]
        # triangles' centroid sits below the circumcentre by up to r/4 (~0.06 of the side)
        assert abs(cx - px) < 0.05 and abs(cy - py) < 0.09


def test_sizes_and_shapes_have_the_expected_area_order():
    """Mean coverage: large > small; circle > triangle and square > triangle for the same circumradius."""
    n = len(ATTRIBUTES["shape"])
    attrs = {"shape": torch.arange(n), "colour": torch.zeros(n, dtype=torch.long),
             "size": torch.ones(n, dtype=torch.long), "position": torch.full((n,), 4),
             "background": torch.zeros(n, dtype=torch.long)}
    big = (render(attrs)[:, 1] - 0.97).abs().mean((1, 2))  # green channel: white 0.97 -> red 0.1
    small = (render({**attrs, "size": torch.zeros(n, dtype=torch.long)})[:, 1] - 0.97).abs().mean((1, 2))
    assert (big > small).all()
    circle, square, triangle = big.tolist()
    assert circle > square > triangle
    # circle area pi r^2 with r = 0.23 of the side, within the anti-aliasing error
    assert abs(circle / (0.97 - 0.1) - torch.pi * 0.23 ** 2) < 0.01


def test_measurement_reads_the_attributes_back():
    """The measurement used to score generated images recovers the true attributes of dataset images."""
    data = make_shapes(400, seed=11)
    measured = measure_shapes((data.images + 1) / 2)
    for name in ("colour", "position", "background", "size"):
        assert (measured[name] == data.attributes[name]).float().mean() >= 0.99, name
    assert (measured["shape"] == data.attributes["shape"]).float().mean() >= 0.93


ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "nodes" / "weights" / f"{name}.safetensors" for name in ("shapes_vae", "shapes_t2i")]


@pytest.mark.skipif(not all(p.is_file() for p in SHIPPED), reason="shapes models not shipped yet")
def test_default_workflow_writes_a_png_and_reuses_models_on_a_new_seed(tmp_path):
    """Text to image through a Session: a 4-image grid PNG; a new seed re-runs only noise -> save."""
    from PIL import Image

    from nodegraph import Session, Workflow

    session = Session(output_dir=str(tmp_path))
    workflow = Workflow.load(ROOT / "workflows" / "default.json")
    first = session.run(workflow, outputs=["save", "decode"])
    (path,) = first.value("save")
    with Image.open(path) as image:
        assert image.size == (4 * 34 + 2, 36) and image.mode == "RGB"
    # the prompt is "a large red circle at the top left on a white background": read the samples back
    measured = measure_shapes(first.value("decode").cpu())
    expected = {"colour": "red", "position": "top left", "background": "white", "size": "large", "shape": "circle"}
    for name, value in expected.items():
        hits = int((measured[name] == ATTRIBUTES[name].index(value)).sum())
        assert hits >= (4 if name in ("colour", "position", "background") else 3), (name, measured[name])
    data = workflow.to_dict()
    data["nodes"]["seed"]["inputs"]["seed"] = 1
    second = session.run(Workflow.from_dict(data))
    assert set(second.ran) == {"seed", "noise", "solve", "decode", "images", "save"}  # models and text encodings cached
    assert second.value("save")[0] != path
