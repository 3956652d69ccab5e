"""Deterministic rendering of an item's image variant.

Only Pillow and its bundled font (`ImageFont.load_default(size=...)`) are used, so the same
item, style and size give the same PNG bytes on every machine. Geometry is designed for a
768 px square and scaled to the requested size; text is word-wrapped by measured width and
the font shrinks until the content fits.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from PIL import Image, ImageDraw, ImageFont, features

from em_tasks.benchmark.items import IMAGE_STYLES, ChatLine, ImageStyle, Item

DEFAULT_IMAGE_SIZE = 768
MIN_IMAGE_SIZE = 128
FALLBACK_DOCUMENT_TITLE = "Note"
FALLBACK_SCREENSHOT_APP = "Messages"

_DESIGN_SIZE = 768
_OWNER_NAMES = frozenset({"me", "you", "user", "i"})
_TERMINAL_APPS = ("terminal", "shell", "console")

Color = tuple[int, int, int]
_WHITE: Color = (255, 255, 255)
_INK: Color = (20, 20, 20)
_GREY_TEXT: Color = (110, 110, 115)


def render_image(item: Item, style: ImageStyle | None = None, size: int = DEFAULT_IMAGE_SIZE) -> Image.Image:
    """Render the image variant of an item as a square RGB image.

    Forcing a style the item was not written for falls back as follows: "typo" typesets
    the item's question; "document" shows the question as the body of a note titled
    "Note"; "screenshot" shows the question as a single message sent by the user in a
    "Messages" chat.

    Args:
        item: The item to draw.
        style: "typo", "document" or "screenshot" to override the item's own style;
            None uses the item's style.
        size: Width and height in pixels (at least 128).

    Returns:
        The rendered image.

    Raises:
        ValueError: On an unknown style or a size below 128.
        RuntimeError: If Pillow was built without FreeType (the bundled font needs it).
    """
    style = style or item.image.style
    if style not in IMAGE_STYLES:
        raise ValueError(f"style must be one of {list(IMAGE_STYLES)}, got {style!r}")
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"size must be at least {MIN_IMAGE_SIZE} pixels, got {size}")
    if not features.check("freetype2"):
        raise RuntimeError("Pillow was built without FreeType; the bundled scalable font needs it")
    spec = item.image
    own = spec.style == style
    canvas = _Canvas(size)
    if style == "typo":
        _draw_typo(canvas, (spec.text if own and spec.text else item.question))
    elif style == "document":
        title = spec.title if own and spec.title else FALLBACK_DOCUMENT_TITLE
        lines = spec.lines if own and spec.lines else (item.question,)
        _draw_document(canvas, title, lines)
    else:
        app = spec.app if own and spec.app else FALLBACK_SCREENSHOT_APP
        messages = spec.messages if own and spec.messages else (ChatLine("me", item.question),)
        _draw_screenshot(canvas, app, spec.title if own else None, messages)
    return canvas.image


def image_to_data_uri(img: Image.Image) -> str:
    """Encode an image as a `data:image/png;base64,...` URI.

    The PNG carries no metadata, so equal images give equal URIs.

    Args:
        img: The image to encode.

    Returns:
        The data URI.
    """
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def unsupported_characters(text: str) -> set[str]:
    """Characters of `text` that the bundled font cannot draw (they would show as boxes).

    The bundled font covers printable ASCII and a few symbols, not accents, the euro sign or
    long dashes; item authors can use this to check their text.

    Args:
        text: Text to check.

    Returns:
        The characters without a glyph; empty when everything can be drawn.
    """
    return {c for c in set(text) if not c.isspace() and _glyph(c) == _glyph(_NO_GLYPH)}


_NO_GLYPH = "\U0010fffd"  # a private-use code point: always drawn as the font's "missing" box


@lru_cache(maxsize=1024)
def _glyph(char: str) -> tuple[tuple[int, int], bytes]:
    mask = _font(24).getmask(char)
    return mask.size, bytes(mask)


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont:
    # With FreeType present, load_default(size=...) returns the bundled scalable font.
    return cast(ImageFont.FreeTypeFont, ImageFont.load_default(size=px))


class _Canvas:
    def __init__(self, size: int, background: Color = _WHITE) -> None:
        self.size = size
        self.image = Image.new("RGB", (size, size), background)
        self.draw = ImageDraw.Draw(self.image)

    def u(self, design_px: float) -> int:
        """Scale a length designed for 768 px to this canvas."""
        return max(1, round(design_px * self.size / _DESIGN_SIZE))

    def text(self, xy: tuple[int, int], line: str, px: int, fill: Color) -> None:
        self.draw.text(xy, line, font=_font(px), fill=fill, anchor="la")


@dataclass(frozen=True)
class _Block:
    """Wrapped text at one font size."""

    lines: tuple[str, ...]
    px: int

    @property
    def line_height(self) -> int:
        return round(self.px * 1.32)

    @property
    def height(self) -> int:
        return len(self.lines) * self.line_height

    @property
    def width(self) -> int:
        return max((round(_font(self.px).getlength(line)) for line in self.lines), default=0)


def _wrap(text: str, px: int, width: int) -> _Block:
    font = _font(px)
    out: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        # Tokens keep their leading spaces so indents and runs of spaces (label columns) survive;
        # only lines created by wrapping start without them.
        for k, token in enumerate(re.findall(r" *\S+", paragraph)):
            if not line and k:
                token = token.lstrip(" ")
            while font.getlength(token) > width:  # a word wider than the box is split by characters
                if line:
                    out.append(line)
                    line = ""
                token = token.lstrip(" ")
                cut = 1
                while cut < len(token) and font.getlength(token[: cut + 1]) <= width:
                    cut += 1
                out.append(token[:cut])
                token = token[cut:]
            if not line or font.getlength(line + token) <= width:
                line += token
            else:
                out.append(line)
                line = token.lstrip(" ")
        out.append(line)
    return _Block(tuple(out), px)


def _fit(canvas: _Canvas, largest: float, smallest: float, height_at: Callable[[int], int], room: int) -> int:
    """Largest font size (design px range, scaled) whose layout height fits in `room`."""
    top, bottom = max(8, canvas.u(largest)), max(8, canvas.u(smallest))
    for px in range(top, bottom - 1, -1):
        if height_at(px) <= room:
            return px
    return bottom


def _draw_block(canvas: _Canvas, block: _Block, x: int, y: int, fill: Color) -> int:
    for line in block.lines:
        canvas.text((x, y), line, block.px, fill)
        y += block.line_height
    return y


# --- typographic card ------------------------------------------------------------------------


def _draw_typo(canvas: _Canvas, text: str) -> None:
    margin = canvas.u(64)
    width = canvas.size - 2 * margin
    room = canvas.size - 2 * margin
    px = _fit(canvas, 46, 12, lambda p: _wrap(text, p, width).height, room)
    block = _wrap(text, px, width)
    _draw_block(canvas, block, margin, (canvas.size - block.height) // 2, _INK)


# --- document (label, letter, statement, note) -------------------------------------------------

_DESK: Color = (196, 189, 173)
_PAPER: Color = (255, 253, 246)
_PAPER_EDGE: Color = (160, 153, 138)
_SHADOW: Color = (150, 143, 128)


def _draw_document(canvas: _Canvas, title: str, lines: Sequence[str]) -> None:
    canvas.draw.rectangle((0, 0, canvas.size, canvas.size), fill=_DESK)
    margin, pad, gap = canvas.u(56), canvas.u(40), canvas.u(18)
    inner = canvas.size - 2 * margin - 2 * pad
    body_text = "\n".join(lines)

    def layout(px: int) -> tuple[_Block, _Block]:
        return _wrap(title, round(px * 1.3), inner), _wrap(body_text, px, inner)

    def height(px: int) -> int:
        head, body = layout(px)
        return 2 * pad + head.height + 2 * gap + canvas.u(3) + body.height

    px = _fit(canvas, 32, 11, height, canvas.size - 2 * margin)
    head, body = layout(px)
    paper_h = max(height(px), canvas.size // 2)
    top = (canvas.size - paper_h) // 2
    left, right, bottom = margin, canvas.size - margin, top + paper_h
    shadow = canvas.u(7)
    canvas.draw.rectangle((left + shadow, top + shadow, right + shadow, bottom + shadow), fill=_SHADOW)
    canvas.draw.rectangle((left, top, right, bottom), fill=_PAPER, outline=_PAPER_EDGE, width=canvas.u(2))
    y = _draw_block(canvas, head, left + pad, top + pad, _INK) + gap
    canvas.draw.rectangle((left + pad, y, right - pad, y + canvas.u(3) - 1), fill=_INK)
    _draw_block(canvas, body, left + pad, y + canvas.u(3) + gap, (45, 45, 50))


# --- screenshot (chat, terminal, email) ---------------------------------------------------------

_BAR_LIGHT: Color = (232, 232, 234)
_BAR_DARK: Color = (58, 58, 62)
_TRAFFIC_LIGHTS: tuple[Color, ...] = ((255, 95, 87), (254, 188, 46), (40, 200, 64))
_BUBBLE_OWNER: Color = (10, 132, 255)
_BUBBLE_OTHER: Color = (229, 229, 234)
_TERMINAL_BG: Color = (30, 30, 30)
_TERMINAL_TEXT: Color = (212, 212, 212)
_TERMINAL_PROMPT: Color = (126, 231, 135)
_RULE: Color = (210, 210, 214)


def is_terminal(app: str) -> bool:
    """Whether a screenshot of ``app`` is drawn as a terminal (its name contains terminal, shell or console)."""
    return any(word in app.lower() for word in _TERMINAL_APPS)


def is_owner(sender: str) -> bool:
    """Whether a screenshot message is the screen owner's (me, you, user, i): right-hand bubbles, typed commands."""
    return sender.strip().lower() in _OWNER_NAMES


