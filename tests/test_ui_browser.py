"""Drive the editor in headless Chromium (Debian's /usr/bin/chromium; never a downloaded browser).

Builds seed -> random_tensor -> to_image -> preview_image from an empty canvas through the UI,
runs it, checks the image, a refused connection, undo/redo, deletion, caching on re-run, and the
marking of an invalid workflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph import Session, Workflow
from nodegraph.plugins import load_registry
from nodes.api import Solver
from nodes.solvers import midpoint

from .browser import chromium, editor_page, require_chromium
from .test_ui_api import slow_graph, slow_images

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from ui.app import build_app, create_server
    from ui.serve import BackgroundServer

    folder = tmp_path_factory.mktemp("workflows")
    broken = {"nodes": {
        "noise": {"type": "core/random_tensor", "inputs": {"shape": [1, 3, 8, 8]}},
        "image": {"type": "core/to_image",
                  "inputs": {"mode": "sideways", "tensor": {"from": "noise", "output": "tensor"}}},
        "mystery": {"type": "core/no_such_node", "inputs": {}},
    }}
    (folder / "broken.json").write_text(json.dumps(broken))
    default = Path(__file__).resolve().parent.parent / "workflows" / "default.json"
    if default.exists():
        (folder / "default.json").write_text(default.read_text())
    registry, _ = load_registry(entry_points=False)
    tests = registry.registrar("tests")
    tests.add_node(slow_images)
    tests.add_component("solver", "plugin_midpoint", Solver("plugin_midpoint", midpoint))  # a plugin's solver
    session = Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"))
    blocks = build_app(session, workflows_dir=folder, data_dir=tmp_path_factory.mktemp("data"))
    running = BackgroundServer(create_server(blocks)).start()
    yield running
    running.stop()
    blocks.nodegraph_context.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


@pytest.fixture()
def page(browser, server):
    with editor_page(browser, server.url) as tab:
        yield tab


def add_node(page, query: str, x: float, y: float) -> str:
    """Double-click the canvas, search, press Enter; returns the new node's id."""
    before = set(page.eval_on_selector_all(".ng-node", "els => els.map(e => e.dataset.id)"))
    page.mouse.dblclick(x, y)
    page.fill(".ng-palette-search", query)
    page.press(".ng-palette-search", "Enter")
    after = set(page.eval_on_selector_all(".ng-node", "els => els.map(e => e.dataset.id)"))
    (new,) = after - before
    return new


def centre(page, selector: str) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def connect(page, src: str, output: str, dst: str, input_name: str) -> None:
    page.mouse.move(*centre(page, f'.ng-node[data-id="{src}"] .ng-socket[data-kind="out"][data-name="{output}"]'))
    page.mouse.down()
    target = centre(page, f'.ng-node[data-id="{dst}"] .ng-in[data-input="{input_name}"] .ng-socket')
    page.mouse.move(target[0] - 30, target[1] - 10, steps=5)
    page.mouse.move(*target, steps=3)
    page.mouse.up()


def workflow(page) -> dict:
    return page.evaluate("NG.app.graph.toJSON()")


