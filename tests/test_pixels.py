"""Pixels as the weights expect them: an image folder reaches the model as timm's, torchvision's and open_clip's own
evaluation transforms would give it (issue 32).

Photos that ship with scikit-image are written as JPEG and PNG files of many sizes and aspect
ratios (odd and even crop margins, upsampled and downsampled, grey, EXIF-rotated, large enough
for JPEG draft decoding), read through ``data=folder`` as an experiment reads them (the decode
plan for the model, the dataset cache, the model's ``Preprocess``), and compared file by file
with the library's own pipeline on the same file: the pixels, and the logits of the model with
random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

from atml.data import factory, folder
from atml.data.decode import centre_offset, resized_shape, square_box
from atml.models import factory as models
from atml.models import registry
from atml.models.preprocess import Preprocess
from atml.suite import datasets

SIZES = [(300, 227), (235, 400), (640, 481), (1603, 1201), (249, 249), (500, 375), (375, 500), (2000, 1001),
         (233, 231)]
"""Width x height: odd and even margins for every model below, upsampling (235 < 248), draft decoding (>= 4x)."""


def _photos() -> list[np.ndarray]:
    import skimage.data

    return [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pixels")
    photos = _photos()
    for split in ("train", "val"):
        for c, name in enumerate(("a", "b")):
            out = root / split / name
            out.mkdir(parents=True)
            for i, (w, h) in enumerate(SIZES if split == "val" else SIZES[:2]):
                image = Image.fromarray(photos[(i + c) % 4]).resize((w, h), Image.Resampling.BICUBIC)
                image.save(out / f"{i}_{w}x{h}.jpg", quality=92)
            if split == "val":
                Image.fromarray(photos[1]).convert("L").resize((333, 250)).save(out / "grey.jpg")
                turned = Image.fromarray(photos[2]).resize((450, 301))
                exif = turned.getexif()
                exif[0x0112] = 6  # stored sideways: shown turned by 90 degrees
                turned.save(out / "exif_rotated.jpg", exif=exif)
                Image.fromarray(photos[3]).resize((317, 229)).save(out / "photo.png")
    return root


def _reference(name: str, family: str):
    """The library's own evaluation transform for ``name`` (a PIL image in, a normalised tensor out)."""
    if name.startswith("timm/"):
        import timm

        model = timm.create_model(name.removeprefix("timm/"), pretrained=False)
        return timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    import torchvision.models as tvm

    return tvm.get_model_weights(name).DEFAULT.transforms()


def _through_the_folder(root: Path, built) -> torch.Tensor:
    """The validation images as an experiment reads them with data=folder and no image_size: normalised inputs."""
    plan = datasets.decode_plan(None, (built.preprocessing,))
    loaded = factory.create(factory.Spec("folder", root=str(root), image_size=plan.size, crop=plan.crop,
                                         interpolation=plan.interpolation, progress=False))
    return built.preprocess(loaded.data.val.images)


@pytest.mark.parametrize("name, family, crop_pct", [("timm/resnet50", "cnn", 0.95),
                                                    ("timm/vit_small_patch16_224", "vit", 0.9),
                                                    ("resnet152", "cnn", 224 / 232)])
@pytest.mark.slow
def test_a_folder_reaches_the_model_as_its_own_pipeline_gives_it(name, family, crop_pct, photo_folder):
    built = models.create(name, "random", family=family, num_classes=1000, offline=True)
    assert built.preprocessing.crop_pct == pytest.approx(crop_pct)  # odd margins: 235 / 248 / 232 -> 224
    ours = _through_the_folder(photo_folder, built)
    reference = _reference(name, family)
    files, _ = folder.list_files(photo_folder / "val", ["a", "b"])
    theirs = torch.stack([reference(ImageOps.exif_transpose(Image.open(f)).convert("RGB")) for f in files])
    assert ours.shape == theirs.shape == (len(files), 3, 224, 224)
    pre = built.preprocessing
    scale = torch.tensor(pre.std).view(1, 3, 1, 1) * 255
    grey_levels = ((ours - theirs) * scale).abs().mean(dim=(1, 2, 3))
    assert grey_levels.max() <= 1.5, dict(zip([f.name for f in files], grey_levels.tolist()))
    model = built.model.eval()
    with torch.no_grad():
        a, b = model(ours), model(theirs)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cosine.min() >= 0.999, dict(zip([f.name for f in files], cosine.tolist()))


def test_the_decode_size_follows_the_weights_and_image_size_says_what_it_changes():
    tv = registry.lookup("cnn", "resnet152").weights["imagenet"].preprocessing
    deit = registry.lookup("vit", "deit_small_patch16_224").preprocessing
    assert deit == models.create("deit_small_patch16_224", "random", family="vit", num_classes=1000,
                                 offline=True).preprocessing  # what the built model applies: timm's crop_pct 0.9
    own = datasets.decode_plan(None, (tv,))
    assert (own.size, own.crop, own.interpolation) == (232, 224, "bilinear") and "232 px" in own.why
    both = datasets.decode_plan(None, (tv, deit))  # two geometries: the largest once, each model resizes down
    assert (both.size, both.crop, both.interpolation) == (248, None, "bicubic") and "largest" in both.why
    small = datasets.decode_plan(128, (tv,))
    assert (small.size, small.crop) == (128, None)
    assert small.why == "decoded at 128 px (image_size=128), upsampled to 224 px by the model's preprocessing"
    assert datasets.decode_plan(232, (tv,)).crop == 224  # the weights' own size, set by hand: still exact


@pytest.mark.parametrize("length", range(224, 246))
def test_every_centre_crop_starts_where_torchvisions_does(length):
    image = torch.arange(length * (length + 7), dtype=torch.float32).view(1, length, length + 7)
    theirs = TF.center_crop(image, [224, 224])
    top, left = centre_offset(length, 224), centre_offset(length + 7, 224)
    assert torch.equal(image[:, top:top + 224, left:left + 224], theirs)
    pre = registry.Preprocessing((0.0,) * 3, (1.0,) * 3, 224, "bilinear", 224 / length)
    pixels = (image.expand(3, -1, -1) % 256).to(torch.uint8)[None]
    assert torch.equal(Preprocess(pre)(pixels)[0], TF.center_crop(pixels[0], [224, 224]).float() / 255)


def test_the_long_side_and_the_box_follow_torchvisions_resize():
    assert resized_shape(375, 500, 235) == (235, int(235 * 500 / 375)) == (235, 313)
    assert resized_shape(500, 375, 235) == (313, 235)
    left, top, right, bottom = square_box(500, 375, 235, 224)
    assert top == 0 and bottom == pytest.approx(375)
    # the model's crop of the square (offset 6 of 235) starts where CenterCrop(224) of the 313-wide image does (44)
    assert left / (500 / 313) + centre_offset(235, 224) == pytest.approx(centre_offset(313, 224))
