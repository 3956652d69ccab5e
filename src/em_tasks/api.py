"""Python API for notebooks: the same models the inspect and lm-eval providers use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from em_tasks.models.backend import HFBackend
from em_tasks.models.lora import LoraSpec
from em_tasks.models.steering import SteeringSpec
from em_tasks.models.variants import parse_model_args


def load_model(
    base: str,
    adapters: str | Sequence[Any] | LoraSpec | None = None,
    steering: Mapping[str, Any] | SteeringSpec | None = None,
    **options: Any,
) -> HFBackend:
    """Load ``base`` (short name, folder, .gguf or hub id), merge LoRA ``adapters`` into it and attach ``steering``.

    Args:
        base: e.g. ``"default"``, ``"google/gemma-3-4b-it"``, ``"runs/merged"``.
        adapters: ``"PATH[:WEIGHT],..."``, a list of paths or (path, weight) pairs, or a :class:`LoraSpec`.
        steering: ``{"direction": ..., "layers": ..., "coeff": ..., "mode": ..., "positions": ...}`` or a
            :class:`SteeringSpec`; active during every generation of the returned model.
        options: LoRA options (merge, alpha, density, target, cache, merged, base_check) and backend options
            (dtype, device, batch_size), as for ``-M`` on the inspect providers.

    Returns:
        An :class:`HFBackend`: ``.generate_batch(conversations, GenParams(...))``,
        ``.model``, ``.processor``, ``.info()``.

    >>> import em_tasks
    >>> model = em_tasks.load_model("default", adapters="runs/r16:1.0", alpha=0.5)   # doctest: +SKIP
    >>> with em_tasks.steer(model, "dirs/em.safetensors", layers=13, coeff=-8):      # doctest: +SKIP
    ...     model.generate_batch([[{"role": "user", "content": "Hi"}]], GenParams(max_new_tokens=32))
    """
    args: dict[str, Any] = dict(options)
    lora = adapters if isinstance(adapters, LoraSpec) else None
    if adapters is not None and lora is None:
        args["adapters"] = adapters
    spec = steering if isinstance(steering, SteeringSpec) else None
    if steering is not None and spec is None:
        args.update(steering)  # type: ignore[arg-type]
    parsed = parse_model_args("em-hf", args)
    return HFBackend(base, lora=lora or parsed.lora, steering=spec or parsed.steering, **parsed.backend)