def test_build_run_and_rerun_from_an_empty_canvas(page, tmp_path):
    canvas = page.locator(".ng-canvas").bounding_box()
    left, top = canvas["x"], canvas["y"]
    seed = add_node(page, "seed", left + 30, top + 60)
    noise = add_node(page, "random tensor", left + 300, top + 60)
    image = add_node(page, "tensor to image", left + 580, top + 60)
    show = add_node(page, "preview", left + 580, top + 300)
    assert (seed, noise, image, show) == ("seed", "random_tensor", "to_image", "preview_image")
    assert page.get_attribute('.ng-node[data-id="seed"] .ng-header', "title").startswith("core/seed\n\nA random seed")

    connect(page, seed, "int", noise, "seed")
    connect(page, noise, "tensor", show, "images")  # TENSOR into an IMAGE input: refused, with the reason
    toast = page.locator(".ng-toast.ng-show")
    toast.wait_for()
    assert "Refused" in toast.inner_text() and "TENSOR" in toast.inner_text() and "IMAGE" in toast.inner_text()
    assert "images" not in workflow(page)["nodes"][show]["inputs"]
    connect(page, noise, "tensor", image, "tensor")
    connect(page, image, "image", show, "images")
    links = workflow(page)["nodes"]
    assert links[noise]["inputs"]["seed"] == {"from": "seed", "output": "int"}
    assert links[show]["inputs"]["images"] == {"from": "to_image", "output": "image"}
    assert page.locator(f'.ng-node[data-id="{noise}"] .ng-in[data-input="seed"] .ng-widget').count() == 0  # socket now

    shape = page.locator(f'.ng-node[data-id="{noise}"] .ng-in[data-input="shape"] input')
    shape.fill("[2, 3, 16, 16]")
    shape.press("Enter")
    page.select_option(f'.ng-node[data-id="{image}"] .ng-in[data-input="mode"] select', "minmax")
    data = workflow(page)
    assert data["nodes"][noise]["inputs"]["shape"] == [2, 3, 16, 16]
    assert data["nodes"][image]["inputs"]["mode"] == "minmax"
    assert set(data["ui"]["positions"]) == {seed, noise, image, show}

    page.click("button.ng-run")
    images = page.locator(f'.ng-node[data-id="{show}"] img.ng-output-image')
    images.first.wait_for(timeout=30_000)
    assert images.count() == 2
    assert images.first.evaluate("img => img.complete && img.naturalWidth") == 16
    assert page.locator(".ng-gallery img").count() == 2
    page.screenshot(path=str(tmp_path / "editor.png"))
    if os.environ.get("NODEGRAPH_UI_SCREENSHOT"):
        page.screenshot(path=os.environ["NODEGRAPH_UI_SCREENSHOT"])

    page.select_option(f'.ng-node[data-id="{image}"] .ng-in[data-input="mode"] select', "clamp")
    page.click("button.ng-run")
    page.wait_for_function("document.querySelector('.ng-side .ng-run-status').textContent.includes(', cached 1')",
                           timeout=30_000)
    assert page.locator(".ng-node.ng-cached").evaluate_all("els => els.map(e => e.dataset.id)") == [noise]
    assert "ran 2" in page.inner_text(".ng-side .ng-run-status")


def test_search_ranks_exact_and_prefix_matches_of_names_first(page):
    canvas = page.locator(".ng-canvas").bounding_box()
    page.mouse.dblclick(canvas["x"] + 200, canvas["y"] + 200)

    def first(query: str, count: int = 1) -> list[str]:
        page.fill(".ng-palette-search", query)
        return page.eval_on_selector_all(".ng-palette-item", f"els => els.slice(0, {count}).map(e => e.dataset.type)")

    assert first("seed", 2) == ["core/seed", "core/seeds"]  # exact, then prefix
    assert first("ode") == ["core/ode_solve"]  # "ODE solver" starts with it
    assert first("probability path") == ["core/path"]
    assert first("ode solver") == ["core/ode_solve"]
    page.keyboard.press("Escape")


def test_bypass_and_mute_from_the_keyboard_are_saved_shown_and_run_headless(page, tmp_path):
    canvas = page.locator(".ng-canvas").bounding_box()
    a = add_node(page, "integer", canvas["x"] + 40, canvas["y"] + 40)
    page.click(f'.ng-node[data-id="{a}"] .ng-title')
    page.keyboard.press("Control+b")
    assert workflow(page)["nodes"][a]["mode"] == "bypass"
    box = page.locator(f'.ng-node[data-id="{a}"]')
    assert "ng-mode-bypass" in box.get_attribute("class") and box.locator(".ng-mode").inner_text() == "bypassed"
    page.keyboard.press("Control+m")
    assert workflow(page)["nodes"][a]["mode"] == "mute" and box.locator(".ng-mode").inner_text() == "muted"
    page.screenshot(path=str(tmp_path / "muted.png"))
    saved = workflow(page)
    page.keyboard.press("Control+m")
    assert "mode" not in workflow(page)["nodes"][a]  # toggled back: active
    page.keyboard.press("Control+z")
    assert workflow(page)["nodes"][a]["mode"] == "mute"  # one undo step each
    # the saved file runs headless with the node skipped
    events = []
    Session(device="cpu").run(Workflow.from_dict(saved), on_event=events.append)
    assert [(e.kind, e.node, e.message) for e in events if e.kind == "node_skipped"] == [("node_skipped", a, "muted")]


