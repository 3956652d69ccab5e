"""Images as everything in em-tasks reads them: safe paths, the one checked loader, fitting and encoding.

`open_image` is the one image loader: the benchmark's files and dataset images, the backend's chat images and the
study's training rows all go through it, so every image a model sees is decoded, turned upright and made RGB the
same way. Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) stays on, and its warning (raised
between the limit and twice the limit) is turned into an error here, so an enormous image is refused instead of
decoded.
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


ImageSource = Image.Image | Path | bytes | str
"""What `open_image` reads: a decoded image, a file, encoded bytes, or text (a data URI, a file path or base64)."""


class ImageInputError(ValueError):
    """An image could not be read, or was sent to a model that cannot take images."""


class ImageFileError(ImageInputError):
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


def open_image(source: ImageSource, formats: Collection[str] | None = None) -> Image.Image:
    """Decode an image fully, refusing enormous images, and turn it upright and RGB.

    Args:
        source: A decoded PIL image (as a Hugging Face image column gives); an image file; the encoded bytes of an
            image; or text, as chat content carries images: a data URI, a local file path, or base64. An http(s)
            URL is refused: nothing is fetched.
        formats: Pillow format names to accept (e.g. `FILE_FORMATS`) from an encoded source; None accepts any
            format Pillow reads.

    Returns:
        A new RGB image (transparent areas on white, EXIF orientation applied); its `format` attribute keeps the
        source format.

    Raises:
        ImageFileError: If the source is not a readable image (corrupt, truncated, empty, undecodable base64, a
            URL), is of a format not in `formats`, or has more pixels than Pillow's decompression-bomb limit.
    """
    if isinstance(source, Image.Image):
        image = _upright_rgb(source)
        image.format = source.format
        return image
    label = _label(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_encoded(source)) as opened:
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
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError, ValueError, IndexError) as exc:
        if isinstance(exc, ImageFileError):
            raise
        raise _unreadable(source, label, exc) from exc
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


def _label(source: Path | bytes | str) -> str:
    if isinstance(source, Path):
        return str(source)
    return "the image data" if isinstance(source, bytes) else f"image ({source[:48]}...)"


def _encoded(source: Path | bytes | str) -> Path | io.BytesIO:
    """What Pillow opens: the file, or the decoded bytes (raises ValueError or IndexError on malformed text)."""
    if isinstance(source, Path):
        return source
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if source.startswith("data:"):
        return io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=False))
    if source.startswith(("http://", "https://")):
        raise ImageFileError(f"Image URLs are not fetched (offline backend): {source[:80]}; embed the image.")
    if _is_file(source):
        return Path(source)
    return io.BytesIO(base64.b64decode(source, validate=True))


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long for a path (long base64 text), a NUL character
        return False


def _unreadable(source: Path | bytes | str, label: str, exc: BaseException) -> ImageFileError:
    if isinstance(source, str):  # chat content: the wording the backend has always used
        return ImageFileError(f"Could not read image ({source[:48]}...): {exc}. Re-render or replace the image.")
    reason = "not an image format Pillow recognises" if isinstance(exc, UnidentifiedImageError) else str(exc)
    return ImageFileError(
        f"{label} cannot be read as an image ({reason}); replace it with a valid PNG, JPEG or WebP image"
    )
