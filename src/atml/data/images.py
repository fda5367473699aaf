"""Decoding image files the way a user's photos need: upright, at their true grey levels, as uint8 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def load_rgb(path: Path) -> np.ndarray:
    """An image file as an upright uint8 ``(H, W, 3)`` array.

    Turned upright by its EXIF orientation (phone photos); converted by mode: 16-bit and
    32-bit grey scaled to 8 bits (not clipped), palette, alpha and grey images to RGB.
    Raises OSError or ValueError (Pillow's) for a file that is not a readable image.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.repeat(to_8_bit(np.asarray(image), image.mode)[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB")).copy()


def to_8_bit(array: np.ndarray, mode: str) -> np.ndarray:
    """Grey levels of a 16-bit, 32-bit or float image scaled to 0-255."""
    values = array.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0 if values.max(initial=0) <= 255 else values.max()
    else:  # 16-bit grey (I;16*) or its 32-bit container (I): the full 16-bit range
        top = 65535.0 if values.max(initial=0) <= 65535 else values.max()
    return np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8)


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(C, H, W)`` -> ``(C, size, size)``: the short side resized to ``size`` (antialiased), centre crop."""
    _, h, w = image.shape
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = torch.nn.functional.interpolate(image[None].float(), size=new, mode="bilinear", align_corners=False,
                                        antialias=scale < 1)[0]
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return x[:, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)
