"""One module per experiment, each exporting ``EXPERIMENT``; :func:`registry` lists them."""

from __future__ import annotations

from atml.registry import Registry


def registry() -> Registry:
    """Every experiment atml ships, in the order ``atml demo`` runs and reports them."""
    from atml.experiments import resnet_head

    reg = Registry()
    for module in (resnet_head,):
        reg.register(module.EXPERIMENT)
    return reg
