"""Vision Transformer internals: ``vit.classify``, ``vit.attention``, ``vit.masking``, ``vit.pooling``.

All four run on :class:`atml.models.vit.ViT` (timm or transformers); models, weights, images
and data are in :mod:`atml.experiments.vit.common`.
"""

from atml.experiments.vit import attention, classify, masking, pooling

EXPERIMENTS = (classify.EXPERIMENT, attention.EXPERIMENT, masking.EXPERIMENT, pooling.EXPERIMENT)
