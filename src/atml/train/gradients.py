"""Gradient flow during training: how much gradient reaches each stage and block.

Two views, both averaged over an epoch's steps and added to the epoch's train record:

* ``grad_in``: the norm of dLoss/d(output of a stage), through tensor hooks registered by
  forward hooks (removed by :meth:`GradientFlow.close`); it shows how much signal arrives
  at each depth, which is what a missing skip connection attenuates;
* ``grad_param``: the norm of the parameter gradients of each trainable block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from atml.train.loop import Callback, EpochRecord


class GradientFlow(Callback):
    def __init__(self, model: nn.Module, stages: dict[str, nn.Module], blocks: dict[str, nn.Module]) -> None:
        self.model = model
        self.blocks = {n: [p for p in b.parameters() if p.requires_grad] for n, b in blocks.items()}
        self.blocks = {n: ps for n, ps in self.blocks.items() if ps}
        # running sums on the device, in float64 (the sums a Python float would make), read once per epoch: reading
        # a norm every step would make the host wait for the GPU at every block of every step
        self._sums: dict[str, dict[str, torch.Tensor]] = {"grad_in": {}, "grad_param": {}}
        self._steps = 0
        self._handles = [stage.register_forward_hook(self._hook(name)) for name, stage in stages.items()]

    def _hook(self, name: str) -> Any:
        def forward_hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            if self.model.training and output.requires_grad:
                output.register_hook(lambda grad: self._add("grad_in", name, grad.norm()))
        return forward_hook

    def _add(self, kind: str, name: str, norm: torch.Tensor) -> None:
        value = norm.detach().to(torch.float32 if norm.device.type == "mps" else torch.float64)  # MPS: no float64
        sums = self._sums[kind]
        sums[name] = sums[name] + value if name in sums else value

    def on_after_backward(self, model: nn.Module, epoch: int, step: int) -> None:
        self._steps += 1
        for name, params in self.blocks.items():
            grads = [p.grad.norm() for p in params if p.grad is not None]
            if grads:
                self._add("grad_param", name, torch.stack(grads).norm())

    def on_epoch_end(self, epoch: int, records: dict[str, EpochRecord]) -> None:
        steps = max(self._steps, 1)
        for kind, sums in self._sums.items():
            records["train"].values[kind] = {name: float(total) / steps for name, total in sums.items()}
            sums.clear()
        self._steps = 0

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
