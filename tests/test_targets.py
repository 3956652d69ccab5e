"""The one target-module rule (models/targets.py): reading targets, peft's matching, the language model only."""

from __future__ import annotations

import pytest

from em_tasks.models.targets import (
    is_regex,
    language_model_only,
    matches,
    matching,
    parse_targets,
    peft_target,
    unmatched,
)

DEFAULTS = ("q_proj", "v_proj")
NAME = "model.layers.0.self_attn.q_proj"

# value, parsed targets. Rows marked "was split" are where em-lora's old test (a '.' made a regex, '+' and '?' did
# not) and training's (no '.', but '+' and '?') disagreed; the rule kept is training's: module names are dotted, so a
# dot alone names modules (suffix-matched, as peft matches list entries), while '+' and '?' only appear in patterns.
PARSE_CASES = [
    ("q_proj,v_proj", ("q_proj", "v_proj")),
    (" q_proj , v_proj,,q_proj ", ("q_proj", "v_proj")),
    (["k_proj", " o_proj", "k_proj"], ("k_proj", "o_proj")),
    (None, DEFAULTS),
    ("layers.0.self_attn.q_proj", ("layers.0.self_attn.q_proj",)),  # was split: em-lora took it for a regex
    ("layers.0.self_attn.q_proj,layers.1.mlp.up_proj",
     ("layers.0.self_attn.q_proj", "layers.1.mlp.up_proj")),  # was split: one regex with a comma matched nothing
    ("o_projs?", ("o_projs?",)),  # was split: em-lora took it for a name
    (r"\w+_proj", (r"\w+_proj",)),
    (r".*\.layers\.0\.self_attn\.(q|v)_proj", (r".*\.layers\.0\.self_attn\.(q|v)_proj",)),
    ("q_proj|v_proj", ("q_proj|v_proj",)),
    ("[qv]_proj", ("[qv]_proj",)),
    ("^model.*", ("^model.*",)),
    (["(q|v)_proj"], ("(q|v)_proj",)),  # a sequence is always names (peft's list rule), never a regex
]
PARSE_IDS = ["comma-list", "spaces-empties-repeats", "sequence", "none-gives-defaults", "dotted-name",
             "dotted-comma-list", "question-mark-regex", "backslash-regex", "full-regex", "alternation", "class",
             "anchor-and-star", "sequence-never-regex"]


@pytest.mark.parametrize(("value", "parsed"), PARSE_CASES, ids=PARSE_IDS)
def test_targets_parse(value, parsed):
    assert parse_targets(value, option="--target-modules", default=DEFAULTS) == parsed


@pytest.mark.parametrize(
    ("text", "regex"),
    [("q_proj", False), ("model.layers.0.q_proj", False), ("all-linear", False), ("q_proj+", True),
     ("q_proj?", True), ("q*", True), (r"a\.b", True), ("(q)", True), ("a|b", True), ("[q]", True), ("^q", True),
     ("q$", True)],
    ids=["name", "dotted-name", "peft-keyword", "plus", "question", "star", "backslash", "group", "bar", "class",
         "caret", "dollar"],
)
def test_what_makes_a_regex(text, regex):
    assert is_regex(text) is regex


@pytest.mark.parametrize(
    ("value", "option", "default", "message"),
    [("", "--target-modules", DEFAULTS, "--target-modules is empty"),
     (" , ,", "-M target=", None, "-M target= is empty"),
     ([], "--targets", DEFAULTS, "--targets is empty"),
     (None, "-M target=", None, "-M target= is missing")],
    ids=["empty-string", "only-commas", "empty-sequence", "none-without-default"],
)
def test_empty_targets_name_the_option(value, option, default, message):
    with pytest.raises(ValueError, match=message):
        parse_targets(value, option=option, default=default)


@pytest.mark.parametrize(
    ("name", "target", "hit"),
    [(NAME, ["q_proj"], True),
     (NAME, ["self_attn.q_proj"], True),
     (NAME, [NAME], True),
     (NAME, ["proj"], False),
     ("model.layers.0.self_attn.qq_proj", ["q_proj"], False),
     (NAME, "q_proj", False),
     (NAME, r".*q_proj", True),
     (NAME, r".*\.layers\.1\..*", False),
     (NAME, r"model\.layers\.0\.self_attn\.(q|v)_proj", True)],
    ids=["list-last-name", "list-dotted-suffix", "list-full-name", "list-part-of-a-name", "list-other-name",
         "regex-must-match-whole-name", "regex-whole", "regex-other-layer", "regex-exact"],
)
def test_peft_matching_rule(name, target, hit):
    assert matches(name, target) is hit


NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.0.mlp.up_proj"]


@pytest.mark.parametrize(
    ("target", "missing"),
    [(["q_proj", "v_proj"], []), (["q_proj", "zz_proj"], ["zz_proj"]), (r".*_proj", []),
     (r".*\.zz_proj", [r".*\.zz_proj"]), ("q_proj", ["q_proj"])],
    ids=["all-names-found", "one-name-missing", "regex-found", "regex-missing", "bare-string-is-a-regex"],
)
def test_unmatched_parts_are_named(target, missing):
    assert unmatched(target, NAMES) == missing


# --- on real module trees: the vision tower is never hit by names ------------------------------------------------


@pytest.fixture(scope="module")
def text_model(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def vlm_model(tiny_vlm_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)


def _names(model) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def test_names_hit_the_language_model_only(text_model, vlm_model):
    text_hits = matching(_names(text_model), peft_target(text_model, ("q_proj", "v_proj")))
    assert peft_target(text_model, ("q_proj", "v_proj")) == ["q_proj", "v_proj"]
    assert len(text_hits) == 2 * text_model.config.num_hidden_layers
    vision = [n for n in matching(_names(vlm_model), ["q_proj", "v_proj"]) if "vision" in n]
    assert vision  # the plain list would reach into the vision tower
    hits = matching(_names(vlm_model), peft_target(vlm_model, ("q_proj", "v_proj")))
    assert hits and all(".language_model." in n for n in hits) and not set(hits) & set(vision)


def test_a_regex_passes_through_as_the_users_pattern(vlm_model):
    assert peft_target(vlm_model, (r".*\.language_model\..*\.q_proj",)) == r".*\.language_model\..*\.q_proj"


def test_adapter_names_are_restricted_only_when_its_weights_are_all_in_the_language_model(text_model, vlm_model):
    lm = [n for n in matching(_names(vlm_model), ["q_proj"]) if ".language_model." in n]
    vision = [n for n in matching(_names(vlm_model), ["q_proj"]) if "vision" in n]
    regex = language_model_only(vlm_model, ["q_proj"], lm)
    assert regex is not None and matching(_names(vlm_model), regex) == lm
    assert language_model_only(vlm_model, ["q_proj"], [*lm, *vision]) is None  # it adapts the vision tower too
    assert language_model_only(text_model, ["q_proj"], ["model.layers.0.self_attn.q_proj"]) is None
