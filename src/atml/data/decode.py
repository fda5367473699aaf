"""One image file to one square uint8 array, at the speed Pillow allows.

Imports only numpy and Pillow, so worker threads and processes start light. The steps:
JPEG DCT scaling (``draft``) to the smallest power-of-two reduction that still covers the
target, the EXIF orientation applied (only when the file has one), 16- and 32-bit grey scaled to 8
bits, and one antialiased resize of the 8-bit image's central square straight to ``size`` (Pillow's
``resize`` with a ``box``: the pixels a centre crop would throw away are never resampled).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DECODER_VERSION = 3
"""Bumped whenever these steps change the pixels they give: the dataset cache is keyed by it."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_ORIENTATION = 0x0112  # the EXIF tag


def is_image_file(path: Path) -> bool:
    """An image by its suffix, and not a hidden file (macOS ``._name.jpg`` stubs, ``.DS_Store``)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def decode_square(path: str | Path, size: int, grayscale: bool = False, interpolation: str = "bilinear") -> np.ndarray:
    """``path`` as uint8 ``(C, size, size)``, C = 1 (grey, ITU-R 601 luma) or 3 (RGB).

    ``interpolation`` is Pillow's resize filter, ``bilinear`` or ``bicubic`` (antialiased when shrinking).

    Raises OSError or ValueError (Pillow's) for a file that is not a readable image.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        width, height = image.size
        scale = size / min(width, height)
        if image.format == "JPEG" and scale <= 0.5:  # decode at 1/2, 1/4 or 1/8 scale: 2-6x less work
            image.draft("L" if grayscale else "RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        upright: Image.Image = image
        if image.getexif().get(_ORIENTATION, 1) != 1:  # exif_transpose copies the image even when upright
            upright = ImageOps.exif_transpose(image)
        return _square(_eight_bit(upright, grayscale), size, interpolation)


def decode_or_reason(job: tuple[str, int, bool, str]) -> np.ndarray | str:
    """:func:`decode_square` of ``(path, size, grayscale, interpolation)``, or ``"path (why)"`` when it cannot be
    read: the unit of work of the dataset cache's decoding pool (threads or processes)."""
    path, size, grayscale, interpolation = job
    try:
        return decode_square(path, size, grayscale, interpolation)
    except (OSError, ValueError, SyntaxError) as err:  # Pillow: UnidentifiedImageError, truncated files...
        return f"{path} ({(str(err).splitlines() or [type(err).__name__])[0][:100]})"


def decode_into(job: tuple[int, str, int, bool, str, str, int]) -> tuple[int, str | None, int]:
    """Decode image ``index`` and write it at ``index * nbytes`` in the file ``out``: the dataset cache's unit of
    work, in a thread or a worker process (nothing but a short status comes back).

    Returns ``(index, problem, errno)``: ``problem`` is None when written, ``"path (why)"`` when the file is not a
    readable image (errno 0), or the write's error message with its errno (a full disk).
    """
    index, path, size, grayscale, interpolation, out, nbytes = job
    image = decode_or_reason((path, size, grayscale, interpolation))
    if isinstance(image, str):
        return index, image, 0
    try:
        fd = os.open(out, os.O_WRONLY)
        try:
            os.pwrite(fd, image.data, index * nbytes)
        finally:
            os.close(fd)
    except OSError as err:
        return index, f"{out}: {err.strerror or err}", err.errno or 0
    return index, None, 0


def _eight_bit(image, grayscale: bool):  # (PIL.Image, bool) -> PIL.Image in mode "L" or "RGB"
    from PIL import Image

    if image.mode in _DEEP_MODES:
        grey = Image.fromarray(to_8_bit(np.asarray(image), image.mode))
        return grey if grayscale else grey.convert("RGB")
    if grayscale:
        if image.mode == "L":
            return image
        return image.convert("L") if image.mode == "RGB" else image.convert("RGB").convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")


def _square(image, size: int, interpolation: str) -> np.ndarray:
    """The central square of side ``min(width, height)`` resampled to ``size`` x ``size`` in one step."""
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    if side == size:  # nothing to resample: a plain crop on whole pixels
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side)) if width != height else image
    else:
        left, top = (width - side) / 2, (height - side) / 2
        image = image.resize((size, size), Image.Resampling[interpolation.upper()],
                             box=(left, top, left + side, top + side))  # antialiased when shrinking
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))  # (C, size, size)


def to_8_bit(array: np.ndarray, mode: str) -> np.ndarray:
    """Grey levels of a 16-bit, 32-bit or float image scaled to 0-255."""
    values = array.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0 if values.max(initial=0) <= 255 else values.max()
    else:  # 16-bit grey (I;16*) or its 32-bit container (I): the full 16-bit range
        top = 65535.0 if values.max(initial=0) <= 65535 else values.max()
    return np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8)
