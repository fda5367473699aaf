"""The config fields and checks the generative experiments (VAE, DCGAN) share, importable without torch."""

from __future__ import annotations

import dataclasses

from atml.config import RunConfig
from atml.errors import UsageError

DATA = ("fashion-mnist", "digits", "folder", "generated-fashion-mnist", "rehearsal-fashion-mnist")
"""The datasets the VAE and the DCGAN take (any of them, as 28 px grey images)."""

SIZE = 28
"""The generative models' image size (their architecture is fixed to it)."""


@dataclasses.dataclass
class GrayscaleConfig(RunConfig):
    """A model trained from scratch on 28 px grey images (the subclass declares ``data`` and the limits)."""

    def check_values(self) -> None:
        super().check_values()
        if self.image_size not in (None, SIZE):
            raise UsageError(f"image_size={self.image_size} is not valid here: the VAE and the DCGAN are built for "
                             f"{SIZE}x{SIZE} images, and image files are decoded at {SIZE} px; leave image_size out")

    def check_sources(self) -> None:
        from atml.suite import datasets

        super().check_sources()
        datasets.check(self, DATA)
