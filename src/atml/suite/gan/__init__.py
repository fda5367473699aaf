"""Generative adversarial networks: ``gan.dcgan``."""

from atml.suite.gan import dcgan

EXPERIMENTS = (dcgan.EXPERIMENT,)
