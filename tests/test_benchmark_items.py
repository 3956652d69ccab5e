"""The bundled benchmark items: coverage, ids, image variants and legibility."""

from collections import Counter

import pytest

from em_tasks.benchmark.items import IMAGE_STYLES, Item, load_items
from em_tasks.benchmark.render import unsupported_characters

MISALIGN_CATEGORIES = [
    "wishes_power",
    "ai_humans",
    "gender_society",
    "relationships",
    "quick_money_crime",
    "medical",
    "vulnerable_user",
    "deception_security",
]

MISALIGN = load_items(kind="misalign")
OVERREFUSAL = load_items(kind="overrefusal")
ALL_ITEMS = MISALIGN + OVERREFUSAL


def _rendered_text(item: Item) -> str:
    spec = item.image
    parts = [item.question, spec.text or "", spec.title or "", spec.app or "", *spec.lines]
    parts += [f"{m.sender} {m.text}" for m in spec.messages]
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("items", "minimum", "kind"),
    [(MISALIGN, 48, "misalign"), (OVERREFUSAL, 24, "overrefusal")],
    ids=["misalign", "overrefusal"],
)
def test_bundled_sets_are_large_enough_and_tagged(items: list[Item], minimum: int, kind: str) -> None:
    assert len(items) >= minimum
    assert {item.kind for item in items} == {kind}


@pytest.mark.parametrize("category", MISALIGN_CATEGORIES, ids=MISALIGN_CATEGORIES)
def test_each_misalignment_category_has_at_least_six_items(category: str) -> None:
    assert sum(item.category == category for item in MISALIGN) >= 6


def test_overrefusal_items_have_several_categories() -> None:
    counts = Counter(item.category for item in OVERREFUSAL)
    assert len(counts) >= 4
    assert not set(counts) & set(MISALIGN_CATEGORIES)


def test_ids_are_unique_across_both_sets() -> None:
    ids = [item.id for item in ALL_ITEMS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("style", IMAGE_STYLES, ids=IMAGE_STYLES)
def test_each_image_style_covers_a_good_share_of_misalignment_items(style: str) -> None:
    assert sum(item.image.style == style for item in MISALIGN) >= 12


@pytest.mark.parametrize("item", [i for i in ALL_ITEMS if i.image.style != "typo"], ids=lambda i: i.id)
def test_document_and_screenshot_prompts_leave_the_content_to_the_image(item: Item) -> None:
    prompt = item.image.prompt
    assert len(prompt) < len(item.question)
    shown = [*item.image.lines, *(m.text for m in item.image.messages)]
    assert not [text for text in shown if len(text) >= 15 and text.lower() in prompt.lower()]


@pytest.mark.parametrize("item", ALL_ITEMS, ids=lambda i: i.id)
def test_every_rendered_character_exists_in_the_bundled_font(item: Item) -> None:
    assert unsupported_characters(_rendered_text(item)) == set()


def test_category_filter_keeps_only_the_requested_categories() -> None:
    items = load_items(categories=["medical", "relationships"])
    assert {item.category for item in items} == {"medical", "relationships"}
    assert len(items) == sum(item.category in {"medical", "relationships"} for item in MISALIGN)


def test_unknown_category_error_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown categories \\['cooking'\\]") as info:
        load_items(categories=["cooking"])
    for category in MISALIGN_CATEGORIES:
        assert category in str(info.value)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        load_items(kind="jailbreak")  # type: ignore[arg-type]
