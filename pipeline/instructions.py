"""NV-Embed's instruction template and the table of task definitions behind it.

Queries are embedded as ``Instruct: {task definition}\\nQuery: {query}`` (arXiv 2405.17428,
eq. 2); documents get no instruction except in symmetric tasks. The model masks the instruction
out of pooling, so rendering also returns where the instruction ends: the span covers
``Instruct: {definition}\\nQuery: `` and the text proper starts right after it.

The definitions live in ``prompts/instructions.yaml`` (data, with a content hash recorded in
manifests), keyed by dataset or task name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.schemas import TaskType

INSTRUCTIONS_PATH = Path(str(files("embedcurate.prompts") / "instructions.yaml"))
INSTRUCTION_PREFIX = "Instruct: {task}\nQuery: "
# Tasks whose documents are examples of the same kind as the query get the instruction too.
SYMMETRIC_BY_DEFAULT = {TaskType.STS, TaskType.CLASSIFICATION, TaskType.CLUSTERING}

_NAME_NOISE = re.compile(r"[\s\-_.]+")


BLEND_TASK_FIX = "set the source's `task:` to a known task, or give it an `instruction:`"


class UnknownTaskError(ConfigError):
    """A task name that is not in the instruction table; the message lists the known ones.

    `fix` says what to change in the words of the interface the user used: blend keys by
    default; a command reraises `reworded(...)` with its own flags.
    """

    def __init__(
        self,
        name: str,
        known: list[str],
        table_path: Path,
        where: str = "",
        fix: str = BLEND_TASK_FIX,
    ) -> None:
        self.name = name
        self.known = known
        self.table_path = table_path
        self.where = where
        super().__init__(
            f"{where + ': ' if where else ''}unknown task {name!r}: it is not in the "
            f"instruction table {table_path}; {fix}. Known tasks: {', '.join(known)}"
        )

    def reworded(self, fix: str, where: str | None = None) -> UnknownTaskError:
        """The same error with the fix (and optionally the place) in another interface's
        words, e.g. `name a known task with --task, or give --instruction` on the CLI."""
        return UnknownTaskError(
            self.name, self.known, self.table_path, self.where if where is None else where, fix
        )


class _TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: TaskType
    definition: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    symmetric: bool | None = None


class _InstructionFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    tasks: dict[str, _TaskEntry]


@dataclass(frozen=True)
class TaskInstruction:
    """One task of the table: its canonical name, type, definition and document side."""

    name: str
    task_type: TaskType
    definition: str
    symmetric: bool


@dataclass(frozen=True)
class RenderedText:
    """A templated text and the span of its instruction prefix, `[start, end)` in characters."""

    text: str
    instruction_span: tuple[int, int]

    @property
    def instruction_chars(self) -> int:
        return self.instruction_span[1] - self.instruction_span[0]


def normalize_task_name(name: str) -> str:
    """Matching key for task names: case-folded, without spaces, '-', '_' or '.'."""
    return _NAME_NOISE.sub("", name).casefold()


def instruction_prefix(definition: str) -> str:
    return INSTRUCTION_PREFIX.format(task=definition)


def render(definition: str, text: str) -> RenderedText:
    """`Instruct: {definition}\\nQuery: {text}`; an empty definition leaves the text as it is."""
    if not definition:
        return RenderedText(text=text, instruction_span=(0, 0))
    prefix = instruction_prefix(definition)
    return RenderedText(text=prefix + text, instruction_span=(0, len(prefix)))


class InstructionTable:
    """Task name -> TaskInstruction, with case- and punctuation-insensitive lookup."""

    def __init__(
        self,
        tasks: dict[str, TaskInstruction],
        path: Path,
        content_hash: str,
        aliases: dict[str, list[str]] | None = None,
    ) -> None:
        self.tasks = tasks
        self.path = path
        self.content_hash = content_hash
        self._keys: dict[str, str] = {}
        for name in tasks:
            for key_name in [name, *(aliases or {}).get(name, [])]:
                self._register(key_name, name)

    def _register(self, key_name: str, canonical: str) -> None:
        key = normalize_task_name(key_name)
        taken = self._keys.get(key)
        if taken is not None and taken != canonical:
            raise ConfigError(
                f"{self.path}: task name {key_name!r} of {canonical} clashes with {taken}"
            )
        self._keys[key] = canonical

    @property
    def names(self) -> list[str]:
        return sorted(self.tasks, key=str.casefold)

    def resolve(self, name: str) -> str | None:
        """The canonical name for `name` (exact, then normalised match), or None."""
        if name in self.tasks:
            return name
        return self._keys.get(normalize_task_name(name))

    def get(self, name: str, where: str = "") -> TaskInstruction:
        """The task called `name`; `where` (e.g. the source) prefixes the unknown-task error."""
        canonical = self.resolve(name)
        if canonical is None:
            raise UnknownTaskError(name, self.names, self.path, where)
        return self.tasks[canonical]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None

    def __len__(self) -> int:
        return len(self.tasks)


def parse_instruction_table(text: str, path: Path) -> InstructionTable:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        parsed = _InstructionFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: invalid instruction table: {problems}") from exc
    tasks = {
        name: TaskInstruction(
            name=name,
            task_type=entry.type,
            definition=entry.definition.strip(),
            symmetric=(
                entry.symmetric
                if entry.symmetric is not None
                else entry.type in SYMMETRIC_BY_DEFAULT
            ),
        )
        for name, entry in parsed.tasks.items()
    }
    content_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    aliases = {name: entry.aliases for name, entry in parsed.tasks.items()}
    return InstructionTable(tasks, path, content_hash, aliases)


def load_instruction_table(path: str | Path | None = None) -> InstructionTable:
    """Read an instruction table (default: the packaged `prompts/instructions.yaml`)."""
    table_path = Path(path) if path is not None else INSTRUCTIONS_PATH
    return _load_cached(table_path.resolve())


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> InstructionTable:
    if not path.is_file():
        raise ConfigError(f"{path}: instruction table not found")
    return parse_instruction_table(path.read_text(encoding="utf-8"), path)
