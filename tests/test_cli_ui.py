"""`nodegraph ui`: every server option reaches the editor, and the editor applies it.

No server is started: `uvicorn.run` is replaced by a recorder, and the app it would have served is
driven in-process with Starlette's TestClient.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

import ui.app
from nodegraph import cli
from tests.job_nodes import saving

TOKEN = "a-test-token-of-24-chars"
ENVIRONMENT = ("NODEGRAPH_TOKEN", "NODEGRAPH_ALLOWED_HOSTS", "NODEGRAPH_ALLOWED_ORIGINS", "NODEGRAPH_READ_ROOTS")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # the editor writes to ./outputs


@pytest.fixture()
def served(monkeypatch) -> list[dict]:
    """What `uvicorn.run` was called with (the app, host and port), instead of serving it."""
    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append({"app": app, **options}))
    return calls


def test_every_ui_option_is_passed_to_the_app(monkeypatch):
    received = []
    monkeypatch.setattr(cli, "find_app", lambda name: lambda *args, **kwargs: received.append((name, args, kwargs)))
    argv = ["ui", "wf.json", "--host", "0.0.0.0", "--port", "8123", "--token", TOKEN,
            "--allowed-host", "a.example", "--allowed-host", "b.example", "--allowed-origin", "https://c.example",
            "--read-root", "/data/one", "--read-root", "/data/two", "--plugins-dir", "mine",
            "--disable-plugin", "noisy", "--only-plugins", "mine, other", "--data-dir", "state", "--out", "made",
            "--disk-cache", "kept", "--disk-cache-mb", "64"]
    assert cli.main(argv) == 0
    [(name, args, kwargs)] = received
    assert name == "ui" and args == ("wf.json",)
    assert kwargs == {"host": "0.0.0.0", "port": 8123, "plugin_dirs": ["mine"], "token": TOKEN,
                      "allowed_hosts": ["a.example", "b.example"], "allowed_origins": ["https://c.example"],
                      "read_roots": ["/data/one", "/data/two"], "disabled_plugins": ["noisy"],
                      "only_plugins": ["mine", "other"], "data_dir": "state", "output_dir": "made",
                      "editor": True, "disk_cache": Path("kept"), "disk_cache_bytes": 64 << 20,
                      "executor": "local", "address": None, "workers": 2}
    monkeypatch.undo()
    assert cli.find_app("ui") is ui.app.main
    inspect.signature(ui.app.main).bind(*args, **kwargs)  # the real app accepts every option passed


def test_serve_passes_the_same_options_without_the_editor(monkeypatch):
    received = []
    monkeypatch.setattr(cli, "find_app", lambda name: lambda *args, **kwargs: received.append((name, args, kwargs)))
    assert cli.main(["serve", "--port", "8124", "--token", TOKEN, "--allowed-origin", "https://c.example",
                     "--data-dir", "state"]) == 0
    [(name, args, kwargs)] = received
    assert name == "ui" and args == (None,) and kwargs["editor"] is False and kwargs["data_dir"] == "state"
    assert kwargs["allowed_origins"] == ["https://c.example"] and kwargs["port"] == 8124
    received.clear()
    assert cli.main(["serve", "--no-disk-cache"]) == 0
    assert received[0][2]["disk_cache"] is None


def test_serve_starts_the_api_behind_the_guard_without_the_editor_page(served, capsys):
    assert cli.main(["serve", "--port", "8124", "--token", TOKEN, "--data-dir", "state"]) == 0
    [call] = served
    assert "nodegraph server on http://127.0.0.1:8124/?token=" in capsys.readouterr().err
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(call["app"], base_url="http://127.0.0.1:8124") as client:
        assert client.get("/", headers=auth).status_code == 404  # no editor page
        assert client.get("/api/jobs").status_code == 401
        assert client.get("/openapi.json", headers=auth).json()["info"]["title"] == "nodegraph"
    assert (Path("state") / "jobs.sqlite3").is_file()  # the data folder it was given (in the working folder)


def test_jobs_of_a_server_fill_the_disk_cache_that_a_later_run_reads(monkeypatch, capsys):
    """The server's session keeps storable outputs on disk, so a new process (here: `nodegraph run`)
    loads them instead of computing them again."""
    auth, answers = {"Authorization": f"Bearer {TOKEN}"}, []

    def serve_one_job(app, **options):  # runs while the server is up (its job store open)
        with TestClient(app, base_url="http://127.0.0.1:7860") as client:
            job = client.post("/api/jobs", json={"workflow": saving(5)}, headers=auth).json()
            answers.append(client.get(f"/api/jobs/{job['id']}", headers=auth).json())
            client.get(f"/api/jobs/{job['id']}/events", headers=auth)  # the stream ends when the job does
            answers.append(client.get(f"/api/jobs/{job['id']}", headers=auth).json())

    monkeypatch.setattr(uvicorn, "run", serve_one_job)
    assert cli.main(["serve", "--token", TOKEN, "--data-dir", "state", "--disk-cache", "shared"]) == 0
    assert answers[-1]["status"] == "done"
    assert list(Path("shared").rglob("*.safetensors")), "the server stored nothing in its disk cache"
    Path("wf.json").write_text(json.dumps(saving(5)))
    capsys.readouterr()
    assert cli.main(["run", "wf.json", "--disk-cache", "shared", "--outputs", "image"]) == 0
    err = capsys.readouterr().err
    assert "image" in err and "(disk)" in err, err


def load_image(path: str) -> bytes:
    return json.dumps({"nodes": {"load": {"type": "core/load_image", "inputs": {"path": path}}}}).encode()


PLUGIN = """
from nodegraph import hookimpl, node

