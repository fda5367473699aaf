"""The course VAE on FashionMNIST: ``vae.train``, ``vae.collapse``, ``vae.mitigate``.

One config, data path, training function and set of diagnostics, in :mod:`atml.suite.vae.common`.
"""

from atml.suite.vae import collapse, mitigate, train

EXPERIMENTS = (train.EXPERIMENT, collapse.EXPERIMENT, mitigate.EXPERIMENT)
