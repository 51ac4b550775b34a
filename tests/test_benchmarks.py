"""Every benchmark runs by name through `python -m benchmarks NAME` (none is run here: they are slow)."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as runner

FOLDER = Path(__file__).resolve().parent.parent / "benchmarks"
MODULES = sorted(p.stem for p in FOLDER.glob("*.py") if not p.stem.startswith("_"))


def test_list_names_every_benchmark_module():
    listed = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], capture_output=True, text=True,
                            cwd=FOLDER.parent, check=True).stdout.split()
    assert listed == MODULES and len(MODULES) >= 9


@pytest.mark.parametrize("name", MODULES)
def test_each_main_takes_no_required_argument_and_parses_empty_argv(name):
    module = importlib.import_module(f"benchmarks.{name}")
    inspect.signature(module.main).bind()  # callable as main()
    if hasattr(module, "parse_args"):
        assert vars(module.parse_args([]))  # its options all have defaults


def test_runner_hands_each_module_a_clean_argv(monkeypatch):
    """What `python -m benchmarks digits_quality ...` did wrong: the module parsed the runner's arguments."""
    seen = {}
    for name in MODULES:
        module = importlib.import_module(f"benchmarks.{name}")

        def record(name=name, module=module):
            seen[name] = (list(sys.argv[1:]), module.parse_args() if hasattr(module, "parse_args") else None)
        monkeypatch.setattr(module, "main", record)
    monkeypatch.setattr(sys, "argv", ["python -m benchmarks", *MODULES])
    runner.main()
    assert sorted(seen) == MODULES and all(argv == [] for argv, _ in seen.values())
    assert seen["digits_quality"][1].per_class == 30
    seen.clear()
    monkeypatch.setattr(sys, "argv", ["python -m benchmarks", "p2p_quality", "--", "3"])
    runner.main()
    assert seen == {"p2p_quality": (["3"], seen["p2p_quality"][1])} and seen["p2p_quality"][1].seeds_per_pair == 3
    assert sys.argv == ["python -m benchmarks", "p2p_quality", "--", "3"]  # restored


def test_unknown_name_is_an_error_that_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        runner.main(["no_such_benchmark"])
    assert info.value.code == 2 and "engine" in capsys.readouterr().err


def test_peer_pipelines_quick_mode_prints_one_row_per_batch(capsys):
    """`python -m benchmarks peer_pipelines -- --quick` end to end: the tiny SD1.5 folder through our workflow and
    diffusers' pipeline, timed here and memory-probed in fresh processes. Checks the table's rows and that the
    two sides' latents agree, never the timings."""
    runner.run("peer_pipelines", ["--quick"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("tiny ")]
    assert [row[3] for row in rows] == ["1", "4", "16"]  # batch column
    assert all(float(row[-1]) < 1e-3 for row in rows)  # max |ours - diffusers| of the final latents
    assert "tiny: U-Net 0.8M parameters" in out
