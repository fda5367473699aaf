"""One package per experiment family, one module per experiment; :func:`registry` lists them all.

Each experiment module holds its ``Config``, ``PRESETS``, ``run``, ``discuss`` (and ``bench``)
and one ``EXPERIMENT`` record; each family package lists its experiments in ``EXPERIMENTS``
and keeps what they share in ``common``.
"""

from __future__ import annotations

from atml.registry import Registry

FAMILIES = {"resnet": "ResNet internals", "vit": "Vision Transformer internals", "vae": "Variational autoencoder",
            "clip": "CLIP and the modality gap", "gan": "Generative adversarial network",
            "compare": "Models side by side"}
"""Each family's package and its section title, in the order ``atml demo`` runs them and the report shows them."""


def registry() -> Registry:
    """Every experiment atml ships, in the order ``atml demo`` runs and reports them."""
    import importlib

    reg = Registry()
    for family in FAMILIES:
        for experiment in importlib.import_module(f"atml.suite.{family}").EXPERIMENTS:
            reg.register(experiment)
    return reg
