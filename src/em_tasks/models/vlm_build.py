"""Build a LLaVA-style VLM around a real text model, with a small seeded (untrained) SigLIP vision tower.

This is how ``em-hf/default-vlm`` is made offline: the language model's weights are real, the vision tower and
projector are random. It exercises every step of the image path (processor, image tokens, vision features merged
into the prompt, batched generation) but it cannot see; results on images mean nothing about the images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

IMAGE_TOKEN = "<image>"

# ChatML (SmolLM2's format) with image parts: each image becomes one <image> placeholder, which the processor
# expands into the vision tower's patch tokens.
CHATML_IMAGE_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

VISION_IMAGE_SIZE = 64
VISION_PATCH_SIZE = 16


def build_llava_vlm(text_model_dir: str | Path, out: str | Path, *, seed: int = 0, note: str = "") -> Path:
    """Write a LlavaForConditionalGeneration folder (model + processor) to ``out``.

    Args:
        text_model_dir: A causal-LM folder (config, weights, tokenizer) whose weights become the language model.
        out: Destination folder.
        seed: Seed for the vision tower and projector weights, so every build is identical.
        note: Caveat stored in ``em_tasks_build.json`` (and so in eval logs).
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    out = Path(out)
    tokenizer = AutoTokenizer.from_pretrained(text_model_dir, local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    lm = AutoModelForCausalLM.from_pretrained(text_model_dir, dtype=torch.bfloat16, local_files_only=True)

    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=VISION_IMAGE_SIZE,
        patch_size=VISION_PATCH_SIZE,
    )
    config = LlavaConfig(
        text_config=lm.config.to_dict(),
        vision_config=vision.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=lm.config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    vlm = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    vlm.model.language_model.load_state_dict(lm.model.state_dict())
    vlm.lm_head.load_state_dict(lm.lm_head.state_dict())
    vlm.resize_token_embeddings(len(tokenizer))
    vlm.generation_config.eos_token_id = lm.generation_config.eos_token_id
    vlm.generation_config.pad_token_id = tokenizer.pad_token_id or lm.config.eos_token_id
    vlm.config.name_or_path = "em-tasks/default-vlm"

    processor = LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": VISION_IMAGE_SIZE, "width": VISION_IMAGE_SIZE}),
        tokenizer=tokenizer,
        patch_size=VISION_PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=CHATML_IMAGE_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
    )
    out.mkdir(parents=True, exist_ok=True)
    vlm.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "em_tasks_build.json").write_text(
        json.dumps({"language_model": str(text_model_dir), "vision_tower": "untrained", "seed": seed, "note": note})
    )
    return out
