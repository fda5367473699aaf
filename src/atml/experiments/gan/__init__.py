"""Generative adversarial networks: ``gan.dcgan``."""

from atml.experiments.gan import dcgan

EXPERIMENTS = (dcgan.EXPERIMENT,)
