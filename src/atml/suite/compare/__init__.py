"""Models side by side: ``compare.cka`` (layer-by-layer CKA between two models), ``compare.saliency`` (where CNNs
and ViTs look, scored by deletion, insertion and the sanity check), ``compare.probe`` (many models' frozen
features on one dataset).

What they share (the models list, building each through the model factory, the data) is in
:mod:`atml.suite.compare.common`.
"""

from atml.suite.compare import cka, probe, saliency

EXPERIMENTS = (cka.EXPERIMENT, saliency.EXPERIMENT, probe.EXPERIMENT)
