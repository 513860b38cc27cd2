"""`python -m runner --help`: the commands, the config groups and their choices, and every key
with its default and its one-line description, all read from the schema (runner/config.py)
and conf/, so the help cannot drift from what a run accepts. Hydra's own help stays at
`--hydra-help`."""

from __future__ import annotations

from runner.config import CONF_DIR, compose, walk_schema

COMMANDS = (
    ("python -m runner [GROUP=CHOICE] [KEY=VALUE]", "train one experiment (default: the tiny "
                                                    "offline one)"),
    ("python -m runner -m KEY=A,B [KEY=C,D]", "a sweep: one job (and folder) per combination"),
    ("python -m runner --cfg job --resolve [...]", "print the config a command line resolves "
                                                   "to (checked as a run checks it), run nothing"),
    ("python -m runner.plan [overrides] [--compile]", "the sharding plan and memory per device, "
                                                      "no weights"),
    ("python -m runner.report DIR", "a run or sweep folder as a table, CSV, Markdown and PNG"),
    ("python -m runner.rerun RUN_DIR", "train a run's resolved config again and compare the "
                                       "metrics"),
    ("python -m runner.generate RUN_DIR", "reload a run's adapter and sample"),
    ("python -m runner.export RUN_DIR", "a finished run as Hugging Face folders (merged model, "
                                        "PEFT adapter)"),
)
# Hydra plugin groups: the choices an extra brings (runner.config.PLUGIN_EXTRAS names the
# extra in an error when it is missing); slurm is conf/hydra/launcher/slurm.yaml over submitit.
PLUGIN_GROUPS = {"hydra/launcher": ("launchers", ["submitit_local", "slurm"]),
                 "hydra/sweeper": ("optuna", ["optuna"])}


def _groups() -> list[tuple[str, str, list[str]]]:
    """(group, default choice, choices) from conf/, in the table of contents' order."""
    import yaml

    defaults = {}
    for entry in yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            (group, choice), = entry.items()
            defaults[group.replace("optional ", "")] = choice
    found = []
    for group, choice in defaults.items():
        choices = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        found.append((group, "none" if choice is None else str(choice), choices))
    return found


def _value(cfg, dotted: str) -> str:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, dotted, throw_on_missing=False)
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))


def text() -> str:
    """The whole help text."""
    cfg = compose(())
    out = ["Declarative fine-tuning of LLMs with Keras 3 on JAX: Hydra config groups compose "
           "into one run.", "", "Commands:"]
    width = max(len(c) for c, _ in COMMANDS)
    out += [f"  {c.ljust(width)}  {what}" for c, what in COMMANDS]
    out += ["", "Config groups (GROUP=CHOICE; the default in brackets):"]
    rows = [(g, d, ", ".join(c for c in cs if c != d)) for g, d, cs in _groups()]
    rows += [(g, "basic", f"{', '.join(cs)} (pip install -e \".[{extra}]\")")
             for g, (extra, cs) in PLUGIN_GROUPS.items()]
    width = max(len(g) for g, _, _ in rows)
    out += [f"  {g.ljust(width)}  [{d}] {rest}" for g, d, rest in rows]
    out += ["", "Keys (KEY=VALUE; the default experiment's value after =):"]
    section = None
    for dotted, field in walk_schema():
        head = dotted.split(".")[0] if "." in dotted else ""
        if head != section:
            section = head
            out.append(f" {head or 'top level'}")
        out.append(f"  {dotted}={_value(cfg, dotted)}")
        out.append(f"      {field.metadata.get('help', '')}")
    out += ["", "Environment: HYDRA_FULL_ERROR=1 shows a mistake's stack trace; "
                "RUNNER_LIBRARY_LOGS=1 keeps TensorFlow's and CUDA's start-up lines on stderr.",
            "Hydra's own help: python -m runner --hydra-help"]
    return "\n".join(out) + "\n"


def described_keys() -> list[str]:
    """Every schema key that has its one-line description (a test compares with all)."""
    return [k for k, f in walk_schema() if f.metadata.get("help")]

