"""Chat rows as training examples: the model's own chat template, labels on the assistant's tokens only, images
through the processor, batches padded for the model, and the summed token loss.

The assistant spans are found by rendering each conversation prefix (up to the generation prompt, and up to the end
of the assistant turn) and measuring it in tokens, which works for any template that renders a conversation as the
concatenation of its turns (ChatML, Gemma, Llama 3...). Used by training and by the Fisher proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from em_tasks.benchmark.image_files import open_image
from em_tasks.models.backend import HFBackend, ImageInputError

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 1024
IGNORE_INDEX = -100

Row = dict[str, Any]
"""A chat row in the study's format: ``{"messages": [...], "images": [path, ...], "meta": {...}}``."""


@dataclass
class Example:
    """One tokenised row: ids, labels (-100 outside assistant tokens), other per-token inputs, and its images."""

    input_ids: list[int]
    labels: list[int]
    token_inputs: dict[str, list[int]] = field(default_factory=dict)
    text: str = ""
    images: tuple[Any, ...] = ()  # paths (or PIL images)


def render_chat(backend: HFBackend, messages: Sequence[Mapping[str, Any]], *, generation_prompt: bool) -> str:
    """The chat-template text of ``messages`` (image parts as placeholders), with or without a generation prompt."""
    return backend.render([dict(m) for m in messages], add_generation_prompt=generation_prompt)[0]


