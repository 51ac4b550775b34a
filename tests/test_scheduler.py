import threading

import pytest

from nodegraph import CancelToken, NodeFailed, RunCancelled, Session, WorkflowInvalid

from . import engine_nodes
from .helpers import EventLog, link, wf


def chain():
    return wf({
        "a": {"type": "test/number", "inputs": {"value": 1.0}},
        "b": {"type": "test/number", "inputs": {"value": 10.0}},
        "sum": {"type": "test/add", "inputs": {"a": link("a", "float"), "b": link("b", "float")}},
        "double": {"type": "test/add", "inputs": {"a": link("sum", "float"), "b": link("sum", "float")}},
        "out": {"type": "test/sink", "inputs": {"value": link("double", "float")}},
        "other": {"type": "test/sink", "inputs": {"value": link("b", "float")}},
    })


def test_runs_in_topological_order_and_returns_outputs(registry):
    log = EventLog()
    result = Session(registry).run(chain(), on_event=log)
    assert result["out"] == {"value": 22.0} and result.value("other") == 10.0
    started = log.nodes("node_start")
    assert started.index("sum") > max(started.index("a"), started.index("b"))
    assert started.index("double") > started.index("sum")
    assert log[0].kind == "run_start" and log[-1].kind == "run_done" and log[-1].status == "ok"
    assert all(e.seconds is not None for e in log if e.kind == "node_done")


def test_changing_one_widget_reruns_only_it_and_descendants(registry):
    session = Session(registry)
    w = chain()
    session.run(w)
    w.set("a.value", 2.0)
    log = EventLog()
    result = session.run(w, on_event=log)
    assert sorted(log.nodes("node_start")) == ["a", "double", "out", "sum"]
    assert set(result.cached) == {"b"} | {"other"} or set(result.cached) >= {"b"}
    assert result["out"]["value"] == 24.0
    # unchanged workflow: everything is served from the cache
    log = EventLog()
    session.run(w, on_event=log)
    assert log.nodes("node_start") == [] and sorted(log.nodes("node_cached")) == ["other", "out"]


def test_only_requested_outputs_run(registry):
    log = EventLog()
    result = Session(registry).run(chain(), outputs=["other"], on_event=log)
    assert sorted(log.nodes("node_start")) == ["b", "other"]
    assert list(result.outputs) == ["other"]


def test_side_effect_nodes_always_run(registry):
    session = Session(registry)
    w = wf({"a": {"type": "test/number", "inputs": {}},
            "rec": {"type": "test/record", "inputs": {"value": link("a", "float")}}})
    first = engine_nodes.CALLS["test/record"]
    session.run(w)
    log = EventLog()
    session.run(w, on_event=log)
    assert engine_nodes.CALLS["test/record"] == first + 2
    assert log.nodes("node_start") == ["rec"] and log.nodes("node_cached") == ["a"]


def test_lru_eviction_under_byte_budget(registry):
    session = Session(registry, cache_bytes=2500)
    nodes = {f"b{i}": {"type": "test/bytes", "inputs": {"size": 1000, "tag": i}} for i in range(3)}
    nodes.update({f"s{i}": {"type": "test/sink", "inputs": {"value": link(f"b{i}", "any")}} for i in range(3)})
    session.run(wf(nodes), outputs=["b0", "b1", "b2"])
    assert session.cache.total_bytes <= 2500 and session.cache.evictions >= 1
    log = EventLog()
    session.run(wf(nodes), outputs=["b2"], on_event=log)
    assert log.nodes("node_cached") == ["b2"]  # most recent survives
    log = EventLog()
    session.run(wf(nodes), outputs=["b0"], on_event=log)
    assert log.nodes("node_start") == ["b0"]  # oldest was evicted


