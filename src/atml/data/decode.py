"""One image file to one square uint8 array, at the speed Pillow allows, with the pixels the weights expect.

Imports only numpy and Pillow, so worker threads and processes start light. The steps:
JPEG DCT scaling (``draft``) to the smallest power-of-two reduction that still covers
twice the target, the EXIF orientation applied (only when the file has one), 16- and 32-bit
grey scaled to 8 bits, and one antialiased resize of the part of the image that ends up in
the square, straight to ``size`` (Pillow's ``resize`` with a ``box``: pixels a crop throws
away are never resampled).

The geometry is torchvision's ``Resize(size)`` then ``CenterCrop`` (which timm's and
open_clip's evaluation transforms use): the short side becomes ``size``, the long side
``int(size * long / short)``, and a centre crop starts at ``round(margin / 2)``, rounded half
to even as Python's ``round`` does. :func:`centre_offset` is that rule, the one every crop in
atml uses. Given the crop the model takes later (``crop``), the square is placed so that the
model's own centre crop of it keeps exactly the pixels ``Resize(size) + CenterCrop(crop)``
keeps of the whole image.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # Pillow is imported where it is used: workers start light
    from PIL.Image import Image as PILImage

DECODER_VERSION = 4
"""Bumped whenever these steps change the pixels they give: the dataset cache is keyed by it."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_ORIENTATION = 0x0112  # the EXIF tag


def is_image_file(path: Path) -> bool:
    """An image by its suffix, and not a hidden file (macOS ``._name.jpg`` stubs, ``.DS_Store``)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclasses.dataclass(frozen=True)
class Square:
    """How an image becomes a square: its short side resized to ``size`` with ``interpolation``, placed for the
    centre ``crop`` the model takes of it later (None: the resized image's own centre square)."""

    size: int
    crop: int | None = None
    interpolation: str = "bilinear"


def centre_offset(length: int, crop: int) -> int:
    """The first row (or column) torchvision's ``CenterCrop(crop)`` keeps of ``length``: half the margin, rounded
    half to even (``round``), as ``torchvision.transforms.functional.center_crop`` computes it."""
    return int(round((length - crop) / 2.0))


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """``(height, width)`` after torchvision's ``Resize(short)``: the short side to ``short``, the long side
    ``int(short * long / short_side)`` (truncated, as torchvision computes it)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def square_box(width: int, height: int, size: int, crop: int | None = None) -> tuple[float, float, float, float]:
    """The region ``(left, top, right, bottom)`` of a ``width`` x ``height`` image that ``Resize(size)`` maps onto
    the ``size`` x ``size`` square whose centre crop of ``crop`` (default ``size``) is ``CenterCrop(crop)`` of the
    whole resized image."""
    new_h, new_w = resized_shape(height, width, size)
    keep = min(crop or size, size)
    top = centre_offset(new_h, keep) - centre_offset(size, keep)
    left = centre_offset(new_w, keep) - centre_offset(size, keep)
    sy, sx = height / new_h, width / new_w
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def decode_square(path: str | Path, size: int, grayscale: bool = False, interpolation: str = "bilinear",
                  crop: int | None = None) -> np.ndarray:
    """``path`` as uint8 ``(C, size, size)``, C = 1 (grey, ITU-R 601 luma) or 3 (RGB).

    ``interpolation`` is Pillow's resize filter, ``bilinear`` or ``bicubic`` (antialiased when shrinking);
    ``crop``: the centre crop the model takes of the square later (the module's docstring).

    Raises OSError or ValueError (Pillow's) for a file that is not a readable image.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        width, height = image.size
        scale = size / min(width, height)
        factor = 1.0
        if image.format == "JPEG" and scale <= 0.25:  # decode at 1/2, 1/4 or 1/8 scale, keeping twice the target
            wanted = (max(1, round(width * 2 * scale)), max(1, round(height * 2 * scale)))
            drafted = image.draft("L" if grayscale else "RGB", wanted)
            factor = width / drafted[1][2] if drafted else 1.0
        upright: Image.Image = image
        if image.getexif().get(_ORIENTATION, 1) != 1:  # exif_transpose copies the image even when upright
            upright = ImageOps.exif_transpose(image)
            if upright.size[0] != image.size[0]:  # turned by 90 degrees: the original's sides swap
                width, height = height, width
        return square_of(_eight_bit(upright, grayscale), size, interpolation, crop, (width, height), factor)


def square_of(image: PILImage, size: int, interpolation: str, crop: int | None = None,
              full: tuple[int, int] | None = None, factor: float = 1.0) -> np.ndarray:
    """An upright 8-bit Pillow image as uint8 ``(C, size, size)`` by :func:`square_box`'s geometry.

    ``full``: the image's size before JPEG draft scaling, ``factor``: that scaling (the box is computed on the full
    image and mapped into the drafted one, so drafting moves no pixel)."""
    from PIL import Image

    width, height = full or image.size
    left, top, right, bottom = (v / factor for v in square_box(width, height, size, crop))
    box = (left, top, right, bottom)
    if factor == 1.0 and all(float(v).is_integer() for v in box) and box[2] - box[0] == size:
        left, top = int(box[0]), int(box[1])  # nothing to resample: a plain crop on whole pixels
        if (left, top, image.size) != (0, 0, (size, size)):
            image = image.crop((left, top, left + size, top + size))
    else:
        image = image.resize((size, size), Image.Resampling[interpolation.upper()], box=box)  # antialiased
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))  # (C, size, size)


def decode_or_reason(job: tuple[str, int, bool, str, int | None]) -> np.ndarray | str:
    """:func:`decode_square` of ``(path, size, grayscale, interpolation, crop)``, or ``"path (why)"`` when it cannot
    be read: the unit of work of the dataset cache's decoding pool (threads or processes)."""
    path, size, grayscale, interpolation, crop = job
    try:
        return decode_square(path, size, grayscale, interpolation, crop)
    except (OSError, ValueError, SyntaxError) as err:  # Pillow: UnidentifiedImageError, truncated files...
        return f"{path} ({(str(err).splitlines() or [type(err).__name__])[0][:100]})"


def decode_into(job: tuple[int, str, int, bool, str, int | None, str, int]) -> tuple[int, str | None, int]:
    """Decode image ``index`` and write it at ``index * nbytes`` in the file ``out``: the dataset cache's unit of
    work, in a thread or a worker process (nothing but a short status comes back).

    Returns ``(index, problem, errno)``: ``problem`` is None when written, ``"path (why)"`` when the file is not a
    readable image (errno 0), or the write's error message with its errno (a full disk).
    """
    index, path, size, grayscale, interpolation, crop, out, nbytes = job
    image = decode_or_reason((path, size, grayscale, interpolation, crop))
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


def _eight_bit(image: PILImage, grayscale: bool) -> PILImage:
    """``image`` in mode ``L`` or ``RGB``."""
    from PIL import Image

    if image.mode in _DEEP_MODES:
        grey = Image.fromarray(to_8_bit(np.asarray(image), image.mode))
        return grey if grayscale else grey.convert("RGB")
    if grayscale:
        if image.mode == "L":
            return image
        return image.convert("L") if image.mode == "RGB" else image.convert("RGB").convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")


def to_8_bit(array: np.ndarray, mode: str) -> np.ndarray:
    """Grey levels of a 16-bit, 32-bit or float image scaled to 0-255."""
    values = array.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0 if values.max(initial=0) <= 255 else values.max()
    else:  # 16-bit grey (I;16*) or its 32-bit container (I): the full 16-bit range
        top = 65535.0 if values.max(initial=0) <= 65535 else values.max()
    return np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8)
