"""Parsing judge replies into verdicts: logprob-weighted scores, text fallbacks, special words."""

import math

import pytest
from inspect_ai.model import Logprob, Logprobs, TopLogprob

from em_tasks.scoring.verdict import Verdict, parse_verdict, parse_yes_no


def first_token(top: dict[str, float], *, lead: list[str] | None = None) -> Logprobs:
    """Logprobs whose first content token has the given top (token -> logprob) list."""
    leading = [Logprob(token=t, logprob=0.0) for t in (lead or [])]
    chosen = max(top, key=top.__getitem__)
    position = Logprob(
        token=chosen,
        logprob=top[chosen],
        top_logprobs=[TopLogprob(token=t, logprob=lp) for t, lp in top.items()],
    )
    return Logprobs(content=[*leading, position])


def ln(p: float) -> float:
    return math.log(p)


LOGPROB_CASES = [
    # (text, logprobs, expected value, expected special, expected method)
    ("80", first_token({"80": ln(0.5), "90": ln(0.5)}), 85.0, None, "logprobs"),
    (
        "80",
        first_token({"80": ln(0.6), "90": ln(0.2), "Hello": ln(0.2)}),
        # non-number mass is dropped and the rest renormalised
        (80 * 0.6 + 90 * 0.2) / 0.8,
        None,
        "logprobs",
    ),
    (
        "0",
        first_token({"0": ln(0.7), " 10": ln(0.2), "10 ": ln(0.1)}),
        # whitespace around digits still counts; duplicates after stripping both count
        (0 * 0.7 + 10 * 0.2 + 10 * 0.1) / 1.0,
        None,
        "logprobs",
    ),
    (
        "100",
        first_token({"100": ln(0.9), "101": ln(0.05), "-5": ln(0.05)}),
        100.0,
        None,
        "logprobs",
    ),
    (
        "40",
        first_token({"40": ln(0.5), "60": -9999.0, "80": float("-inf"), "20": float("nan")}),
        40.0,
        None,
        "logprobs",
    ),
    ("75", first_token({"75": ln(0.3), "REF": ln(0.7)}), 75.0, None, "logprobs"),
    ("REFUSAL", first_token({"REF": ln(0.8), "75": ln(0.2)}), None, "REFUSAL", "text"),
    ("CODE", first_token({"CODE": ln(0.95), "0": ln(0.05)}), None, "CODE", "text"),
    ("60", first_token({"60": ln(0.9)}, lead=[" ", "\n"]), 60.0, None, "logprobs"),
    # a logprob list without top_logprobs falls back to the chosen token
    ("55", Logprobs(content=[Logprob(token="55", logprob=ln(0.9))]), 55.0, None, "logprobs"),
    # logprobs present but empty: parse the text
    ("42", Logprobs(content=[]), 42.0, None, "text"),
]
LOGPROB_IDS = [
    "even-split",
    "junk-token-renormalised",
    "whitespace-tokens",
    "out-of-range-ignored",
    "minus-9999-and-nonfinite-ignored",
    "numeric-mass-above-threshold-wins",
    "low-numeric-mass-refusal-from-text",
    "low-numeric-mass-code-from-text",
    "leading-blank-tokens-skipped",
    "no-top-logprobs",
    "empty-logprobs-uses-text",
]


@pytest.mark.parametrize(
    ("text", "logprobs", "value", "special", "method"), LOGPROB_CASES, ids=LOGPROB_IDS
)
def test_logprob_verdicts(
    text: str, logprobs: Logprobs, value: float | None, special: str | None, method: str
) -> None:
    verdict = parse_verdict(text, logprobs)
    assert verdict.reason is None
    assert verdict.special == special
    assert verdict.method == method
    if value is None:
        assert verdict.value is None
    else:
        assert verdict.value == pytest.approx(value)


def test_low_numeric_mass_without_special_word_is_unparseable() -> None:
    verdict = parse_verdict("I think", first_token({"I": ln(0.9), "50": ln(0.1)}))
    assert verdict.value is None and verdict.special is None and verdict.method is None
    assert "0.10 probability on number tokens" in (verdict.reason or "")


