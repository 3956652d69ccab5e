"""Diagonal Fisher information of the base model on safety data, and the Fisher-weighted size of LoRA updates.

For reference rows x (aligned answers and refusals), the diagonal Fisher of a weight θ_i is the mean over rows of
(∂ log p(answer | prompt) / ∂θ_i)², the log-likelihood summed over the assistant tokens. It is computed for the base
weights of the LoRA-targeted modules. A fine-tune's update ΔW = scaling · B·A then gets the proxy
Σ_i F_i Δθ_i²: large when the update moves weights the safe behaviour depends on (a second-order estimate of how much
the reference log-likelihood drops).

`em-tasks fisher` maps onto :func:`run_fisher`; it shows a rich progress bar while computing the diagonal
(``progress=False`` turns it off).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from em_tasks.models.backend import HFBackend
from em_tasks.models.lora import same_base, split_lora_key
from em_tasks.models.targets import matches, parse_targets, peft_target
from em_tasks.study.safety_reference import DEFAULT_N_REFERENCE, REFERENCE_NAME, safety_reference_rows
from em_tasks.study.chat_encoding import DEFAULT_MAX_LENGTH, Example, Row, collate, encode_rows, token_loss_sum
from em_tasks.study.train import DEFAULT_TARGET_MODULES, RUN_CARD, load_training_rows

logger = logging.getLogger(__name__)

FISHER_JSON = "fisher.json"
FISHER_TENSORS = "fisher.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# --- which weights ---------------------------------------------------------------------------------------------


def target_parameters(model: Any, target_modules: str | Sequence[str] = DEFAULT_TARGET_MODULES
                      ) -> dict[str, nn.Parameter]:
    """The base weights (``<module>.weight``) of the modules LoRA would adapt, named as in
    ``model.named_parameters()``: ``target_modules`` as `em-tasks train` reads them (names in the language model
    only, a VLM's vision tower excluded, or one regex; :mod:`em_tasks.models.targets`)."""
    modules = _parse(target_modules)
    target = peft_target(model, modules)
    params = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and not list(module.children()) and matches(name, target):
            params[f"{name}.weight"] = weight
    if not params:
        raise ValueError(f"No module of {type(model).__name__} matches --targets {','.join(modules)}; name "
                         "modules the model has (e.g. q_proj,v_proj)")
    return params


def _parse(targets: str | Sequence[str] | None) -> tuple[str, ...]:
    return parse_targets(targets, option="--targets", default=DEFAULT_TARGET_MODULES)


# --- Fisher diagonal -------------------------------------------------------------------------------------------


def fisher_diagonal(
    backend: HFBackend,
    rows: Sequence[Row],
    *,
    target_modules: str | Sequence[str] = DEFAULT_TARGET_MODULES,
    max_length: int = DEFAULT_MAX_LENGTH,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean over ``rows`` of the squared gradient of each row's answer log-likelihood, per target weight.

    Returns float32 CPU tensors keyed by parameter name (shaped like the weights). The backend's model is used
    as is (eval mode); the requires-grad flags it had are restored afterwards.
    """
    examples = encode_rows(backend, rows, max_length)
    params = target_parameters(backend.model, target_modules)
    return _fisher(backend, examples, params, progress)


def _fisher(backend: HFBackend, examples: Sequence[Example], params: Mapping[str, nn.Parameter],
            progress: bool) -> dict[str, torch.Tensor]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    model = backend.model
    was_training = model.training
    flags = {p: p.requires_grad for p in model.parameters()}
    acc_dtype = torch.float64 if backend.dtype == torch.float64 else torch.float32
    total = {name: torch.zeros_like(p, dtype=acc_dtype) for name, p in params.items()}
    names, tensors = list(params), list(params.values())
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for p in tensors:
            p.requires_grad_(True)
        columns = (TextColumn("[bold]Fisher"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("fisher", total=len(examples))
            for example in examples:
                nll, _ = token_loss_sum(model, collate(backend, [example]))
                # the gradient of -log p squares to the same value as that of log p
                grads = torch.autograd.grad(nll, tensors)
                for name, g in zip(names, grads, strict=True):
                    total[name] += g.to(acc_dtype).square()
                bar.update(task, advance=1)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    fisher = {name: (t / len(examples)).float().cpu() for name, t in total.items()}
    bad = [name for name, t in fisher.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise FloatingPointError(f"The Fisher diagonal of {bad[0]} is not finite; recompute with --dtype float32")
    return fisher


# --- LoRA updates ----------------------------------------------------------------------------------------------


def lora_delta(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """Each adapted weight's update ΔW = scaling · B @ A (float32), keyed by the base weight's parameter name.

    scaling is alpha / r, or alpha / sqrt(r) for rsLoRA, with peft's per-module ``alpha_pattern`` honoured and r
    read from the weights (so ``rank_pattern`` is too).
    """
    from peft.utils.other import get_pattern_key
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    config = _adapter_config(folder)
    if config.get("use_dora"):
        raise ValueError(f"Adapter {folder} is a DoRA adapter; its update is not B @ A, and the Fisher proxy "
                         "supports plain LoRA only")
    weights = load_file(str(folder / ADAPTER_WEIGHTS))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    embeddings: set[str] = set()
    for key, value in weights.items():
        if lora := split_lora_key(key):
            pairs.setdefault(lora.module, {})[lora.factor] = value.float()
            if lora.embedding:
                embeddings.add(lora.module)
        else:
            logger.warning("Adapter %s: %s is not a LoRA factor; left out of the update", folder, key)
    alpha_pattern = config.get("alpha_pattern") or {}
    deltas = {}
    for module, parts in sorted(pairs.items()):
        embedding = module in embeddings
        a, b = parts.get("A"), parts.get("B")
        if a is None or b is None:
            raise ValueError(f"Adapter {folder}: module {module} lacks its lora_A or lora_B weight")
        rank = a.shape[0]
        alpha = float(alpha_pattern.get(get_pattern_key(list(alpha_pattern), module), config["lora_alpha"]))
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        delta = (b @ a) * scaling
        if embedding or config.get("fan_in_fan_out"):
            delta = delta.T
        deltas[f"{module}.weight"] = delta.contiguous()
    if not deltas:
        raise ValueError(f"Adapter {folder}: {ADAPTER_WEIGHTS} holds no LoRA weights")
    return deltas


def fisher_proxy(fisher: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> float:
    """Σ F_i Δθ_i² over every updated weight.

    Raises:
        ValueError: An updated weight has no Fisher entry (the diagonal covers other modules), or shapes differ.
    """
    missing = [name for name in delta if name not in fisher]
    if missing and len(missing) == len(delta):
        raise ValueError(f"None of the adapter's updated weights has a Fisher entry (first: {missing[0]}); it was "
                         "trained on another base model, or on modules outside --targets")
    if missing:
        raise ValueError(f"The Fisher diagonal has no entry for {len(missing)} updated weight(s) (first: "
                         f"{missing[0]}); recompute it with --targets covering the adapter's target modules")
    total = 0.0
    for name, d in delta.items():
        f = fisher[name]
        if f.shape != d.shape:
            raise ValueError(f"{name}: Fisher shape {tuple(f.shape)} but update shape {tuple(d.shape)}; the adapter "
                             "was trained on another base")
        total += float((f.double() * d.double().square()).sum())
    return total


# --- the command -----------------------------------------------------------------------------------------------


def run_fisher(
    base: str,
    adapters: Sequence[str | Path],
    out_dir: str | Path,
    *,
    n_reference: int = DEFAULT_N_REFERENCE,
    reference: str | Path | None = None,
    targets: str | Sequence[str] | None = None,
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    dtype: str = "auto",
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute (or reuse) the base model's Fisher diagonal and score each adapter; writes fisher.json and
    fisher.safetensors in ``out_dir`` and returns what fisher.json holds.

    Args:
        base: Base model the adapters were trained on (``default``, a folder, a hub id...).
        adapters: Adapter folders, or folders holding adapter folders (e.g. a study's ``adapters/``).
        out_dir: Output folder.
        n_reference: Reference rows used (drawn from the authored safety set, or the first ones of ``reference``).
        reference: JSONL file of chat rows to use instead of the authored safety set.
        targets: Modules whose base weights get a Fisher entry (comma list, or one regex); default: the attention
            and MLP projections `em-tasks train` adapts, plus any other module the adapters update.
        seed: Seed of the reference draw.
        max_length: Longest reference row in tokens.
        dtype: Weights dtype (``auto``: see the backend).
        device: ``cpu``, ``cuda``...; default: cuda when available.
        progress: Show a rich progress bar.
    """
    if n_reference < 1:
        raise ValueError(f"--n-reference must be >= 1, got {n_reference}")
    folders = adapter_folders(adapters)
    deltas = {folder: lora_delta(folder) for folder in folders}
    modules = _target_tuple(targets, [name for delta in deltas.values() for name in delta])
    out = Path(out_dir).expanduser()
    if reference is not None:
        rows, _ = load_training_rows(reference)
        rows = rows[:n_reference]
        ref_info: dict[str, Any] = {"n": len(rows), "path": str(reference)}
    else:
        rows = safety_reference_rows(n_reference, seed)
        ref_info = {"n": len(rows), "name": REFERENCE_NAME}
    digest = hashlib.sha256(json.dumps([r["messages"] for r in rows], sort_keys=True, default=str).encode())
    key = {"base": base, "reference": json.dumps(ref_info, sort_keys=True), "rows_sha256": digest.hexdigest(),
           "targets": ",".join(modules), "max_length": str(max_length), "dtype": str(dtype)}
    fisher = _load_diagonal(out / FISHER_TENSORS, key)
    if fisher is None:
        backend = HFBackend(base, dtype=dtype, device=device)
        fisher = fisher_diagonal(backend, rows, target_modules=modules, max_length=max_length, progress=progress)
        del backend
        _save_diagonal(out / FISHER_TENSORS, fisher, key)
    else:
        logger.info("Reusing the Fisher diagonal in %s", out / FISHER_TENSORS)
    runs = [_score(folder, deltas[folder], fisher, base) for folder in folders]
    result = {"base": base, "reference": ref_info, "targets": ",".join(modules), "runs": runs,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (out / FISHER_JSON).write_text(json.dumps(result, indent=2))
    return result


def adapter_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Adapter folders named directly, plus those one level inside folders without an adapter of their own."""
    folders: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if (path / "adapter_config.json").is_file():
            folders.append(path)
        elif path.is_dir() and (found := sorted(p.parent for p in path.glob("*/adapter_config.json"))):
            folders += found
        else:
            raise FileNotFoundError(f"--adapters {path}: no peft adapter there (no adapter_config.json in it or in "
                                    "its sub-folders); pass folders written by `em-tasks train`")
    return list(dict.fromkeys(folders))


def _target_tuple(targets: str | Sequence[str] | None, updated: Sequence[str]) -> tuple[str, ...]:
    """The module names given, or by default the attention and MLP projections plus every module the adapters
    update (``model.layers.0.mlp.fc1.weight`` adds ``fc1``)."""
    if targets is None:
        own = sorted({name.split(".")[-2] for name in updated if name.count(".") >= 1} - set(DEFAULT_TARGET_MODULES))
        return (*DEFAULT_TARGET_MODULES, *own)
    return _parse(targets)


def _score(folder: Path, delta: Mapping[str, torch.Tensor], fisher: Mapping[str, torch.Tensor],
           base: str) -> dict[str, Any]:
    card_path = folder / RUN_CARD
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    recorded = _adapter_config(folder).get("base_model_name_or_path")
    if recorded and not same_base(recorded, [base]):
        logger.warning("Adapter %s was trained on '%s', not on '%s'", folder, recorded, base)
    rank = card.get("rank", _adapter_config(folder).get("r"))
    return {
        "run": card.get("name", folder.name),
        "adapter": str(folder),
        "proxy": fisher_proxy(fisher, delta),
        "rank": int(rank) if rank is not None else None,
        "harmful_fraction": card.get("harmful_fraction"),
        # the unweighted Σ Δθ², for comparing the proxy with the plain size of the update
        "update_sq": float(sum(float(d.double().square().sum()) for d in delta.values())),
    }


def _adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a peft adapter folder (no adapter_config.json)")
    config = json.loads(path.read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ValueError(f"Adapter {folder} is a {config.get('peft_type')} adapter; the Fisher proxy needs LoRA")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"Adapter {folder} has no {ADAPTER_WEIGHTS}; em-tasks reads safetensors only")
    return config


def _load_diagonal(path: Path, key: Mapping[str, str]) -> dict[str, torch.Tensor] | None:
    """A saved diagonal whose metadata matches ``key`` (same base, reference, targets...), else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if any(meta.get(k) != v for k, v in key.items()):
            return None
        return {name: f.get_tensor(name) for name in f.keys()}


def _save_diagonal(path: Path, fisher: Mapping[str, torch.Tensor], key: Mapping[str, str]) -> None:
    from safetensors.torch import save_file

    from em_tasks import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    save_file({k: v.contiguous() for k, v in fisher.items()}, str(tmp),
              metadata={**key, "method": "empirical diagonal Fisher", "em_tasks_version": __version__})
    tmp.replace(path)
