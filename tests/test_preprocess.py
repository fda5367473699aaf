"""One preprocessing for every model, built from the registry entry and applied as it says."""

import pytest
import torch
import torchvision.models as tvm

from atml.models import factory, registry
from atml.models.preprocess import Preprocess, resize_size


def test_imagenet_rule_matches_torchvision_own_transform_on_images_at_the_resize_size():
    """ResNet-152 V2 weights: short side 232, centre crop 224, ImageNet mean/std, as torchvision's transforms()."""
    entry = registry.lookup("cnn", "resnet152").weights["imagenet"].preprocessing
    assert resize_size(entry) == 232 and resize_size(registry.lookup("cnn", "resnet152").weights["imagenet-v1"]
                                                     .preprocessing) == 256
    images = torch.randint(0, 256, (2, 3, 232, 232), dtype=torch.uint8)
    theirs = tvm.ResNet152_Weights.IMAGENET1K_V2.transforms()(images)
    ours = Preprocess(entry)(images)
    assert ours.shape == (2, 3, 224, 224)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_small_images_are_resized_straight_to_the_input_and_a_chosen_size_keeps_the_whole_image():
    pre = registry.Preprocessing((0.5,) * 3, (0.5,) * 3, 32, "bilinear", 0.875)
    grey = torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)
    assert torch.equal(Preprocess(pre)(grey), torch.ones(1, 3, 32, 32))
    image = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
    image[..., :, :2] = 255  # a bright left border: a centre crop would cut it away, a whole-image resize keeps it
    assert Preprocess(pre, 16)(image)[..., 0].max() > -0.9  # the chosen size: whole image, the border blurred in
    assert Preprocess(pre)(image)[..., 0].max() < -0.99  # the weights' rule: short side 36, centre 32 (border cut)


def test_every_family_reads_interpolation_and_crop_from_its_weights_entry():
    """The CNN path used to pass only mean and std: a timm CNN's own bicubic filter and crop never reached it."""
    import timm

    built = factory.create("timm/resnet18", "random", family="cnn", num_classes=10)
    cfg = timm.models.get_pretrained_cfg("resnet18").to_dict()
    assert (built.preprocessing.interpolation, built.preprocessing.crop_pct) == (cfg["interpolation"],
                                                                                 cfg["crop_pct"])
    digits_vit = factory.create("vit-digits", "random", num_classes=5).model
    assert digits_vit.preprocess.preprocessing == registry.lookup("vit", "vit-digits").preprocessing
    assert digits_vit.preprocess.mode == "bicubic"  # what the demo ViT was trained with
    tiny_clip = factory.create("clip-digits", "random").model
    assert tiny_clip.preprocess.preprocessing == registry.lookup("clip", "clip-digits").preprocessing


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_values_stay_in_range_after_resampling(mode):
    pre = registry.Preprocessing((0.0,) * 3, (1.0,) * 3, 24, mode, 1.0)
    images = (torch.rand(2, 3, 9, 9) > 0.5).to(torch.uint8) * 255  # hard edges: bicubic overshoots them
    out = Preprocess(pre)(images)
    assert out.min() >= 0 and out.max() <= 1
