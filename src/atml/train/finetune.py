"""Fine-tuning a CNN classifier: the model wrapped with its preprocessing and augmentation, the parts to train
unfrozen, and an optimizer with a lower rate for the backbone than for the head.

Used by the experiments that train backbone blocks (``resnet.transfer``, ``resnet.skip``) and by ``atml speed``,
which times exactly this path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from atml.models import cnn, freezing
from atml.models.preprocess import Preprocess
from atml.models.registry import Preprocessing
from atml.train.augment import Augment
from atml.train.stages import new_head


class Pipeline(nn.Module):
    """uint8 images -> preprocess -> (augment) -> CNN classifier."""

    def __init__(self, preprocess: nn.Module, model: cnn.CNN, augment: nn.Module | None) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.augment = augment or nn.Identity()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.model(self.augment(self.preprocess(images)))
        return result


def pipeline(model: cnn.CNN, preprocessing: Preprocessing, *, num_classes: int, res: int,
             trainable: Sequence[str], seed: int, lr: float, backbone_lr_scale: float = 1.0,
             weight_decay: float = 0.0, augment: bool = True, hflip: bool = True, channels_last: bool = True,
             device: torch.device) -> tuple[Pipeline, torch.optim.Optimizer]:
    """``model`` set up to train a new head plus the named backbone parts, on ``device``, and its optimizer.

    Built, frozen and laid out first, moved last. The new head starts from the seed ``seed`` (as a head trained on
    frozen features does, so both start identical); the trained backbone parts get ``lr * backbone_lr_scale``.
    """
    model.set_head(new_head(model.num_features, num_classes, seed))
    freezing.freeze(model, trainable=(*trainable, model.head_name))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    prep = Preprocess(preprocessing, res, channels_last=channels_last)
    wrapped = Pipeline(prep, model, Augment(hflip) if augment else None).to(device)
    head = list(model.head.parameters())
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(model.head_name)]
    groups: list[dict[str, Any]] = [{"params": head}]
    if rest:
        groups.append({"params": rest, "lr": lr * backbone_lr_scale})
    return wrapped, torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
