"""One package per experiment family, one module per experiment; :func:`registry` lists them all.

Each experiment module holds its ``run``, ``discuss`` (and ``bench``) and one ``EXPERIMENT`` record; its ``Config``
and ``PRESETS`` live in the family's ``config`` module, which imports no torch (the CLI checks ``--set`` values with
it in a fraction of a second). Each family package lists its experiments' modules in ``MODULES`` and keeps what they
share in ``common``.
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
        for module in importlib.import_module(f"atml.suite.{family}").MODULES:
            reg.register(importlib.import_module(f"atml.suite.{family}.{module}").EXPERIMENT)
    return reg
