"""`nodegraph submit`, `history` and `requeue` against a live server (uvicorn on 127.0.0.1, a free port)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nodegraph import Session, cli
from nodegraph.client import ApiError, Client
from nodegraph.plugins import load_registry
from ui.app import create_api_server, make_context
from ui.guard import GuardConfig
from ui.serve import BackgroundServer, free_port

from . import job_nodes
from .job_nodes import blocking, quick, saving

TOKEN = "cli-submit-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    registry, _ = load_registry(entry_points=False)
    registry.registrar("tests").add_nodes(job_nodes.NODES)
    session = Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"))
    context = make_context(session, data_dir=tmp_path_factory.mktemp("data"))
    running = BackgroundServer(create_api_server(context, GuardConfig(token=TOKEN))).start()
    yield running
    running.stop()
    context.close()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("NODEGRAPH_TOKEN", "NODEGRAPH_SERVER"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path, workflow: dict, name: str = "wf.json"):
    path = tmp_path / name
    path.write_text(json.dumps(workflow))
    return str(path)


def submit(server, *args: str) -> int:
    return cli.main(["submit", *args, "--server", server.url, "--token", TOKEN])


def test_submit_wait_follows_the_job_and_prints_its_outputs(server, tmp_path, capsys):
    path = write(tmp_path, saving(3, "cli"))
    assert submit(server, path, "--set", "noise.shape=[1, 3, 8, 8]", "--set", "save.prefix=fromcli", "--wait") == 0
    out, err = capsys.readouterr()
    job = int(out.splitlines()[0])
    assert "noise (core/random_tensor) ..." in err and "save done in" in err
    assert f"job {job} done in" in err and "3 ran, 0 cached" in err
    assert "image.image = tensor(1, 3, 8, 8) float32" in out
    assert f"save[0] saved: {server.url}/api/jobs/{job}/outputs/save/0" in out
    detail = Client(server.url, TOKEN).get(job)
    assert detail["overrides"] == {"noise.shape": [1, 3, 8, 8], "save.prefix": "fromcli"}
    assert "fromcli_00001.png" in detail["outputs"]["save"]["paths"][0]

    assert submit(server, path) == 0  # without --wait: the id only, at once
    assert capsys.readouterr().out.strip().isdigit()


def test_submit_exit_codes(server, tmp_path, capsys):
    failing = write(tmp_path, job_nodes.workflow({"f": {"type": "jobs/fail", "inputs": {}}}), "fail.json")
    assert submit(server, failing, "--wait") == 1
    assert "error: node 'f' (jobs/fail) failed: RuntimeError: boom" in capsys.readouterr().err

    invalid = write(tmp_path, quick(), "invalid.json")
    assert submit(server, invalid, "--set", "seed.seed=-5", "--set", "ghost.x=1") == 2
    err = capsys.readouterr().err
    assert "workflow is invalid (2 problems)" in err and "seed.seed:" in err and "[bad_override]" in err

    assert submit(server, invalid, "--set", "noequals") == 2
    assert "expected NODE.INPUT=VALUE" in capsys.readouterr().err
    assert submit(server, str(tmp_path / "missing.json")) == 2
    assert cli.main(["submit", invalid, "--server", server.url, "--token", "wrong-token-0123456789"]) == 2
    assert "401" in capsys.readouterr().err
    assert cli.main(["submit", invalid, "--server", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "Connection refused" in capsys.readouterr().err


def test_history_lists_newest_first_with_filters(server, tmp_path, capsys):
    client = Client(server.url, TOKEN)
    done = client.submit(quick(61, "listed"))
    assert client.wait(done, timeout=60)["status"] == "done"
    assert cli.main(["history", "--server", server.url, "--token", TOKEN, "--status", "done", "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["jobs"][0]["id"] == done and {j["status"] for j in page["jobs"]} == {"done"}
    assert cli.main(["history", "--server", server.url, "--token", TOKEN, "--limit", "1"]) == 0
    out, err = capsys.readouterr()
    header, row = out.splitlines()
    assert header.split()[:2] == ["id", "status"] and row.split()[:2] == [str(done), "done"] and "listed" in row
    assert "next page: --before" in err


def test_requeue_with_the_key_from_submit_json(server, tmp_path, capsys):
    operator = Client(server.url, TOKEN)
    holder = operator.submit(blocking())
    assert submit(server, write(tmp_path, quick(71)), "--json") == 0
    queued = json.loads(capsys.readouterr().out)
    assert queued["status"] == "queued" and operator.cancel(queued["id"])
    assert cli.main(["requeue", str(queued["id"]), "--server", server.url, "--token", TOKEN,
                     f"--key={queued['key']}"]) == 0
    assert capsys.readouterr().out.strip() == f"job {queued['id']} queued"  # behind the holder
    assert cli.main(["requeue", str(queued["id"]), "--server", server.url, "--token", TOKEN]) == 2
    assert "409" in capsys.readouterr().err  # queued already
    operator.cancel(holder)
    assert operator.wait(queued["id"], timeout=60)["status"] == "done"


def test_requeue_finds_the_key_of_a_job_this_user_submitted(tmp_path, monkeypatch, capsys):
    """Without a token the key is what opens a job: `submit` keeps it (privately), `requeue` finds it."""
    keys = tmp_path / "state" / "job-keys.json"
    monkeypatch.setenv("NODEGRAPH_KEYS_FILE", str(keys))
    registry, _ = load_registry(entry_points=False)
    registry.registrar("tests").add_nodes(job_nodes.NODES)
    context = make_context(Session(registry, device="cpu", output_dir=tmp_path / "out"), data_dir=tmp_path / "data")
    running = BackgroundServer(create_api_server(context, GuardConfig())).start()
    try:
        holder = Client(running.url)
        blocker = holder.submit(blocking())
        assert cli.main(["submit", write(tmp_path, quick(72)), "--server", running.url]) == 0
        job = int(capsys.readouterr().out)
        assert oct(keys.stat().st_mode & 0o777) == "0o600"
        with pytest.raises(ApiError) as refused:
            Client(running.url).cancel(job)  # a stranger's client: not theirs
        assert refused.value.status == 403
        owner = Client(running.url, keys={job: json.loads(keys.read_text())[running.url][str(job)]})
        assert owner.cancel(job)
        assert cli.main(["requeue", str(job), "--server", running.url]) == 0  # no --key: it was kept
        assert capsys.readouterr().out.strip() == f"job {job} queued"
        holder.cancel(blocker)
        assert owner.wait(job, timeout=60)["status"] == "done"
    finally:
        running.stop()
        context.close()


def test_the_console_command_submits_and_waits(server, tmp_path):
    """The real entry point in a process of its own, token from the environment."""
    path = write(tmp_path, quick(81))
    env = {"NODEGRAPH_TOKEN": TOKEN, "NODEGRAPH_SERVER": server.url, "PATH": "/usr/bin:/bin",
           "NODEGRAPH_KEYS_FILE": str(tmp_path / "keys.json")}
    done = subprocess.run([sys.executable, "-m", "nodegraph.cli", "submit", path, "--wait"], env=env,
                          capture_output=True, text=True, timeout=600)  # a loaded machine
    assert done.returncode == 0, done.stderr
    job = int(done.stdout.splitlines()[0])
    assert "seed.int = 81" in done.stdout and f"job {job} done" in done.stderr
