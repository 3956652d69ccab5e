"""Leaderboard from inspect logs of the em-tasks tasks: report.md, a self-contained index.html and PNG plots.

    em-tasks report em-study/logs --out em-study/report

A run is one model with its model args (LoRA adapters and weights, ``alpha``, steering), measured by
``text_misalign`` and ``multimodal_misalign`` and, when logged, ``overrefusal`` and ``agentic_misalign`` (the
agent-scenarios section). Run cards
(``run_card.json`` beside each adapter) label runs and sort them into groups; the study folder's
``directions/directions.json`` and ``fisher/fisher.json`` add the PCA and Fisher-proxy sections. Logs under
``LOG_DIR/control/<label>/`` (the control preset) make the positive-control section instead of leaderboard runs,
with ``control/control.json`` from the study folder as its facts. Anyone's logs of these tasks work: whatever
cannot be labelled or plotted is said so in the report, not guessed.

Where things are:

- ``stats``: Wilson intervals, the paired image − text gap (bootstrap), Spearman's rho and its permutation p.
- ``logs``: choosing the latest successful log per (task, run) and reading rates from it.
- ``runs``: runs, their labels and groups from run cards, the comparison with the base model.
- ``control``: the positive control's runs and its pass/fail criteria.
- ``agentic``: the agent scenarios' rates per run and modality, their image − text gap and the section on them.
- ``document``: the block model and its markdown and HTML writers.
- ``format``: table cells.
- ``sections``: each section of the report, plots included.
- ``build``: ``build_report``, which puts it all together and writes report.md, index.html and report.json.
"""

from em_tasks.study.report.agentic import AgentModality, AgentRun, agent_section, build_agent
from em_tasks.study.report.build import STUDY_PARTS, build_report, default_study_dir
from em_tasks.study.report.control import (
    ABLATION_MAX_SHARE,
    ABLATION_MIN_COHERENCE,
    CONTROL_FACTS,
    CONTROL_LABELS,
    RANDOM_MIN_SHARE,
    Check,
    ControlRun,
    build_control,
    control_checks,
    control_order,
    read_control_facts,
)
from em_tasks.study.report.document import Block, Bullets, Heading, Image, Para, Table, to_html, to_markdown
from em_tasks.study.report.logs import (
    AGENT_TASK,
    AGENT_VARIANTS,
    BACKEND_ARGS,
    CONTROL_DIR,
    IMAGE_TASK,
    KNOWN_TASKS,
    MODALITY_TASKS,
    REFUSAL_TASK,
    TEXT_TASK,
    LogRef,
    LogSelection,
    RateStats,
    ReportError,
    RunKey,
    control_label,
    rates_of,
    read_rates,
    select_logs,
    task_name,
)
from em_tasks.study.report.runs import (
    GROUP_TITLES,
    Adapter,
    Run,
    build_runs,
    describe_run,
    parse_adapters,
    resolve_path,
    versus,
)
from em_tasks.study.report.sections import PLOT_FILES
from em_tasks.study.report.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    MIN_CORRELATION_RUNS,
    PCA_TARGET,
    PERMUTATION_RESAMPLES,
    Z_95,
    PairedGap,
    VsBase,
    compare_intervals,
    components_to_reach,
    paired_gap,
    permutation_p,
    spearman,
    wilson_interval,
)

__all__ = [
    "AGENT_TASK", "AGENT_VARIANTS", "AgentModality", "AgentRun", "agent_section", "build_agent", "rates_of",
    "ABLATION_MAX_SHARE", "ABLATION_MIN_COHERENCE", "BACKEND_ARGS", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED",
    "CONTROL_DIR", "CONTROL_FACTS", "CONTROL_LABELS", "GROUP_TITLES", "IMAGE_TASK", "KNOWN_TASKS",
    "MIN_CORRELATION_RUNS", "MODALITY_TASKS", "PCA_TARGET", "PERMUTATION_RESAMPLES", "PLOT_FILES",
    "RANDOM_MIN_SHARE", "REFUSAL_TASK", "STUDY_PARTS", "TEXT_TASK", "Z_95", "Adapter", "Block", "Bullets", "Check",
    "ControlRun", "Heading", "Image", "LogRef", "LogSelection", "PairedGap", "Para", "RateStats", "ReportError",
    "Run", "RunKey", "Table", "VsBase", "build_control", "build_report", "build_runs", "compare_intervals",
    "components_to_reach", "control_checks", "control_label", "control_order", "default_study_dir",
    "describe_run", "paired_gap", "parse_adapters", "permutation_p", "read_control_facts", "read_rates",
    "resolve_path", "select_logs", "spearman", "task_name", "to_html", "to_markdown", "versus",
    "wilson_interval",
]