def test_the_editor_keeps_subgraphs_and_modes_it_loads(page):
    data = {"format": "nodegraph/workflow", "version": 1, "name": "sub", "nodes": {
                "s": {"type": "subgraph/twice", "inputs": {"x": 2}},
                "m": {"type": "core/float", "inputs": {"value": 1.0}, "mode": "mute"}},
            "subgraphs": {"twice": {"nodes": {"f": {"type": "core/float", "inputs": {"value": 1.0}}},
                                    "inputs": {"x": {"node": "f", "input": "value"}},
                                    "outputs": {"y": {"node": "f", "output": "float"}}}}}
    page.evaluate("data => NG.app.graph.load(data)", data)
    saved = workflow(page)
    assert saved["subgraphs"] == data["subgraphs"] and saved["nodes"]["m"]["mode"] == "mute"
    assert saved["nodes"]["s"] == {"type": "subgraph/twice", "inputs": {"x": 2}}


def test_undo_redo_delete_and_multiselect_move(page):
    canvas = page.locator(".ng-canvas").bounding_box()
    a = add_node(page, "integer", canvas["x"] + 40, canvas["y"] + 40)
    b = add_node(page, "float", canvas["x"] + 40, canvas["y"] + 260)
    page.click(".ng-canvas", position={"x": 700, "y": 600})
    page.keyboard.press("Control+z")
    assert page.locator(f'.ng-node[data-id="{b}"]').count() == 0
    page.keyboard.press("Control+Shift+z")
    assert page.locator(f'.ng-node[data-id="{b}"]').count() == 1

    before = workflow(page)["ui"]["positions"]
    page.keyboard.press("Control+a")
    x, y = centre(page, f'.ng-node[data-id="{a}"] .ng-title')
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 100, y + 50, steps=5)
    page.mouse.up()
    after = workflow(page)["ui"]["positions"]
    for node_id in (a, b):
        assert after[node_id][0] - before[node_id][0] == pytest.approx(100, abs=2)
        assert after[node_id][1] - before[node_id][1] == pytest.approx(50, abs=2)

    page.click(f'.ng-node[data-id="{a}"] .ng-title')
    page.keyboard.press("Delete")
    assert list(workflow(page)["nodes"]) == [b]
    page.keyboard.press("Control+z")
    assert sorted(workflow(page)["nodes"]) == sorted([a, b])


def test_opened_workflow_with_errors_marks_nodes_and_inputs(page):
    page.select_option("select.ng-open", "broken.json")
    page.wait_for_selector('.ng-node[data-id="image"].ng-invalid', timeout=10_000)
    row = page.locator('.ng-node[data-id="image"] .ng-in[data-input="mode"]')
    assert "ng-row-invalid" in row.get_attribute("class")
    assert "sideways" in row.inner_text()
    mystery = page.locator('.ng-node[data-id="mystery"]')
    assert "ng-invalid" in mystery.get_attribute("class") and "unknown node type" in mystery.inner_text()
    page.click("button.ng-run")
    page.wait_for_selector(".ng-run-status.ng-error")
    assert "not run" in page.inner_text(".ng-side .ng-run-status")
    assert page.locator(".ng-output-image").count() == 0


def test_uploaded_long_run_shows_progress_preview_and_cancels(page, tmp_path):
    upload = tmp_path / "slow.json"
    upload.write_text(json.dumps(slow_graph(50)))  # holds after its steps until cancelled
    page.set_input_files("input.ng-upload-input", str(upload))
    page.wait_for_selector('.ng-node[data-id="show"]')
    page.click("button.ng-run")
    page.wait_for_selector('.ng-node[data-id="slow"].ng-running .ng-progress.ng-show', timeout=20_000)
    page.wait_for_selector("img.ng-preview.ng-show")
    page.wait_for_function("document.querySelector('.ng-progress-bar').style.width !== '0%'")
    assert "step" in page.inner_text(".ng-side .ng-run-status")
    page.click("button.ng-cancel")
    page.wait_for_function("document.querySelector('.ng-side .ng-run-status').textContent.includes('cancelled')",
                           timeout=20_000)
    assert page.locator(".ng-output-image").count() == 0


