"""CLIP and the modality gap: ``clip.zeroshot``, ``clip.gap``, ``clip.align``.

Config, model, data, prompts, the shared embedding cache and the gap numbers are in
:mod:`atml.suite.clip.common`.
"""

MODULES = ("zeroshot", "gap", "align")
"""Its experiments' modules, in the order ``atml demo`` runs them (imported by :func:`atml.suite.registry`;
the package itself imports none, so its ``config`` loads without torch)."""
