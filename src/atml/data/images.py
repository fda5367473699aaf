"""Decoding image files the way a user's photos need: upright, at their true grey levels, as uint8 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atml.data.decode import _DEEP_MODES, IMAGE_SUFFIXES, is_image_file, to_8_bit

__all__ = ["IMAGE_SUFFIXES", "is_image_file", "load_rgb", "to_8_bit"]


def load_rgb(path: Path) -> np.ndarray:
    """An image file as an upright uint8 ``(H, W, 3)`` array, at its own size.

    Turned upright by its EXIF orientation (phone photos); converted by mode: 16-bit and
    32-bit grey scaled to 8 bits (not clipped), palette, alpha and grey images to RGB.
    Raises OSError or ValueError (Pillow's) for a file that is not a readable image.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        image: Image.Image = ImageOps.exif_transpose(opened)
        if image.mode in _DEEP_MODES:
            return np.repeat(to_8_bit(np.asarray(image), image.mode)[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB")).copy()

