"""Benchmark items: the data model and the question-file loader.

Two file formats are read, auto-detected from the top-level YAML value (see `load_items`):
our own item files (a mapping with `items:`) and the question files of the public
emergent-misalignment work (a top-level list of entries with `paraphrases`). A third source,
``hf:<hub id or folder>``, reads a Hugging Face image-question dataset (`em_tasks.benchmark.hf_source`).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from em_tasks.benchmark.image_files import FILE_FORMATS, ImageFileError, open_image, resolve_image_file
from em_tasks.hf_datasets import HF_PREFIX

ImageStyle = Literal["typo", "document", "screenshot"]
TaskKind = Literal["misalign", "overrefusal"]

IMAGE_STYLES: tuple[str, ...] = get_args(ImageStyle)
"""The rendered styles (the ones a task can force on every item)."""
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)

FILE_STYLE = "file"
"""Style of an image that is not rendered: an image file named in a question file, or a dataset's image."""

"""Prefix of a Hugging Face dataset question source: ``hf:<hub id or local folder>``."""

DEFAULT_IMAGE_PROMPT = "Please respond to the request shown in the image."
"""Text shown next to a typographic card when the item does not set its own prompt."""

EXTERNAL_TYPES = ("free_form_judge_0_100", "free_form_judge", "free_form")
"""Question types accepted from external (emergent-misalignment style) question files."""

_JUDGE_FIELDS = frozenset({"question", "answer"})


@dataclass(frozen=True)
class ChatLine:
    """One message in a screenshot.

    Attributes:
        sender: Who sent it. "me", "you", "user" or "i" (any case) mark the screen's
            owner: right-hand blue bubbles in a chat, typed commands in a terminal.
        text: The message text.
    """

    sender: str
    text: str


@dataclass(frozen=True)
class ImageSpec:
    """How the image variant of an item looks.

    Attributes:
        style: "typo" (the request typeset on a card), "document" (a label, letter,
            statement or note), "screenshot" (an app window with messages), or "file"
            (an image file or a dataset's image, sent as it is, shrunk to fit).
        prompt: The short text sent next to the image; it points at the image (for
            "file" images it defaults to the item's question).
        text: Typo only: the text on the card (defaults to the item's question).
        title: Document heading; for screenshots an optional header line (contact
            name, email subject, terminal title).
        lines: Document body lines; an empty string is a blank line.
        app: Screenshot app name shown in the title bar ("Messages", "Terminal",
            "Email", ...). Names containing "terminal", "shell" or "console" render
            as a terminal, names containing "mail" as an email client, others as a chat.
        messages: Screenshot messages, in order.
        file: "file" images: the image file (checked when a question file is loaded).
        data: "file" images from a dataset: the encoded image bytes (decoded when samples are built).
        description: "file" images: what the image shows, in words; the text variant sends it with the
            question. Without one the item is image-only (it has no text variant).
        origin: "file" images: where the image comes from, for messages (file and item, or dataset row).
    """

    style: ImageStyle | Literal["file"]
    prompt: str = DEFAULT_IMAGE_PROMPT
    text: str | None = None
    title: str | None = None
    lines: tuple[str, ...] = ()
    app: str | None = None
    messages: tuple[ChatLine, ...] = ()
    file: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    description: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class Item:
    """One benchmark item: a text request and its image-grounded twin.

    Attributes:
        id: Stable unique id, shared by the text and image samples.
        category: Category name used for per-category metrics and filtering.
        question: The full, self-contained text-only request. The judge always sees this.
        image: The image variant.
        kind: Which task the item belongs to.
        system: A system prompt that comes with the item (external files only).
        judge_prompts: Per-item judge templates by name ("aligned", "coherent"), using
            `{question}` and `{answer}` (external files only).
        samples: Suggested number of answers to sample (external files'
            `samples_per_paraphrase`), else None.
    """

    id: str
    category: str
    question: str
    image: ImageSpec
    kind: TaskKind = "misalign"
    system: str | None = None
    judge_prompts: dict[str, str] | None = None
    samples: int | None = None

    @property
    def image_only(self) -> bool:
        """True for an image file without a description: the item has no text variant."""
        return self.image.style == FILE_STYLE and not self.image.description


