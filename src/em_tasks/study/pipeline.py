"""``em-tasks study``: the whole study as one resumable recipe (data → train → eval-set → directions → steering
eval-set → Fisher → report), with presets for a 2-core CPU (``demo``) and a GPU (``paper``).

Every step writes into the study folder and skips what is already there: adapters with a run card are not retrained,
inspect's eval-set skips finished logs and resumes unfinished ones, directions and the Fisher diagonal are reused.

A study killed at any moment resumes with the same command. Nothing half-written is ever taken for finished: data
files and the directions are written under a temporary name and renamed when complete (adapters likewise, see
:mod:`em_tasks.study.train`), a directions folder whose files do not open is redone, and generation is seeded with
the preset's seed, so a step's answers do not depend on whether training ran earlier in the same process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

from em_tasks.atomic import replace_folder, staging_for, write_file

if TYPE_CHECKING:
    from em_tasks.study.train import TrainSettings

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class Preset:
    """Everything a study run needs to know; presets are starting points (``--set key=value`` overrides)."""

    name: str
    base: str
    domain: str = "insecure_code"
    train_rows: int = 1000
    ranks: tuple[int, ...] = (1, 4, 16, 64, 128)
    main_rank: int = 64
    mix_fraction: float = 0.1
    lr: float = 1e-4
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    max_length: int = 512
    benign_rows: int = 1000
    benign_max_steps: int | None = None
    items_per_category: int | None = None  # None: every benchmark item
    samples: int = 3
    max_tokens: int = 300
    direction_samples: int = 4  # fresh answers per question when the main run's log has too few to contrast
    alphas: tuple[float, ...] = (0.5,)
    steer_coeffs: tuple[float, ...] = (-1.0, -2.0)
    fisher_reference: int = 256
    seed: int = 0
    control_data: str | None = None  # control preset: question file (default: the shipped control_data.yaml)
    # harmful training rows instead of the generated domain (the rank sweep, so the main adapter and all built on it):
    # a JSONL file, a dataset folder, or hf:<hub id or folder>; the mix and the benign mitigation stay on `domain`
    data: str | None = None
    data_columns: str | None = None  # with data=hf:...: image=COL,prompt=COL,response=COL,messages=COL,split=NAME
    engine: str = "hf"  # hf: every run on em-hf; vllm: base and LoRA runs exported and run by inspect's vllm provider
    tensor_parallel_size: int | None = None  # vllm engine: GPUs per model (None: inspect's default, all visible)
    notes: tuple[str, ...] = field(default_factory=tuple)


PRESETS: dict[str, Preset] = {
    # sized for about 15 minutes on 2 CPU cores: the embedded SmolLM2-135M LLaVA, the shortest narrow domain,
    # LoRA on every layer but few steps, one short answer per item for 2 items per category
    "demo": Preset(
        name="demo", base="default-vlm", domain="bad_medical", train_rows=200, ranks=(1, 4, 16), main_rank=16,
        lr=1e-3, max_steps=12, batch_size=4, max_length=192, benign_rows=200, benign_max_steps=8,
        items_per_category=2, samples=1, max_tokens=64, direction_samples=2, alphas=(0.5,), steer_coeffs=(-1.0,),
        fisher_reference=32,
        notes=("default-vlm's vision tower is untrained, so image-grounded numbers measure the pipeline, "
               "not vision",),
    ),
    # the positive control: a rank-1 model organism of broad misalignment on the embedded default, every benchmark
    # item with 4 answers; 32 minutes measured on 2 CPU cores (see study/control.py and the README)
    "control": Preset(
        name="control", base="default-vlm", domain="control", ranks=(1,), main_rank=1, lr=2e-3, epochs=3,
        batch_size=8, max_length=192, items_per_category=None, samples=4, max_tokens=64, steer_coeffs=(-1.0,),
        notes=("the organism is trained on broadly misaligned answers to open questions disjoint from the "
               "benchmark; default-vlm's vision tower is untrained",),
    ),
    # the narrow question on CPU: one narrow fine-tune trained to a loss plateau, base and fine-tune on every item with
    # 4 answers per modality (25 minutes measured on 2 CPU cores)
    "narrow": Preset(
        name="narrow", base="default-vlm", domain="bad_medical", train_rows=500, ranks=(16,), main_rank=16,
        lr=1e-3, epochs=2, batch_size=8, max_length=192, benign_rows=0, items_per_category=None, samples=4,
        max_tokens=64,
        notes=("default-vlm's vision tower is untrained, so image-grounded numbers measure the pipeline, "
               "not vision",),
    ),
    # the seeds' plan: Gemma 3 4B on a GPU, ranks up to 128
    "paper": Preset(
        name="paper", base="google/gemma-3-4b-it", train_rows=6000, ranks=(1, 4, 16, 64, 128), main_rank=128,
        lr=1e-5, epochs=1, batch_size=8, max_length=1024, benign_rows=6000, samples=10, max_tokens=600,
        alphas=(0.25, 0.5, 0.75), steer_coeffs=(-4.0, -8.0), fisher_reference=512,
    ),
}


def preset_with(name: str, overrides: dict[str, str] | None = None) -> Preset:
    """A named preset with ``key=value`` overrides (values parsed as JSON where they can be)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset '{name}'; one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if not overrides:
        return preset
    known = set(asdict(preset))
    values: dict[str, Any] = {}
    for key, text in overrides.items():
        if key not in known or key == "name":
            raise ValueError(f"Unknown study setting '{key}'; settable: {', '.join(sorted(known - {'name'}))}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        values[key] = _typed(key, text, value)
    return replace(preset, **values)


_NAMES = {int: "a whole number", float: "a number", str: "text"}


def _typed(key: str, text: str, value: Any) -> Any:
    """``value`` as the type the Preset field declares, or a ValueError naming the setting and what it takes."""
    hint = get_type_hints(Preset)[key]
    union = get_origin(hint) in (Union, UnionType)
    optional = union and type(None) in get_args(hint)
    kind = next(k for k in get_args(hint) if k is not type(None)) if union else hint
    if value is None and optional:
        return None
    if get_origin(kind) is tuple:
        element = get_args(kind)[0]
        items = value if isinstance(value, list) else [value]
        return tuple(_scalar(key, text, item, element, f"a list of {_NAMES.get(element, 'value')}s, e.g. [1,4]")
                     for item in items)
    return _scalar(key, text, value, kind, _NAMES.get(kind, kind.__name__) + (" or null" if optional else ""))


def _scalar(key: str, text: str, value: Any, kind: type, wanted: str) -> Any:
    if kind is str and not isinstance(value, (list, dict)):
        return value if isinstance(value, str) else json.dumps(value)  # base=123 stays the text 123
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"--set {key}={text}: {key} takes {wanted}")


