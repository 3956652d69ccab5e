"""Finding a model's decoder layers (text models, VLMs, peft-wrapped or not)."""

from __future__ import annotations

from typing import Any

from torch import nn

# Where the decoder layers live for the architectures we know; the first that exists wins.
_KNOWN_PATHS = (
    "model.language_model.layers",  # Gemma3ForConditionalGeneration, LLaVA (transformers 5)
    "language_model.model.layers",  # older VLM layouts
    "model.layers",  # Llama, Gemma3 text, Qwen, Mistral ...
    "transformer.h",  # GPT-2 style
    "gpt_neox.layers",
)
_VISION_HINTS = ("vision", "visual", "image", "siglip", "clip")


def unwrap(model: Any) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def decoder_layers_path(model: Any) -> str:
    """Dotted name of the language model's decoder-layer list, e.g. ``model.language_model.layers``."""
    base = unwrap(model)
    for path in _KNOWN_PATHS:
        module = _get(base, path)
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return path
    # otherwise: the longest ModuleList of *DecoderLayer / *Block modules outside any vision tower
    best: tuple[int, str] | None = None
    for name, module in base.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(h in name.lower() for h in _VISION_HINTS):
            continue
        kind = type(module[0]).__name__
        if kind.endswith(("DecoderLayer", "Block", "Layer")) and (best is None or len(module) > best[0]):
            best = (len(module), name)
    if best is None:
        raise ValueError(
            f"Cannot find the decoder layers of {type(base).__name__}: none of {', '.join(_KNOWN_PATHS)} exists and no "
            "list of *DecoderLayer modules was found. Steering and activation capture need them."
        )
    return best[1]


def decoder_layers(model: Any) -> nn.ModuleList:
    """The language model's decoder layers (Llama / Gemma3 text: ``model.model.layers``; Gemma3 VLM:
    ``model.model.language_model.layers``; otherwise searched for)."""
    layers = _get(unwrap(model), decoder_layers_path(model))
    assert isinstance(layers, nn.ModuleList)
    return layers


def hidden_size(model: Any) -> int:
    """The language model's residual width."""
    config = unwrap(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def _get(root: nn.Module, path: str) -> Any:
    module: Any = root
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module
