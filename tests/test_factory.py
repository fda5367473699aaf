"""One front door for models: create() builds every kind, and the experiments build models nowhere else."""

import ast
from pathlib import Path

import pytest
import torch

from atml.errors import UsageError
from atml.models import factory, registry
from atml.models.types import Built, Classifier, ImageTextModel, TokenModel

SRC = Path(__file__).resolve().parents[1] / "src" / "atml"


@pytest.mark.parametrize(("name", "kind", "options"), [
    ("digits-resnet", Classifier, {"num_classes": 5}),
    ("timm/resnet18", Classifier, {"num_classes": 3, "family": "cnn"}),
    ("vit-digits", TokenModel, {}),
    ("clip-digits", ImageTextModel, {}),
])
def test_create_builds_every_kind_with_its_interface_and_preprocessing(name, kind, options):
    built = factory.create(name, "random", **options)
    assert isinstance(built, Built) and isinstance(built.model, kind)
    entry = factory.find(name, options.get("family"))
    assert built.preprocessing.mean == entry.preprocessing.mean and not built.info.pretrained
    images = torch.randint(0, 256, (2, 1, 20, 20), dtype=torch.uint8)
    x = built.preprocess(images)
    assert x.shape == (2, 3, built.preprocessing.input_size, built.preprocessing.input_size)


def test_the_vae_and_the_dcgan_are_registry_entries_built_by_the_same_call():
    vae = factory.create("mlp-vae", latent_dim=3, hidden=32)
    assert vae.model.latent_dim == 3 and vae.preprocess(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).shape[1] == 1
    gan = factory.create("dcgan", latent_dim=8, width=8)
    assert gan.model.sample(2).shape[0] == 2
    assert {(m.family, m.name) for m in registry.MODELS.values() if not m.weights} == {("vae", "mlp-vae"),
                                                                                        ("gan", "dcgan")}
    with pytest.raises(UsageError, match="weights='imagenet' is not valid for dcgan"):
        factory.create("dcgan", "imagenet")


def test_weights_are_checked_in_one_place_with_one_message():
    with pytest.raises(UsageError, match="weights=digits needs arch=digits-resnet or digits-resnet-small"):
        factory.check_weights("cnn", "resnet152", "digits")
    with pytest.raises(UsageError, match="weights='laion' is not known for clip-digits"):
        factory.check_weights("clip", "clip-digits", "laion")
    factory.check_weights("cnn", "resnet152", "pretrained-file", extra=("pretrained-file",))
    factory.check_weights("vit", "vit-digits", "pretrain-digits")  # the old spelling of digits


def _calls(path: Path) -> set[str]:
    """Dotted names called in a module: ``cnn.build``, ``VAE`` ..."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                names.add(f"{func.value.id}.{func.attr}")
            elif isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def test_experiments_ask_the_factory_for_models_and_never_a_builder():
    builders = {"cnn.build", "vit.build", "clip.build", "VAE", "DCGAN", "digits_backbone", "digits_vit",
                "digits_clip", "trained_by_atml"}
    offenders = {str(p.relative_to(SRC)): sorted(_calls(p) & builders) for p in (SRC / "suite").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_registry_is_data_and_imports_no_builder():
    tree = ast.parse((SRC / "models" / "registry.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "atml.models"
                for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported and not {"atml.models.resnet", "atml.models.vit", "atml.models.clip"} & modules


def test_each_family_is_declared_once_in_its_own_module():
    """registry.FAMILIES names them; each module's SPEC says how to check, build and read the family, and what it
    builds satisfies the family's interface."""
    import importlib

    from atml.models import layers

    for family in registry.FAMILIES:
        spec = factory.spec(family)
        assert spec is importlib.import_module(f"atml.models.{family}").SPEC and spec.name == family
    for name in ("digits-resnet-small", "vit-digits", "clip-digits", "mlp-vae", "dcgan"):
        built = factory.create(name, "random")
        family = factory.family_of(built.model)
        assert family.name == factory.find(name).family and isinstance(built.model, family.protocol)
        if family.layers is not None:
            assert layers.comparable_layers(built.model)  # compare.* reads it through the same spec
    with pytest.raises(UsageError, match="mlp-vae"):
        factory.find("not-a-vae", "vae")


@pytest.mark.parametrize(("name", "option"), [("digits-resnet-small", "state"), ("vit-digits", "state"),
                                              ("mlp-vae", "width"), ("clip-digits", "num_layers")])
def test_an_unknown_keyword_is_refused_by_create_naming_the_valid_ones(name, option):
    with pytest.raises(UsageError) as caught:
        factory.create(name, "random", **{option: 1})
    said = str(caught.value)
    assert f"{option}=" in said and "valid:" in said and "weights=PATH" in said and "\n" not in said, said


@pytest.mark.parametrize("name", ["digits-resnet-small", "vit-digits"])
def test_a_state_dict_without_its_head_gets_a_fresh_head_in_every_family(name, tmp_path):
    """The CNN family built a new head for a headless state dict; a ViT failed on the missing head keys."""
    inner = "body" if name.startswith("digits") else "model"  # the torchvision / timm module a user's file is of
    head = "fc." if inner == "body" else "head."
    source = getattr(factory.create(name, "random", num_classes=5).model, inner)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(head)}
    path = tmp_path / "body.pt"
    torch.save(state, path)
    built = factory.create(name, str(path), num_classes=10)
    x = built.preprocess(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    with torch.no_grad():
        assert built.model.eval()(x).shape[-1] == 10
    loaded = getattr(built.model, inner).state_dict()
    assert state.keys() <= loaded.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_pretrained_file_is_random_weights_read_back_through_the_weights_file_path():
    """resnet.transfer's offline stand-in for pretrained weights comes from the factory, like any weights: random
    weights drawn once from seed 0, saved under $ATML_CACHE/weights and loaded as a user's file would be."""
    first = factory.create("resnet18", "pretrained-file", family="cnn", num_classes=10)
    again = factory.create("resnet18", "pretrained-file", family="cnn", num_classes=10)
    path = factory.random_file("resnet18", "cnn")
    assert first.info.file == str(path) and first.info.sha256 and first.info.spec == str(path)
    saved = torch.load(path, weights_only=True)
    for state in (first.model.body.state_dict(), again.model.body.state_dict()):  # the heads are new, the rest read
        assert all(torch.equal(state[k], saved[k]) for k in saved if not k.startswith("fc."))
    with pytest.raises(UsageError, match="stands in for a CNN's pretrained file"):
        factory.create("vit-digits", "pretrained-file", family="vit")
