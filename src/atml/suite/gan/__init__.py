"""Generative adversarial networks: ``gan.dcgan``."""

MODULES = ("dcgan",)
"""Its experiments' modules, in the order ``atml demo`` runs them (imported by :func:`atml.suite.registry`;
the package itself imports none, so its ``config`` loads without torch)."""
