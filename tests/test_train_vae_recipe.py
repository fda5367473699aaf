import pytest
import torch

from atml.models import factory
from atml.models.vae import VAE
from atml.train.vae_recipe import VAEStep, Variant, kl_weight_at

_UNIT = factory.create("mlp-vae", family="vae").preprocess  # the VAE's own: uint8 -> [0, 1]


@pytest.mark.parametrize("variant, progress, expected", [
    (Variant("c", 2.0), 0.3, 2.0),
    (Variant("w", 2.0, "warmup", warmup_fraction=0.5), 0.0, 0.0),
    (Variant("w", 2.0, "warmup", warmup_fraction=0.5), 0.25, 1.0),
    (Variant("w", 2.0, "warmup", warmup_fraction=0.5), 0.9, 2.0),
    (Variant("y", 2.0, "cyclical", cycles=4), 0.0625, 1.0),  # a quarter into the first cycle
    (Variant("y", 2.0, "cyclical", cycles=4), 0.2, 2.0),  # flat second half
    (Variant("y", 2.0, "cyclical", cycles=4), 0.25, 0.0),  # the second cycle restarts at 0
])
def test_kl_schedules(variant, progress, expected):
    assert kl_weight_at(variant, progress) == pytest.approx(expected)


def test_step_follows_training_progress_and_validates_with_weight_one():
    step = VAEStep(Variant("w", 4.0, "warmup", warmup_fraction=1.0), epochs=2, preprocess=_UNIT)
    step.on_train_batch_start(epoch=2, step=0, steps_per_epoch=10)
    assert step.weight == pytest.approx(2.0)
    model = VAE(4, 16).eval()
    out = step(model, (torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8),))
    assert out.loss.item() == pytest.approx((out.metrics["recon"] + out.metrics["kl"]).item())


def test_aggressive_steps_update_the_encoder_only():
    torch.manual_seed(0)
    model = VAE(4, 16).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = VAEStep(Variant("a", 1.0, aggressive_epochs=1, aggressive_steps=3), epochs=2, preprocess=_UNIT,
                   optimizer=optimizer)
    step.on_train_batch_start(epoch=1, step=0, steps_per_epoch=1)
    decoder = [p.clone() for p in model.decoder.parameters()]
    encoder = [p.clone() for p in model.encoder_parameters()]
    step(model, (torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8),))
    assert all(torch.equal(a, b) for a, b in zip(decoder, model.decoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(encoder, model.encoder_parameters()))
