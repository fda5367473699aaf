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


def test_atml_experiments_is_callable_before_and_after_the_package_is_imported():
    import subprocess
    import sys

    code = ("import atml; a = atml.experiments(); import atml.experiments.resnet; b = atml.experiments(); "
            "assert [e.name for e in a] == [e.name for e in b] == atml.experiments.registry().names(); "
            "import atml.report.build; from atml import api; assert atml.report.__call__ and callable(atml.report); "
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
