"""The course VAE on FashionMNIST: ``vae.train``, ``vae.collapse``, ``vae.mitigate``.

One config, data path, training function and set of diagnostics, in :mod:`atml.experiments.vae.common`.
"""

from atml.experiments.vae import collapse, mitigate, train

EXPERIMENTS = (train.EXPERIMENT, collapse.EXPERIMENT, mitigate.EXPERIMENT)
