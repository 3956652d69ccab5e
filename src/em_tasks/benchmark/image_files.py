"""Image files and dataset images as benchmark images: safe paths, checked decoding, fitting and encoding.

Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) stays on, and its warning (raised between the
limit and twice the limit) is turned into an error here, so an enormous image is refused instead of decoded.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from collections.abc import Collection
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
"""Extensions accepted for image files named in a question file."""

FILE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
"""Pillow format names accepted for image files named in a question file."""

JPEG_QUALITY = 95
"""Photos that arrive as JPEG are sent as JPEG at this quality (PNG would multiply the size of logs)."""

_WHITE = (255, 255, 255)


class ImageFileError(ValueError):
    """An image cannot be used: outside its folder, missing, unreadable, of the wrong format, or too large."""


def resolve_image_file(folder: Path, file: str) -> Path:
    """Resolve an image path written in a question file, relative to that file's folder.

    The path may not climb out of the folder: ``..`` segments, an absolute path elsewhere and a symbolic link (to a
    file, or a linked folder on the way) whose target lies outside are all refused, as are paths that cannot be
    resolved (a NUL character, a symbolic link loop).

    Args:
        folder: The question file's folder.
        file: The path as written (relative to `folder`; an absolute path must still lie inside it).

    Returns:
        The resolved path (symlinks followed).

    Raises:
        ImageFileError: If the path leads outside `folder` (``..``, an absolute path elsewhere, a symlink out),
            cannot be resolved, has an unsupported extension, is a folder, or does not exist. Each message says
            what to change; the caller adds the question file and the item.
    """
    fix = "move the image into that folder (or a subfolder) and give its path relative to the question file"
    if "\x00" in file:
        raise ImageFileError(f"image path {file!r} contains a NUL character; write a plain path relative to the "
                             "question file's folder")
    base = folder.resolve()
    try:
        path = (base / file).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ImageFileError(
            f"image path {file!r} cannot be resolved ({exc}); it is probably a symbolic link loop: replace the link "
            "with the image file itself"
        ) from exc
    if not path.is_relative_to(base):
        written = Path(os.path.normpath(base / file))
        if written.is_relative_to(base):  # the path as written stays inside: a symbolic link on the way leads out
            raise ImageFileError(
                f"image path {file!r} leads outside the question file's folder {base} through a symbolic link (it "
                f"points to {path}); copy the image into that folder instead of linking to it, or {fix}"
            )
        raise ImageFileError(f"image path {file!r} leads outside the question file's folder {base}; {fix}")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise ImageFileError(
            f"image file {file!r} has extension {path.suffix or '(none)'!r}; use a PNG, JPEG or WebP file "
            f"({', '.join(FILE_SUFFIXES)})"
        )
    if path.is_dir():
        raise ImageFileError(f"image file {file!r} is a folder ({path}), not an image; name the image file in it")
    if not path.is_file():
        raise ImageFileError(f"image file {file!r} not found (looked for {path}); check the path, which is relative "
                             "to the question file's folder")
    return path


def open_image(source: Path | bytes, formats: Collection[str] | None = None) -> Image.Image:
    """Decode an image fully, refusing enormous images, and turn it upright and RGB.

    Args:
        source: An image file, or the encoded bytes of an image.
        formats: Pillow format names to accept (e.g. `FILE_FORMATS`); None accepts any format Pillow reads.

    Returns:
        The decoded RGB image (transparent areas on white, EXIF orientation applied); its `format` attribute keeps
        the source format.

    Raises:
        ImageFileError: If the data is not a readable image (corrupt, truncated, empty), is of a format not in
            `formats`, or has more pixels than Pillow's decompression-bomb limit.
    """
    label = str(source) if isinstance(source, Path) else "the image data"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as opened:
                source_format = opened.format
                if formats is not None and source_format not in formats:
                    raise ImageFileError(
                        f"{label} holds a {source_format} image; convert it to one of {sorted(formats)}"
                    )
                opened.load()
                image = _upright_rgb(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFileError(
            f"{label} is too large: {exc} Shrink the image (Pillow's limit, PIL.Image.MAX_IMAGE_PIXELS, stays on)"
        ) from exc
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageFileError):
            raise
        reason = "not an image format Pillow recognises" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ImageFileError(
            f"{label} cannot be read as an image ({reason}); replace it with a valid PNG, JPEG or WebP image"
        ) from exc
    image.format = source_format
    return image


def fit_image(image: Image.Image, size: int) -> Image.Image:
    """Shrink an image to fit in a `size` x `size` square, keeping its aspect ratio (never enlarged)."""
    fitted = image.copy()
    fitted.thumbnail((size, size), Image.Resampling.LANCZOS)
    fitted.format = image.format
    return fitted


def photo_data_uri(image: Image.Image) -> str:
    """Encode an image as a data URI: JPEG sources as JPEG, everything else as PNG (as rendered images are)."""
    buffer = io.BytesIO()
    if image.format == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG", compress_level=6)
    mime = "jpeg" if image.format == "JPEG" else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _upright_rgb(image: Image.Image) -> Image.Image:
    upright = ImageOps.exif_transpose(image)
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return upright.convert("RGB")
