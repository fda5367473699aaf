import inspect

import pytest

from atml import config
from atml.errors import UsageError
from atml.experiments import registry
from atml.registry import Experiment, Registry

REG = registry()


def test_duplicate_name_raises():
    reg = Registry()
    exp = next(iter(REG))
    reg.register(exp)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(exp)


def test_unknown_experiment_lists_names():
    with pytest.raises(UsageError, match="valid experiments: resnet.head"):
        REG.get("resnet.nope")


@pytest.mark.parametrize("exp", list(REG), ids=lambda e: e.name)
@pytest.mark.parametrize("preset", ["smoke", "demo", "full", "rehearsal"])
def test_every_experiment_has_every_preset(exp: Experiment, preset: str):
    cfg = config.build(exp.config_cls, exp.presets, preset)
    assert isinstance(cfg, exp.config_cls)
    for key, value in exp.presets[preset].items():  # the preset's values, not the defaults, are in force
        assert getattr(cfg, key) == (tuple(value) if isinstance(value, list) else value), key
    assert exp.summary and list(inspect.signature(exp.run).parameters) == ["cfg", "ctx"]
