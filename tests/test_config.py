import dataclasses

import pytest

from atml import config
from atml.config import RunConfig
from atml.errors import UsageError


@dataclasses.dataclass
class Inner:
    depth: int = 2


@dataclasses.dataclass
class Cfg(RunConfig):
    epochs: int = 10
    lr: float = 0.1
    sizes: tuple[int, ...] = (32, 64)
    name: str = "x"
    flag: bool = False
    limit: int | None = None
    inner: Inner = dataclasses.field(default_factory=Inner)

    def check_values(self) -> None:
        super().check_values()
        if self.epochs < 1:
            raise UsageError(f"epochs={self.epochs} is not valid; use an integer >= 1")


PRESETS = {"smoke": {"epochs": 1, "sizes": (8,)}, "full": {}}


def test_defaults_then_preset_then_overrides():
    cfg = config.build(Cfg, PRESETS, "smoke", ["lr=0.5", "sizes=[16, 24]", "inner.depth=5", "flag=true"])
    assert (cfg.epochs, cfg.lr, cfg.sizes, cfg.inner.depth, cfg.flag) == (1, 0.5, (16, 24), 5, True)


def test_scalar_for_tuple_and_int_for_float_and_none():
    cfg = config.build(Cfg, PRESETS, "full", ["sizes=224", "lr=1", "limit=null", "name=123"])
    assert cfg.sizes == (224,) and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.limit is None and cfg.name == "123"


def test_text_options_take_the_value_verbatim():
    # YAML 1.1 would read these as booleans or numbers; a str option keeps what was typed.
    cfg = config.build(Cfg, PRESETS, "full", ["name=off"])
    assert cfg.name == "off"
    assert config.build(Cfg, PRESETS, "full", ["name=1e-2"]).name == "1e-2"


def test_float_in_exponent_notation_without_a_dot():
    # YAML 1.1 reads "1e-2" as a string; a float option must still take it.
    assert config.build(Cfg, PRESETS, "full", ["lr=1e-2"]).lr == 0.01
    with pytest.raises(UsageError, match="expects float"):
        config.build(Cfg, PRESETS, "full", ["lr=fast"])


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UsageError, match="unknown config key 'epoch'.*valid keys: seed, device.*epochs"):
        config.build(Cfg, PRESETS, "full", ["epoch=3"])


def test_unknown_nested_key():
    with pytest.raises(UsageError, match="unknown config key 'width'.*valid keys: depth"):
        config.build(Cfg, PRESETS, "full", ["inner.width=3"])


def test_unknown_preset_lists_presets():
    with pytest.raises(UsageError, match="unknown preset 'demo'; valid presets: smoke, full"):
        config.build(Cfg, PRESETS, "demo")


@pytest.mark.parametrize("item, match", [
    ("epochs=three", "expects int"),
    ("epochs=1.5", "expects int"),
    ("flag=maybe", "expects bool"),
    ("lr=true", "expects float"),
    ("noequals", "not of the form key=value"),
    ("epochs=0", "epochs=0 is not valid"),
    ("device=tpu", "device='tpu' is not valid; choose one of auto, cpu, cuda, mps"),
    ("seed=-1", "seed=-1 is not valid"),
])
def test_bad_values_are_named(item, match):
    with pytest.raises(UsageError, match=match):
        config.build(Cfg, PRESETS, "full", [item])


def test_yaml_round_trip():
    cfg = config.build(Cfg, PRESETS, "smoke", ["lr=0.25"])
    import yaml

    back = config.from_dict(Cfg, yaml.safe_load(config.to_yaml(cfg)))
    assert back == cfg


@pytest.mark.parametrize(("experiment", "item", "match"), [
    ("vit.masking", "fills=[mean,blur]", "fills='blur' is not valid; choose one of mean, zero, drop"),
    ("resnet.transfer", "cells=[pretrained:middle]", "cells='pretrained:middle' is not valid; choose one of "
                                                     "pretrained:head"),
    ("vit.pooling", "backend=jax", "backend='jax' is not valid; choose one of timm, hf"),
    ("resnet.head", "compile=fast", "compile='fast' is not valid; choose one of off, default"),
])
def test_choice_fields_are_literal_types_checked_once_when_the_config_is_read(experiment, item, match):
    from atml.suite import registry

    exp = registry().get(experiment)
    with pytest.raises(UsageError, match=match):
        config.build(exp.config_cls, exp.presets, "smoke", [item])


def test_a_misspelled_kl_schedule_is_refused_not_trained_as_a_constant_weight():
    from atml.train.vae_recipe import Variant, kl_weight_at

    assert kl_weight_at(Variant("warm", kl_weight=1.0, schedule="warmup", warmup_fraction=0.5), 0.25) == 0.5
    with pytest.raises(ValueError, match="schedule='warmpu' is not a KL schedule"):
        Variant("typo", schedule="warmpu")  # type: ignore[arg-type]


def test_a_list_key_given_without_brackets_says_it_wants_a_list_and_how_to_write_it():
    from atml.suite import registry

    exp = registry().get("resnet.head")
    with pytest.raises(UsageError) as caught:
        config.build(exp.config_cls, exp.presets, "smoke", ["resolutions=32,64"])
    assert "expects a list of int, written in brackets (resolutions=[32,64])" in str(caught.value)
    from atml.cli import TERMINAL

    assert "written in brackets (--set resolutions=[32,64])" in caught.value.words(TERMINAL)
