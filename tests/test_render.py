"""Image rendering: determinism, sizes, styles, fallbacks and the bundled font."""

import base64
import io
from pathlib import Path

import pytest
from PIL import Image, ImageFont

from em_tasks.benchmark import render
from em_tasks.benchmark.items import ChatLine, ImageSpec, Item, load_items
from em_tasks.benchmark.render import image_to_data_uri, render_image, unsupported_characters

ITEMS = {item.id: item for item in load_items() + load_items(kind="overrefusal")}
BY_STYLE = {"typo": ITEMS["wp-01"], "document": ITEMS["med-01"], "screenshot": ITEMS["ds-05"]}
SMALL = 256


def _png(img: Image.Image) -> bytes:
    return base64.b64decode(image_to_data_uri(img).split(",", 1)[1])


def _plain(question: str, spec: ImageSpec) -> Item:
    return Item(id="x", category="c", question=question, image=spec)


@pytest.mark.parametrize("style", list(BY_STYLE), ids=list(BY_STYLE))
def test_same_item_gives_identical_png_bytes(style: str) -> None:
    item = BY_STYLE[style]
    assert _png(render_image(item)) == _png(render_image(item))


def test_different_items_give_different_images() -> None:
    pngs = {_png(render_image(item, size=SMALL)) for item in BY_STYLE.values()}
    pngs.add(_png(render_image(ITEMS["wp-03"], size=SMALL)))
    assert len(pngs) == 4


@pytest.mark.parametrize("size", [128, 384, 768, 1024], ids=lambda s: f"{s}px")
def test_image_is_a_square_of_the_requested_size(size: int) -> None:
    img = render_image(ITEMS["rel-04"], size=size)
    assert img.size == (size, size)
    assert img.mode == "RGB"


def test_default_size_is_768() -> None:
    assert render_image(ITEMS["wp-01"]).size == (768, 768)


@pytest.mark.parametrize("forced", list(BY_STYLE), ids=lambda s: f"as-{s}")
@pytest.mark.parametrize("own", list(BY_STYLE), ids=lambda s: f"{s}-item")
def test_any_style_can_be_forced_on_any_item(own: str, forced: str) -> None:
    item = BY_STYLE[own]
    forced_img = render_image(item, style=forced, size=SMALL)  # type: ignore[arg-type]
    assert forced_img.size == (SMALL, SMALL)
    if own != forced:
        assert _png(forced_img) != _png(render_image(item, size=SMALL))


FALLBACKS = {
    "typo": lambda q: ImageSpec(style="typo"),
    "document": lambda q: ImageSpec(style="document", prompt="p", title="Note", lines=(q,)),
    "screenshot": lambda q: ImageSpec(style="screenshot", prompt="p", app="Messages", messages=(ChatLine("me", q),)),
}


@pytest.mark.parametrize(
    ("style", "item_id"),
    [("typo", "med-01"), ("document", "wp-01"), ("screenshot", "med-01")],
    ids=["typo-shows-the-question", "document-is-a-note", "screenshot-is-one-user-message"],
)
def test_forced_style_falls_back_to_the_question(style: str, item_id: str) -> None:
    item = ITEMS[item_id]
    expected = render_image(_plain(item.question, FALLBACKS[style](item.question)), size=SMALL)
    assert _png(render_image(item, style=style, size=SMALL)) == _png(expected)  # type: ignore[arg-type]


def test_typo_card_shows_custom_text_when_given() -> None:
    with_text = _plain("the question", ImageSpec(style="typo", text="different words"))
    without = _plain("the question", ImageSpec(style="typo"))
    assert _png(render_image(with_text, size=SMALL)) != _png(render_image(without, size=SMALL))


def test_every_bundled_item_renders() -> None:
    for item in ITEMS.values():
        assert render_image(item, size=SMALL).size == (SMALL, SMALL)


def test_long_text_still_renders_inside_the_card() -> None:
    item = _plain(" ".join(["overflowing"] * 400) + " " + "x" * 300, ImageSpec(style="typo"))
    img = render_image(item, size=SMALL)
    assert img.size == (SMALL, SMALL)


def test_only_the_bundled_font_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real_truetype = ImageFont.truetype

    def no_font_files(font=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(font, str | Path):
            raise AssertionError(f"a font file was opened from disk: {font}")
        return real_truetype(font, *args, **kwargs)

    monkeypatch.setattr(ImageFont, "truetype", no_font_files)
    render._font.cache_clear()  # fonts loaded by earlier tests must not hide a file being opened
    for item in BY_STYLE.values():
        render_image(item, size=SMALL)


def test_data_uri_is_a_png_without_metadata() -> None:
    uri = image_to_data_uri(render_image(ITEMS["qm-06"], size=SMALL))
    assert uri.startswith("data:image/png;base64,")
    png = base64.b64decode(uri.split(",", 1)[1])
    for chunk in (b"tIME", b"tEXt", b"iTXt", b"zTXt"):
        assert chunk not in png
    assert Image.open(io.BytesIO(png)).size == (SMALL, SMALL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"style": "photo"}, "style must be one of"), ({"size": 64}, "at least 128")],
    ids=["unknown-style", "too-small"],
)
def test_bad_arguments_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_image(ITEMS["wp-01"], **kwargs)


@pytest.mark.parametrize(
    ("text", "missing"),
    [("plain ASCII: $5, 50% (ok) #1 @me", set()), ("café", {"é"}), ("a — b", {"—"})],
    ids=["ascii", "accent", "em-dash"],
)
def test_unsupported_characters(text: str, missing: set[str]) -> None:
    assert unsupported_characters(text) == missing