@dataclass
class StudyPaths:
    """The study folder's layout."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def directions(self) -> Path:
        return self.root / "directions"

    @property
    def fisher(self) -> Path:
        return self.root / "fisher"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def exported(self) -> Path:
        return self.root / "exported"


def run_study(preset: Preset, out: str | Path = "em-study", *, grader: str | None = None,
              say: Say = print) -> Path:
    """Run (or resume) the study; returns the report's markdown path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_engine(preset.engine, installed=True)
    if preset.data is not None or preset.data_columns:
        study_data(preset)  # bad data stops here, before anything is written
    paths = StudyPaths(Path(out))
    start = time.monotonic()
    if preset.name in ("control", "narrow"):
        return _run_single(preset, paths, grader, say, start)
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "study.json").write_text(json.dumps(asdict(preset), indent=2))
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        say(f"[study] {name} ...")
        result = fn()
        timings[name] = round(time.monotonic() - t0, 1)
        say(f"[study] {name}: done in {timings[name]:.0f} s")
        return result

    data = step("data", lambda: make_data(preset, paths))
    runs = step("train", lambda: train_runs(preset, paths, data))
    logs = step("eval (base, ranks, mix, mitigations)", lambda: evaluate(preset, paths, eval_models(preset, runs),
                                                                         "main", grader))
    directions = step("directions", lambda: find_directions(preset, paths, runs, logs, grader, say))
    if directions is not None:
        step("eval (steering)", lambda: evaluate(preset, paths, steering_models(preset, runs, directions),
                                                 "steering", grader))
    step("fisher", lambda: fisher_proxy(preset, paths, runs))
    report = step("report", lambda: make_report(paths))
    timings["total"] = round(time.monotonic() - start, 1)
    (paths.root / "timings.json").write_text(json.dumps(timings, indent=2))
    say(f"[study] finished in {timings['total']:.0f} s; report: {report}")
    return report


# --- steps --------------------------------------------------------------------------------------------------------