def test_file_fingerprint_change_invalidates(registry, tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("one")
    w = wf({"r": {"type": "test/read_file", "inputs": {"path": str(path)}},
            "out": {"type": "test/sink", "inputs": {"value": link("r", "string")}}})
    session = Session(registry, read_roots=[tmp_path])
    assert session.run(w)["out"]["value"] == "one"
    assert session.run(w).ran == []
    path.write_text("two")  # same size, possibly same mtime: content decides
    assert session.run(w)["out"]["value"] == "two"


def test_lazy_input_runs_only_the_taken_branch(registry):
    w = wf({
        "cond": {"type": "test/count", "inputs": {}},
        "yes": {"type": "test/number", "inputs": {"value": 1.0}},
        "no": {"type": "test/fail", "inputs": {"value": link("yes", "float")}},
        "pick": {"type": "test/choose", "inputs": {"condition": True, "yes": link("yes", "float"),
                                                   "no": link("no", "float")}},
        "out": {"type": "test/sink", "inputs": {"value": link("pick", "any")}},
    })
    log = EventLog()
    result = Session(registry).run(w, on_event=log)
    assert result["out"]["value"] == 1.0
    assert "no" not in log.nodes("node_start") and "cond" not in log.nodes("node_start")


def test_failing_node_names_itself_and_keeps_earlier_cache(registry):
    session = Session(registry)
    w = wf({"a": {"type": "test/number", "inputs": {"value": 3.0}},
            "bad": {"type": "test/fail", "inputs": {"value": link("a", "float"), "message": "kaput"}},
            "out": {"type": "test/sink", "inputs": {"value": link("bad", "float")}}})
    log = EventLog()
    with pytest.raises(NodeFailed) as info:
        session.run(w, on_event=log)
    assert info.value.node_id == "bad" and "test/fail" in str(info.value) and "kaput" in str(info.value)
    assert log.nodes("node_error") == ["bad"] and log[-1].status == "failed"
    w.set("out.value", {"from": "a", "output": "float"})
    log = EventLog()
    assert session.run(w, on_event=log)["out"]["value"] == 3.0
    assert log.nodes("node_cached") == ["a"]


def test_cancellation_inside_a_node_keeps_session_usable(registry):
    session = Session(registry)
    w = wf({"a": {"type": "test/number", "inputs": {"value": 5.0}},
            "slow": {"type": "test/slow", "inputs": {"value": link("a", "float"), "steps": 10, "cancel_at": 4}},
            "out": {"type": "test/sink", "inputs": {"value": link("slow", "float")}}})
    log = EventLog()
    with pytest.raises(RunCancelled):
        session.run(w, on_event=log)
    assert [e.step for e in log if e.kind == "progress"] == [1, 2, 3]
    assert log[-1].status == "cancelled"
    w.set("slow.cancel_at", -1)
    log = EventLog()
    assert session.run(w, on_event=log)["out"]["value"] == 5.0
    assert log.nodes("node_cached") == ["a"]


def cancel_when_spinning(session: Session, w, finish_on_cancel: bool) -> tuple[EventLog, RunCancelled]:
    """Run `w` here while another thread waits for `spin`'s first progress report, then cancels."""
    spinning = threading.Event()
    log = EventLog()

    def on_event(event):
        log(event)
        if event.kind == "progress" and event.node == "spin":
            spinning.set()

    def canceller():
        if spinning.wait(timeout=60):
            session.cancel()

    thread = threading.Thread(target=canceller)
    thread.start()
    w.set("spin.finish_on_cancel", finish_on_cancel)
    try:
        with pytest.raises(RunCancelled) as info:
            session.run(w, on_event=on_event)
    finally:
        spinning.set()  # never leave the canceller waiting
        thread.join()
    return log, info.value


def spin_workflow():
    return wf({"a": {"type": "test/number", "inputs": {"value": 2.0}},
               "spin": {"type": "test/spin", "inputs": {"value": link("a", "float")}},
               "after": {"type": "test/add", "inputs": {"a": link("spin", "float")}},
               "out": {"type": "test/sink", "inputs": {"value": link("after", "float")}}})


def test_cancel_from_another_thread_inside_a_node(registry):
    session = Session(registry)
    log, err = cancel_when_spinning(session, spin_workflow(), finish_on_cancel=False)
    assert "in node 'spin'" in str(err)
    assert log.nodes("node_start") == ["a", "spin"] and log[-1].status == "cancelled"
    log = EventLog()
    w = spin_workflow()
    w.set("spin.max_polls", 1)
    assert session.run(w, on_event=log)["out"]["value"] == 2.0  # the session is usable again
    assert log.nodes("node_cached") == ["a"]


def test_cancel_from_another_thread_between_nodes(registry):
    """`spin` ignores the cancel and finishes; the engine stops before the next node and keeps spin's result."""
    session = Session(registry)
    log, err = cancel_when_spinning(session, spin_workflow(), finish_on_cancel=True)
    assert "before node 'after'" in str(err)
    assert log.nodes("node_done") == ["a", "spin"] and "after" not in log.nodes("node_start")
    log = EventLog()
    w = spin_workflow()
    w.set("spin.finish_on_cancel", True)
    assert session.run(w, on_event=log)["out"]["value"] == 2.0
    assert log.nodes("node_cached") == ["spin"]


def gated(name: str):
    """a -> gate (held until GATES[name] is set) -> out."""
    return wf({"a": {"type": "test/number", "inputs": {"value": 1.0}},
               "gate": {"type": "test/gate", "inputs": {"value": link("a", "float"), "name": name}},
               "out": {"type": "test/sink", "inputs": {"value": link("gate", "float")}}})


class TwoRuns:
    """Two runs of one session in threads: the first is held in its gate, the second waits behind it."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.first_id: int | None = None
        self.first_inside = threading.Event()
        self.outcomes: dict[str, object] = {}
        self.logs = {"first": EventLog(), "second": EventLog()}
        engine_nodes.GATES.update(first=threading.Event(), second=threading.Event())

    def _run(self, name: str, token: CancelToken | None) -> None:
        def on_event(event):
            self.logs[name](event)
            if name == "first" and event.kind == "node_start" and event.node == "gate":
                self.first_id = event.run_id
                self.first_inside.set()
        try:
            self.outcomes[name] = self.session.run(gated(name), on_event=on_event, cancel_token=token).value("out")
        except RunCancelled as err:
            self.outcomes[name] = err

    def start(self, second_token: CancelToken | None = None) -> None:
        self.threads = [threading.Thread(target=self._run, args=("first", None))]
        self.threads[0].start()
        assert self.first_inside.wait(60)
        self.threads.append(threading.Thread(target=self._run, args=("second", second_token)))
        self.threads[1].start()

    def finish(self) -> None:
        for event in engine_nodes.GATES.values():
            event.set()
        for thread in self.threads:
            thread.join(60)


def test_cancel_by_run_id_stops_that_run_only(registry):
    runs = TwoRuns(Session(registry))
    try:
        runs.start()
        assert runs.session.cancel(runs.first_id) is True
    finally:
        runs.finish()
    assert isinstance(runs.outcomes["first"], RunCancelled) and "before node 'out'" in str(runs.outcomes["first"])
    assert runs.outcomes["second"] == 1.0 and runs.logs["second"][-1].status == "ok"
    assert runs.session.cancel(runs.first_id) is False  # a finished run is no longer registered


def test_a_waiting_run_cancelled_by_its_token_never_starts_a_node_and_the_running_one_finishes(registry):
    runs = TwoRuns(Session(registry))
    second_token = CancelToken()
    try:
        runs.start(second_token)
        second_token.cancel()
    finally:
        runs.finish()
    assert runs.outcomes["first"] == 1.0 and runs.logs["first"][-1].status == "ok"
    assert isinstance(runs.outcomes["second"], RunCancelled)
    assert runs.logs["second"].nodes("node_start") == [] and runs.logs["second"][-1].status == "cancelled"


def test_link_fed_widget_is_validated_at_run_time(registry):
    w = wf({"a": {"type": "test/count", "inputs": {"n": 100}},
            "m": {"type": "test/add", "inputs": {"a": link("a", "int")}},
            "c": {"type": "test/count", "inputs": {"n": link("a", "int")}}})
    assert Session(registry).run(w, outputs=["c"])["c"]["int"] == 100
    w.set("a.mode", "down")
    with pytest.raises(NodeFailed, match="input 'n' from a.int: Input should be greater than or equal to 0"):
        Session(registry).run(w, outputs=["c"])


def test_context_generator_is_deterministic_per_key(builtin_registry):
    w = wf({"noise": {"type": "core/random_tensor", "inputs": {"shape": [4], "seed": 3}}})
    first = Session(builtin_registry).run(w, outputs=["noise"])["noise"]["tensor"]
    second = Session(builtin_registry).run(w, outputs=["noise"])["noise"]["tensor"]
    assert first.equal(second)
    w.set("noise.seed", 4)
    assert not Session(builtin_registry).run(w, outputs=["noise"])["noise"]["tensor"].equal(first)


def test_nan_output_is_reported_with_the_node(builtin_registry, registry):
    for name, socket in builtin_registry.types.items():
        if name not in registry.types:
            registry.add_type(socket)
    registry.add_node(builtin_registry.get("core/random_tensor"))
    w = wf({"noise": {"type": "core/random_tensor", "inputs": {"shape": [2, 3]}},
            "scaled": {"type": "test/scale", "inputs": {"tensor": link("noise", "tensor"), "factor": 1e30}},
            "again": {"type": "test/scale", "inputs": {"tensor": link("scaled", "tensor"), "factor": 1e30}}})
    session = Session(registry)
    with pytest.raises(NodeFailed, match=r"node 'again' \(test/scale\) failed: output 'tensor' contains NaN"):
        session.run(w, outputs=["again"])
    assert session.run(w, outputs=["scaled"]).cached == ["scaled"]


def test_engine_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, nodegraph, nodegraph.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_read_roots_confine_file_inputs_at_validation(registry, tmp_path, monkeypatch):
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "ok.txt").write_text("fine")
    (tmp_path / "secret.txt").write_text("no")
    for session in (Session(registry, read_roots=[inside]), Session(registry, input_roots=[inside])):  # former name
        w = wf({"r": {"type": "test/read_file", "inputs": {"path": str(inside / "ok.txt")}}})
        assert session.run(w, outputs=["r"])["r"]["string"] == "fine"
        for bad in (str(tmp_path / "secret.txt"), str(inside / ".." / "secret.txt")):
            w.set("r.path", bad)
            with pytest.raises(WorkflowInvalid, match="outside the folders nodes may read"):
                session.run(w, outputs=["r"])
    monkeypatch.chdir(inside)  # confined by default too: to the working folder
    with pytest.raises(WorkflowInvalid, match="outside the folders nodes may read"):
        Session(registry).run(w, outputs=["r"])
    monkeypatch.chdir(tmp_path)
    assert Session(registry).run(w, outputs=["r"])["r"]["string"] == "no"


def test_out_of_memory_names_the_node_and_hints(registry):
    session = Session(registry)
    w = wf({"a": {"type": "test/number", "inputs": {}},
            "huge": {"type": "test/allocate", "inputs": {"gigabytes": 2.0**20}}})  # a petabyte
    with pytest.raises(NodeFailed, match=r"node 'huge' \(test/allocate\) failed: .*hint: out of device memory"):
        session.run(w, outputs=["a", "huge"])
    assert session.run(w, outputs=["a"]).cached == ["a"]
