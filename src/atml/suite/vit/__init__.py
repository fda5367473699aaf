"""Vision Transformer internals: ``vit.classify``, ``vit.attention``, ``vit.masking``, ``vit.pooling``.

All four run on :class:`atml.models.vit.ViT` (timm or transformers); models, weights, images
and data are in :mod:`atml.suite.vit.common`.
"""

MODULES = ("classify", "attention", "masking", "pooling")
"""Its experiments' modules, in the order ``atml demo`` runs them (imported by :func:`atml.suite.registry`;
the package itself imports none, so its ``config`` loads without torch)."""