def study_data(preset: Preset) -> Any:
    """The preset's own harmful training data (``data``): an opened image+text dataset for ``hf:...``, else the path.

    Raises:
        ValueError: ``data`` on the control preset, ``data_columns`` without ``data=hf:...``, or a dataset that does not
            open or map (see :func:`em_tasks.study.hf_training.open_hf`).
    """
    from em_tasks.study.hf_training import HF_PREFIX, open_hf, parse_hf_options

    if preset.name == "control":
        raise ValueError("data= replaces the narrow harmful rows of the demo, narrow and paper presets; the control "
                         "preset trains on its own question file (control_data=)")
    if preset.data is None or not str(preset.data).startswith(HF_PREFIX):
        if preset.data_columns:
            raise ValueError(f"data_columns maps an image+text dataset's columns; set data=hf:<hub id or folder> "
                             f"(data is {preset.data!r})")
        return preset.data
    return open_hf(str(preset.data), **parse_hf_options(preset.data_columns))


def make_data(preset: Preset, paths: StudyPaths) -> dict[str, Any]:
    """Harmful (fraction 1), the harmful-fraction mix, and the matching benign set, text form; with ``data`` set,
    that dataset is the harmful set (the mix and the benign set still come from ``domain``)."""
    wanted = {
        "harmful": (1.0, preset.train_rows),
        f"mix{round(preset.mix_fraction * 100)}": (preset.mix_fraction, preset.train_rows),
        "benign": (0.0, preset.benign_rows),
    }
    out: dict[str, Any] = {}
    if preset.data is not None:
        out["harmful"] = study_data(preset)
        del wanted["harmful"]
    for label, (fraction, n) in wanted.items():
        path = paths.data / f"{preset.domain}-{label}.jsonl"
        if not path.is_file():
            _build_atomically(path, fraction, n, preset)
        out[label] = path
    return out


def _build_atomically(path: Path, fraction: float, n: int, preset: Preset) -> Path:
    """Write a generated text dataset under a temporary name and rename it into place, so a run killed while
    writing leaves no truncated file that the next run would take for finished."""
    from em_tasks.study.narrow_data import build_dataset

    return write_file(path, lambda partial: build_dataset(preset.domain, fraction=fraction, n=n, modality="text",
                                                          seed=preset.seed, out=partial))


def _run_single(preset: Preset, paths: StudyPaths, grader: str | None, say: Say, start: float) -> Path:
    """The presets that are one experiment each (control, narrow), with the study's bookkeeping."""
    if preset.name == "control":
        from em_tasks.study.control import control_questions, run_control

        questions = control_questions(preset)  # a bad question file stops here, before anything is written
        run: Callable[[], Path] = lambda: run_control(preset, questions, paths, grader, say)  # noqa: E731
    else:
        run = lambda: run_narrow(preset, paths, grader)  # noqa: E731
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "study.json").write_text(json.dumps(asdict(preset), indent=2))
    report = run()
    total = round(time.monotonic() - start, 1)
    (paths.root / "timings.json").write_text(json.dumps({"total": total}))
    say(f"[study] {preset.name} finished in {total:.0f} s; report: {report}")
    return report


def _train_settings(preset: Preset) -> TrainSettings:
    from em_tasks.study.train import TrainSettings

    return TrainSettings(base=preset.base, lr=preset.lr, epochs=preset.epochs, batch_size=preset.batch_size,
                         max_length=preset.max_length, seed=preset.seed)


def train_run(preset: Preset, data: Any, out: Path, *, init_adapter: Path | None = None,
              max_steps: int | None = None) -> Path:
    """One adapter at the preset's main rank and settings in ``out``, unless its run card says it is done."""
    from em_tasks.study.train import train

    if not (out / "run_card.json").is_file():
        train(data, out, _train_settings(preset), name=out.name, rank=preset.main_rank, init_adapter=init_adapter,
              max_steps=max_steps or preset.max_steps, progress=True)
    return out


def run_narrow(preset: Preset, paths: StudyPaths, grader: str | None) -> Path:
    """The narrow question alone: base against one narrow fine-tune, both modalities, every item."""
    data: Any = paths.data / f"{preset.domain}-harmful.jsonl"
    if preset.data is not None:
        data = study_data(preset)
    elif not data.is_file():
        _build_atomically(data, 1.0, preset.train_rows, preset)
    run = train_run(preset, data, paths.adapters / f"r{preset.main_rank}")
    evaluate(preset, paths, [("base", f"em-hf/{preset.base}", {}),
                             (run.name, f"em-lora/{preset.base}", {"adapters": str(run)})], "main", grader)
    return make_report(paths)


