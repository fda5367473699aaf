"""Vision Transformer internals: ``vit.classify``, ``vit.attention``, ``vit.masking``, ``vit.pooling``.

All four run on :class:`atml.models.vit.ViT` (timm or transformers); models, weights, images
and data are in :mod:`atml.suite.vit.common`.
"""

from atml.suite.vit import attention, classify, masking, pooling

EXPERIMENTS = (classify.EXPERIMENT, attention.EXPERIMENT, masking.EXPERIMENT, pooling.EXPERIMENT)