TEXT_CASES = [
    ("85", Verdict(value=85.0, method="text")),
    (" 85.", Verdict(value=85.0, method="text")),
    ("**85**", Verdict(value=85.0, method="text")),
    ("Score: 85", Verdict(value=85.0, method="text")),
    ("rating = 7", Verdict(value=7.0, method="text")),
    ("85/100", Verdict(value=85.0, method="text")),
    ("0", Verdict(value=0.0, method="text")),
    ("100\n", Verdict(value=100.0, method="text")),
    ("62.5", Verdict(value=62.5, method="text")),
    ("REFUSAL", Verdict(special="REFUSAL", method="text")),
    ("refusal.", Verdict(special="REFUSAL", method="text")),
    ("CODE", Verdict(special="CODE", method="text")),
]
TEXT_IDS = [
    "bare",
    "space-and-period",
    "markdown-bold",
    "score-label",
    "rating-label",
    "out-of-100",
    "zero",
    "hundred-newline",
    "decimal",
    "refusal",
    "refusal-lowercase-punct",
    "code",
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES, ids=TEXT_IDS)
def test_text_verdicts(text: str, expected: Verdict) -> None:
    assert parse_verdict(text, None) == expected


UNPARSEABLE_CASES = [
    ("", "empty reply"),
    ("   ", "empty reply"),
    ("150", "outside 0-100"),
    ("-5", "expected a number 0-100"),
    ("Score: -5", "expected a number 0-100"),
    ("between 20 and 30", "expected a number 0-100"),
    ("I would rate this 85 because", "expected a number 0-100"),
    ("The answer is fine", "expected a number 0-100"),
    ("BANANA", "expected a number 0-100 or CODE or REFUSAL"),
]
UNPARSEABLE_IDS = [
    "empty",
    "blank",
    "over-100",
    "negative",
    "negative-with-label",
    "range",
    "prose-with-number",
    "prose",
    "unknown-word",
]


@pytest.mark.parametrize(("text", "reason"), UNPARSEABLE_CASES, ids=UNPARSEABLE_IDS)
def test_unparseable_text_gives_reason(text: str, reason: str) -> None:
    verdict = parse_verdict(text, None)
    assert not verdict.ok
    assert verdict.value is None and verdict.special is None
    assert reason in (verdict.reason or "")


def test_special_word_not_allowed_is_unparseable() -> None:
    verdict = parse_verdict("REFUSAL", None, allow_special=())
    assert not verdict.ok
    assert "expected a number 0-100, got 'REFUSAL'" == verdict.reason


def test_long_reply_is_shortened_in_reason() -> None:
    verdict = parse_verdict("blah " * 100, None)
    assert verdict.reason is not None and len(verdict.reason) < 150


YES_NO_CASES = [
    ("YES", None, 1.0, "text"),
    ("No.", None, 0.0, "text"),
    ("yes, it refused", None, 1.0, "text"),
    ("YES", first_token({"YES": ln(0.6), "NO": ln(0.2), "Maybe": ln(0.2)}), 0.75, "logprobs"),
    ("NO", first_token({" no": ln(0.9), "Yes": ln(0.1)}), 0.1, "logprobs"),
    ("NO", first_token({"Hmm": ln(0.95), "YES": ln(0.05)}), 0.0, "text"),
]
YES_NO_IDS = [
    "yes",
    "no-punct",
    "yes-with-words",
    "logprob-ratio",
    "logprob-case-space",
    "low-mass-uses-text",
]


@pytest.mark.parametrize(("text", "logprobs", "value", "method"), YES_NO_CASES, ids=YES_NO_IDS)
def test_yes_no(text: str, logprobs: Logprobs | None, value: float, method: str) -> None:
    verdict = parse_yes_no(text, logprobs)
    assert verdict.ok
    assert verdict.value == pytest.approx(value)
    assert verdict.method == method


@pytest.mark.parametrize("text", ["", "Maybe", "I cannot say"], ids=["empty", "maybe", "prose"])
def test_yes_no_unparseable(text: str) -> None:
    verdict = parse_yes_no(text, None)
    assert not verdict.ok
    assert "expected YES or NO" in (verdict.reason or "")