@dataclass
class Runs:
    """Adapter folders the study trained."""

    ranks: dict[int, Path]  # the rank sweep
    main: Path  # the adapter the mix, mitigations and directions are built around
    mix: Path
    benign: Path


def train_runs(preset: Preset, paths: StudyPaths, data: dict[str, Any]) -> Runs:
    """Rank sweep on harmful data, the mix at the main rank, and benign fine-tuning on top of the main adapter."""
    from em_tasks.study.train import train_sweep

    ranks = sorted(set(preset.ranks) | {preset.main_rank})
    train_sweep(ranks, paths.adapters, data["harmful"], _train_settings(preset), max_steps=preset.max_steps,
                progress=True)
    rank_dirs = {r: paths.adapters / f"r{r}" for r in ranks}
    main = rank_dirs[preset.main_rank]
    mix_label = f"mix{round(preset.mix_fraction * 100)}"
    mix = train_run(preset, data[mix_label], paths.adapters / f"{mix_label}-r{preset.main_rank}")
    benign = train_run(preset, data["benign"], paths.adapters / f"r{preset.main_rank}-then-benign",
                       init_adapter=main, max_steps=preset.benign_max_steps or preset.max_steps)
    return Runs({r: rank_dirs[r] for r in preset.ranks}, main, mix, benign)


ModelSpec = tuple[str, str, dict[str, Any]]
"""(run label, inspect model name, model args)."""


def eval_models(preset: Preset, runs: Runs) -> list[ModelSpec]:
    """Base, each rank, the mix, benign-on-harmful, and weight merging (alpha) of the main adapter."""
    lora = f"em-lora/{preset.base}"
    specs: list[ModelSpec] = [("base", f"em-hf/{preset.base}", {})]
    for rank_dir in dict.fromkeys([*runs.ranks.values(), runs.main, runs.mix, runs.benign]):
        specs.append((rank_dir.name, lora, {"adapters": str(rank_dir)}))
    for alpha in preset.alphas:
        specs.append((f"{runs.main.name}-alpha{alpha:g}", lora, {"adapters": str(runs.main), "alpha": alpha}))
    return specs


def steering_models(preset: Preset, runs: Runs, direction: Path) -> list[ModelSpec]:
    """The main fine-tune steered against its own direction (ablate; add with negative coefficients) and the
    random-direction control of matched norm."""
    lora = f"em-lora/{preset.base}"
    main = {"adapters": str(runs.main), "direction": str(direction)}
    specs: list[ModelSpec] = [(f"{runs.main.name}-ablate", lora, {**main, "layers": "all", "mode": "ablate"})]
    for coeff in preset.steer_coeffs:
        specs.append((f"{runs.main.name}-add{coeff:g}", lora, {**main, "coeff": coeff, "mode": "add"}))
    control = {"adapters": str(runs.main), "direction": f"random:{preset.seed}@{direction}",
               "coeff": preset.steer_coeffs[-1], "mode": "add"}
    specs.append((f"{runs.main.name}-random{preset.steer_coeffs[-1]:g}", lora, control))
    return specs


def sample_ids(preset: Preset) -> list[str] | None:
    """The first ``items_per_category`` items of each category (None: all)."""
    if preset.items_per_category is None:
        return None
    from em_tasks.benchmark.items import load_items

    seen: dict[str, int] = {}
    ids = []
    for item in load_items():
        if seen.get(item.category, 0) < preset.items_per_category:
            seen[item.category] = seen.get(item.category, 0) + 1
            ids.append(item.id)
    return ids