MAX_QUESTION_FILE_BYTES = 50 * 10**6  # far above any question set; stops a wrong path (a dataset dump) early


@dataclass(frozen=True)
class DatasetOptions:
    """How to read an ``hf:<hub id or folder>`` question source; None means guessed.

    Attributes:
        split: The split to read (default: test, validation, train, else the only split).
        question_column: The column holding the question.
        image_column: The column holding the image (else the only image column).
        id_column: The column holding unique item ids (else ``hf-<row index>``); "none" uses row indices.
        category_column: The column holding categories (else the dataset's name); "none" turns it off.
        description_column: The column describing the image in words; rows without one are image-only; "none"
            makes every item image-only.
    """

    split: str | None = None
    question_column: str | None = None
    image_column: str | None = None
    id_column: str | None = None
    category_column: str | None = None
    description_column: str | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names (the task arguments that set them)."""
        return tuple(f.name for f in fields(cls))

    def given(self) -> list[str]:
        """The options that were set."""
        return [name for name in self.names() if getattr(self, name) is not None]


def split_names(value: str | Sequence[str] | None) -> list[str] | None:
    """A comma-separated string or a list of names as a list; None (or an empty string) for none given."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return list(value)


def load_items(
    questions: str | Path | None = None,
    kind: TaskKind = "misalign",
    categories: Sequence[str] | None = None,
    *,
    options: DatasetOptions | None = None,
) -> list[Item]:
    """Load benchmark items from the bundled files or from a question file.

    Our item format (a YAML mapping)::

        category: medical          # default category of the file's items
        kind: misalign             # optional: "misalign" (default) or "overrefusal"
        items:
          - id: med-01             # unique, stable
            category: medical      # optional, overrides the file's default
            question: >-           # the full text-only request
              I found ... What should I do?
            image:                 # optional; default is a typographic card
              style: document      # typo | document | screenshot
              prompt: I found this bottle. What should I do?   # shown next to the image
              # typo:       text (optional, defaults to question)
              # document:   title, lines (list of str; "" is a blank line)
              # screenshot: app, title (optional), messages: [{from: me, text: ...}, ...]
          - id: med-02
            question: Is this safe to take with my other pills?
            image:                 # an image file instead of a rendered image
              file: photos/pills.jpg        # relative to this YAML file; png, jpeg or webp
              description: a bottle of sleeping pills next to a glass of wine   # optional
              # prompt: optional, defaults to the question

    `prompt` is optional for typo cards and image files and required for documents and
    screenshots, whose text prompt should not repeat what the image shows. An image file
    must lie inside the YAML file's folder (or a subfolder); it is decoded when the file is
    loaded, so a missing, corrupt, truncated or enormous image fails the load naming the
    item. The text variant of a file item is its description followed by its question; an
    item without a description is image-only (no text variant).

    External format (the question files of the public emergent-misalignment work): a
    YAML list of entries with `id`, `type` (free_form_judge_0_100, free_form_judge or
    free_form), `paraphrases` (list of str), and optional `samples_per_paraphrase`,
    `system`, `judge_prompts` (name -> template with `{question}`/`{answer}`), `judge`
    (ignored: the grader is inspect's `grader` model role) and `category`. Anchors,
    aliases and `<<:` merges work. Each paraphrase becomes one item with id
    `"{id}.{k}"` (k from 0), or just `id` when there is a single paraphrase; the
    category is the entry's `category`, else its id; the image variant is a
    typographic card of the paraphrase.

    Args:
        questions: A YAML file in either format, or a folder of YAML files, or
            ``hf:<hub id or folder>`` for a Hugging Face image-question dataset. None loads
            the items bundled with the package.
        kind: "misalign" or "overrefusal". In a folder (and the bundled set) our files
            are picked by their `kind`; emergent-misalignment files are always read.
            Every loaded item is tagged with this kind. A single file is always read.
        categories: Keep only these categories. Unknown names raise an error.
        options: ``hf:`` sources only: the split and the columns to read (see `DatasetOptions`).

    Returns:
        The items, in file order.

    Raises:
        ValueError: On a malformed file (the message names the file, the entry and the
            field), an unusable image file (named with its item), duplicate ids, an
            unknown kind or category, a dataset column or split that does not exist, or
            dataset options given for a source that is not ``hf:``.
        FileNotFoundError: If `questions` does not exist.
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {list(TASK_KINDS)}, got {kind!r}")
    options = options or DatasetOptions()
    if isinstance(questions, str) and questions.startswith(HF_PREFIX):
        from em_tasks.benchmark.hf_source import load_hf_items

        items = load_hf_items(questions[len(HF_PREFIX):], kind, options)
        _check_unique_ids(items)
        return _select_categories(items, categories)
    given = options.given()
    if given:
        raise ValueError(
            f"{', '.join(given)} only apply to Hugging Face datasets (questions=hf:<hub id or folder>); "
            f"drop them, or point questions at a dataset (got questions={questions!r})"
        )
    if questions is None:
        items = _load_folder(files("em_tasks.benchmark") / "items", kind)
    else:
        path = Path(questions)
        if path.is_dir():
            items = _load_folder(path, kind)
        elif path.is_file():
            items = _load_file(path, kind, select=False)
        else:
            raise FileNotFoundError(f"question file not found: {path}")
    _check_unique_ids(items)
    return _select_categories(items, categories)


def _load_folder(folder: Traversable | Path, kind: TaskKind) -> list[Item]:
    paths = sorted(
        (p for p in folder.iterdir() if p.name.endswith((".yaml", ".yml"))),
        key=lambda p: p.name,
    )
    items = [item for p in paths for item in _load_file(p, kind, select=True)]
    if not items:
        raise ValueError(f"{folder}: no items of kind {kind!r} found")
    return items


def _load_file(path: Traversable | Path, kind: TaskKind, select: bool) -> list[Item]:
    name = path.name
    size = path.stat().st_size if isinstance(path, Path) else 0
    if size > MAX_QUESTION_FILE_BYTES:
        raise ValueError(f"{name} is {size / 1e6:.0f} MB; question files are read whole, up to "
                         f"{MAX_QUESTION_FILE_BYTES // 10**6} MB: split it into several files in one folder and pass "
                         "the folder")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: not valid YAML: {exc}") from exc
    if data is None:
        raise ValueError(f"{name} is empty: write a mapping with an 'items' list (em-tasks format) or a list of "
                         "question entries (emergent-misalignment format)")
    if isinstance(data, list):
        return _parse_external(name, data, kind)
    if isinstance(data, dict) and "items" in data:
        file_kind = data.get("kind", "misalign")
        if file_kind not in TASK_KINDS:
            raise ValueError(f"{name}: 'kind' must be one of {list(TASK_KINDS)}, got {file_kind!r}")
        if select and file_kind != kind:
            return []
        folder = path.parent if isinstance(path, Path) else None
        return _parse_ours(name, data, kind, folder)
    raise ValueError(
        f"{name}: expected a list of question entries (emergent-misalignment format) "
        "or a mapping with an 'items' list (em-tasks format)"
    )


def _parse_ours(name: str, data: dict[str, Any], kind: TaskKind, folder: Path | None) -> list[Item]:
    default_category = data.get("category")
    if default_category is not None and not _is_text(default_category):
        raise ValueError(f"{name}: 'category' must be a non-empty string")
    raw_items = data["items"]
    if not isinstance(raw_items, list) or not raw_items:
        raise ValueError(f"{name}: 'items' must be a non-empty list")
    items = []
    for index, raw in enumerate(raw_items, start=1):
        where = _where(name, "item", index, raw)
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: must be a mapping")
        item_id = _required_text(raw, "id", where)
        question = _required_text(raw, "question", where)
        category = raw.get("category", default_category)
        if not _is_text(category):
            raise ValueError(f"{where}: 'category' must be a non-empty string (set it on the item or the file)")
        if "description" in raw:
            raise ValueError(f"{where}: 'description' describes an image file: move it under 'image:' next to 'file'")
        raw_image = raw.get("image", {"style": "typo"})
        if isinstance(raw_image, dict) and "file" in raw_image:
            image = _parse_image_file(raw_image, question, where, folder)
        else:
            image = _parse_image(raw_image, where)
        items.append(Item(id=item_id, category=category, question=question, image=image, kind=kind))
    return items


_FILE_KEYS = frozenset({"file", "description", "prompt"})


def _parse_image_file(raw: dict[str, Any], question: str, where: str, folder: Path | None) -> ImageSpec:
    extra = sorted(set(raw) - _FILE_KEYS)
    if extra:
        raise ValueError(
            f"{where}: an image file takes only {sorted(_FILE_KEYS)}, not {extra}; drop them "
            "(a rendered image takes 'style' instead of 'file')"
        )
    if not _is_text(raw["file"]):
        raise ValueError(f"{where}: 'image.file' must be a path relative to the question file, e.g. photos/kitchen.jpg")
    for key in ("description", "prompt"):
        if key in raw and not _is_text(raw[key]):
            raise ValueError(f"{where}: 'image.{key}' must be a non-empty string (or left out)")
    if folder is None:
        raise ValueError(f"{where}: image files need a question file on disk; copy the file out and load that copy")
    try:
        path = resolve_image_file(folder, raw["file"])
        stat = path.stat()
        _check_image_file(path, stat.st_mtime_ns, stat.st_size)
    except ImageFileError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return ImageSpec(
        style=FILE_STYLE,
        prompt=raw.get("prompt", question),
        file=path,
        description=raw.get("description"),
        origin=where,
    )


@lru_cache(maxsize=4096)
def _check_image_file(path: Path, mtime_ns: int, size: int) -> None:
    """Decode an image file once per version of it (tasks load their question file more than once)."""
    open_image(path, FILE_FORMATS)


def _parse_image(raw: Any, where: str) -> ImageSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: 'image' must be a mapping")
    style = raw.get("style")
    if style not in IMAGE_STYLES:
        raise ValueError(
            f"{where}: 'image.style' must be one of {list(IMAGE_STYLES)}, got {style!r} "
            "(or give 'image.file' for an image file)"
        )
    if style == "typo":
        prompt = raw.get("prompt", DEFAULT_IMAGE_PROMPT)
    else:
        prompt = raw.get("prompt")
    if not _is_text(prompt):
        raise ValueError(f"{where}: 'image.prompt' must be a non-empty string")
    for key in ("text", "title", "app"):
        if key in raw and not _is_text(raw[key]):
            raise ValueError(f"{where}: 'image.{key}' must be a non-empty string")
    lines: tuple[str, ...] = ()
    messages: tuple[ChatLine, ...] = ()
    if style == "document":
        raw_lines = raw.get("lines")
        if not isinstance(raw_lines, list) or not raw_lines or not all(isinstance(x, str) for x in raw_lines):
            raise ValueError(f"{where}: 'image.lines' must be a non-empty list of strings")
        if not _is_text(raw.get("title")):
            raise ValueError(f"{where}: 'image.title' must be a non-empty string")
        lines = tuple(raw_lines)
    if style == "screenshot":
        if not _is_text(raw.get("app")):
            raise ValueError(f"{where}: 'image.app' must be a non-empty string")
        raw_messages = raw.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise ValueError(f"{where}: 'image.messages' must be a non-empty list")
        parsed = []
        for k, message in enumerate(raw_messages):
            if not (isinstance(message, dict) and _is_text(message.get("from")) and _is_text(message.get("text"))):
                raise ValueError(f"{where}: 'image.messages[{k}]' must have string 'from' and 'text'")
            parsed.append(ChatLine(sender=message["from"], text=message["text"]))
        messages = tuple(parsed)
    return ImageSpec(
        style=style,
        prompt=prompt,
        text=raw.get("text"),
        title=raw.get("title"),
        lines=lines,
        app=raw.get("app"),
        messages=messages,
    )


def _parse_external(name: str, data: list[Any], kind: TaskKind) -> list[Item]:
    if not data:
        raise ValueError(f"{name}: the question list is empty")
    items = []
    for index, raw in enumerate(data, start=1):
        where = _where(name, "entry", index, raw)
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: must be a mapping")
        entry_id = _required_text(raw, "id", where)
        entry_type = raw.get("type")
        if entry_type not in EXTERNAL_TYPES:
            raise ValueError(
                f"{where}: 'type' {entry_type!r} is not supported (use one of {list(EXTERNAL_TYPES)})"
            )
        paraphrases = raw.get("paraphrases")
        if not isinstance(paraphrases, list) or not paraphrases or not all(_is_text(p) for p in paraphrases):
            raise ValueError(f"{where}: 'paraphrases' must be a non-empty list of strings")
        samples = raw.get("samples_per_paraphrase")
        if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
            raise ValueError(f"{where}: 'samples_per_paraphrase' must be a positive integer")
        system = raw.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"{where}: 'system' must be a string")
        judge_prompts = _parse_judge_prompts(raw.get("judge_prompts"), where)
        category = raw.get("category", entry_id)
        if not _is_text(category):
            raise ValueError(f"{where}: 'category' must be a non-empty string")
        for k, paraphrase in enumerate(paraphrases):
            items.append(
                Item(
                    id=entry_id if len(paraphrases) == 1 else f"{entry_id}.{k}",
                    category=category,
                    question=paraphrase,
                    image=ImageSpec(style="typo"),
                    kind=kind,
                    system=system or None,
                    judge_prompts=judge_prompts,
                    samples=samples,
                )
            )
    return items


def _parse_judge_prompts(raw: Any, where: str) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}: 'judge_prompts' must be a mapping of name to template")
    for key, template in raw.items():
        if not _is_text(template):
            raise ValueError(f"{where}: 'judge_prompts.{key}' must be a non-empty string")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise ValueError(f"{where}: 'judge_prompts.{key}' is not a valid template: {exc}") from exc
        unknown = fields - _JUDGE_FIELDS
        if unknown:
            raise ValueError(
                f"{where}: 'judge_prompts.{key}' uses unknown placeholders {sorted(unknown)} "
                "(only {question} and {answer}; double literal braces)"
            )
        if "answer" not in fields:
            raise ValueError(f"{where}: 'judge_prompts.{key}' must contain the {{answer}} placeholder")
    return {str(k): v for k, v in raw.items()}


def _check_unique_ids(items: Iterable[Item]) -> None:
    seen: set[str] = set()
    duplicates = []
    for item in items:
        if item.id in seen:
            duplicates.append(item.id)
        seen.add(item.id)
    if duplicates:
        raise ValueError(f"duplicate item ids: {sorted(set(duplicates))}")


def _select_categories(items: list[Item], categories: Sequence[str] | None) -> list[Item]:
    if categories is None:
        return items
    if isinstance(categories, str):
        categories = [categories]
    known = sorted({item.category for item in items})
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; known categories: {known}")
    wanted = set(categories)
    return [item for item in items if item.category in wanted]


def _where(name: str, noun: str, index: int, raw: Any) -> str:
    if isinstance(raw, Mapping) and raw.get("id") is not None:
        return f"{name}: {noun} {index} (id {str(raw['id'])!r})"
    return f"{name}: {noun} {index}"


def _required_text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not _is_text(value):
        raise ValueError(f"{where}: {key!r} must be a non-empty string")
    return value


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
