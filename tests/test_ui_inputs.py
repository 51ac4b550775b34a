"""Images and painted masks in the editor: uploads land only in the inputs folder, re-encoded as PNG under
content-addressed names, bounded in bytes and pixels; the editor is shown only images a run could read.
The browser test paints a stroke and erases part of it on core/paint_mask and checks the saved PNG."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from nodegraph import Session
from nodegraph.plugins import load_registry
from ui.app import build_app, create_server
from ui.inputs import MAX_INPUT_BYTES, MAX_PIXELS

from .browser import chromium, editor_page

INPUT = Path(__file__).resolve().parents[1] / "workflows" / "inputs" / "shapes_red_circle.png"


def png(size=(8, 8), mode="RGB", colour=(200, 10, 10), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("work")
    folders = {"root": root, "inputs": root / "inputs", "workflows": root / "workflows",
               "outside": tmp_path_factory.mktemp("outside")}
    folders["workflows"].mkdir()
    shutil.copy(INPUT, root / "picture.png")
    Image.new("RGB", (4, 4)).save(folders["outside"] / "secret.png")
    (root / "notes.txt").write_text("not an image")
    paint = {"format": "nodegraph/workflow", "version": 1, "name": "paint", "nodes": {
        "image": {"type": "core/paint_mask", "inputs": {"path": str(root / "picture.png")}},
        "show": {"type": "core/preview_image", "inputs": {"images": {"from": "image", "output": "mask"}}}},
        "ui": {"positions": {"image": [40, 20], "show": [420, 20]}}}
    (folders["workflows"] / "paint.json").write_text(json.dumps(paint))
    return folders


@pytest.fixture(scope="module")
def session(folders, tmp_path_factory) -> Session:
    registry, _ = load_registry(entry_points=False)
    return Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"), read_roots=[folders["root"]])


@pytest.fixture(scope="module")
def client(session, folders):
    blocks = build_app(session, workflows_dir=folders["workflows"], inputs_dir=folders["inputs"])
    with TestClient(create_server(blocks), base_url="http://127.0.0.1:7860") as test_client:
        yield test_client


def upload(client, body: bytes, **params):
    return client.post("/api/inputs", params=params, content=body, headers={"Content-Type": "image/png"})


def test_upload_stores_a_png_in_the_inputs_folder_under_its_content_hash(client, folders):
    first = upload(client, png(), name="../../evil name.png")
    assert first.status_code == 200, first.text
    stored = Path(first.json()["path"])
    assert stored.parent == folders["inputs"] and stored.name.startswith("evil_name_") and stored.suffix == ".png"
    assert upload(client, png(), name="other").json()["path"].endswith(stored.name.split("_")[-1])  # same content
    with Image.open(stored) as image:
        assert image.format == "PNG" and image.size == (8, 8)
    jpeg = upload(client, png(fmt="JPEG"), name="photo.jpg").json()["path"]
    with Image.open(jpeg) as image:
        assert image.format == "PNG"  # re-encoded, never the posted bytes


def test_masks_are_stored_grey(client):
    stored = upload(client, png(mode="RGBA", colour=(255, 255, 255, 255)), kind="mask").json()["path"]
    with Image.open(stored) as image:
        assert image.mode == "L" and image.getpixel((0, 0)) == 255


def test_uploads_that_are_not_small_images_are_refused(client, folders):
    before = sorted(folders["inputs"].glob("*")) if folders["inputs"].exists() else []
    assert upload(client, b"GIF89a" + b"\0" * 64).status_code == 422
    assert upload(client, b"<svg xmlns='http://www.w3.org/2000/svg'/>").status_code == 422
    buffer = io.BytesIO()
    Image.new("1", (8, 8)).save(buffer, format="GIF")
    assert upload(client, buffer.getvalue()).status_code == 422  # a real image, but not PNG/JPEG/WebP
    side = int(MAX_PIXELS ** 0.5) + 1
    huge = upload(client, png(size=(side, side), mode="L", colour=0))
    assert huge.status_code == 422 and "pixels" in huge.text
    assert upload(client, b"\x89PNG" + b"\0" * (MAX_INPUT_BYTES + 10)).status_code == 413
    assert upload(client, png(), kind="script").status_code == 400
    after = sorted(folders["inputs"].glob("*")) if folders["inputs"].exists() else []
    assert after == before


def test_the_editor_sees_only_images_a_run_could_read(client, folders):
    shown = client.get("/api/image", params={"path": str(folders["root"] / "picture.png")})
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(shown.content)) as image:
        assert image.size == (32, 32)
    for refused in (str(folders["outside"] / "secret.png"), "/etc/passwd", str(folders["root"] / "notes.txt"),
                    str(folders["root"] / "missing.png"), str(folders["root"] / ".." / "x.png")):
        assert client.get("/api/image", params={"path": refused}).status_code == 404, refused


def test_an_inputs_folder_outside_the_read_roots_is_reported(session, folders, tmp_path):
    blocks = build_app(session, workflows_dir=folders["workflows"], inputs_dir=tmp_path / "elsewhere")
    with TestClient(create_server(blocks), base_url="http://127.0.0.1:7860") as other:
        answer = upload(other, png())
    assert answer.status_code == 409 and "not readable by workflows" in answer.text


# ---------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def server(session, folders):
    from ui.serve import BackgroundServer

    blocks = build_app(session, workflows_dir=folders["workflows"], inputs_dir=folders["inputs"])
    running = BackgroundServer(create_server(blocks)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser, editor_page(browser, server.url, 1400, 900) as tab:
        yield tab


def mask_value(page) -> str | None:
    return page.evaluate("NG.app.graph.toJSON().nodes.image.inputs.mask")


def stroke(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()


@pytest.mark.browser
def test_paint_a_mask_in_the_editor_and_run_it(page, folders, tmp_path):
    page.select_option(".ng-open", "paint.json")
    editor = '.ng-node[data-id="image"] .ng-mask-editor'
    page.wait_for_selector(f'{editor}[data-ready="true"]', timeout=20_000)
    box = page.locator(f"{editor} .ng-mask-view").bounding_box()
    assert box is not None and box["width"] > 100
    scale = box["width"] / 32  # image pixels -> screen pixels
    at = lambda x, y: (box["x"] + x * scale, box["y"] + y * scale)  # noqa: E731
    page.fill(f"{editor} .ng-mask-size", "4")
    page.dispatch_event(f"{editor} .ng-mask-size", "input")
    stroke(page, at(4, 16), at(28, 16))  # a horizontal stroke 4 px wide across row 16
    page.wait_for_function("NG.app.graph.toJSON().nodes.image.inputs.mask !== undefined", timeout=10_000)
    first = mask_value(page)
    with Image.open(first) as image:
        mask = image.convert("L")
    assert mask.size == (32, 32) and Path(first).parent == folders["inputs"]
    assert all(mask.getpixel((x, 16)) > 200 for x in range(6, 27))  # the stroke is painted
    assert mask.getpixel((16, 5)) == 0 and mask.getpixel((16, 27)) == 0  # away from it nothing is
    painted = sum(1 for x in range(32) for y in range(32) if mask.getpixel((x, y)) > 127)
    assert 70 < painted < 160  # about 24 x 4 plus round caps

    page.click(f'{editor} .ng-tool[data-tool="eraser"]')
    page.fill(f"{editor} .ng-mask-size", "8")
    page.dispatch_event(f"{editor} .ng-mask-size", "input")
    stroke(page, at(16, 8), at(16, 24))  # erase a vertical band through the middle
    page.wait_for_function(f"NG.app.graph.toJSON().nodes.image.inputs.mask !== {json.dumps(first)}", timeout=10_000)
    with Image.open(mask_value(page)) as image:
        erased = image.convert("L")
    assert erased.getpixel((16, 16)) == 0 and erased.getpixel((8, 16)) > 200 and erased.getpixel((25, 16)) > 200

    page.click(".ng-run")
    page.wait_for_selector('.ng-node[data-id="show"] .ng-output-image', timeout=60_000)
    page.screenshot(path=str(tmp_path / "mask_editor.png"))
    if os.environ.get("NODEGRAPH_UI_SCREENSHOT"):
        page.screenshot(path=os.environ["NODEGRAPH_UI_SCREENSHOT"].replace(".png", "_mask.png"))
    page.evaluate("NG.app.canvas.render()")  # a redrawn node reads the painted mask back from its file
    page.wait_for_selector(f'{editor}[data-ready="true"]', timeout=20_000)
    alpha = page.evaluate(f"""[[8, 16], [16, 16]].map(([x, y]) => document.querySelector('{editor} .ng-mask-view')
        .getContext('2d').getImageData(x, y, 1, 1).data[3])""")
    assert alpha[0] > 200 and alpha[1] == 0
