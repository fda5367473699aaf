"""Models side by side: ``compare.cka`` (layer-by-layer CKA between two models), ``compare.probe`` (many models'
frozen features on one dataset).

What they share (the models list, building each through the model factory, the data) is in
:mod:`atml.suite.compare.common`.
"""

from atml.suite.compare import cka, probe

EXPERIMENTS = (cka.EXPERIMENT, probe.EXPERIMENT)