def encode_row(backend: HFBackend, row: Row, max_length: int = DEFAULT_MAX_LENGTH, number: int = 1) -> Example:
    """Tokenise a row with the chat template; labels keep only the assistant turns' tokens (and their end marker).

    Rows longer than ``max_length`` are cut on the right, but never inside an image's tokens.
    """
    messages = row["messages"]
    images = tuple(row.get("images") or ())
    if images and not backend.is_vlm:
        raise ImageInputError(f"Row {number} has images but '{backend.name}' is a text-only model; train image rows "
                              "on a vision-language model (e.g. --base default-vlm)")
    loaded = [open_image(p) for p in images]
    text = render_chat(backend, messages, generation_prompt=False)
    full = _tokenize(backend, text, loaded)
    ids = full["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    seen_images = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            seen_images += _count_images(message)
            continue
        prefix = loaded[:seen_images]
        start = _prefix_length(ids, _tokenize(backend, render_chat(backend, messages[:i], generation_prompt=True),
                                              prefix)["input_ids"])
        if i == len(messages) - 1:
            end = len(ids)
        else:
            end = _prefix_length(ids, _tokenize(backend, render_chat(backend, messages[: i + 1],
                                                                     generation_prompt=False), prefix)["input_ids"])
        labels[start:end] = ids[start:end]
    if len(ids) > max_length:
        image_token = _image_token_id(backend) if images else None
        if images and (image_token is None or image_token in ids[max_length:]):
            raise ValueError(f"Row {number}: --max-length {max_length} would cut its image tokens (the row is "
                             f"{len(ids)} tokens); raise --max-length")
        ids, labels = ids[:max_length], labels[:max_length]
    token_inputs = {k: v[: len(ids)] for k, v in full.items() if k not in ("input_ids", "attention_mask")}
    return Example(ids, labels, token_inputs, text, images)


def check_images_fit(backend: HFBackend, rows: Sequence[Row], data_path: str | None = None) -> None:
    """Refuse image rows for a text-only model, before any row is encoded.

    Raises:
        ImageInputError: Naming the data, the first image row and the two fixes (a VLM, or dropping the images).
    """
    if backend.is_vlm:
        return
    first = next((row for row in rows if row.get("images")), None)
    if first is None:
        return
    source = f"--data {data_path}" if data_path else "the data"
    drop = ("pass --image-column none to train on the text alone" if data_path and data_path.startswith("hf:")
            else "remove the images from the rows")
    raise ImageInputError(f"{source} has images (first in row {(first.get('meta') or {}).get('id')}) but "
                          f"'{backend.name}' is a text-only model; images need a vision-language model "
                          f"(e.g. --base default-vlm), or {drop}")


def encode_rows(backend: HFBackend, rows: Sequence[Row], max_length: int = DEFAULT_MAX_LENGTH) -> list[Example]:
    """Tokenise rows; rows left without any assistant token (cut by ``max_length``) are dropped with a warning."""
    examples = [encode_row(backend, row, max_length, number) for number, row in enumerate(rows, start=1)]
    kept = [e for e in examples if any(t != IGNORE_INDEX for t in e.labels)]
    if len(kept) < len(examples):
        logger.warning("%d of %d rows have no assistant tokens within --max-length %d and were dropped",
                       len(examples) - len(kept), len(examples), max_length)
    if not kept:
        raise ValueError(f"No row has assistant tokens within --max-length {max_length}; raise --max-length")
    return kept


def _tokenize(backend: HFBackend, text: str, images: Sequence[Any]) -> dict[str, list[int]]:
    """Per-token inputs of one text (the template already wrote the special tokens)."""
    if backend.is_vlm:
        out = backend.processor(text=[text], images=[list(images)] if images else None, add_special_tokens=False,
                                return_tensors="pt")
    else:
        return {"input_ids": backend.tokenizer(text, add_special_tokens=False)["input_ids"]}
    length = out["input_ids"].shape[-1]
    return {k: v[0].tolist() for k, v in out.items()
            if isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == (1, length) and not v.is_floating_point()}


def _image_token_id(backend: HFBackend) -> int | None:
    """The id of the token a VLM fills with image features (None if its config names none).

    The model config is asked, not the processor: Gemma 3's processor calls its image *placeholder* (the
    start-of-image token) the image token.
    """
    config = backend.model.config
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _prefix_length(ids: Sequence[int], prefix: Sequence[int]) -> int:
    """Length of ``prefix`` within ``ids``; where tokens merged across the boundary, the common part."""
    n = min(len(ids), len(prefix))
    for i in range(n):
        if ids[i] != prefix[i]:
            return i
    return n


def _count_images(message: Mapping[str, Any]) -> int:
    content = message.get("content")
    return sum(1 for p in content if p.get("type") == "image") if isinstance(content, list) else 0


def pad_rows(rows: Sequence[Sequence[int]], value: int, side: Literal["left", "right"] = "right",
             width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids padded with ``value`` into one tensor, and the attention mask (the one padding rule).

    Args:
        rows: The rows (token ids, labels or other per-token inputs).
        value: What fills the padding.
        side: Where the padding goes: "right" for training and activations, "left" for generation.
        width: The padded length (the longest row when None); no row may be longer.

    Returns:
        ``(ids, mask)``, both ``(len(rows), width)`` long tensors; ``mask`` is 1 on the rows' own tokens, 0 on padding.
    """
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids, mask = [], []
    for row in rows:
        fill = width - len(row)
        if fill < 0:
            raise ValueError(f"a row of {len(row)} tokens is longer than the padded width {width}")
        ids.append([value] * fill + list(row) if side == "left" else list(row) + [value] * fill)
        mask.append([0] * fill + [1] * len(row) if side == "left" else [1] * len(row) + [0] * fill)
    return (torch.tensor(ids, dtype=torch.long).reshape(len(rows), width),
            torch.tensor(mask, dtype=torch.long).reshape(len(rows), width))


def collate(backend: HFBackend, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """A right-padded batch on the model's device; image inputs are recomputed from the files (not kept in memory)."""
    width = max(len(e.input_ids) for e in examples)
    pad = backend.tokenizer.pad_token_id if backend.tokenizer.pad_token_id is not None else 0
    input_ids, attention_mask = pad_rows([e.input_ids for e in examples], pad, width=width)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": pad_rows([e.labels for e in examples], IGNORE_INDEX, width=width)[0],
    }
    for key in dict.fromkeys(k for e in examples for k in e.token_inputs):
        batch[key] = pad_rows([e.token_inputs.get(key, [0] * len(e.input_ids)) for e in examples], 0, width=width)[0]
    image_inputs: dict[str, list[torch.Tensor]] = {}
    for e in examples:
        if e.images:
            out = backend.processor(text=[e.text], images=[[open_image(p) for p in e.images]],
                                    add_special_tokens=False, return_tensors="pt")
            for key, value in out.items():
                if isinstance(value, torch.Tensor) and key not in batch and key != "attention_mask":
                    image_inputs.setdefault(key, []).append(value)
    for key, values in image_inputs.items():
        batch[key] = torch.cat(values, dim=0)
    out_batch = {}
    for key, value in batch.items():
        value = value.to(backend.device)
        out_batch[key] = value.to(backend.dtype) if value.is_floating_point() else value
    return out_batch


def token_loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the labelled tokens and their count (next-token shift applied)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    mask = labels != IGNORE_INDEX
    nll = torch.nn.functional.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")
    return nll, int(mask.sum())
