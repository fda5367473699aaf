"""Decoding image files the way a user's photos need: upright, at their true grey levels, as uint8 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atml import timemap
from atml.data.decode import _DEEP_MODES, IMAGE_SUFFIXES, Square, decode_square, is_image_file, square_of, to_8_bit
from atml.errors import DataError, Key, Part, Placeholder

__all__ = ["IMAGE_SUFFIXES", "is_image_file", "load_rgb", "squared", "to_8_bit"]


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


def squared(image: np.ndarray, square: Square) -> torch.Tensor:
    """An uint8 ``(H, W, 3)`` image in memory (scikit-image's photos) as uint8 ``(3, size, size)`` by ``square``,
    the same geometry and filter as an image file (:func:`atml.data.decode.square_of`)."""
    from PIL import Image

    return torch.from_numpy(square_of(Image.fromarray(image), square.size, square.interpolation, square.crop))


@timemap.counted("data")
def read_images(paths: tuple[str, ...], *, skip_bad: bool = False, skipped: list[str] | None = None,
                square: Square | None = None) -> dict[str, torch.Tensor]:
    """User image files, or every image under user folders (subfolders included), as uint8 ``(3, H, W)``: at their
    own size, or as the ``square`` the model's weights expect (:func:`atml.data.decode.decode_square`).

    Keyed by path (two ``x.png`` in different folders are two images). Each image is turned
    upright by its EXIF orientation (phone photos), and converted by mode: 16-bit and
    32-bit grey scaled to 8 bits, not clipped; palette, alpha and grey images to RGB. Every
    unreadable file is named in one error, or with ``skip_bad`` left out and added to ``skipped``.
    """
    files: list[Path] = []
    for spec in paths:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}), in it or its subfolders; "
                                "pass image files or folders")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"image {path} does not exist; pass existing image files or folders with ",
                            Key("images", Placeholder("[...]")))
    out, bad = {}, []
    for path in dict.fromkeys(files):  # the same file named twice is read once
        try:
            out[_image_key(path)] = (torch.from_numpy(load_rgb(path)).permute(2, 0, 1) if square is None else
                                     torch.from_numpy(decode_square(path, square.size, False, square.interpolation,
                                                                    square.crop)))
        except (OSError, ValueError) as err:  # Pillow: UnidentifiedImageError (an OSError), truncated files...
            bad.append(f"{path} ({str(err).splitlines()[0][:120]})")
    if bad and (not skip_bad or not out):
        skip: tuple[Part, ...] = () if skip_bad else (", or pass ", Key("skip_bad_images", True),
                                                      " to leave them out (they are listed)")
        raise DataError(f"cannot read {len(bad)} image(s): {'; '.join(bad)}. Pass JPEG/PNG/... files, or move these "
                        "out of the folder", *skip)
    if skipped is not None:
        skipped += bad
    return out


def _image_key(path: Path) -> str:
    """The path as the user would write it: relative to the working folder when under it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)
