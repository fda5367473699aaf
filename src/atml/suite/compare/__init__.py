"""Models side by side: ``compare.cka`` (layer-by-layer CKA between two models), ``compare.saliency`` (where CNNs
and ViTs look, scored by deletion, insertion and the sanity check), ``compare.probe`` (many models' frozen
features on one dataset).

What they share (the models list, building each through the model factory, the data) is in
:mod:`atml.suite.compare.common`.
"""

MODULES = ("cka", "saliency", "probe")
"""Its experiments' modules, in the order ``atml demo`` runs them (imported by :func:`atml.suite.registry`;
the package itself imports none, so its ``config`` loads without torch)."""
