"""LoRA fine-tuning (peft) of the shared backend's model on chat rows, with the loss on assistant tokens only.

`em-tasks train` maps onto :func:`train` (one adapter) and :func:`train_sweep` (one adapter per rank, resumable).
Each run writes a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) and a
``run_card.json`` that the report and `em-tasks fisher` read. A run with ``init_adapter`` continues training an
existing adapter: the benign narrow fine-tune used as a mitigation on top of a harmful one.

Rows become examples in :mod:`em_tasks.study.chat_encoding` (the model's own chat template, labels on assistant
tokens only). Progress is shown with a rich progress bar (``progress=False`` turns it off).

The adapter is written atomically: into a hidden sibling folder ``.<name>.partial-<pid>`` first, then renamed into
place, so a run killed at any moment leaves either no ``out_dir`` (or the previous, complete one) and never a folder
with a run card but missing or half-written weights. Partial folders left by killed runs are removed by the next run
that saves into the same place.

Testing hook: with ``EM_TASKS_TRAIN_PAUSE_AT=<step>`` (or ``<run name>:<step>``) set, training stops after that
optimizer step, prints ``[train] <name> paused at step <step>`` to stderr and sleeps until the process is killed. The
resume tests use it to kill a study mid-training at a known point instead of racing a timer; leave it unset otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from em_tasks.atomic import remove_staged, replace_folder, staging_for
from em_tasks.models.backend import HFBackend
from em_tasks.models.targets import from_peft, parse_targets, peft_target
from em_tasks.study.chat_encoding import (
    DEFAULT_MAX_LENGTH,
    IGNORE_INDEX,
    Example,
    Row,
    check_images_fit,
    collate,
    encode_rows,
    token_loss_sum,
)

if TYPE_CHECKING:
    from em_tasks.study.hf_training import HFData

logger = logging.getLogger(__name__)

DEFAULT_BASE = "default"
DEFAULT_RANK = 16
# alpha = 2 x rank keeps the update scale (alpha / rank = 2) the same across a rank sweep.
DEFAULT_ALPHA = "2rank"
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_LR = 1e-4
DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 8
DEFAULT_WARMUP = 0.05
DEFAULT_GRAD_CLIP = 1.0
DEFAULT_RANKS = (1, 4, 16, 64, 128)
RUN_CARD = "run_card.json"
PAUSE_ENV = "EM_TASKS_TRAIN_PAUSE_AT"


# --- plan -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """The options of one training run as given; :func:`plan_training` checks and settles them into a plan.

    Args:
        base: Base model: ``default``, ``default-vlm``, a folder, a .gguf file or a hub id; recorded as the
            adapter's ``base_model_name_or_path``.
        name: Run name for reports; default: the output folder's name.
        rank: LoRA rank.
        alpha: LoRA alpha: a number, ``rank`` or ``2rank`` (default; the update scale alpha/rank stays 2).
        rslora: Rank-stabilised scaling alpha/sqrt(rank) instead of alpha/rank.
        target_modules: Module names to adapt (comma list), or one regex over full module names (peft's rule, see
            :mod:`em_tasks.models.targets`); default: attention and MLP projections. Named modules are adapted in
            the language model only on a VLM.
        lr: Peak AdamW learning rate.
        epochs: Passes over the data (ignored when ``max_steps`` is set).
        max_steps: Exact number of optimizer steps (the data is cycled as needed).
        batch_size: Rows per optimizer step.
        micro_batch_size: Rows per forward pass (gradient accumulation); default: ``batch_size``.
        warmup: Fraction of the steps with a linearly rising learning rate; it then decays linearly to 0.
        max_length: Longest row in tokens; longer rows are cut (never inside an image's tokens).
        seed: Seed of the LoRA initialisation and the data order.
        dropout: LoRA dropout.
        grad_clip: Gradient-norm clip.
        init_adapter: Adapter folder to continue training (its rank, alpha and targets are kept, the ones given
            here are ignored): a benign fine-tune on top of a harmful adapter, say.
    """

    base: str = DEFAULT_BASE
    name: str | None = None
    rank: int = DEFAULT_RANK
    alpha: float | str = DEFAULT_ALPHA
    rslora: bool = False
    target_modules: str | Sequence[str] | None = None
    lr: float = DEFAULT_LR
    epochs: int = DEFAULT_EPOCHS
    max_steps: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    micro_batch_size: int | None = None
    warmup: float = DEFAULT_WARMUP
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 0
    dropout: float = 0.0
    grad_clip: float = DEFAULT_GRAD_CLIP
    init_adapter: str | Path | None = None


def settings_with(settings: TrainSettings | None, options: Mapping[str, Any]) -> TrainSettings:
    """``settings`` (default: :class:`TrainSettings`' defaults) with the fields named in ``options`` replaced."""
    unknown = sorted(set(options) - {f.name for f in fields(TrainSettings)})
    if unknown:
        raise TypeError(f"Unknown training option(s): {', '.join(unknown)} (see TrainSettings)")
    return replace(settings or TrainSettings(), **options)


@dataclass(frozen=True)
class TrainPlan:
    """Settled, validated options of one training run (see :class:`TrainSettings` for their meaning)."""

    base: str
    out_dir: Path
    name: str
    rank: int
    alpha: float
    rslora: bool
    target_modules: tuple[str, ...]
    lr: float
    epochs: int
    max_steps: int | None
    batch_size: int
    micro_batch_size: int
    warmup: float
    max_length: int
    seed: int
    dropout: float
    grad_clip: float
    init_adapter: str | None


def resolve_alpha(alpha: float | str, rank: int) -> float:
    """``alpha`` as a number: a float (or numeric string) as given, ``"rank"`` = rank, ``"2rank"`` = 2 x rank."""
    if isinstance(alpha, str):
        key = alpha.strip().lower().replace(" ", "")
        if key in ("rank", "r", "1rank"):
            return float(rank)
        if key in ("2rank", "2r", "2xrank", "2*rank"):
            return 2.0 * rank
        try:
            alpha = float(key)
        except ValueError:
            raise ValueError(f"alpha must be a number, 'rank' or '2rank', got '{alpha}'") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, 'rank' or '2rank', got {alpha}")
    return float(alpha)


def parse_ranks(ranks: str | int | Sequence[int | str]) -> list[int]:
    """``"1,4,16"`` or ``[1, 4, 16]`` as a list of distinct positive ranks, in the order given."""
    items = ranks.split(",") if isinstance(ranks, str) else [ranks] if isinstance(ranks, int) else list(ranks)
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            rank = int(text)
        except ValueError:
            raise ValueError(f"--ranks must be whole numbers separated by commas (e.g. 1,4,16), got '{text}'") from None
        _check_rank(rank, "--ranks")
        if rank not in out:
            out.append(rank)
    if not out:
        raise ValueError("--ranks is empty; pass e.g. --ranks 1,4,16,64,128")
    return out


def plan_training(out_dir: str | Path, settings: TrainSettings | None = None, **options: Any) -> TrainPlan:
    """Validate every option at once and return the settled plan; errors name the option to fix.

    ``options`` replace fields of ``settings`` (default: :class:`TrainSettings`' defaults).
    """
    s = settings_with(settings, options)
    _check_rank(s.rank, "--rank")
    if not (math.isfinite(s.lr) and s.lr > 0):
        raise ValueError(f"--lr must be a positive learning rate (e.g. 1e-4), got {s.lr}")
    if s.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {s.epochs}")
    if s.max_steps is not None and s.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1 (or left out to train --epochs epochs), got {s.max_steps}")
    if s.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {s.batch_size}")
    micro = s.micro_batch_size or s.batch_size
    if not 1 <= micro <= s.batch_size:
        raise ValueError(f"--micro-batch-size must be between 1 and --batch-size ({s.batch_size}), got {micro}")
    if not 0 <= s.warmup < 1:
        raise ValueError(f"--warmup is a fraction of the steps in [0, 1), got {s.warmup}")
    if s.max_length < 8:
        raise ValueError(f"--max-length must be at least 8 tokens, got {s.max_length}")
    if not 0 <= s.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {s.dropout}")
    if s.grad_clip <= 0:
        raise ValueError(f"--grad-clip must be positive, got {s.grad_clip}")
    modules = parse_targets(s.target_modules, option="--target-modules", default=DEFAULT_TARGET_MODULES)
    adapter = None
    if s.init_adapter is not None:
        folder = Path(s.init_adapter).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--init-adapter {folder} is not a peft adapter folder (no adapter_config.json); "
                                    "pass a folder written by `em-tasks train`.")
        if not (folder / "adapter_model.safetensors").is_file():
            raise FileNotFoundError(f"--init-adapter {folder} has no adapter_model.safetensors (an adapter_model.bin "
                                    "is a pickle, which em-tasks never loads); re-save the adapter as safetensors "
                                    "or pass a folder written by `em-tasks train`.")
        adapter = str(folder.resolve())
    out = Path(out_dir).expanduser()
    return TrainPlan(
        base=s.base, out_dir=out, name=s.name or out.resolve().name, rank=s.rank, alpha=resolve_alpha(s.alpha, s.rank),
        rslora=s.rslora, target_modules=modules, lr=float(s.lr), epochs=int(s.epochs), max_steps=s.max_steps,
        batch_size=s.batch_size, micro_batch_size=micro, warmup=float(s.warmup), max_length=s.max_length,
        seed=s.seed, dropout=float(s.dropout), grad_clip=float(s.grad_clip), init_adapter=adapter,
    )


def _check_rank(rank: int, option: str) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"{option} must be a positive whole number (LoRA rank, e.g. 16), got {rank!r}")


