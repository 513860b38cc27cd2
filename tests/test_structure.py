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


# Libraries whose import is slow or starts a backend: a command must parse its arguments and
# report a mistake before any of them loads (runner/startup.py), so a runner module that imports
# them at its top is imported by the others inside the function that needs it. Nothing else is.
HEAVY_LIBRARIES = {"keras", "keras_hub", "jax", "tensorflow", "tensorflow_datasets",
                   "transformers", "torch", "wandb", "orbax", "optax", "matplotlib"}


def _module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SOURCES}


def _runner_targets(node) -> list[str]:
    """The runner modules an import statement loads (`from runner import x` loads runner.x)."""
    names = []
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
            node.module.startswith("runner"):
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                 else node.module for a in node.names]
    elif isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.startswith("runner")]
    return [n for n in names if n in MODULES]


def _import_graph():
    """{module: (libraries imported at its top, runner modules imported at its top, runner
    modules imported inside its functions)}."""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        libraries, top, inner = set(), set(), set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                libraries |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                libraries.add(node.module.split(".")[0])
            top |= set(_runner_targets(node))
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    inner |= set(_runner_targets(node))
        graph[name] = (libraries, top - {name}, inner - {name})
    return graph


def _heavy(graph) -> set[str]:
    """Runner modules that load a heavy library when imported (themselves or through runner
    modules they import at their top)."""
    heavy, grown = set(), True
    while grown:
        grown = False
        for name, (libraries, top, _) in graph.items():
            if name not in heavy and (libraries & HEAVY_LIBRARIES or top & heavy):
                heavy.add(name)
                grown = True
    return heavy


def test_runner_modules_import_each_other_without_circles():
    """Every runner -> runner import, at the top or inside a function, points down a layering:
    no module reaches itself again (issue 24 untied rundir/checkpoints, data/chat_data,
    model/hf.ports/hf.load)."""
    graph = _import_graph()
    edges = {name: top | inner for name, (_, top, inner) in graph.items()}
    state: dict[str, str] = {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join(path + [target]))
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


def test_runner_imports_inside_functions_only_where_start_up_time_needs_them():
    graph = _import_graph()
    heavy = _heavy(graph)
    hidden = sorted(f"{name} -> {target}" for name, (_, _, inner) in graph.items()
                    for target in inner if target not in heavy)
    assert not hidden, f"import these at the top of the file: {hidden}"


@pytest.mark.parametrize("module", ["runner.startup", "runner.config", "runner.usage",
                                    "runner.plan.__main__", "runner.export.__main__",
                                    "runner.generate", "runner.rerun", "runner.report"])
def test_commands_load_no_heavy_library_before_they_start(module):
    code = (f"import importlib, sys; importlib.import_module({module!r}); "
            f"print(sorted(set(sys.modules) & {set(sorted(HEAVY_LIBRARIES))!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_every_data_format_the_schema_offers_is_one_object_in_the_table():
    from runner.config import DataFormat as Choice
    from runner.formats import FORMATS

    assert set(FORMATS) == {c.value for c in Choice}
    for name, fmt in FORMATS.items():
        assert fmt.name == name and callable(fmt.problems) and callable(fmt.examples)
    for source in ("checks.py", "data.py", "train.py"):  # they look formats up, never branch
        assert not re.search(r"\.format\s*==", (RUNNER / source).read_text()), source
