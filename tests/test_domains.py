"""Every value a user can type is checked before anything runs (issue 13).

Table-driven over the schema itself: every key must declare a domain (a new key without one
fails here), and for every key, each value outside its domain (the domain's own examples, plus
null where the key is not optional) is refused with one line that names the key. Compose errors
and domain errors reach the user the same way (runner.startup: `error:` line, exit code 2)."""

import pytest

from conftest import CONF, compose
from runner.config import validate, walk_schema
from runner.errors import UserError

KEYS = list(walk_schema())


def _bad_overrides():
    cases = []
    for key, f in KEYS:
        domain = f.metadata.get("domain")
        overrides = domain.bad_overrides(key) if domain else []
        if "Optional" not in str(f.type):
            overrides.append(f"{key}=null")
        cases += [(key, o) for o in overrides]
    return cases


CASES = _bad_overrides()


def test_every_key_declares_a_domain_and_has_values_outside_it():
    assert len(KEYS) > 70
    no_domain = [k for k, f in KEYS if f.metadata.get("domain") is None]
    assert not no_domain, f"keys without a domain (runner/domains.py key()): {no_domain}"
    untested = {k for k, _ in KEYS} - {k for k, _ in CASES}
    assert not untested, untested


@pytest.mark.parametrize("key,override", CASES, ids=[o for _, o in CASES])
def test_a_value_outside_its_domain_is_refused_naming_the_key(key, override):
    with pytest.raises(UserError) as info:
        validate(compose(override))
    message = str(info.value)
    assert "\n" not in message, message
    assert key in message or key.split(".")[-1] in message, message


@pytest.mark.parametrize("rel", sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml")
                                       if p.parent != CONF and p.parts[-2] != "launcher"),
                         ids=str)
def test_every_shipped_config_file_is_inside_the_domains(rel):
    group = str(rel.parent)
    validate(compose(f"{group}={rel.stem}"))


@pytest.mark.parametrize("override,needle", [
    ("train.batch_size=0", "train.batch_size=0 must be an integer >= 1; e.g. train.batch_size=8"),
    ("optimizer.learning_rate=-0.1", "optimizer.learning_rate=-0.1 must be a number > 0"),
    ("optimizer.beta_2=1", "must be a number >= 0 and < 1"),
    ("mesh.shape=[0,8]", "mesh.shape=[0, 8] must be a non-empty list of positive sizes"),
    ("dataset.prompt_template='{src'", "is not a format string"),
    ("compilation_cache_dir=/proc/nope", "cannot be created in /proc"),
    ("plan.accelerator=h100", "must be one of ["),
])
def test_messages_name_the_value_the_domain_and_a_fix(override, needle):
    with pytest.raises(UserError) as info:
        validate(compose(override))
    assert needle in str(info.value)