@node("{name}/echo", category="test")
def echo(text: str = "") -> str:
    return text

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(echo)
"""


def test_the_editor_applies_token_hosts_origins_read_roots_and_plugin_choice(served, tmp_path, capsys):
    data, elsewhere, plugins = tmp_path / "data", tmp_path / "elsewhere", tmp_path / "plugins"
    for folder in (data, elsewhere, plugins):
        folder.mkdir()
        (folder / "x.png").write_bytes(b"not read by validation")
    for name in ("kept", "dropped"):
        (plugins / f"{name}.py").write_text(PLUGIN.replace("{name}", name))
    assert cli.main(["ui", "--port", "8123", "--token", TOKEN, "--allowed-host", "ui.example",
                     "--allowed-origin", "https://editor.example", "--read-root", str(data),
                     "--plugins-dir", str(plugins), "--disable-plugin", "dropped"]) == 0
    [call] = served
    assert (call["host"], call["port"]) == ("127.0.0.1", 8123)
    assert f"http://127.0.0.1:8123/?token={TOKEN}" in capsys.readouterr().err
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(call["app"], base_url="http://ui.example:8123") as client:
        assert client.get("/api/nodes").status_code == 401
        nodes = client.get("/api/nodes", headers=auth)
        assert nodes.status_code == 200
        assert "kept/echo" in nodes.json()["nodes"] and "dropped/echo" not in nodes.json()["nodes"]
        assert client.get("/api/nodes", headers={**auth, "Host": "evil.example"}).status_code == 403

        def validate(path, origin: str = "https://editor.example"):
            response = client.post("/api/validate", content=load_image(str(path)), headers={**auth, "Origin": origin})
            return response.status_code, response.json()

        assert validate(data / "x.png")[1]["ok"] is True
        status, answer = validate(elsewhere / "x.png")
        assert status == 200 and [p["kind"] for p in answer["problems"]] == ["path_refused"]
        assert validate(data / "x.png", origin="https://evil.example")[0] == 403


def test_a_bad_setting_stops_the_editor_before_it_serves(served, capsys, monkeypatch):
    monkeypatch.setenv("NODEGRAPH_MAX_PARAMETERS", "plenty")
    assert cli.main(["ui", "--token", TOKEN]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert err == ["error: $NODEGRAPH_MAX_PARAMETERS must be a positive number of parameters, got 'plenty'"]
    assert served == []
