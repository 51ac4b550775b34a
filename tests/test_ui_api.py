"""The editor's JSON endpoints, its runs (jobs of the queue) and the `run_workflow` Gradio endpoint,
against the real app and server."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from nodegraph import Context, Session, can_connect, node
from nodegraph.plugins import load_registry
from nodes.sockets import IMAGE
from ui.api import MAX_UPLOAD_BYTES
from ui.app import build_app, create_server, run_workflow_json
from ui.serve import BackgroundServer


@node("test/slow_images", category="test", display_name="Slow images")
def slow_images(ctx: Context, steps: int = 50, hold: bool = False) -> IMAGE:
    """Reports `steps` progress events (each with a preview image); with `hold`, then waits until the run
    is cancelled (at most a minute), so a test can cancel it mid-node without racing a timer."""
    import torch

    image = torch.zeros(1, 3, 8, 8)
    for step in range(1, steps + 1):
        image[:, 0] = step / steps
        ctx.progress(step, steps, preview=image.clone())
    if hold:
        ctx.cancel_token.wait(timeout=60)
        ctx.check_cancelled()
    return image


GATE = SimpleNamespace(entered=threading.Event(), release=threading.Event())
"""What `test/held` signals (`entered`) and waits for (`release`, set by the test)."""


@node("test/held", category="test")
def held(value: float = 1.0) -> float:
    """Waits until the test sets GATE.release (at most a minute), then passes `value` on."""
    GATE.entered.set()
    GATE.release.wait(timeout=60)
    return value


@node("test/increment", category="test")
def increment(value: float) -> float:
    return value + 1


def slow_graph(steps: int, hold: bool = True) -> dict:
    """test/slow_images -> preview_image (holding, by default, until cancelled)."""
    show = {"images": {"from": "slow", "output": "image"}}
    return {"nodes": {"slow": {"type": "test/slow_images", "inputs": {"steps": steps, "hold": hold}},
                      "show": {"type": "core/preview_image", "inputs": show}}}


def graph(size: int = 16, mode: str = "minmax", seed: int = 3) -> dict:
    """seed -> random_tensor -> to_image -> preview_image."""
    return {"format": "nodegraph/workflow", "version": 1, "name": "t", "nodes": {
        "seed": {"type": "core/seed", "inputs": {"seed": seed}},
        "noise": {"type": "core/random_tensor", "inputs": {"shape": [2, 3, size, size],
                                                           "seed": {"from": "seed", "output": "int"}}},
        "image": {"type": "core/to_image", "inputs": {"mode": mode, "tensor": {"from": "noise", "output": "tensor"}}},
        "show": {"type": "core/preview_image", "inputs": {"images": {"from": "image", "output": "image"}}},
    }, "ui": {"positions": {"seed": [0, 0]}}}


@pytest.fixture(scope="module")
def registry():
    reg, report = load_registry(entry_points=False)
    reg.registrar("tests").add_nodes([slow_images, held, increment])
    return reg


@pytest.fixture(scope="module")
def workflows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "good.json").write_text(json.dumps(graph()))
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.json").write_text(json.dumps(graph(8)))
    (folder / "broken.json").write_text("{not json")
    outside = tmp_path_factory.mktemp("outside") / "secret.json"
    outside.write_text(json.dumps(graph()))
    (folder / "link.json").symlink_to(outside)
    return folder


@pytest.fixture(scope="module")
def blocks(registry, workflows_dir, tmp_path_factory):
    session = Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"))
    blocks = build_app(session, workflows_dir=workflows_dir, data_dir=tmp_path_factory.mktemp("data"))
    yield blocks
    blocks.nodegraph_context.close()


@pytest.fixture(scope="module")
def client(blocks):
    with TestClient(create_server(blocks), base_url="http://127.0.0.1:7860") as test_client:
        yield test_client


def start_run(client: TestClient, workflow: dict) -> tuple[int, dict[str, str]]:
    """Submit a job as the editor does; returns its id and the header that opens it (the job's key)."""
    started = client.post("/api/jobs", json={"workflow": workflow})
    assert started.status_code == 201, started.text
    return started.json()["id"], {"X-Job-Key": started.json()["key"]}


def wait_until(jobs, predicate, timeout: float = 30) -> None:
    """Wait on the queue's change counter (no sleeps) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while True:
        seen = jobs.changes.version
        if predicate():
            return
        remaining = deadline - time.monotonic()
        assert remaining > 0, "timed out"
        jobs.changes.wait(seen, remaining)


def read_events(client: TestClient, job: int, key: dict[str, str]) -> list[dict]:
    """The job's whole event stream (SSE), for a job that has finished (the stream then ends)."""
    response = client.get(f"/api/jobs/{job}/events", headers=key)
    assert response.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


def read_events_so_far(jobs, run: int) -> list[dict]:
    return [e for _, e in jobs.events(run)]


def run_to_end(client: TestClient, workflow: dict, timeout: float = 30) -> tuple[int, dict[str, str], list[dict]]:
    run, key = start_run(client, workflow)
    jobs = client.app.state.nodegraph_context.jobs
    assert jobs.wait(run, timeout).status in ("done", "failed", "cancelled")
    return run, key, read_events(client, run, key)


def test_nodes_payload_matches_registry_and_link_rule(client, registry):
    payload = client.get("/api/nodes").json()
    assert payload["nodes"]["core/to_image"] == registry.nodes["core/to_image"].schema()
    mode = payload["nodes"]["core/to_image"]["inputs"]["mode"]["schema"]
    assert set(mode["enum"]) == {"symmetric", "minmax", "clamp"}
    types = payload["types"]
    assert types["IMAGE"]["color"] == registry.types["IMAGE"].color

    def browser_rule(out: str, inp: str) -> bool:  # the rule graph.js applies to the lineage it receives
        return out == "ANY" or inp == "ANY" or (inp == "FLOAT" and out == "INT") or inp in types[out]["lineage"]

    for out in registry.types.values():
        for inp in registry.types.values():
            assert browser_rule(out.name, inp.name) == can_connect(out, inp), (out.name, inp.name)


def test_workflow_listing_and_opening_stay_inside_the_folder(client):
    listing = client.get("/api/workflows").json()
    assert "good.json" in listing["workflows"] and "sub/nested.json" in listing["workflows"]
    opened = client.get("/api/workflows/sub/nested.json").json()
    assert opened["workflow"]["nodes"]["noise"]["inputs"]["shape"] == [2, 3, 8, 8]
    assert client.get("/api/workflows/broken.json").status_code == 422
    for name in ("../outside/secret.json", "link.json", "%2Fetc%2Fpasswd", "..%2F..%2Fpyproject.toml", "good.txt"):
        response = client.get(f"/api/workflows/{name}")
        assert response.status_code in (400, 404), (name, response.status_code)


def test_validate_reports_problems_by_node_and_input(client):
    bad = graph(mode="sideways")
    bad["nodes"]["show"]["inputs"]["images"] = {"from": "noise", "output": "tensor"}
    result = client.post("/api/validate", json=bad).json()
    assert not result["ok"]
    where = {(p["node"], p["input"], p["kind"]) for p in result["problems"]}
    assert ("image", "mode", "bad_value") in where
    assert ("show", "images", "type_mismatch") in where
    assert client.post("/api/validate", content=b'{"nodes": ').status_code == 422
    assert client.post("/api/validate", content=b"[1, 2]").status_code == 422
    too_big = json.dumps({**graph(), "description": "x" * (MAX_UPLOAD_BYTES + 1)})
    assert client.post("/api/validate", content=too_big).status_code == 413


def test_invalid_workflow_is_not_run(client):
    bad = graph()
    bad["nodes"]["noise"]["type"] = "core/random_tensr"
    before = client.get("/api/jobs").json()["total"]
    result = client.post("/api/jobs", json={"workflow": bad})
    assert result.status_code == 422
    problem = result.json()["detail"]["problems"][0]
    assert problem["node"] == "noise" and "random_tensor" in problem["message"]
    assert client.get("/api/jobs").json()["total"] == before  # nothing queued


def test_run_streams_events_serves_pngs_and_reuses_the_cache(client):
    run, key, events = run_to_end(client, graph(size=16))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_start" and kinds[-2:] == ["run_done", "finished"]
    assert [e["node"] for e in events if e["kind"] == "node_start"] == ["seed", "noise", "image", "show"]
    job = client.get(f"/api/jobs/{run}", headers=key).json()
    assert job["status"] == "done" and [(f["node"], f["index"], f["kind"]) for f in job["files"]] == [
        ("show", 0, "preview"), ("show", 1, "preview")]
    assert job["outputs"]["show"]["image"]["shape"] == [2, 3, 16, 16]
    png = client.get(job["files"][1]["url"], params={"key": key["X-Job-Key"]})
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (16, 16)
    assert client.get(f"/api/jobs/{run}/outputs/show/2", headers=key).status_code == 404
    assert client.get(f"/api/jobs/{run}/outputs/show/0").status_code == 403  # no key: not this client's job

    run2, key2, events2 = run_to_end(client, graph(size=16, mode="clamp"))  # only to_image and below re-run
    job2 = client.get(f"/api/jobs/{run2}", headers=key2).json()
    assert sorted(job2["cached"]) == ["noise"] and job2["ran"] == ["image", "show"]
    assert {e["node"] for e in events2 if e["kind"] == "node_cached"} == {"noise"}


def test_progress_preview_queue_and_cancel(client):
    """A second Run while one runs is queued (not refused); cancelling it, it never starts; cancelling
    the running one stops it inside its node."""
    jobs = client.app.state.nodegraph_context.jobs
    run, key = start_run(client, slow_graph(40))
    wait_until(jobs, lambda: jobs.preview(run) is not None and any(
        e["kind"] == "progress" and e["step"] == 40 for _, e in jobs.events(run)))
    progress = [e for e in read_events_so_far(jobs, run) if e["kind"] == "progress"]
    assert progress[0]["total"] == 40 and progress[0]["preview"] is True
    preview = Image.open(io.BytesIO(client.get(f"/api/jobs/{run}/preview.png", headers=key).content))
    assert preview.size == (8, 8) and preview.getpixel((0, 0))[0] > 0
    second, key2 = start_run(client, graph(size=8, seed=4242))
    assert client.get(f"/api/jobs/{second}", headers=key2).json()["status"] == "queued"
    assert client.post(f"/api/jobs/{second}/cancel", headers=key2).json() == {"cancelled": True}
    assert client.post(f"/api/jobs/{run}/cancel", headers=key).json() == {"cancelled": True}
    assert jobs.wait(run, 20).status == "cancelled"
    events = read_events(client, run, key)
    assert "slow" not in {e.get("node") for e in events if e["kind"] == "node_done"}  # stopped inside the node
    assert events[-1] == {"kind": "finished", "status": "cancelled"}
    queued = client.get(f"/api/jobs/{second}", headers=key2).json()
    assert queued["status"] == "cancelled" and queued["started_at"] is None and queued["ran"] == []
    assert read_events(client, second, key2) == [{"kind": "finished", "status": "cancelled"}]


def test_cancelling_an_api_run_leaves_a_gradio_run_of_the_same_session_running(client, blocks, tmp_path):
    """The Gradio endpoint's job holds the queue; an /api job waits behind it and is cancelled by its
    client. Only that job stops: the Gradio job finishes, the /api job never starts a node."""
    context = blocks.nodegraph_context
    after = {"type": "test/increment", "inputs": {"value": {"from": "held", "output": "float"}}}
    held_graph = {"nodes": {"held": {"type": "test/held", "inputs": {"value": 2.0}}, "after": after}}
    answers = []
    GATE.entered.clear()
    GATE.release.clear()
    gradio_run = threading.Thread(target=lambda: answers.append(
        run_workflow_json(context.jobs, json.dumps(held_graph), tmp_path)))
    gradio_run.start()
    try:
        assert GATE.entered.wait(60)
        run, key = start_run(client, graph(size=8, seed=777))  # not cached: it has nodes to run
        assert client.post(f"/api/jobs/{run}/cancel", headers=key).json() == {"cancelled": True}
    finally:
        GATE.release.set()
        gradio_run.join(60)
    [(summary, _)] = answers
    assert summary["ok"] is True and summary["outputs"]["after"]["float"] == 3.0, summary
    api_job = client.get(f"/api/jobs/{run}", headers=key).json()
    assert api_job["status"] == "cancelled" and api_job["ran"] == [], api_job


def test_page_loads_the_editor_scripts(client):
    page = client.get("/").text
    for name in ("graph.js", "widgets.js", "canvas.js", "runner.js", "editor.js", "editor.css"):
        assert f"/ui-static/{name}" in page
        assert client.get(f"/ui-static/{name}").status_code == 200


def test_gradio_client_run_workflow_endpoint(blocks):
    from gradio_client import Client

    server = BackgroundServer(create_server(blocks)).start()
    try:
        api = Client(server.url + "/", verbose=False)
        summary, files = api.predict(json.dumps(graph(size=12, seed=11)), api_name="/run_workflow")
        assert summary["ok"] and summary["images"] == {"show": ["000.png", "001.png"]}
        assert len(files) == 2 and Image.open(files[0]).size == (12, 12)
        bad, none = api.predict(json.dumps({"nodes": {"x": {"type": "core/nope"}}}), api_name="/run_workflow")
        assert bad["ok"] is False and bad["problems"][0]["node"] == "x" and not none
    finally:
        server.stop()
