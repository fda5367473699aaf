import inspect

import pytest

from atml import config
from atml.errors import UsageError
from atml.registry import Experiment, Registry
from atml.suite import registry

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


@pytest.mark.slow
def test_the_api_functions_stay_functions_after_every_package_is_imported():
    """atml.experiments() and atml.report() are the API's functions, not packages that Python binds over them."""
    import subprocess
    import sys

    code = ("import atml; a = atml.experiments(); import atml.suite.resnet, atml.reporting.build; "
            "b = atml.experiments(); from atml import api; "
            "assert [e.name for e in a] == [e.name for e in b] == atml.suite.registry().names(); "
            "assert atml.report is api.report and atml.experiments is api.experiments; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
