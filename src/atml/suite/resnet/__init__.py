"""ResNet internals on CIFAR-10: ``resnet.head``, ``resnet.skip``, ``resnet.features``, ``resnet.transfer``.

What the four share (config fields, data, backbones, head training, fine-tuning) is in
:mod:`atml.suite.resnet.common`.
"""

from atml.suite.resnet import features, head, skip, transfer

EXPERIMENTS = (head.EXPERIMENT, skip.EXPERIMENT, features.EXPERIMENT, transfer.EXPERIMENT)
