"""Every YAML file in conf/ (recursively, one test id each) composes into the typed schema and
resolves; and the command line can override, print and reject configs."""

import pytest
from omegaconf import OmegaConf

from conftest import CONF, compose, run_cli

YAML_FILES = sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml"))


def overrides_selecting(rel):
    """The command-line choice that makes Hydra load this file."""
    if rel.parent == CONF.relative_to(CONF) or str(rel.parent) == ".":
        return []
    group = str(rel.parent).replace("\\", "/")
    return [f"{group}={rel.stem}"]


def test_every_config_file_is_found():
    groups = {p.parts[0] for p in YAML_FILES if len(p.parts) > 1}
    assert {"model", "mesh", "layout", "lora", "optimizer", "dataset"} <= groups


@pytest.mark.parametrize("rel", YAML_FILES, ids=[str(p) for p in YAML_FILES])
def test_config_file_composes_and_resolves(rel):
    cfg = compose(*overrides_selecting(rel))
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["model"]["preset"]
    # the schema is behind the tree: converting to objects type-checks every field
    obj = OmegaConf.to_object(cfg)
    assert type(obj).__name__ == "Config"
    if rel.parts[0] == "mesh":
        assert len(cfg.mesh.shape) == len(cfg.mesh.axis_names)


def test_overrides_reach_the_resolved_config():
    cfg = compose("optimizer.learning_rate=1e-3", "lora=none", "mesh=1x8")
    assert cfg.optimizer.learning_rate == pytest.approx(1e-3)
    assert cfg.lora.rank == 0
    assert list(cfg.mesh.shape) == [1, 8]


def test_layout_rule_can_be_changed_or_removed_from_the_command_line():
    cfg = compose("layout=gemma_model_parallel", "layout.rules.embedding.axes=[null,model]",
                  "~layout.rules.ffw_linear")
    assert list(cfg.layout.rules.embedding.axes) == [None, "model"]
    assert "ffw_linear" not in cfg.layout.rules


def test_cfg_job_resolve_prints_the_resolved_config(workdir):
    proc = run_cli("--cfg", "job", "--resolve", "optimizer.learning_rate=1e-3", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    printed = OmegaConf.create(proc.stdout)
    assert printed.optimizer.learning_rate == pytest.approx(1e-3)
    assert printed.mesh.shape == [2, 4]
    assert not (workdir / "outputs").exists()  # printing a config starts no run
