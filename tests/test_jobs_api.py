"""The jobs API of `nodegraph serve` against a real server (uvicorn on 127.0.0.1, a free port):
concurrent submits, the OpenAPI contract, the SSE stream, ownership, requeue, delete, 422, Origin."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from nodegraph import Session
from nodegraph.client import ApiError, Client
from nodegraph.plugins import load_registry
from ui.app import AppContext, create_api_server, make_context
from ui.guard import GuardConfig
from ui.serve import BackgroundServer

from . import job_nodes
from .job_nodes import GATES, blocking, gated, quick, saving

TOKEN = "jobs-api-token-0123456789"


@pytest.fixture(scope="module")
def registry():
    reg, _ = load_registry(entry_points=False)
    reg.registrar("tests").add_nodes(job_nodes.NODES)
    return reg


def serve(registry, tmp_path_factory, guard: GuardConfig | None = None, data: Path | None = None,
          ) -> tuple[BackgroundServer, AppContext]:
    session = Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"))
    context = make_context(session, data_dir=data or tmp_path_factory.mktemp("data"))
    return BackgroundServer(create_api_server(context, guard)).start(), context


@pytest.fixture(scope="module")
def served(registry, tmp_path_factory):
    server, context = serve(registry, tmp_path_factory)
    yield server, context
    server.stop()
    context.close()


@pytest.fixture()
def url(served) -> str:
    return served[0].url


@pytest.fixture()
def context(served) -> AppContext:
    return served[1]


def raw(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None,
        ) -> tuple[int, dict, bytes]:
    """One request without the Client: (status, headers, body)."""
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json"} if data else {}
    try:
        with urlopen(Request(url, data=data, method=method, headers={**sent, **(headers or {})}), timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


# -- many clients ---------------------------------------------------------------------------------

def test_concurrent_submits_from_many_clients(url, context):
    """8 clients x 3 jobs, submitted at once: every job is stored once, runs, and opens with its own key only."""
    clients = [Client(url) for _ in range(8)]
    start = threading.Barrier(len(clients))
    errors: list[BaseException] = []

    def submit(index: int, client: Client) -> None:
        try:
            start.wait(30)
            for j in range(3):
                client.submit(quick(1000 + 10 * index + j), priority=j)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=submit, args=(i, c)) for i, c in enumerate(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    submitted = time.perf_counter() - began
    assert not errors and all(not t.is_alive() for t in threads)
    ids = [job for client in clients for job in client.keys]
    assert len(ids) == 24 and len(set(ids)) == 24
    for client in clients:
        for job in client.keys:
            assert client.wait(job, timeout=60)["status"] == "done"
    stored = {j["id"] for j in Client(url).history(limit=500)["jobs"]}
    assert set(ids) <= stored
    other = next(iter(clients[1].keys))
    with pytest.raises(ApiError) as refused:  # a key opens its own job only
        Client(url, keys={ids[0]: clients[1].keys[other]}).get(ids[0])
    assert refused.value.status == 403
    assert submitted < 30  # bounded: 24 submits (validation included) on a loaded 2-core machine


# -- the contract: /openapi.json ------------------------------------------------------------------

EXPECTED = {("/api/jobs", "post"), ("/api/jobs", "get"), ("/api/jobs/{job_id}", "get"),
            ("/api/jobs/{job_id}", "delete"), ("/api/jobs/{job_id}/events", "get"),
            ("/api/jobs/{job_id}/outputs/{node}/{index}", "get"), ("/api/jobs/{job_id}/preview.png", "get"),
            ("/api/jobs/{job_id}/cancel", "post"), ("/api/jobs/{job_id}/requeue", "post")}


def resolve(schema: dict, spec: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def conforms(value, schema: dict, spec: dict, where: str = "$") -> list[str]:
    """The JSON Schema checks OpenAPI needs here (type, properties, required, items, anyOf, enum), and no
    undocumented keys where a schema lists its properties."""
    schema = resolve(schema, spec)
    if "anyOf" in schema:
        if any(not conforms(value, option, spec, where) for option in schema["anyOf"]):
            return []
        return [f"{where}: {value!r} matches none of {schema['anyOf']}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return [f"{where}: {value!r} is not an integer"]
    if kind == "number" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return [f"{where}: {value!r} is not a number"]
    if kind in checks and not isinstance(value, checks[kind]):
        return [f"{where}: {value!r} is not {kind}"]
    problems = []
    if kind == "object":
        properties = schema.get("properties", {})
        problems += [f"{where}: missing {name}" for name in schema.get("required", []) if name not in value]
        if properties and not schema.get("additionalProperties"):
            problems += [f"{where}: undocumented {name}" for name in value if name not in properties]
        for name, item in value.items():
            if name in properties:
                problems += conforms(item, properties[name], spec, f"{where}.{name}")
    if kind == "array":
        for i, item in enumerate(value):
            problems += conforms(item, schema.get("items", {}), spec, f"{where}[{i}]")
    return problems


def check_answer(spec: dict, path: str, method: str, status: int, body: bytes, media: str = "application/json"):
    documented = spec["paths"][path][method]["responses"]
    assert str(status) in documented, (path, method, status, list(documented))
    schema = documented[str(status)]["content"][media]["schema"]
    if media == "text/event-stream":
        events = [json.loads(line[5:]) for line in body.decode().splitlines() if line.startswith("data:")]
        assert events and events[-1]["kind"] == "finished"
        for event in events:
            assert conforms(event, schema, spec) == [], event
        return events
    answer = json.loads(body)
    assert conforms(answer, schema, spec) == [], (path, method, status, answer)
    return answer


def test_openapi_documents_every_route_and_the_bodies_it_returns(url):
    status, _, text = raw(url + "/openapi.json")
    spec = json.loads(text)
    documented = {(p, m) for p, methods in spec["paths"].items() for m in methods if p.startswith("/api/jobs")}
    assert documented == EXPECTED
    request = resolve(spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"], spec)
    assert set(request["properties"]) == {"workflow", "overrides", "priority"} and request["required"] == ["workflow"]

    body = {"workflow": saving(5, "contract"), "overrides": {"noise.seed": 6}, "priority": 1}
    status, _, created = raw(url + "/api/jobs", "POST", body)
    job = check_answer(spec, "/api/jobs", "post", status, created)
    assert status == 201
    key = {"X-Job-Key": job["key"]}
    events = check_answer(spec, "/api/jobs/{job_id}/events", "get",
                          *raw(f"{url}/api/jobs/{job['id']}/events", headers=key)[::2], media="text/event-stream")
    assert events[-1] == {"kind": "finished", "status": "done"}
    detail = check_answer(spec, "/api/jobs/{job_id}", "get", *raw(f"{url}/api/jobs/{job['id']}", headers=key)[::2])
    assert detail["workflow"]["nodes"]["noise"]["inputs"]["seed"] == 6 and detail["overrides"] == {"noise.seed": 6}
    assert {(f["node"], f["kind"]) for f in detail["files"]} == {("image", "preview"), ("save", "saved")}
    status, headers, png = raw(url + detail["files"][0]["url"], headers=key)
    assert status == 200 and headers["content-type"] == "image/png" and png.startswith(b"\x89PNG")
    check_answer(spec, "/api/jobs", "get", *raw(f"{url}/api/jobs?status=done&limit=2")[::2])
    check_answer(spec, "/api/jobs/{job_id}/cancel", "post",
                 *raw(f"{url}/api/jobs/{job['id']}/cancel", "POST", headers=key)[::2])
    check_answer(spec, "/api/jobs/{job_id}/requeue", "post",
                 *raw(f"{url}/api/jobs/{job['id']}/requeue", "POST", headers=key)[::2])  # 409: it is done
    check_answer(spec, "/api/jobs/{job_id}", "get", *raw(f"{url}/api/jobs/{job['id']}")[::2])  # 403
    check_answer(spec, "/api/jobs/{job_id}", "get", *raw(f"{url}/api/jobs/999999", headers=key)[::2])  # 404
    check_answer(spec, "/api/jobs", "post", *raw(url + "/api/jobs", "POST", {"workflow": {"nodes": []}})[::2])
    check_answer(spec, "/api/jobs", "post", *raw(url + "/api/jobs", "POST", {"overrides": {}})[::2])  # 422 both
    for path, method in sorted(EXPECTED, key=lambda route: route[1] == "delete"):  # every documented route exists
        concrete = path.format(job_id=job["id"], node="image", index=0)
        status, _, answer = raw(url + concrete, method.upper(), {"workflow": quick(9)} if method == "post" else None,
                                headers=key)
        assert status != 405 and (status != 404 or b"Not Found" not in answer), (path, method, status, answer)
    check_answer(spec, "/api/jobs/{job_id}", "delete",
                 *raw(f"{url}/api/jobs/{job['id']}?delete_files=true", "DELETE", headers=key)[::2])


# -- events ---------------------------------------------------------------------------------------

def sse_lines(url: str, headers: dict | None = None):
    return urlopen(Request(url, headers={"Accept": "text/event-stream", **(headers or {})}), timeout=60)


def test_events_stream_live_and_resume(url, context):
    GATES["live"] = threading.Event()
    client = Client(url)
    job = client.submit(gated("live", 2.5))
    key = {"X-Job-Key": client.keys[job]}
    with sse_lines(f"{url}/api/jobs/{job}/events", key) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        seen: list[tuple[int, dict]] = []
        current = None
        for line in stream:
            text = line.decode().rstrip("\n")
            if text.startswith("id:"):
                current = int(text[3:])
            elif text.startswith("data:"):
                event = json.loads(text[5:])
                seen.append((current, event))
                if event["kind"] == "node_start":
                    assert not GATES["live"].is_set()  # delivered while the node still runs
                    GATES["live"].set()
                if event["kind"] == "finished":
                    break
    assert [seq for seq, _ in seen] == list(range(len(seen)))
    assert [e["kind"] for _, e in seen] == ["run_start", "node_start", "node_done", "run_done", "finished"]
    assert client.get(job)["outputs"]["gate"]["float"] == 2.5
    assert [e["kind"] for e in client.events(job, since=3)] == ["run_done", "finished"]
    with sse_lines(f"{url}/api/jobs/{job}/events?since=0", {**key, "Last-Event-ID": "3"}) as stream:
        resumed = [json.loads(line[5:]) for line in stream.read().decode().splitlines() if line.startswith("data:")]
    assert resumed == [{"kind": "finished", "status": "done"}]  # Last-Event-ID wins over since
    with sse_lines(f"{url}/api/jobs/{job}/events?since=50", key) as stream:
        assert stream.read() == b""  # past the end of a finished job: the stream ends at once


# -- ownership ------------------------------------------------------------------------------------

def test_a_client_acts_only_on_its_own_jobs_unless_it_holds_the_token(url, registry, tmp_path_factory):
    alice, bob = Client(url), Client(url)
    job = alice.submit(blocking())
    for action in (lambda: bob.get(job), lambda: bob.cancel(job), lambda: bob.requeue(job),
                   lambda: bob.delete(job), lambda: list(bob.events(job)), lambda: bob.output(job, "hold", 0),
                   lambda: Client(url, keys={job: "not-the-key"}).cancel(job)):
        with pytest.raises(ApiError) as refused:
            action()
        assert refused.value.status == 403
    assert alice.get(job)["status"] in ("queued", "running")
    assert alice.cancel(job) is True and alice.wait(job, timeout=60)["status"] == "cancelled"

    server, context = serve(registry, tmp_path_factory, GuardConfig(token=TOKEN))
    try:
        owner = Client(server.url, token=TOKEN)
        other = owner.submit(blocking())
        operator = Client(server.url, token=TOKEN)  # no key: the server's token opens every job
        assert operator.get(other)["status"] in ("queued", "running")
        assert operator.cancel(other) is True and operator.wait(other, timeout=60)["status"] == "cancelled"
        with pytest.raises(ApiError) as no_token:
            Client(server.url, keys=owner.keys).get(other)  # the key alone does not pass the guard
        assert no_token.value.status == 401
    finally:
        server.stop()
        context.close()


def test_evil_origin_is_refused_and_queues_nothing(url, context):
    before = context.jobs.history()[1]
    for method, path, body in (("POST", "/api/jobs", {"workflow": quick(7)}), ("GET", "/api/jobs", None),
                               ("GET", "/api/jobs/1/events", None)):
        status, _, answer = raw(url + path, method, body, headers={"Origin": "https://evil.example"})
        assert status == 403 and b"cross-origin" in answer, (path, answer)
    assert context.jobs.history()[1] == before


# -- requeue and delete ---------------------------------------------------------------------------

def test_requeue_an_interrupted_job(registry, tmp_path_factory):
    """A queue stopped while a job runs marks it interrupted; after a restart its owner requeues it."""
    data = tmp_path_factory.mktemp("data")
    server, context = serve(registry, tmp_path_factory, data=data)
    client = Client(server.url)
    try:
        job = client.submit(blocking())
        for event in client.events(job, timeout=60):
            if event["kind"] == "progress":
                break
        server.stop()
    finally:
        context.close()
    server, context = serve(registry, tmp_path_factory, data=data)
    client.url = server.url
    try:
        assert context.jobs.interrupted == [] and client.get(job)["status"] == "interrupted"  # stopped cleanly
        assert [e["kind"] for e in client.events(job)][-1] == "finished"
        with pytest.raises(ApiError) as refused:
            client.requeue(job + 1000)
        assert refused.value.status == 404
        requeued = client.requeue(job)
        assert requeued["id"] == job and requeued["status"] in ("queued", "running") and requeued["error"] == ""
        for event in client.events(job, timeout=60):
            if event["kind"] == "progress":
                break
        assert client.cancel(job) and client.wait(job, timeout=60)["status"] == "cancelled"
        done = client.submit(quick(32))
        assert client.wait(done, timeout=60)["status"] == "done"
        with pytest.raises(ApiError) as conflict:
            client.requeue(done)
        assert conflict.value.status == 409 and "only failed, cancelled or interrupted" in conflict.value.message
    finally:
        server.stop()
        context.close()


def test_delete_with_and_without_files(url, context, tmp_path):
    client = Client(url)
    kept, removed, tricked = (client.submit(saving(seed, f"del{seed}")) for seed in (41, 42, 43))
    files = {}
    for job in (kept, removed, tricked):
        final = client.wait(job, timeout=60)
        assert final["status"] == "done", final
        files[job] = {(f["node"], f["kind"]): f for f in final["files"]}
    saved = {job: [Path(p) for p in client.get(job)["outputs"]["save"]["paths"]] for job in files}
    previews = {job: context.jobs.previews_dir / str(job) for job in files}
    assert all(p.is_file() for paths in saved.values() for p in paths) and all(p.is_dir() for p in previews.values())

    answer = client.delete(kept)
    assert answer["files_deleted"] == [] and len(answer["files_kept"]) == 2
    assert all(p.is_file() for p in saved[kept]) and not previews[kept].exists()  # previews go, saved files stay
    with pytest.raises(ApiError) as gone:
        client.get(kept)
    assert gone.value.status == 404

    answer = client.delete(removed, delete_files=True)
    assert sorted(answer["files_deleted"]) == sorted(str(p) for p in saved[removed])
    assert not any(p.exists() for p in saved[removed])

    outside = tmp_path / "precious.png"  # a saved file swapped for a link out of the output folder
    outside.write_bytes(b"keep me")
    saved[tricked][0].unlink()
    saved[tricked][0].symlink_to(outside)
    answer = client.delete(tricked, delete_files=True)
    assert answer["files_kept"] == [str(saved[tricked][0])] and outside.read_bytes() == b"keep me"

    running = client.submit(blocking())
    for event in client.events(running, timeout=60):
        if event["kind"] == "progress":
            break
    with pytest.raises(ApiError) as busy:
        client.delete(running)
    assert busy.value.status == 409
    client.cancel(running)
    assert client.wait(running, timeout=60)["status"] == "cancelled"
    assert client.delete(running)["id"] == running


# -- validation at submit -------------------------------------------------------------------------

def test_an_invalid_workflow_is_rejected_at_submit_naming_node_and_input(url, context):
    before = context.jobs.history()[1]
    bad = saving(1)
    bad["nodes"]["image"]["inputs"]["mode"] = "sideways"
    bad["nodes"]["save"]["inputs"]["images"] = {"from": "noise", "output": "tensor"}
    with pytest.raises(ApiError) as rejected:
        Client(url).submit(bad, {"noise.seed": "many", "nowhere.seed": 1, "image.no_such_input": 2})
    assert rejected.value.status == 422
    where = {(p["node"], p["input"], p["kind"]) for p in rejected.value.problems}
    assert {("image", "mode", "bad_value"), ("save", "images", "type_mismatch"),
            ("noise", "seed", "bad_value")} <= where, where
    assert (None, None, "bad_override") in where  # no node 'nowhere'
    assert ("image", "no_such_input", "unknown_input") in where
    with pytest.raises(ApiError) as not_a_workflow:
        Client(url).submit({"nodes": [1, 2]})
    assert not_a_workflow.value.status == 422 and not_a_workflow.value.problems[0]["kind"] == "format"
    status, _, answer = raw(url + "/api/jobs", "POST", {"workflow": quick(), "priority": 10**6})
    assert status == 422 and json.loads(answer)["detail"]["problems"][0]["kind"] == "bad_request"
    assert context.jobs.history()[1] == before  # nothing was queued


def test_history_filters_and_pages_newest_first(url):
    client = Client(url)
    failed = client.submit(job_nodes.workflow({"f": {"type": "jobs/fail", "inputs": {}}}, "failing"))
    ok = client.submit(quick(51))
    assert client.wait(failed, timeout=60)["status"] == "failed" and client.wait(ok, timeout=60)["status"] == "done"
    failing = client.history("failed")
    assert failing["jobs"][0]["id"] == failed and all(j["status"] == "failed" for j in failing["jobs"])
    assert failing["jobs"][0]["error_node"] == "f" and "boom" in failing["jobs"][0]["error"]
    pages, before = [], None
    while True:
        page = client.history(["done", "failed"], limit=3, before=before)
        pages += [j["id"] for j in page["jobs"]]
        before = page["next_before"]
        if before is None:
            break
    assert pages == sorted(pages, reverse=True) and len(pages) == page["total"] and pages[:2] == [ok, failed]


def test_serve_has_the_api_and_its_documentation_but_no_editor(url):
    assert raw(url + "/")[0] == 404
    status, _, page = raw(url + "/docs")
    assert status == 200 and b"swagger" in page.lower()
    assert raw(url + "/api/nodes")[0] == 200


def test_the_docs_describe_every_route_and_the_data_folder():
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    for path, method in EXPECTED:
        assert f"{method.upper()} {path.replace('{job_id}', '{id}')}" in text, (method, path)
    for phrase in ("--data-dir", "NODEGRAPH_DATA_DIR", ".nodegraph", "X-Job-Key", "Last-Event-ID", "interrupted",
                   "delete_files", "nodegraph.client", "nodegraph submit", "nodegraph history", "/openapi.json"):
        assert phrase in text, phrase
