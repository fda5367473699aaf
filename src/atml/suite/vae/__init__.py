"""The course VAE on FashionMNIST: ``vae.train``, ``vae.collapse``, ``vae.mitigate``.

One config, data path, training function and set of diagnostics, in :mod:`atml.suite.vae.common`.
"""

MODULES = ("train", "collapse", "mitigate")
"""Its experiments' modules, in the order ``atml demo`` runs them (imported by :func:`atml.suite.registry`;
the package itself imports none, so its ``config`` loads without torch)."""
