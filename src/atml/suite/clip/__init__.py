"""CLIP and the modality gap: ``clip.zeroshot``, ``clip.gap``, ``clip.align``.

Config, model, data, prompts, the shared embedding cache and the gap numbers are in
:mod:`atml.suite.clip.common`.
"""

from atml.suite.clip import align, gap, zeroshot

EXPERIMENTS = (zeroshot.EXPERIMENT, gap.EXPERIMENT, align.EXPERIMENT)