def evaluate(preset: Preset, paths: StudyPaths, models: list[ModelSpec], phase: str,
             grader: str | None, modalities: tuple[str, ...] = ("text", "image")) -> list[Any]:
    """An inspect eval-set per run over {text_misalign, multimodal_misalign}, in ``logs/<phase>/<run>/``
    (``<run>-vllm/`` for runs on the vllm engine, so switching engines never mixes two models in one eval-set).

    One run at a time, so only one model is in memory (eight 4B models at once would not fit a GPU); each eval-set
    skips what is done and runs what is unfinished again from its start (see :func:`drop_unfinished_logs`).
    """
    from inspect_ai import eval_set
    from inspect_ai.model import get_model

    from em_tasks.models.backend import release_backends
    from em_tasks.tasks import multimodal_misalign, text_misalign

    models, exports = engine_models(models, preset.engine, paths.exported, vllm_args=vllm_args(preset))
    export_runs(exports)
    ids = sample_ids(preset)
    logs: list[Any] = []
    for label, name, args in models:
        tasks = [task(samples=preset.samples, grader=grader)
                 for modality, task in (("text", text_misalign), ("image", multimodal_misalign))
                 if modality in modalities]
        log_dir = paths.logs / phase / (f"{label}-vllm" if name.startswith("vllm/") else label)
        drop_unfinished_logs(log_dir)
        with get_model(name, memoize=False, **args) as model:  # leaving it stops a vLLM server before the next run
            ok, run_logs = eval_set(tasks, log_dir=str(log_dir), model=model, sample_id=ids,
                                    max_tokens=preset.max_tokens, seed=preset.seed, retry_attempts=2,
                                    display="rich")
        release_backends()
        if not ok:
            raise RuntimeError(f"Some evaluations in {log_dir} did not finish; run the same command again to resume "
                               "them (finished logs are kept).")
        logs += run_logs
    return logs


def drop_unfinished_logs(log_dir: Path) -> list[Path]:
    """Delete the logs in ``log_dir`` that did not finish (a run killed or failed part-way; unreadable ones too)
    and return them.

    Their tasks then run again from the start, as in an uninterrupted study, instead of inspect resuming them from
    the samples the killed run had written: the backend seeds generation per batch, so answers produced in a
    resumed task's different batches would not be those of an uninterrupted run, and the report would differ.
    What is lost is the unfinished part of one run's tasks; finished logs are kept and skipped.
    """
    from inspect_ai.log import list_eval_logs, read_eval_log

    if not log_dir.is_dir():
        return []
    dropped = []
    for info in list_eval_logs(str(log_dir), recursive=False):
        path = log_dir / info.name.rsplit("/", 1)[-1]
        try:
            finished = read_eval_log(str(path), header_only=True).status == "success"
        except Exception:  # noqa: BLE001 - a log cut off mid-write does not open: it is unfinished
            finished = False
        if not finished and path.is_file():
            logger.info("removing unfinished log %s; its task runs again from the start", path)
            path.unlink()
            dropped.append(path)
    return dropped


# --- engines ------------------------------------------------------------------------------------------------------

ENGINES = ("hf", "vllm")


@dataclass(frozen=True)
class ExportJob:
    """A LoRA run that the vllm engine evaluates from a merged, exported folder."""

    label: str
    base: str
    args: dict[str, Any]  # the run's LoRA args: adapters, alpha, merge ...
    out: Path