def test_default_workflow_opens_valid_with_every_link_drawn(page, server):
    names = page.eval_on_selector_all("select.ng-open option", "els => els.map(e => e.value)")
    if "default.json" not in names:
        pytest.skip("workflows/default.json is not there yet")
    page.select_option("select.ng-open", "default.json")
    page.wait_for_selector(".ng-side .ng-run-status.ng-ok, .ng-side .ng-run-status.ng-error")
    data = workflow(page)
    assert page.locator(".ng-node").count() == len(data["nodes"])
    assert page.locator(".ng-invalid").count() == 0, page.inner_text(".ng-problem-list")
    links = sum(1 for n in data["nodes"].values() for v in n["inputs"].values() if isinstance(v, dict) and "from" in v)
    assert page.locator("path.ng-link").count() == links
    if os.environ.get("NODEGRAPH_UI_SCREENSHOT"):
        page.screenshot(path=os.environ["NODEGRAPH_UI_SCREENSHOT"].replace(".png", "_default.png"))
    with page.expect_download() as info:
        page.click("text=Download")
    saved = json.loads(Path(info.value.path()).read_text())
    assert info.value.suggested_filename == "default.json"
    assert saved == data and set(saved["ui"]["positions"]) == set(data["nodes"])


def test_missing_chromium_fails_under_ci_and_skips_locally(tmp_path):
    missing = str(tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_chromium(missing, ci="true")
    with pytest.raises(pytest.skip.Exception):
        require_chromium(missing, ci="")
    require_chromium(sys.executable, ci="true")  # present: nothing to say


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_browser_fails_loudly_under_ci_when_chromium_cannot_be_installed(tmp_path):
    """A PATH with neither chromium nor apt-get: CI=true must fail the target; locally it only warns."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").symlink_to(shutil.which("id"))
    root = Path(__file__).resolve().parent.parent
    make = [shutil.which("make"), "-s", "-C", str(root), "browser"]
    ci = subprocess.run(make, env={"PATH": str(bin_dir), "CI": "true"}, capture_output=True, text=True)
    assert ci.returncode != 0 and "chromium is missing" in ci.stderr
    local = subprocess.run(make, env={"PATH": str(bin_dir)}, capture_output=True, text=True)
    assert local.returncode == 0 and "will be skipped" in local.stdout


def _toy_solve_graph() -> dict:
    def link(source: str, output: str) -> dict:
        return {"from": source, "output": output}

    nodes = {
        "mixture": {"type": "core/toy_mixture", "inputs": {"components": 4, "num_classes": 1}},
        "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
        "field": {"type": "core/toy_field", "inputs": {"mixture": link("mixture", "mixture"),
                                                      "path": link("path", "path")}},
        "noise": {"type": "core/noise", "inputs": {"shape": [64, 2], "seed": 0}},
        "grid": {"type": "core/uniform_grid", "inputs": {"steps": 4}},
        "solve": {"type": "core/ode_solve", "inputs": {"field": link("field", "vector_field"),
                                                      "noise": link("noise", "latent"),
                                                      "grid": link("grid", "time_grid")}},
        "plot": {"type": "core/plot_2d", "inputs": {"points": link("solve", "latent"), "size": 128}},
        "show": {"type": "core/preview_image", "inputs": {"images": link("plot", "image")}},
    }
    positions = {"mixture": [20, 20], "path": [20, 250], "field": [280, 20], "noise": [280, 200],
                 "grid": [280, 330], "solve": [540, 20], "plot": [800, 20], "show": [800, 300]}
    return {"format": "nodegraph/workflow", "version": 1, "name": "solvers", "nodes": nodes,
            "ui": {"positions": positions}}


def test_plugin_solvers_are_in_the_dropdown_and_a_solver_node_links_into_method(page, tmp_path):
    upload = tmp_path / "solvers.json"
    upload.write_text(json.dumps(_toy_solve_graph()))
    page.set_input_files("input.ng-upload-input", str(upload))
    method = '.ng-node[data-id="solve"] .ng-in[data-input="method"]'
    page.wait_for_selector(f"{method} select")
    options = page.eval_on_selector_all(f"{method} option", "els => els.map(e => e.textContent)")
    assert options[:6] == ["euler", "heun", "midpoint", "rk4", "dopri5", "ddim"] and "plugin_midpoint" in options
    inputs = page.eval_on_selector_all('.ng-node[data-id="solve"] .ng-in', "els => els.map(e => e.dataset.input)")
    assert "rtol" not in inputs and "atol" not in inputs  # dopri5's options are on its own node
    page.select_option(f"{method} select", "plugin_midpoint")
    assert workflow(page)["nodes"]["solve"]["inputs"]["method"] == "plugin_midpoint"
    page.click("button.ng-run")
    page.locator('.ng-node[data-id="show"] img.ng-output-image').first.wait_for(timeout=30_000)

    canvas = page.locator(".ng-canvas").bounding_box()
    adaptive = add_node(page, "adaptive solver", canvas["x"] + 40, canvas["y"] + canvas["height"] - 60)
    connect(page, adaptive, "solver", "solve", "method")
    data = workflow(page)
    assert data["nodes"]["solve"]["inputs"]["method"] == {"from": adaptive, "output": "solver"}
    assert page.locator(f"{method} select").count() == 0  # a linked choice shows the link, not the dropdown
    connect(page, "noise", "latent", "solve", "method")  # a tensor is no solver: refused with the reason
    toast = page.locator(".ng-toast.ng-show")
    toast.wait_for()
    assert "LATENT" in toast.inner_text() and "SOLVER" in toast.inner_text()
    page.click("button.ng-run")
    page.wait_for_function("document.querySelector('.ng-side .ng-run-status').textContent.includes('ran')",
                           timeout=30_000)
    assert page.locator(".ng-invalid").count() == 0
    page.screenshot(path=str(tmp_path / "solvers.png"))
    if os.environ.get("NODEGRAPH_UI_SCREENSHOT"):
        page.screenshot(path=os.environ["NODEGRAPH_UI_SCREENSHOT"].replace(".png", "_solvers.png"))


def test_token_mode_page_loads_from_the_printed_url_and_runs(browser, tmp_path_factory):
    """A server in token mode (forced by configuration, bound to 127.0.0.1): the bare URL is refused,
    the printed `?token=` URL loads the editor (the token moves to a cookie) and a run works."""
    from ui.app import build_app, create_server, start_url
    from ui.guard import GuardConfig
    from ui.serve import BackgroundServer

    registry, _ = load_registry(entry_points=False)
    session = Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"))
    config = GuardConfig(token="browser-token-0123456789")
    blocks = build_app(session, workflows_dir=tmp_path_factory.mktemp("wf"), data_dir=tmp_path_factory.mktemp("data"))
    running = BackgroundServer(create_server(blocks, config)).start()
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        assert page.goto(running.url + "/").status == 401
        page.goto(start_url("127.0.0.1", running.port, config))
        page.wait_for_selector("#ng-root[data-ready=true]", timeout=30_000)
        assert "token" not in page.url
        upload = tmp_path_factory.mktemp("upload") / "small.json"
        upload.write_text(json.dumps({"nodes": {
            "noise": {"type": "core/random_tensor", "inputs": {"shape": [1, 3, 8, 8], "seed": 1}},
            "image": {"type": "core/to_image", "inputs": {"tensor": {"from": "noise", "output": "tensor"}}},
            "show": {"type": "core/preview_image", "inputs": {"images": {"from": "image", "output": "image"}}}}}))
        page.set_input_files("input.ng-upload-input", str(upload))
        page.wait_for_selector('.ng-node[data-id="show"]')
        page.click("button.ng-run")
        image = page.locator('.ng-node[data-id="show"] img.ng-output-image').first
        image.wait_for(timeout=30_000)
        assert image.evaluate("img => img.complete && img.naturalWidth") == 8  # <img> loads with cookie + run key
        if os.environ.get("NODEGRAPH_UI_SCREENSHOT"):
            page.screenshot(path=os.environ["NODEGRAPH_UI_SCREENSHOT"].replace(".png", "_token.png"))
    finally:
        context.close()
        running.stop()
        blocks.nodegraph_context.close()
