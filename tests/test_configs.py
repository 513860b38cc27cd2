"""Every YAML file in conf/ (recursively, one test id each) composes into the typed schema and
resolves; and the command line can override, print and reject configs."""

import pytest
from omegaconf import OmegaConf

from conftest import CONF, compose, run_cli
from runner.config import unknown_keys, unknown_override_key, validate
from runner.errors import UserError
from runner.rundir import RunDir

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
    assert unknown_keys(cfg) == []  # no file sets a key nothing reads
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


@pytest.mark.slow
def test_cfg_job_resolve_prints_the_resolved_config(workdir):
    proc = run_cli("--cfg", "job", "--resolve", "optimizer.learning_rate=1e-3", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    printed = OmegaConf.create(proc.stdout)
    assert printed.optimizer.learning_rate == pytest.approx(1e-3)
    assert printed.mesh.shape == [2, 4]
    assert not (workdir / "outputs").exists()  # printing a config starts no run


GROUP_FILES = [p for p in YAML_FILES if p.parts[0] in
               ("model", "mesh", "layout", "lora", "quant", "optimizer", "dataset")]


def _leaves(node, prefix=""):
    if isinstance(node, dict) and node and not prefix.endswith(("architecture.", "rules.")):
        for key, value in node.items():
            if key != "defaults":
                yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


@pytest.mark.parametrize("rel", GROUP_FILES, ids=[str(p) for p in GROUP_FILES])
def test_choosing_a_group_file_gives_the_files_own_values(rel):
    """`optimizer=sgd` trains at sgd.yaml's learning rate: no later default (the table of
    contents, the default experiment) overrides what the chosen file says."""
    group = rel.parts[0]
    own = OmegaConf.to_container(OmegaConf.load(CONF / rel))
    composed = OmegaConf.to_container(compose(f"{group}={rel.stem}")[group], enum_to_str=True)
    for key, value in _leaves(own):
        assert OmegaConf.select(OmegaConf.create(composed), key) == value, (rel, key)


def test_the_default_experiment_sets_no_group_value():
    """The default experiment says how long to train and what to sample; its groups are the table
    of contents' defaults, so it must not set (and so override) any group's values."""
    own = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / "default.yaml"))
    groups = {p.parts[0] for p in GROUP_FILES}
    assert not groups & set(own), sorted(groups & set(own))
    assert compose("optimizer=sgd").optimizer.learning_rate == pytest.approx(1e-4)
    assert compose().optimizer.learning_rate == pytest.approx(2e-3)  # adamw_tiny


@pytest.mark.parametrize("override,key,hint", [
    ("+optimizer.learnin_rate=1e-3", "optimizer.learnin_rate", "did you mean optimizer.learning_rate?"),
    ("++optimizer.gradient_accumulation_steps=4", "optimizer.gradient_accumulation_steps",
     "the keys of optimizer: name, learning_rate"),
    ("+learning_rate=1e-3", "learning_rate", "top-level keys: model, mesh"),
    ("+train.resum=false", "train.resum", "did you mean train.resume or train.remat?"),
])
def test_a_key_the_schema_lacks_is_refused_however_it_was_added(override, key, hint):
    """Hydra lets + and ++ add keys to a typed config; nothing would read them, so the run (and
    runner.plan, which validates the same way) refuses them with the typo's own line."""
    cfg = compose(override)
    assert unknown_keys(cfg) == [key]
    with pytest.raises(UserError) as refused:
        validate(cfg)
    line = str(refused.value)
    assert line.startswith(f"{key} is not a key of the config schema") and hint in line
    assert "\n" not in line
    assert unknown_override_key([override]) == key  # what a sweep checks before its first job
    if override.startswith("+") and not override.startswith("++"):
        with pytest.raises(UserError) as typo:  # the same key without +: Hydra refuses it
            compose(override[1:])
        assert str(typo.value) == line


def test_open_mappings_and_group_choices_are_not_unknown_keys():
    overrides = ["+layout.rules.extra={pattern:a,axes:[null]}", "model=gemma_7b_en",
                 "+experiment=default", "hydra.job.chdir=false", "~generate.prompts",
                 "model.architecture.num_layers=3", "lora.rank=2,4"]
    assert unknown_override_key(overrides) is None
    assert unknown_keys(compose("layout=gemma_model_parallel",
                                "+layout.rules.extra={pattern:a,axes:[null]}")) == []


def test_a_run_folder_whose_config_has_an_unknown_key_is_refused_with_the_same_line(tmp_path):
    """runner.generate, runner.export and runner.rerun read a run's resolved_config.yaml."""
    (tmp_path / "resolved_config.yaml").write_text("optimizer:\n  learnin_rate: 0.1\n")
    with pytest.raises(UserError) as refused:
        RunDir(tmp_path).config()
    assert "optimizer.learnin_rate is not a key of the config schema" in str(refused.value)
    assert "did you mean optimizer.learning_rate?" in str(refused.value)


def test_every_key_has_its_one_line_description_and_the_help_lists_it_all():
    from runner import usage
    from runner.config import walk_schema

    keys = [k for k, _ in walk_schema()]
    assert usage.described_keys() == keys  # a key added without help= fails here
    text = usage.text()
    for dotted, f in walk_schema():
        assert f"  {dotted}=" in text and f.metadata["help"] in text
        assert "\n" not in f.metadata["help"] and len(f.metadata["help"]) < 200
    for command in ("runner.plan", "runner.report", "runner.rerun", "runner.generate",
                    "runner.export", "runner -m KEY=A,B"):
        assert f"python -m {command}" in text
    groups = {line.split()[0]: line for line in text.splitlines()
              if line.startswith("  ") and "[" in line and "=" not in line.split()[0]}
    assert {"model", "mesh", "layout", "lora", "optimizer", "dataset", "quant", "experiment",
            "debug", "hydra/launcher", "hydra/sweeper"} <= set(groups)
    assert "[tiny_gemma]" in groups["model"] and "gemma_7b_en" in groups["model"]
    assert 'pip install -e ".[optuna]"' in groups["hydra/sweeper"]


@pytest.mark.parametrize("message,extra", [
    ("In 'hydra/config': Could not find 'hydra/launcher/submitit_local'\nAvailable options in "
     "'hydra/launcher':\n\tbasic\n\tslurm", "launchers"),
    ("In 'hydra/launcher/slurm': Could not load 'hydra/launcher/submitit_slurm'", "launchers"),
    ("In 'hydra/config': Could not find 'hydra/sweeper/optuna'\nAvailable options in "
     "'hydra/sweeper':\n\tbasic", "optuna"),
])
def test_a_plugin_choice_without_its_extra_names_the_install(message, extra):
    from hydra.errors import MissingConfigException

    from runner.config import compose_error_line

    line = compose_error_line(MissingConfigException(message, missing_cfg_file="x"))
    assert "\n" not in line and line.endswith(f'pip install -e ".[{extra}]"')


@pytest.mark.slow
def test_help_and_cfg_from_the_command_line(workdir):
    helped = run_cli("--help", cwd=workdir, timeout=120)
    assert helped.returncode == 0 and "optimizer.learning_rate=0.002" in helped.stdout
    assert "python -m runner.plan" in helped.stdout and not helped.stderr.strip()
    refused = run_cli("--cfg", "job", "train.batch_size=0", cwd=workdir, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == ("error: train.batch_size=0 must be an integer >= 1; e.g. "
                                      "train.batch_size=8 (the default)")