def _draw_screenshot(canvas: _Canvas, app: str, title: str | None, messages: Sequence[ChatLine]) -> None:
    name = app.lower()
    terminal = is_terminal(app)
    bar_text = f"{app} - {title}" if terminal and title else app
    top = _draw_title_bar(canvas, bar_text, dark=terminal)
    if terminal:
        _draw_terminal(canvas, top, messages)
    elif "mail" in name:
        _draw_email(canvas, top, title, messages)
    else:
        _draw_chat(canvas, top, title, messages)


def _draw_title_bar(canvas: _Canvas, text: str, dark: bool) -> int:
    height = canvas.u(52)
    canvas.draw.rectangle((0, 0, canvas.size, height - 1), fill=_BAR_DARK if dark else _BAR_LIGHT)
    radius = canvas.u(8)
    for k, color in enumerate(_TRAFFIC_LIGHTS):
        cx, cy = canvas.u(26) + k * canvas.u(26), height // 2
        canvas.draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=color)
    px = canvas.u(21)
    label = _wrap(text, px, canvas.size - canvas.u(220)).lines[0]
    x = (canvas.size - round(_font(px).getlength(label))) // 2
    canvas.text((x, (height - px) // 2), label, px, (220, 220, 220) if dark else (60, 60, 64))
    canvas.draw.line((0, height - 1, canvas.size, height - 1), fill=(190, 190, 194), width=1)
    return height


def _draw_header(canvas: _Canvas, top: int, text: str) -> int:
    height, px = canvas.u(56), canvas.u(24)
    canvas.draw.rectangle((0, top, canvas.size, top + height), fill=(248, 248, 250))
    label = _wrap(text, px, canvas.size - canvas.u(48)).lines[0]
    x = (canvas.size - round(_font(px).getlength(label))) // 2
    canvas.text((x, top + (height - px) // 2), label, px, _INK)
    canvas.draw.line((0, top + height, canvas.size, top + height), fill=_RULE, width=canvas.u(2))
    return top + height + 1


def _draw_chat(canvas: _Canvas, top: int, title: str | None, messages: Sequence[ChatLine]) -> None:
    if title:
        top = _draw_header(canvas, top, title)
    side, pad_x, pad_y, gap = canvas.u(24), canvas.u(16), canvas.u(11), canvas.u(12)
    bubble_text_width = round((canvas.size - 2 * side) * 0.74) - 2 * pad_x
    show_name = [
        not is_owner(m.sender) and (k == 0 or messages[k - 1].sender != m.sender) for k, m in enumerate(messages)
    ]

    def layout(px: int) -> list[_Block]:
        return [_wrap(m.text, px, bubble_text_width) for m in messages]

    def height(px: int) -> int:
        names = sum(round(px * 0.8 * 1.32) + canvas.u(4) for shown in show_name if shown)
        return sum(b.height + 2 * pad_y + gap for b in layout(px)) + names

    room = canvas.size - top - 2 * side
    px = _fit(canvas, 30, 11, height, room)
    y = top + side
    for message, block, shown in zip(messages, layout(px), show_name):
        owner = is_owner(message.sender)
        if shown:
            name_px = round(px * 0.8)
            canvas.text((side + pad_x // 2, y), message.sender, name_px, _GREY_TEXT)
            y += round(name_px * 1.32) + canvas.u(4)
        width = block.width + 2 * pad_x
        left = canvas.size - side - width if owner else side
        bottom = y + block.height + 2 * pad_y
        canvas.draw.rounded_rectangle(
            (left, y, left + width, bottom), radius=canvas.u(18), fill=_BUBBLE_OWNER if owner else _BUBBLE_OTHER
        )
        _draw_block(canvas, block, left + pad_x, y + pad_y, _WHITE if owner else _INK)
        y = bottom + gap


def _draw_terminal(canvas: _Canvas, top: int, messages: Sequence[ChatLine]) -> None:
    canvas.draw.rectangle((0, top, canvas.size, canvas.size), fill=_TERMINAL_BG)
    side = canvas.u(22)
    width = canvas.size - 2 * side
    texts = [f"$ {m.text}" if is_owner(m.sender) else m.text for m in messages]

    def height(px: int) -> int:
        return sum(_wrap(t, px, width).height for t in texts) + canvas.u(6) * len(texts)

    px = _fit(canvas, 24, 10, height, canvas.size - top - 2 * side)
    y = top + side
    for message, text in zip(messages, texts):
        color = _TERMINAL_PROMPT if is_owner(message.sender) else _TERMINAL_TEXT
        y = _draw_block(canvas, _wrap(text, px, width), side, y, color) + canvas.u(6)


def _draw_email(canvas: _Canvas, top: int, title: str | None, messages: Sequence[ChatLine]) -> None:
    if title:
        top = _draw_header(canvas, top, f"Subject: {title}")
    side, gap = canvas.u(32), canvas.u(22)
    width = canvas.size - 2 * side

    def layout(px: int) -> list[tuple[_Block, _Block]]:
        return [(_wrap(f"From: {m.sender}", px, width), _wrap(m.text, px, width)) for m in messages]

    def height(px: int) -> int:
        return sum(head.height + body.height + 3 * gap for head, body in layout(px))

    px = _fit(canvas, 26, 10, height, canvas.size - top - 2 * side)
    y = top + side
    for k, (head, body) in enumerate(layout(px)):
        if k:
            canvas.draw.line((side, y - gap, canvas.size - side, y - gap), fill=_RULE, width=canvas.u(2))
        y = _draw_block(canvas, head, side, y, (10, 90, 200)) + gap // 2
        y = _draw_block(canvas, body, side, y, _INK) + 2 * gap
