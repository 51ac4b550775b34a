"""Hypothesis-generated requests against every JSON route of the editor's server.

Whatever comes in (bad JSON, wrong types, huge values, path tricks such as `../`, absolute paths
and URL-encoded traversals), the answer is never a 500 and nothing is written outside the output
folder: the temporary tree around it (an `outside` folder, a symlink out of the output folder, the
working folder) is snapshotted before and compared after. Bounded: ~100 examples per route group,
no deadline, and every run the fuzzer starts is small and waited for with a bound.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from nodegraph import Session
from nodegraph.plugins import load_registry
from ui.app import build_app, create_server, run_workflow_json

LOCAL = "http://127.0.0.1:7860"
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and link under `root` (not under `skip`) with its size and mtime."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    out, workflows, outside, cwd = (root / n for n in ("out", "workflows", "outside", "cwd"))
    for folder in (out, workflows, outside, cwd):
        folder.mkdir()
    (outside / "secret.json").write_text(json.dumps({"nodes": {}}))
    (outside / "model.safetensors").write_bytes(b"\0" * 64)
    (workflows / "good.json").write_text(json.dumps({"nodes": {"s": {"type": "core/seed", "inputs": {"seed": 1}}}}))
    (workflows / "escape.json").symlink_to(outside / "secret.json")
    (out / "link").symlink_to(outside, target_is_directory=True)  # writing "link/x" would land outside
    registry, _ = load_registry(entry_points=False)
    session = Session(registry, device="cpu", output_dir=out, input_roots=[workflows])
    blocks = build_app(session, workflows_dir=workflows, data_dir=tmp_path_factory.mktemp("data"))  # outside root
    yield {"root": root, "out": out, "outside": outside, "cwd": cwd, "blocks": blocks,
           "jobs": blocks.nodegraph_context.jobs, "types": sorted(registry.nodes)}
    blocks.nodegraph_context.close()


def wait_idle(jobs, timeout: float = 60) -> list[int]:
    """Wait (bounded) for every queued or running job; returns the ids of those still unfinished."""
    return [job.id for job in jobs.history(["queued", "running"])[0]
            if jobs.wait(job.id, timeout).status in ("queued", "running")]


@pytest.fixture(scope="module")
def client(world):
    with TestClient(create_server(world["blocks"]), base_url=LOCAL, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def confined(world, monkeypatch):
    """Relative writes would land in the snapshotted cwd; the tree around the output folder must not change."""
    monkeypatch.chdir(world["cwd"])
    before = snapshot(world["root"], world["out"])
    yield
    assert wait_idle(world["jobs"]) == []
    assert snapshot(world["root"], world["out"]) == before


ROOT_ALIASES = ["/", "/.", "/..", "//", "//etc", "/proc/self/root", "/proc/self/root/etc/passwd", "/etc/passwd"]
"""The filesystem root and paths that lead to it or through it: never readable by a node."""


def load_image(path: object) -> dict:
    return {"nodes": {"load": {"type": "core/load_image", "inputs": {"path": path}}}}


def tricks(outside: Path) -> st.SearchStrategy[str]:
    fixed = ["../x", "../../x", "../outside/pwn", "../outside/model.safetensors", "link/pwn", "link/../../pwn",
             str(outside / "pwn"), str(outside / "model.safetensors"), "/", "//x", ".", "..", "", "~/x",
             "..%2Fx", "%2e%2e/x", "%2e%2e%2fx", "....//x", "./../x", "sub/../../x", "..\\x", "x\x00y",
             "C:\\x", "a" * 300, "x/" * 60 + "y", "../cwd/pwn", "\u202e../x", "NUL", "con.png", *ROOT_ALIASES]
    return st.one_of(st.sampled_from(fixed),
                     st.lists(st.sampled_from(["..", ".", "x", "link", "%2e%2e", "", "outside", "/"]),
                              min_size=1, max_size=6).map("/".join),
                     st.text(max_size=40))


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=20)


@st.composite
def shaped_workflow(draw, types: list[str], outside: Path) -> dict:
    """Workflow-shaped JSON: real and fake node types, links to anywhere, values of any type."""
    names = draw(st.lists(st.text(min_size=0, max_size=6), min_size=0, max_size=5, unique=True))
    nodes = {}
    for name in names:
        inputs = draw(st.dictionaries(
            st.sampled_from(["seed", "shape", "path", "file", "folder", "prefix", "filename", "model", "name",
                             "checkpoint_prefix", "images", "tensor", "mode", "steps"]) | st.text(max_size=6),
            st.one_of(JSON_VALUE, tricks(outside),
                      st.fixed_dictionaries({"from": st.sampled_from(names or ["x"]) | st.text(max_size=4),
                                             "output": st.text(max_size=8)})), max_size=4))
        nodes[name] = {"type": draw(st.sampled_from(types) | st.text(max_size=12)), "inputs": inputs}
    workflow: dict = {"nodes": nodes}
    if draw(st.booleans()):
        workflow.update(draw(st.dictionaries(st.sampled_from(["format", "version", "name", "ui", "description"]),
                                             JSON_VALUE, max_size=3)))
    return workflow


def body_strategy(world) -> st.SearchStrategy[bytes]:
    deep = [b"[" * n + b"]" * n for n in (1000, 100_000)] + [b'{"nodes":' * 50_000]
    return st.one_of(
        st.binary(max_size=300),
        JSON_VALUE.map(lambda v: json.dumps(v).encode()),
        shaped_workflow(world["types"], world["outside"]).map(lambda v: json.dumps(v).encode()),
        st.sampled_from(deep + [b"", b"null", b"NaN", b'{"nodes": {"a": {"type": "core/seed", "inputs": '
                                b'{"seed": 1e999}}}}', b"\xff\xfe", b'{"nodes": {}, "nodes": 1}']),
    )


def runnable(world) -> st.SearchStrategy[dict]:
    """Small workflows that would really write or read files, with tricked paths."""
    outside = world["outside"]

    def link(source: str, output: str) -> dict:
        return {"from": source, "output": output}

    noise = {"type": "core/random_tensor", "inputs": {"shape": [1, 3, 4, 4], "seed": 0}}
    image = {"type": "core/to_image", "inputs": {"tensor": link("noise", "tensor")}}
    classifier = {"type": "core/noisy_classifier", "inputs": {"image_size": 8, "in_channels": 3, "channels": 8,
                                                               "channel_mults": [1], "num_classes": 2, "seed": 0}}
    path = tricks(outside)
    return st.one_of(
        st.builds(lambda folder, prefix: {"nodes": {"noise": noise, "image": image, "save": {
            "type": "core/save_image", "inputs": {"images": link("image", "image"), "folder": folder,
                                                  "prefix": prefix}}}}, path, path),
        st.builds(lambda name: {"nodes": {"c": classifier, "save": {
            "type": "core/save_classifier", "inputs": {"classifier": link("c", "classifier"), "filename": name}}}},
            path),
        st.builds(lambda kind, name: {"nodes": {"load": {"type": kind, "inputs": {
            "file" if kind != "core/load_image" else "path": name}}}},
            st.sampled_from(["core/load_image", "core/load_backbone", "core/load_classifier"]), path),
    )


def no_server_error(response) -> None:
    assert response.status_code < 500, (response.request.method, str(response.request.url), response.text[:300])


@pytest.mark.parametrize("route", ["/api/validate", "/api/jobs"])
def test_posted_bodies(client, world, route):
    content_types = st.sampled_from([None, "application/json", "text/plain", "multipart/form-data; boundary=x",
                                     "application/x-www-form-urlencoded", "application/json; charset=utf-16"])

    @FUZZ
    @given(body=body_strategy(world), content_type=content_types)
    def check(body: bytes, content_type: str | None) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        if route == "/api/jobs":  # the job request wraps the workflow (valid JSON or not)
            body = b'{"workflow": ' + body + b"}"
        response = client.post(route, content=body, headers=headers)
        no_server_error(response)
        assert wait_idle(world["jobs"]) == []

    check()


def test_runs_with_path_tricks(client, world):
    jobs = world["jobs"]

    @FUZZ
    @given(workflow=runnable(world), overrides=st.dictionaries(
        st.sampled_from(["save.folder", "save.prefix", "load.path", "load.file", "c.seed"]) | st.text(max_size=12),
        tricks(world["outside"]) | JSON_VALUE, max_size=2))
    @example(workflow=load_image("/"), overrides={})
    @example(workflow=load_image("/."), overrides={})
    @example(workflow=load_image("//etc"), overrides={})
    @example(workflow=load_image("/proc/self/root"), overrides={})
    @example(workflow=load_image("x.png"), overrides={"load.path": "/etc/passwd"})
    @example(workflow=load_image("x.png"), overrides={"load.path": [{"a": float("-inf")}, float("nan")]})
    def check(workflow: dict, overrides: dict) -> None:
        body = json.dumps({"workflow": workflow, "overrides": overrides}).encode()  # NaN / Infinity tokens too
        response = client.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
        no_server_error(response)
        busy = wait_idle(jobs, 20)
        if busy:  # e.g. a fingerprint hashing "/" before the path check: stop it, then fail
            for job_id in busy:
                jobs.cancel(job_id)
            wait_idle(jobs, 60)
            pytest.fail(f"a {len(workflow['nodes'])}-node job with tricked paths was still busy after 20 s: {workflow}")
        if response.status_code == 201:
            run, key = response.json()["id"], {"X-Job-Key": response.json()["key"]}
            no_server_error(client.get(f"/api/jobs/{run}", headers=key))

    check()


@pytest.mark.parametrize("path", ROOT_ALIASES)
def test_load_image_of_the_root_or_an_alias_of_it_is_refused(client, world, path, tmp_path):
    """Refused at validation as a literal (nothing runs, nothing is queued), and as a linked value before
    the node starts: no 500, and load_image never reads outside the roots."""
    answer = client.post("/api/validate", json=load_image(path)).json()
    submitted = client.post("/api/jobs", json={"workflow": load_image(path)})
    assert submitted.status_code == 422
    for problems in (answer["problems"], submitted.json()["detail"]["problems"]):
        assert [(p["node"], p["input"], p["kind"]) for p in problems] == [("load", "path", "path_refused")]
        assert "outside the folders nodes may read" in problems[0]["message"]  # not merely too big
    summary, files = run_workflow_json(world["jobs"], json.dumps(load_image(path)), tmp_path)  # the Gradio endpoint
    assert summary["ok"] is False and summary["problems"][0]["kind"] == "path_refused" and files == []

    linked = load_image({"from": "text", "output": "string"})
    linked["nodes"]["text"] = {"type": "core/string", "inputs": {"value": path}}
    started = client.post("/api/jobs", json={"workflow": linked})
    assert started.status_code == 201, started.text
    assert wait_idle(world["jobs"]) == []
    key = {"X-Job-Key": started.json()["key"]}
    run = client.get(f"/api/jobs/{started.json()['id']}", headers=key).json()
    assert run["status"] == "failed" and run["error_node"] == "load", run
    assert "outside the folders nodes may read" in run["error"]
    stream = client.get(f"/api/jobs/{started.json()['id']}/events", headers=key).text
    events = [json.loads(line[5:]) for line in stream.splitlines() if line.startswith("data:")]
    assert "load" not in [e.get("node") for e in events if e["kind"] == "node_start"]  # the node never ran


def test_workflow_names(client, world):
    @FUZZ
    @given(name=tricks(world["outside"]) | st.sampled_from(["escape.json", "good.json", "../outside/secret.json",
                                                            "%2e%2e/outside/secret.json", "good.json%00.txt"]),
           encode=st.sampled_from(["raw", "quote", "quote-all", "double"]))
    def check(name: str, encode: str) -> None:
        if encode == "quote":
            name = quote(name, safe="/")
        elif encode == "quote-all":
            name = quote(name, safe="")
        elif encode == "double":
            name = quote(quote(name, safe=""), safe="")
        try:
            response = client.get("/api/workflows/" + name)
        except Exception as err:  # noqa: BLE001 - the client refuses to send some URLs (control characters)
            assert type(err).__name__ == "InvalidURL", err
            return
        no_server_error(response)
        opened = response.status_code == 200 and response.url.path.startswith("/api/workflows/")
        if opened and response.url.path != "/api/workflows/":  # (the client may fold `..` into another route)
            assert response.json()["name"] == "good.json", name  # only files inside the folder open

    check()


def test_job_routes_with_any_ids_keys_and_nodes(client, world):
    ids = st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str), st.text(max_size=12).map(
        lambda t: quote(t, safe="")), st.sampled_from(["1", "0", "-1", "1e9", "NaN", "%2e%2e", "..%2F1"]))
    texts = st.text(max_size=20)

    @FUZZ
    @given(run=ids, key=texts, node=texts, index=ids, since=ids, flag=texts,
           route=st.sampled_from(["", "/events", "/cancel", "/requeue", "/outputs/{node}/{index}", "/preview.png",
                                  "DELETE"]))
    def check(run: str, key: str, node: str, index: str, since: str, flag: str, route: str) -> None:
        path = f"/api/jobs/{run}" + ("" if route == "DELETE" else route)
        path = path.replace("{node}", quote(node, safe="")).replace("{index}", quote(index, safe=""))
        params = {"key": key, "since": since, "delete_files": flag}
        headers = {"X-Job-Key": quote(key)}
        if route in ("/cancel", "/requeue"):
            response = client.post(path, params=params)
        elif route == "DELETE":
            response = client.delete(path, params=params, headers=headers)
        else:
            response = client.get(path, params=params, headers=headers)
        no_server_error(response)

    check()


def test_listing_routes_and_guard_headers(client):
    printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)

    @FUZZ
    @given(path=st.sampled_from(["/api/nodes", "/api/workflows", "/api/validate", "/api/jobs", "/",
                                 "/ui-static/runner.js"]),
           host=printable, origin=st.none() | printable, cookie=st.none() | printable,
           auth=st.none() | printable, length=st.none() | printable, query=printable)
    def check(path, host, origin, cookie, auth, length, query) -> None:
        headers = {"Host": host}
        for name, value in (("Origin", origin), ("Cookie", cookie), ("Authorization", auth)):
            if value is not None:
                headers[name] = value
        if length is not None and path == "/api/validate":
            headers["Content-Length"] = length
        method = "POST" if path == "/api/validate" else "GET"
        try:
            response = client.request(method, path + "?" + quote(query, safe="=&"), headers=headers, content=b"")
        except Exception as err:  # noqa: BLE001 - httpx refuses some header values itself; that is not the server
            assert not isinstance(err, AssertionError)
            return
        no_server_error(response)

    check()
