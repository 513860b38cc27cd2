"""Every model file's architecture numbers build the preset's exact parameter count (keras-hub's
preset metadata), with no weights and no download."""

import math

import pytest
import yaml

from conftest import CONF

MODEL_FILES = sorted(p for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_architecture_gives_the_published_parameter_count(path):
    import keras
    import keras_hub

    from runner.model import backbone_class

    spec = yaml.safe_load(path.read_text())
    assert spec["family"] and spec["architecture"], "every model file names its architecture"
    with keras.StatelessScope(initialize_variables=False):
        backbone = backbone_class(spec["family"])(**spec["architecture"])
    n = sum(math.prod(v.shape) for v in backbone.weights)
    presets = keras_hub.models.Backbone.presets
    if spec["preset"] in presets:
        assert n == presets[spec["preset"]]["metadata"]["params"]
    else:  # the shipped preset: its own saved config is the reference
        shipped = keras_hub.models.Backbone.from_preset(
            str(CONF.parent / "runner" / "assets" / "presets" / spec["preset"]))
        assert n == shipped.count_params()
