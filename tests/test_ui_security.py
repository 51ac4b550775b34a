"""The editor's server trusts no one by default: Host, Origin, token, per-job keys, bounded bodies.

Servers bind 127.0.0.1 only; token mode is forced by configuration. No sleeps: concurrency is
ordered with events, and every wait has a bound.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import ui.api
from nodegraph import Session
from nodegraph.plugins import load_registry
from ui.api import MAX_UPLOAD_BYTES
from ui.app import build_app, create_server, server_config, start_url
from ui.guard import Guard, GuardConfig
from ui.serve import BackgroundServer

from .test_ui_api import graph, slow_graph, slow_images, wait_until

TOKEN = "test-token-0123456789abcdef"
LOCAL = "http://127.0.0.1:7860"
WS = "ws://127.0.0.1:7860/ws-probe"


@pytest.fixture(scope="module")
def registry():
    reg, _ = load_registry(entry_points=False)
    reg.registrar("tests").add_node(slow_images)
    return reg


def make_blocks(registry, tmp_path_factory):
    session = Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"))
    return build_app(session, workflows_dir=tmp_path_factory.mktemp("workflows"),
                     data_dir=tmp_path_factory.mktemp("data"))


def add_probe_socket(app) -> None:
    """A WebSocket route, to show the guard covers WebSockets too (Gradio's own are mounted the same way)."""
    async def probe(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app.router.routes.insert(0, WebSocketRoute("/ws-probe", probe))  # before Gradio's mount at "/"


@pytest.fixture(scope="module")
def blocks(registry, tmp_path_factory):
    blocks = make_blocks(registry, tmp_path_factory)
    yield blocks
    blocks.nodegraph_context.close()


@pytest.fixture(scope="module")
def app(blocks):
    server = create_server(blocks)
    add_probe_socket(server)
    return server


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def token_blocks(registry, tmp_path_factory):
    blocks = make_blocks(registry, tmp_path_factory)
    yield blocks
    blocks.nodegraph_context.close()


@pytest.fixture(scope="module")
def token_app(token_blocks):
    server = create_server(token_blocks, GuardConfig(token=TOKEN, api_body_limit=MAX_UPLOAD_BYTES))
    add_probe_socket(server)
    return server


@pytest.fixture(scope="module")
def token_client(token_app):
    with TestClient(token_app, base_url=LOCAL) as test_client:
        yield test_client


def wait_idle(blocks) -> None:
    """Wait (bounded) for every queued or running job to end."""
    jobs = blocks.nodegraph_context.jobs
    for job in jobs.history(["queued", "running"])[0]:
        assert jobs.wait(job.id, 30).status not in ("queued", "running")


def job_count(blocks) -> int:
    return blocks.nodegraph_context.jobs.history()[1]


# -- Origin and Host ------------------------------------------------------------------------------

def test_cross_site_post_is_refused_and_runs_nothing(client, blocks):
    wait_idle(blocks)
    before = job_count(blocks)
    body = json.dumps(graph())
    job_body = json.dumps({"workflow": graph()})
    evil = client.post("/api/jobs", content=job_body, headers={"Origin": "https://evil.example",
                                                           "Content-Type": "text/plain"})
    assert evil.status_code == 403 and "cross-origin" in evil.json()["detail"]
    assert job_count(blocks) == before  # nothing queued
    for origin in ("null", "http://127.0.0.1:9999", "http://localhost:7860", "https://127.0.0.1:7860",
                   "http://127.0.0.1:7860.evil.example", "http://evil.example:7860"):
        response = client.post("/api/validate", content=body, headers={"Origin": origin})
        assert response.status_code == 403, origin
    # a form-style POST without Origin but marked cross-site by the browser
    marked = client.post("/api/jobs", content=job_body, headers={"Sec-Fetch-Site": "cross-site",
                                                             "Sec-Fetch-Mode": "no-cors"})
    assert marked.status_code == 403 and job_count(blocks) == before
    same = client.post("/api/validate", content=body, headers={"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200 and same.json()["ok"]


def test_bad_host_is_refused_on_every_kind_of_route(client):
    """DNS rebinding: evil.example resolving to 127.0.0.1 still sends Host: evil.example."""
    routes = ["/api/nodes", "/", "/ui-static/editor.js", "/gradio_api/info", "/config"]
    for path in routes:
        assert client.get(path).status_code != 403, path
        for host in ("evil.example:7860", "evil.example", "127.0.0.1.evil.example:7860", "", "127.0.0.1:0",
                     "localhost@evil.example"):
            response = client.get(path, headers={"Host": host})
            assert response.status_code == 403, (path, host, response.status_code)
    for host in ("localhost:7860", "[::1]:7860", "127.0.0.1"):
        assert client.get("/api/nodes", headers={"Host": host}).status_code == 200, host
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect(WS, headers={"Host": "evil.example"}):
            pass
    assert refused.value.code == 1008


def test_cross_origin_websocket_is_refused(client):
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect(WS, headers={"Origin": "https://evil.example"}):
            pass
    with client.websocket_connect(WS, headers={"Origin": LOCAL}) as ws:
        assert ws.receive_text() == "hello"


def test_cross_site_subresource_is_refused_but_navigation_is_not(client):
    run_png = client.get("/api/nodes", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
    assert run_png.status_code == 403
    page = client.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 200


# -- token ----------------------------------------------------------------------------------------

def test_token_missing_wrong_and_right(token_client):
    for path in ("/api/nodes", "/", "/ui-static/runner.js", "/gradio_api/info"):
        missing = token_client.get(path)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", path
        assert token_client.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert token_client.get(path, params={"token": TOKEN[:-1]}).status_code == 401
        assert token_client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
        assert token_client.get(path, headers={"X-Nodegraph-Token": TOKEN}).status_code == 200, path
    posted = token_client.post("/api/validate", json=graph())
    assert posted.status_code == 401
    assert token_client.post("/api/validate", json=graph(), headers={"Authorization": f"Bearer {TOKEN}"}).json()["ok"]
    # a right token does not excuse a wrong Origin
    evil = token_client.post("/api/validate", json=graph(), headers={"Authorization": f"Bearer {TOKEN}",
                                                                       "Origin": "https://evil.example"})
    assert evil.status_code == 403


def test_token_in_the_url_becomes_a_cookie_once(token_app):
    with TestClient(token_app, base_url=LOCAL, follow_redirects=False) as browser:
        first = browser.get("/", params={"token": TOKEN, "view": "x"}, headers={"Accept": "text/html"})
        assert first.status_code == 303 and first.headers["location"] == "/?view=x"  # token leaves the URL
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN in cookie
        assert browser.get("/").status_code == 200  # the cookie jar now carries it
        assert browser.get("/api/nodes").status_code == 200
        browser.cookies.clear()
        browser.cookies.set(cookie.split("=", 1)[0], "wrong-token-0123456789")
        assert browser.get("/api/nodes").status_code == 401


def test_token_guards_websockets(token_client):
    with pytest.raises(WebSocketDisconnect):
        with token_client.websocket_connect(WS):
            pass
    with pytest.raises(WebSocketDisconnect):
        with token_client.websocket_connect(WS, headers={"Authorization": "Bearer wrong-token-0123456789"}):
            pass
    with token_client.websocket_connect(WS, headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert ws.receive_text() == "hello"


def test_gradio_client_needs_the_token(token_blocks):
    from gradio_client import Client

    server = BackgroundServer(create_server(token_blocks, GuardConfig(token=TOKEN))).start()
    try:
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types
            Client(server.url + "/", verbose=False)
        api = Client(server.url + "/", verbose=False, headers={"Authorization": f"Bearer {TOKEN}"})
        summary, files = api.predict(json.dumps(graph(size=8)), api_name="/run_workflow")
        assert summary["ok"] and len(files) == 2
    finally:
        server.stop()


def test_non_loopback_bind_generates_a_token_and_prints_it(monkeypatch, tmp_path, capsys):
    config, generated = server_config("0.0.0.0", environ={})
    assert generated and config.token and len(config.token) >= 16
    assert f"?token={config.token}" in start_url("0.0.0.0", 7860, config)
    named, generated = server_config("192.0.2.7", environ={"NODEGRAPH_ALLOWED_HOSTS": "box.lan, other"})
    assert generated and {"192.0.2.7", "box.lan", "other"} <= named.hosts
    loop, generated = server_config("127.0.0.1", environ={})
    assert loop.token is None and not generated and start_url("127.0.0.1", 1, loop) == "http://127.0.0.1:1/"
    chosen, generated = server_config("127.0.0.1", environ={"NODEGRAPH_TOKEN": TOKEN})
    assert chosen.token == TOKEN and not generated  # optional on loopback
    assert server_config("0.0.0.0", token=TOKEN, environ={})[0].token == TOKEN
    with pytest.raises(ValueError, match="token"):
        GuardConfig(token="short")

    import uvicorn

    from ui.app import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))  # never binds
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NODEGRAPH_TOKEN", raising=False)
    main(None, host="0.0.0.0", port=8123)
    err = capsys.readouterr().err
    token = served["app"].state.nodegraph_guard.token
    assert token and f":8123/?token={token}" in err and served["host"] == "0.0.0.0"


# -- per-run control ------------------------------------------------------------------------------

def test_one_client_cannot_read_or_cancel_another_clients_run(app, blocks):
    jobs = blocks.nodegraph_context.jobs
    wait_idle(blocks)
    with TestClient(app, base_url=LOCAL) as alice, TestClient(app, base_url=LOCAL) as bob:
        started = alice.post("/api/jobs", json={"workflow": slow_graph(3)}).json()
        run, key = started["id"], started["key"]
        wait_until(jobs, lambda: jobs.get(run).status == "running")
        for headers in ({}, {"X-Job-Key": "guess"}, {"X-Job-Key": key[:-1]}):
            assert bob.post(f"/api/jobs/{run}/cancel", headers=headers).status_code == 403
            assert bob.get(f"/api/jobs/{run}/events", headers=headers).status_code == 403
            assert bob.get(f"/api/jobs/{run}", headers=headers).status_code == 403
            assert bob.get(f"/api/jobs/{run}/preview.png", headers=headers).status_code == 403
            assert bob.get(f"/api/jobs/{run}/outputs/show/0", headers=headers).status_code == 403
            assert bob.post(f"/api/jobs/{run}/requeue", headers=headers).status_code == 403
            assert bob.delete(f"/api/jobs/{run}", headers=headers).status_code == 403
        assert bob.post(f"/api/jobs/{run + 1000}/cancel").status_code == 404
        assert jobs.get(run).status == "running"  # bob did not stop it
        assert bob.post("/api/cancel").status_code in (404, 405)  # no server-wide cancel
        assert jobs.get(run).status == "running"
        assert alice.post(f"/api/jobs/{run}/cancel", params={"key": key}).json() == {"cancelled": True}
        assert jobs.wait(run, 30).status == "cancelled"
        assert alice.get(f"/api/jobs/{run}", headers={"X-Job-Key": key}).json()["status"] == "cancelled"
        assert alice.post(f"/api/jobs/{run}/cancel", headers={"X-Job-Key": key}).json() == {"cancelled": False}


# -- bounded bodies and a free event loop ---------------------------------------------------------

def test_streamed_body_is_cut_off_at_the_limit_without_reading_the_rest():
    """An endless chunked body: the guard answers 413 after limit + one chunk and reads no further."""
    limit, chunk = 10_000, 1_000
    pulled = 0
    sent: list[dict] = []

    async def endless() -> dict:
        nonlocal pulled
        pulled += 1
        more = pulled < 1000  # "endless" within a bound: 1 MB, 100 times the limit
        return {"type": "http.request", "body": b"x" * chunk, "more_body": more}

    async def reader(scope, receive, send) -> None:  # an app that reads its whole body first
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    async def record(message: dict) -> None:
        sent.append(message)

    guard = Guard(reader, GuardConfig(api_body_limit=limit))
    scope = {"type": "http", "method": "POST", "path": "/api/validate", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:7860"), (b"transfer-encoding", b"chunked")], "server": ("127.0.0.1", 1)}
    asyncio.run(asyncio.wait_for(guard(scope, endless, record), 10))
    assert sent[0]["status"] == 413 and len(sent) == 2
    assert pulled * chunk <= limit + chunk


def test_chunked_upload_over_the_limit_gets_413_before_it_ends(blocks):
    """Over a real socket: send limit + 128 KiB chunked, never finish the body, and read the answer."""
    server = BackgroundServer(create_server(blocks)).start()
    try:
        with socket.create_connection((server.host, server.port), timeout=30) as conn:
            conn.sendall(b"POST /api/validate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % server.port)
            piece = b"x" * 65536
            for _ in range(MAX_UPLOAD_BYTES // len(piece) + 2):
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            answer = conn.recv(4096)  # the body is still open: only a server that stopped reading answers
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        with socket.create_connection((server.host, server.port), timeout=30) as conn:
            conn.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n"
                         % (server.port, MAX_UPLOAD_BYTES + 1))
            assert conn.recv(4096).startswith(b"HTTP/1.1 413")  # refused before any byte of the body
    finally:
        server.stop()


def test_big_validation_does_not_block_other_requests(blocks, monkeypatch):
    """A 10,000-node workflow validates in a worker thread; a small request meanwhile is answered."""
    nodes = {f"n{i}": {"type": "core/seed", "inputs": {"seed": i}} for i in range(10_000)}
    body = json.dumps({"nodes": nodes})
    assert len(body) < MAX_UPLOAD_BYTES
    started, release = threading.Event(), threading.Event()
    real = ui.api.problems_of

    def held(workflow, session):
        started.set()
        release.wait(15)  # holds the thread it runs in: the event loop, if validation ran there
        return real(workflow, session)

    monkeypatch.setattr(ui.api, "problems_of", held)
    server = BackgroundServer(create_server(blocks)).start()
    result: dict = {}

    def validate() -> None:
        result["response"] = httpx.post(server.url + "/api/validate", content=body, timeout=60)

    worker = threading.Thread(target=validate)
    try:
        worker.start()
        assert started.wait(30), "validation never started"
        small = httpx.get(server.url + "/api/workflows", timeout=5)  # answered while validation is held
        assert small.status_code == 200 and "response" not in result
        release.set()
        worker.join(60)
        response = result["response"]
        assert response.status_code == 200 and response.json()["ok"]
        assert len(response.json()["workflow"]["nodes"]) == 10_000
    finally:
        release.set()
        worker.join(60)
        server.stop()


def test_docs_describe_the_guard():
    text = (Path(__file__).resolve().parent.parent / "docs" / "ui.md").read_text()
    for phrase in ("--allowed-host", "NODEGRAPH_TOKEN", "?token=", "X-Job-Key", "413", "Origin"):
        assert phrase in text, phrase