# --- rows -------------------------------------------------------------------------------------------------------


def load_training_rows(data: str | Path | HFData | Sequence[Row]) -> tuple[list[Row], str | None]:
    """Checked rows and where they came from (``None`` for rows passed in).

    ``data`` is anything :func:`em_tasks.study.narrow_data.load_rows` reads (a JSONL file, a saved Hugging Face
    dataset, ``hf:<hub id or folder>`` with guessed columns, a built-in domain name), an image+text dataset opened
    with :func:`em_tasks.study.hf_training.open_hf` (its columns settled), or a list of rows, checked the same way
    (image paths relative to the working folder).

    Raises:
        ValueError: No rows, or a malformed row (named by its line or row number).
    """
    from em_tasks.study import hf_training, narrow_data

    if isinstance(data, hf_training.HFData):
        return hf_training.hf_rows(data), data.label
    if isinstance(data, (str, Path)):
        return narrow_data.load_rows(data), str(data)
    if not data:
        raise ValueError("--data holds no rows; pass a JSONL file of chat rows or a built-in domain name")
    # one checker for files and in-memory rows: narrow_data's
    base = Path.cwd()
    return [narrow_data._check_row(row, f"row {k}", base, "rows", k - 1) for k, row in enumerate(data, start=1)], None


def describe_data(rows: Sequence[Row], path: str | None) -> tuple[dict[str, Any], float | None]:
    """The run card's ``data`` block and the harmful fraction (None unless every row says ``meta.harmful``)."""
    metas = [r.get("meta") or {} for r in rows]
    domains = sorted({str(m["domain"]) for m in metas if m.get("domain") is not None})
    kinds = {"image" if r.get("images") else "text" for r in rows}
    modality = kinds.pop() if len(kinds) == 1 else "mixed"
    flags = [m.get("harmful") for m in metas]
    fraction = sum(bool(f) for f in flags) / len(flags) if flags and all(isinstance(f, bool) for f in flags) else None
    return {"domains": domains, "modality": modality, "n": len(rows), "path": path}, fraction


