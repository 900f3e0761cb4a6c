"""Prompt templates as data: load, check, render and hash the YAML files under `prompts/`.

A template declares its variables; rendering with a variable missing or one it does not
declare is an error, and so is a template text that uses an undeclared `${name}`. Each
template has two forms with the same output schema:

- `chat`: system and user messages for instruction-tuned models (vLLM, OpenAI-compatible);
- `completion`: a few-shot text for base models that have no chat template: a preamble,
  two or three finished examples (item header, then one line of JSON), then the new item
  with the JSON opened, so that the model only has to continue it.

The content hash of a template (`prompt_id`) covers both forms, the schema and the sampled
attributes, and is stored on every row the template produced.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedcurate.pipeline.atomic import sha256_json
from embedcurate.pipeline.errors import ConfigError

PromptForm = Literal["chat", "completion"]
PromptStep = Literal["brainstorm", "generate", "judge"]
SYNTHETIC_DIR = "synthetic"
JUDGE_DIR = "judge"


class PromptError(ConfigError):
    """A template that does not load, or a rendering that does not match its variables."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatForm(_Frozen):
    system: str | None = None
    user: str


class FewShotExample(_Frozen):
    variables: dict[str, str | int | float]
    output: dict[str, Any]


class CompletionForm(_Frozen):
    preamble: str
    item: str = Field(description="header of one example; the JSON line follows it")
    examples: list[FewShotExample] = Field(min_length=1)


class RowMapping(_Frozen):
    """Which output keys fill which pairs columns (generation templates only)."""

    query: str
    positive: str
    negative: str | None = None
    label: str | None = None


class PromptTemplateSpec(_Frozen):
    """The YAML file as written; checked further by `PromptTemplate`."""

    name: str
    step: PromptStep
    task_type: str
    description: str = ""
    variables: list[str]
    attributes: dict[str, list[str | int | float]] = Field(default_factory=dict)
    output_schema: dict[str, Any]
    row: RowMapping | None = None
    chat: ChatForm
    completion: CompletionForm


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class RenderedPrompt:
    """What a backend sends. The model's answer is `prefix` + what it generates."""

    form: PromptForm
    text: str = ""
    messages: tuple[Message, ...] = ()
    prefix: str = ""

    def payload(self) -> dict[str, Any]:
        """Canonical content for cache keys."""
        if self.form == "chat":
            return {"form": "chat", "messages": [[m.role, m.content] for m in self.messages]}
        return {"form": "completion", "text": self.text}


