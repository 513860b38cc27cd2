"""The shape of the code the project promises (issue 12): the run path in short stages, one
owner of the run folder's file names, commands that do not borrow from train, and conf/ shipped
as package data so a non-editable install runs from any folder."""

import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

RUNNER = ROOT / "runner"
SOURCES = sorted(p for p in RUNNER.rglob("*.py"))
# Commands that run a training run: the CLI and the rerun. Nothing else imports runner.train.
ENTRY_POINTS = {"runner/__main__.py", "runner/rerun.py"}


def _functions(path):
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_in_runner_is_over_60_lines():
    long = [f"{p.relative_to(ROOT)}:{f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for p in SOURCES for f in _functions(p) if f.end_lineno - f.lineno + 1 > 60]
    assert not long, long


def _imports_train(path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "runner" and \
                any(a.name == "train" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "runner.train":
            return True
        if isinstance(node, ast.Import) and any(a.name == "runner.train" for a in node.names):
            return True
    return False


def test_only_the_entry_points_import_train():
    importers = {str(p.relative_to(ROOT)) for p in SOURCES if _imports_train(p)}
    assert importers <= ENTRY_POINTS, importers - ENTRY_POINTS


def test_run_folder_file_names_are_spelt_in_one_module():
    names = ["metrics.jsonl", "summary.json", "throughput.jsonl", "resolved_config.yaml",
             "env.json", "sharding.tsv", "samples.jsonl", "adapter.lora.h5", "adapter_probe.npz"]
    spelt = {}
    for path in SOURCES:
        if path.name == "rundir.py":
            continue
        code = path.read_text()
        # strings in code, not prose: a quoted file name
        for name in names:
            if re.search(rf"[\"']{re.escape(name)}[\"']", code):
                spelt.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not spelt, spelt


@pytest.mark.slow
def test_a_non_editable_install_runs_from_another_folder(tmp_path):
    """`pip install .` (not -e): conf/ and the shipped assets come with the package."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--quiet", "--target", str(target), str(ROOT)], check=True, timeout=300)
    assert (target / "runner" / "conf" / "config.yaml").is_file()
    assert (target / "runner" / "conf" / "layout" / "gemma3.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "train.steps=2", "generate.prompts=[]",
         "tracking.mode=disabled", "layout=gemma_model_parallel", "hydra.run.dir=run"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = subprocess.run([sys.executable, "-c", "import runner, sys; print(runner.__file__)"],
                            cwd=work, env=env, capture_output=True, text=True).stdout
    assert str(target) in loaded  # the installed copy ran, not the checkout
    assert (work / "run" / "summary.json").is_file()


def test_ci_runs_the_readmes_test_command_in_a_fresh_virtual_environment():
    """CI must fail where a new user would: a fresh venv, then exactly the README's test line
    (its install and its test command), with nothing from this machine's own Python."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Run the tests", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    assert command == 'python -m pip install -e ".[test]" && python -m pytest'
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert ci[-1] == command
    venv = next(i for i, line in enumerate(ci) if " -m venv " in line)
    activate = next(i for i, line in enumerate(ci) if line.startswith("source ")
                    and "/bin/activate" in line)
    assert venv < activate < len(ci) - 1
    assert "mktemp" in " ".join(ci[:venv + 1])  # a new folder every time, never reused