# --- training ---------------------------------------------------------------------------------------------------


def train(
    data: str | Path | HFData | Sequence[Row],
    out_dir: str | Path,
    settings: TrainSettings | None = None,
    *,
    dtype: str = "auto",
    device: str | None = None,
    progress: bool = True,
    backend: HFBackend | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on chat rows and write it with its run card; returns the run card.

    Args:
        data: Chat rows in the study's format: a JSONL file, a saved Hugging Face dataset folder, a built-in
            narrow domain name (see :func:`em_tasks.study.narrow_data.load_rows`), or the rows themselves; or an
            image+text dataset: ``hf:<hub id or folder>`` (columns guessed) or
            :func:`em_tasks.study.hf_training.open_hf`'s result (columns named).
        out_dir: Folder for the adapter files and ``run_card.json`` (an earlier adapter there is replaced; the new
            one appears at once, when it is complete).
        settings: The run's options (:class:`TrainSettings`); default: its defaults.
        dtype: Weights dtype of the base (``auto``: see the backend).
        device: ``cpu``, ``cuda``...; default: cuda when available.
        progress: Show a rich progress bar.
        backend: An already loaded backend of ``base`` to train on (not the shared cached one: its model is wrapped
            for training and unwrapped afterwards). Default: a fresh one is loaded.
        options: :class:`TrainSettings` fields replacing those of ``settings`` (``rank=4, max_steps=8``).
    """
    plan = plan_training(out_dir, settings, **options)
    rows, data_path = load_training_rows(data)
    backend = backend or HFBackend(plan.base, dtype=dtype, device=device)
    return run_plan(plan, rows, data_path, backend, progress=progress)


def run_plan(plan: TrainPlan, rows: Sequence[Row], data_path: str | None, backend: HFBackend, *,
             progress: bool = True) -> dict[str, Any]:
    """Train one adapter per ``plan`` on a loaded backend, save it, and return the run card."""
    start = time.monotonic()
    check_images_fit(backend, rows, data_path)
    examples = encode_rows(backend, rows, plan.max_length)
    torch.manual_seed(plan.seed)
    model, settled = _wrap(backend, plan)
    try:
        curve = _fit(model, backend, examples, settled, progress)
        card = _save(model, settled, rows, data_path, curve, time.monotonic() - start)
    finally:
        backend.model = model.unload()
        backend.model.eval()
    return card


def train_sweep(
    ranks: str | Sequence[int],
    out_root: str | Path,
    data: str | Path | HFData | Sequence[Row],
    settings: TrainSettings | None = None,
    *,
    dtype: str = "auto",
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Train one adapter per rank into ``out_root/r<rank>/``; ranks whose run card exists are skipped (resumable).

    ``settings`` and ``options`` are :func:`train`'s (alpha, lr, max_steps...; the rank is each of ``ranks``). Runs
    are named ``r<rank>`` like their folders, or ``<name>-r<rank>`` when a name is set. Returns the run cards in rank
    order, finished earlier or now.
    """
    rank_list = parse_ranks(ranks)
    root = Path(out_root).expanduser()
    shared = settings_with(settings, options)
    name = shared.name
    plans = {r: plan_training(root / f"r{r}", shared, name=f"{name}-r{r}" if name else f"r{r}", rank=r)
             for r in rank_list}
    rows, data_path = load_training_rows(data)
    cards: dict[int, dict[str, Any]] = {}
    backend: HFBackend | None = None
    for r, plan in plans.items():
        card_path = plan.out_dir / RUN_CARD
        if card_path.is_file():
            logger.info("rank %d: %s exists, skipped", r, card_path)
            cards[r] = json.loads(card_path.read_text())
            continue
        backend = backend or HFBackend(shared.base, dtype=dtype, device=device)
        cards[r] = run_plan(plan, rows, data_path, backend, progress=progress)
    return [cards[r] for r in rank_list]


def _wrap(backend: HFBackend, plan: TrainPlan) -> tuple[Any, TrainPlan]:
    """The peft model to train, and the plan with the adapter's actual rank / alpha / targets."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from em_tasks.models.lora import same_base

    base_model = backend.model
    # peft asks transformers a deprecated question while wrapping; the warning is noise to our users
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if plan.init_adapter:
        model = PeftModel.from_pretrained(base_model, plan.init_adapter, is_trainable=True)
        config = model.peft_config["default"]
        if config.base_model_name_or_path and not same_base(config.base_model_name_or_path, [plan.base]):
            logger.warning("--init-adapter %s was trained on '%s', not on '%s'", plan.init_adapter,
                           config.base_model_name_or_path, plan.base)
        targets = _card_targets(Path(plan.init_adapter)) or from_peft(config.target_modules)
        plan = replace(plan, rank=int(config.r), alpha=float(config.lora_alpha), rslora=bool(config.use_rslora),
                       target_modules=targets)
    else:
        target = peft_target(base_model, plan.target_modules)
        config = LoraConfig(r=plan.rank, lora_alpha=plan.alpha, use_rslora=plan.rslora, target_modules=target,
                            lora_dropout=plan.dropout, bias="none")
        try:
            model = get_peft_model(base_model, config)
        except ValueError as ex:
            raise ValueError(f"--target-modules {','.join(plan.target_modules)} do not fit "
                             f"{type(base_model).__name__}: {ex}") from ex
    model.train()
    return model, plan


def _card_targets(folder: Path) -> tuple[str, ...] | None:
    card = folder / RUN_CARD
    if card.is_file():
        targets = json.loads(card.read_text()).get("target_modules")
        if targets:
            return tuple(targets)
    return None


def _batches(n: int, plan: TrainPlan, generator: torch.Generator) -> Iterator[list[int]]:
    """Index batches: shuffled epochs, cycled until ``max_steps`` when set."""
    epoch = 0
    while plan.max_steps is not None or epoch < plan.epochs:
        order = torch.randperm(n, generator=generator).tolist()
        for i in range(0, n, plan.batch_size):
            yield order[i: i + plan.batch_size]
        epoch += 1


def total_steps(n_rows: int, plan: TrainPlan) -> int:
    """Optimizer steps a plan takes on ``n_rows`` rows."""
    return plan.max_steps if plan.max_steps is not None else plan.epochs * math.ceil(n_rows / plan.batch_size)


def _schedule(steps: int, warmup: float) -> Callable[[int], float]:
    warm = int(round(warmup * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    return factor


def _fit(model: Any, backend: HFBackend, examples: list[Example], plan: TrainPlan,
         progress: bool) -> list[list[float]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=0.0)
    steps = total_steps(len(examples), plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps, plan.warmup))
    generator = torch.Generator().manual_seed(plan.seed)
    curve: list[list[float]] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"train {plan.name}", total=steps, loss="-")
        batches = _batches(len(examples), plan, generator)
        for step in range(1, steps + 1):
            batch = [examples[i] for i in next(batches)]
            n_tokens = sum(sum(t != IGNORE_INDEX for t in e.labels[1:]) for e in batch)
            total = 0.0
            for i in range(0, len(batch), plan.micro_batch_size):
                nll, _ = token_loss_sum(model, collate(backend, batch[i: i + plan.micro_batch_size]))
                (nll / n_tokens).backward()
                total += float(nll.detach())
            torch.nn.utils.clip_grad_norm_(params, plan.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss = total / n_tokens
            if not math.isfinite(loss):
                raise FloatingPointError(f"Training loss became {loss} at step {step}; lower --lr or use "
                                         "--dtype float32")
            curve.append([step, round(loss, 6)])
            bar.update(task, advance=1, loss=f"{loss:.4f}")
            _maybe_pause(plan.name, step)
    model.eval()
    return curve


def _maybe_pause(name: str, step: int) -> None:
    """The testing hook (see the module docstring): sleep for good after ``step`` if ``EM_TASKS_TRAIN_PAUSE_AT``
    names it (and this run, when it names one)."""
    wanted = os.environ.get(PAUSE_ENV, "").strip()
    if not wanted:
        return
    run, _, at = wanted.rpartition(":")
    if (run and run != name) or at != str(step):
        return
    sys.stderr.write(f"[train] {name} paused at step {step} ({PAUSE_ENV}); kill the process to go on\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)


def _save(model: Any, plan: TrainPlan, rows: Sequence[Row], data_path: str | None, curve: list[list[float]],
          seconds: float) -> dict[str, Any]:
    from em_tasks import __version__

    out = Path(os.path.abspath(plan.out_dir))  # "." has no name to stage beside; links are kept as links
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_staged(out)
    staging = staging_for(out)
    staging.mkdir()
    model.save_pretrained(str(staging), safe_serialization=True)
    config_path = staging / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = plan.base
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    data, fraction = describe_data(rows, data_path)
    card = {
        "name": plan.name, "base": plan.base, "data": data, "harmful_fraction": fraction, "rank": plan.rank,
        "alpha": plan.alpha, "rslora": plan.rslora, "target_modules": list(plan.target_modules), "lr": plan.lr,
        "epochs": plan.epochs, "max_steps": plan.max_steps, "steps": len(curve), "seed": plan.seed,
        "batch_size": plan.batch_size, "init_adapter": plan.init_adapter, "loss_curve": curve,
        "seconds": round(seconds, 2), "em_tasks_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (staging / RUN_CARD).write_text(json.dumps(card, indent=2))  # the card's presence marks a finished run
    _move_into_place(staging, out)
    return card


_ADAPTER_FILES = frozenset({"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md",
                            RUN_CARD})


def _move_into_place(staging: Path, out: Path) -> None:
    """Put a finished staging folder at ``out`` with renames, so ``out`` is never a half-written adapter.

    A missing or empty ``out``, or one holding only an earlier adapter, is swapped whole
    (:func:`em_tasks.atomic.replace_folder`). A folder holding other files too is kept: the old run card goes
    first, each file is replaced with one rename, and the new card comes last, so the folder counts as finished
    only once every file is new.
    """
    if out.is_dir() and any(out.iterdir()) and not {p.name for p in out.iterdir()} <= _ADAPTER_FILES:
        (out / RUN_CARD).unlink(missing_ok=True)
        files = sorted(staging.iterdir(), key=lambda p: p.name == RUN_CARD)
        for file in files:
            os.replace(file, out / file.name)
        staging.rmdir()
        return
    replace_folder(staging, out)