class PromptTemplate:
    """A loaded, checked template; see the module docstring."""

    def __init__(self, spec: PromptTemplateSpec, path: Path) -> None:
        self.spec = spec
        self.path = path
        self.prompt_id = sha256_json(spec.model_dump(mode="json"))[:16]
        self._check()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(self.spec.variables)

    @property
    def output_schema(self) -> dict[str, Any]:
        return self.spec.output_schema

    def _fail(self, message: str) -> PromptError:
        return PromptError(f"{self.path}: {message}")

    def _check(self) -> None:
        if len(self.spec.variables) != len(self.variables):
            raise self._fail("variables are listed more than once")
        undeclared_attributes = set(self.spec.attributes) - self.variables
        if undeclared_attributes:
            raise self._fail(
                f"attributes for undeclared variables: {sorted(undeclared_attributes)}"
            )
        for where, text in self._texts():
            template = Template(text)
            if not template.is_valid():
                raise self._fail(f"{where}: invalid placeholder (write a literal $ as $$)")
            unknown = set(template.get_identifiers()) - self.variables
            if unknown:
                raise self._fail(f"{where} uses undeclared variable(s) {sorted(unknown)}")
        properties = self.output_schema.get("properties")
        if self.output_schema.get("type") != "object" or not properties:
            raise self._fail("output_schema must be an object with properties")
        for number, example in enumerate(self.spec.completion.examples, start=1):
            self.check_variables(example.variables, f"completion example {number}")
            if list(example.output) != [k for k in properties if k in example.output]:
                raise self._fail(f"completion example {number}: keys not in the schema's order")
        if self.spec.step == "generate" and self.spec.row is None:
            raise self._fail("a generate template needs a `row` mapping")

    def _texts(self) -> list[tuple[str, str]]:
        chat, completion = self.spec.chat, self.spec.completion
        texts = [("chat.user", chat.user), ("completion.item", completion.item)]
        if chat.system is not None:
            texts.append(("chat.system", chat.system))
        texts.append(("completion.preamble", completion.preamble))
        return texts

    def check_variables(self, values: dict[str, Any], where: str = "render") -> dict[str, str]:
        """The values as strings, or an error naming what is missing or undeclared."""
        missing = sorted(self.variables - set(values))
        undeclared = sorted(set(values) - self.variables)
        if missing or undeclared:
            problems = []
            if missing:
                problems.append(f"missing variable(s) {missing}")
            if undeclared:
                problems.append(f"undeclared variable(s) {undeclared}")
            declared = ", ".join(self.spec.variables)
            raise self._fail(f"{where}: {'; '.join(problems)} (declared: {declared})")
        return {name: str(value) for name, value in values.items()}

    def draw_attributes(self, rng: random.Random) -> dict[str, str]:
        """One value per sampled attribute, in declaration order (E5-Mistral's diversity)."""
        return {name: str(rng.choice(choices)) for name, choices in self.spec.attributes.items()}

    def json_opening(self) -> str:
        """The start of the answer up to the first value, e.g. `{"user_query": "`."""
        first_key, first_schema = next(iter(self.output_schema["properties"].items()))
        kind = first_schema.get("type")
        if kind == "array":
            opener = '["' if first_schema.get("items", {}).get("type") == "string" else "["
        else:
            opener = '"' if kind == "string" else ""
        return "{" + json.dumps(first_key) + ": " + opener

    def render(
        self, form: PromptForm, values: dict[str, Any], *, open_json: bool = True
    ) -> RenderedPrompt:
        if form == "chat":
            return self.render_chat(values)
        return self.render_completion(values, open_json=open_json)

    def render_chat(self, values: dict[str, Any]) -> RenderedPrompt:
        strings = self.check_variables(values)
        chat = self.spec.chat
        messages = []
        if chat.system is not None:
            messages.append(Message("system", Template(chat.system).substitute(strings)))
        messages.append(Message("user", Template(chat.user).substitute(strings)))
        return RenderedPrompt(form="chat", messages=tuple(messages))

    def render_completion(
        self, values: dict[str, Any], *, open_json: bool = True
    ) -> RenderedPrompt:
        """Preamble, finished examples, then the new item; the JSON opened when `open_json`.

        With guided decoding the grammar starts at `{`, so the JSON is left unopened.
        """
        strings = self.check_variables(values)
        completion = self.spec.completion
        preamble = Template(completion.preamble).substitute(strings).rstrip("\n")
        parts = [preamble + "\n\n"]
        for example in completion.examples:
            example_values = self.check_variables(example.variables, "completion example")
            header = Template(completion.item).substitute(example_values)
            parts.append(header + self.example_json(example.output) + "\n\n")
        prefix = self.json_opening() if open_json else ""
        parts.append(Template(completion.item).substitute(strings) + prefix)
        return RenderedPrompt(form="completion", text="".join(parts), prefix=prefix)

    @staticmethod
    def example_json(output: dict[str, Any]) -> str:
        return json.dumps(output, ensure_ascii=False)

    def example_values(self, key: str) -> list[str]:
        """Every few-shot example's value for `key` (to catch a model copying an example)."""
        found: list[str] = []
        for example in self.spec.completion.examples:
            value = example.output.get(key)
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, list):
                found.extend(v for v in value if isinstance(v, str))
        return found


def default_prompts_dir() -> Path:
    return Path(str(files("embedcurate.prompts")))


def template_path(step: PromptStep, task_type: str, prompts_dir: Path | None = None) -> Path:
    return (prompts_dir or default_prompts_dir()) / SYNTHETIC_DIR / step / f"{task_type}.yaml"


@lru_cache(maxsize=64)
def _load_cached(path: Path, mtime_ns: int, size: int) -> PromptTemplate:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: not valid YAML: {exc}") from exc
    try:
        spec = PromptTemplateSpec.model_validate(data)
    except ValidationError as exc:
        raise PromptError(f"{path}: invalid prompt template:\n{exc}") from exc
    return PromptTemplate(spec, path)


def load_template_file(path: Path) -> PromptTemplate:
    if not path.is_file():
        raise PromptError(f"{path}: prompt template not found")
    stat = path.stat()  # a changed file is read again
    return _load_cached(path.resolve(), stat.st_mtime_ns, stat.st_size)


def load_template(
    step: PromptStep, task_type: str, prompts_dir: Path | None = None
) -> PromptTemplate:
    """The template for one step of one synthetic task type (`prompts/synthetic/STEP/TYPE.yaml`)."""
    template = load_template_file(template_path(step, task_type, prompts_dir))
    if template.spec.step != step or template.spec.task_type != task_type:
        raise PromptError(
            f"{template.path}: declares step {template.spec.step!r} and task type "
            f"{template.spec.task_type!r}, expected {step!r} and {task_type!r}"
        )
    return template


def load_judge_template(name: str, prompts_dir: Path | None = None) -> PromptTemplate:
    """A judge prompt (`prompts/judge/NAME.yaml`), checked like the synthetic templates."""
    path = (prompts_dir or default_prompts_dir()) / JUDGE_DIR / f"{name}.yaml"
    template = load_template_file(path)
    if template.spec.step != "judge":
        raise PromptError(
            f"{template.path}: declares step {template.spec.step!r}, expected 'judge'"
        )
    return template