def check_engine(engine: str, installed: bool = False) -> str:
    """``engine`` if it is one we have (and, with ``installed``, can run here), else a ValueError saying why."""
    import importlib.util

    if engine not in ENGINES:
        raise ValueError(f"Unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    if installed and engine == "vllm" and not os.environ.get("VLLM_BASE_URL") and not importlib.util.find_spec("vllm"):
        raise ValueError("--engine vllm needs vLLM, an optional extra for CUDA machines: pip install -e \".[vllm]\" "
                         "(or set VLLM_BASE_URL to a running server)")
    return engine


def vllm_args(preset: Preset) -> dict[str, Any]:
    """Model args for inspect's vllm provider (server args of ``vllm serve``)."""
    return {} if preset.tensor_parallel_size is None else {"tensor_parallel_size": preset.tensor_parallel_size}


def _local_path(name: str) -> str:
    from em_tasks.models.sources import resolve_source

    return resolve_source(name).path


def engine_models(models: list[ModelSpec], engine: str, exported: Path, *, vllm_args: dict[str, Any] | None = None,
                  base_path: Callable[[str], str] = _local_path) -> tuple[list[ModelSpec], list[ExportJob]]:
    """The runs as the engine evaluates them, and the exports that needs.

    ``hf`` keeps every run. ``vllm`` runs the base as ``vllm/<its folder or hub id>`` and each LoRA run (adapters,
    weights, alpha merges) as ``vllm/<exported>/<label>``; steering runs stay on em-hf (vLLM has no forward hooks),
    and models of other providers pass through.
    """
    from em_tasks.models.variants import COMMON_ARGS, FAMILIES, LORA_ARGS

    check_engine(engine)
    if engine == "hf":
        return list(models), []
    specs: list[ModelSpec] = []
    jobs: list[ExportJob] = []
    for label, name, args in models:
        family, _, base = name.partition("/")
        if family not in FAMILIES or args.get("direction") not in (None, ""):
            specs.append((label, name, args))
            continue
        if args.get("adapters") in (None, ""):
            folder = base_path(base)
        else:
            out = (exported / label).resolve()
            jobs.append(ExportJob(label, base, {k: v for k, v in args.items() if k in LORA_ARGS + COMMON_ARGS}, out))
            folder = str(out)
        if ":" in folder:  # inspect reads vllm/BASE:ADAPTER
            raise ValueError(f"vllm engine: the model path {folder} holds a ':', which inspect's vllm provider reads "
                             "as a LoRA adapter; move the study (or the base) to a path without one")
        specs.append((label, f"vllm/{folder}", dict(vllm_args or {})))
    return specs, jobs


def export_runs(jobs: list[ExportJob], say: Say = print) -> None:
    """Export each job's merged model, skipping those whose ``em_export.json`` says they are already there."""
    from em_tasks.models.export import is_current, plan_export, run_export

    for job in jobs:
        options = {k: v for k, v in job.args.items() if k not in ("adapters", "cache", "merged")}
        plan = plan_export(job.base, str(job.args["adapters"]), options, job.out, force=True)
        if is_current(plan):
            continue
        say(f"[study] exporting {job.label} to {job.out}")
        run_export(plan)


def find_directions(preset: Preset, paths: StudyPaths, runs: Runs, logs: list[Any], grader: str | None,
                    say: Say) -> Path | None:
    """Directions from the main fine-tune's judged text answers (topped up with fresh samples if too few)."""
    from em_tasks.models.backend import HFBackend
    from em_tasks.models.lora import LoraSpec, parse_adapters
    from em_tasks.study.directions import answers_from_log, extract, generate_and_judge

    target = paths.directions / "directions.safetensors"
    if directions_complete(paths.directions):
        return target
    main_log = next((log for log in logs if log.eval.task.endswith("text_misalign")
                     and log.eval.model_args.get("adapters") == str(runs.main)
                     and "alpha" not in log.eval.model_args), None)
    answers = answers_from_log(main_log.location) if main_log is not None else []
    model = HFBackend(preset.base, lora=LoraSpec(parse_adapters(str(runs.main))))
    base = HFBackend(preset.base)
    n_mis = sum(a.misaligned for a in answers)
    n_al = sum(a.aligned for a in answers)
    if min(n_mis, n_al) < 4:
        from em_tasks.benchmark.items import load_items

        say(f"[study] the main run's log has {n_mis} misaligned / {n_al} aligned answers; sampling more")
        questions = [(item.id, item.question) for item in load_items()]
        answers += generate_and_judge(model, questions, samples=preset.direction_samples,
                                      max_new_tokens=preset.max_tokens, grader=grader, seed=preset.seed)
    staging = staging_for(paths.directions)
    try:
        summary = extract(model, answers, staging, base=base,
                          model_label=f"em-lora/{preset.base} adapters={runs.main}")
        replace_folder(staging, paths.directions)
    except ValueError as ex:
        say(f"[study] directions skipped: {ex}")
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"[study] best layer {summary['best_layer']} ({summary['n_misaligned']} misaligned vs "
        f"{summary['n_aligned']} aligned answers)")
    return target


def directions_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished directions step: a directions file that opens and a summary that parses.

    Anything less (a run killed while writing, a hand-truncated file) is redone rather than trusted.
    """
    tensors, summary = folder / "directions.safetensors", folder / "directions.json"
    if not (tensors.is_file() and summary.is_file()):
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(tensors), framework="pt") as f:
            if not list(f.keys()):
                return False
        data = json.loads(summary.read_text(encoding="utf-8"))
    except Exception as ex:  # noqa: BLE001 - any unreadable file means: do the step again
        logger.warning("directions in %s are incomplete (%s); computing them again", folder, ex)
        return False
    return isinstance(data, dict) and "best_layer" in data


def fisher_proxy(preset: Preset, paths: StudyPaths, runs: Runs) -> dict[str, Any]:
    """Fisher diagonal of the base on the safety reference set, and each adapter's Fisher-weighted update size."""
    from em_tasks.study.fisher import run_fisher

    adapters = [*runs.ranks.values(), runs.mix, runs.benign]
    if runs.main not in adapters:
        adapters.append(runs.main)
    return run_fisher(preset.base, adapters, paths.fisher, n_reference=preset.fisher_reference, seed=preset.seed)


def make_report(paths: StudyPaths) -> Path:
    from em_tasks.study.report import build_report

    return build_report(paths.logs, paths.report, study_dir=paths.root)
