"""ResNet internals on CIFAR-10: ``resnet.head``, ``resnet.skip``, ``resnet.features``, ``resnet.transfer``.

What the four share (config fields, data, backbones, head training, fine-tuning) is in
:mod:`atml.suite.resnet.common`.
"""

MODULES = ("head", "skip", "features", "transfer")
"""Its experiments' modules, in the order ``atml demo`` runs them (imported by :func:`atml.suite.registry`;
the package itself imports none, so its ``config`` loads without torch)."""
