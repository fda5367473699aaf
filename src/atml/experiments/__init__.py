"""One module per experiment family, each exporting ``EXPERIMENTS``; :func:`registry` lists them."""

from __future__ import annotations

from atml.registry import Registry


def registry() -> Registry:
    """Every experiment atml ships, in the order ``atml demo`` runs and reports them."""
    from atml.experiments import clip, gan, resnet_features, resnet_head, resnet_skip, resnet_transfer, vae, vit

    reg = Registry()
    for module in (resnet_head, resnet_skip, resnet_features, resnet_transfer, vit, vae, clip, gan):
        for experiment in module.EXPERIMENTS:
            reg.register(experiment)
    return reg
