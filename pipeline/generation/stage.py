"""The generate stage: synthetic pairs the E5-Mistral way (arXiv 2401.00368), as NV-Embed uses.

For each synthetic task type of the blend:

1. brainstorm: ask the LLM for task definitions until `num_tasks` distinct ones are in hand
   (a few rounds at most; duplicates and copies of the few-shot examples are refused);
2. generate: one example per (task, attribute draw): query, positive and hard negative for
   retrieval, S1/S2/S3 for STS, text/label/misleading label for classification;
3. filter: per-answer checks, then set-level checks with the teacher (see `filters`);
4. write the kept rows as a PAIRS shard set (source `synthetic`), the task definition as
   the instruction, the hard negative in `given_negatives`, the template hash as `prompt_id`.

Every call goes through the response cache, so a rerun with the same blend makes no calls
and writes the same shards. Attribute draws and sampling seeds derive from the blend seed,
the task type and the (task, example) position only.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedcurate.pipeline.atomic import sha256_json
from embedcurate.pipeline.blend import GenerateStageConfig, GeneratorConfig, TeacherConfig
from embedcurate.pipeline.generation.backends import (
    make_backend,
    model_kind,
    prompt_form,
    repetition_penalty,
    wants_guided_json,
)
from embedcurate.pipeline.generation.cache import CachingGenerator, response_cache
from embedcurate.pipeline.generation.fielded import generate_fielded, list_steps, object_steps
from embedcurate.pipeline.generation.filters import (
    KEEP,
    Verdict,
    check_negative_differs,
    check_not_example,
    check_query_not_copied,
    check_schema,
    drop,
    exact_duplicates,
    near_duplicates,
    parse_json_answer,
    round_trip,
    run_check,
    too_easy,
)
from embedcurate.pipeline.generation.prompts import PromptForm, PromptTemplate, load_template
from embedcurate.pipeline.generation.types import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind, TaskType, rows_to_table
from embedcurate.pipeline.shards import write_shards
from embedcurate.pipeline.textnorm import text_hash

logger = logging.getLogger(__name__)

SOURCE = "synthetic"
BRAINSTORM_KEY = "tasks"
MAX_TASKS_PER_CALL = 10
MAX_BRAINSTORM_ROUNDS = 4
TOP_P = 0.95


@dataclass(frozen=True)
class SyntheticKind:
    """Where rows of one synthetic task type go in the pairs table."""

    task_type: TaskType
    stage: int
    task_name: str
    symmetric: bool = False


SYNTHETIC_KINDS: dict[str, SyntheticKind] = {
    "short-long": SyntheticKind(TaskType.RETRIEVAL, 1, "SyntheticShortLong"),
    "long-short": SyntheticKind(TaskType.RETRIEVAL, 1, "SyntheticLongShort"),
    "short-short": SyntheticKind(TaskType.RETRIEVAL, 1, "SyntheticShortShort"),
    "long-long": SyntheticKind(TaskType.RETRIEVAL, 1, "SyntheticLongLong"),
    "sts": SyntheticKind(TaskType.STS, 2, "SyntheticSTS", symmetric=True),
    "classification": SyntheticKind(TaskType.CLASSIFICATION, 2, "SyntheticClassification"),
}


@dataclass(frozen=True)
class GenerationPlan:
    """The settings every request of a run shares."""

    cfg: GeneratorConfig
    seed: int
    form: PromptForm
    guided: bool

    @property
    def fielded(self) -> bool:
        """Base-model prompts without a grammar are answered field by field (see `fielded`)."""
        return self.form == "completion" and not self.guided

    @property
    def tasks_per_call(self) -> int:
        return min(self.cfg.num_tasks, MAX_TASKS_PER_CALL)

    def sampling(self, seed: int) -> SamplingParams:
        """No stop strings: a chat answer or a grammar ends by itself, and field-by-field
        requests set their own (the closing quote)."""
        return SamplingParams(
            max_tokens=self.cfg.max_tokens,
            temperature=self.cfg.temperature,
            top_p=TOP_P,
            seed=seed,
            repetition_penalty=repetition_penalty(self.cfg),
        )

    def request(
        self, template: PromptTemplate, values: dict[str, Any], seed: int
    ) -> GenerationRequest:
        prompt = template.render(self.form, values, open_json=not self.guided)
        schema = structural_schema(template.output_schema) if self.guided else None
        return GenerationRequest(prompt=prompt, sampling=self.sampling(seed), json_schema=schema)


@dataclass
class Candidate:
    """One generated example on its way to a row, with the first check it failed."""

    synthetic_type: str
    task: str
    task_index: int
    example_index: int
    attributes: dict[str, str]
    seed: int
    fields: dict[str, str | None] = field(default_factory=dict)
    verdict: Verdict = KEEP


def derived_seed(*parts: object) -> int:
    """A 31-bit seed from the parts (llama.cpp takes uint32, OpenAI an int)."""
    return int(sha256_json([str(p) for p in parts])[:8], 16) & 0x7FFFFFFF


def structural_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without length limits: guided decoders compile `maxLength: 8000` into huge
    grammars, and the limits are checked after generation anyway."""
    limits = {"minLength", "maxLength", "minItems", "maxItems"}
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in limits:
            continue
        if isinstance(value, dict):
            result[key] = structural_schema(value)
        else:
            result[key] = value
    return result


# --- step 1: brainstorm ----------------------------------------------------------------------


def brainstorm_tasks(
    generator: CachingGenerator,
    template: PromptTemplate,
    plan: GenerationPlan,
    synthetic_type: str,
) -> tuple[list[str], dict[str, Any]]:
    """Distinct task definitions, at most `num_tasks`; and counts of what was refused."""
    wanted = plan.cfg.num_tasks
    per_call = plan.tasks_per_call
    item_schema = template.output_schema["properties"][BRAINSTORM_KEY].get("items", {})
    example_tasks = template.example_values(BRAINSTORM_KEY)
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    num_calls = num_proposed = 0
    for _ in range(MAX_BRAINSTORM_ROUNDS):
        missing = wanted - len(kept)
        if missing <= 0:
            break
        calls = range(num_calls, num_calls + math.ceil(missing / per_call))
        num_calls += len(calls)
        proposed = _brainstorm_round(generator, template, plan, synthetic_type, calls, dropped)
        num_proposed += len(proposed)
        for task in proposed:
            verdict = _check_task(task, item_schema, example_tasks, kept)
            if verdict.keep:
                kept.append(task.strip())
            else:
                dropped[verdict.reason or "unknown"] += 1
    if len(kept) < wanted:
        logger.warning(
            "brainstorm %s: %d of %d task definitions after %d call(s)",
            synthetic_type,
            len(kept),
            wanted,
            num_calls,
        )
    stats = {
        "num_calls": num_calls,
        "num_proposed": num_proposed,
        "num_kept": min(len(kept), wanted),
        "num_unused": max(0, len(kept) - wanted),
        "dropped": dict(sorted(dropped.items())),
    }
    return kept[:wanted], stats


def _brainstorm_round(
    generator: CachingGenerator,
    template: PromptTemplate,
    plan: GenerationPlan,
    synthetic_type: str,
    calls: range,
    dropped: Counter[str],
) -> list[Any]:
    """Task definitions proposed by one round of calls (unchecked)."""
    per_call = plan.tasks_per_call
    requests = [
        _brainstorm_request(template, plan, synthetic_type, call, per_call) for call in calls
    ]
    desc = f"brainstorm {synthetic_type}"
    if not plan.fielded:
        results = generator.generate(requests, desc=desc)
        return [
            task
            for request, result in zip(requests, results, strict=True)
            for task in _proposed_tasks(result, request.prompt.prefix, dropped)
        ]
    item_schema = template.output_schema["properties"][BRAINSTORM_KEY].get("items", {})
    prompts = [request.prompt for request in requests]
    samplings = [request.sampling for request in requests]
    steps = list_steps(item_schema, per_call)
    proposed: list[Any] = []
    for answer in generate_fielded(generator, prompts, samplings, steps, desc):
        if not answer.verdict.keep:  # the list ends at the first unfinished item
            dropped[f"task_{answer.verdict.reason}"] += 1
        proposed += answer.values
    return proposed


def _brainstorm_request(
    template: PromptTemplate, plan: GenerationPlan, synthetic_type: str, call: int, per_call: int
) -> GenerationRequest:
    rng = random.Random(f"{plan.seed}|{synthetic_type}|brainstorm|{call}")
    values = {**template.draw_attributes(rng), "num_tasks": per_call}
    seed = derived_seed(plan.seed, synthetic_type, "brainstorm", call)
    return plan.request(template, values, seed)


def _proposed_tasks(result: GenerationResult, prefix: str, dropped: Counter[str]) -> list[Any]:
    value, verdict = parse_json_answer(result, prefix)
    if verdict.keep and not (
        isinstance(value, dict) and isinstance(value.get(BRAINSTORM_KEY), list)
    ):
        verdict = drop("schema_missing_field", BRAINSTORM_KEY)
    if not verdict.keep:
        dropped[f"answer_{verdict.reason}"] += 1
        return []
    return value[BRAINSTORM_KEY]


def _check_task(
    task: Any, item_schema: dict[str, Any], example_tasks: list[str], kept: list[str]
) -> Verdict:
    """Schema, not a few-shot example, not equal (normalised) to a task already kept.

    Only exact duplicates: word overlap cannot tell "... an author's work ..." from
    "... an author's book ..." (the same task) apart from "... about volcanoes ..." and
    "... about beekeeping ..." (two tasks); near-duplicate examples are caught later.
    """
    verdict = check_schema(task, item_schema)
    if not verdict.keep:
        return drop(f"task_{verdict.reason}", verdict.detail)
    if not check_not_example(task, example_tasks).keep:
        return drop("task_copied_example")
    if any(text_hash(other) == text_hash(task) for other in kept):
        return drop("task_duplicate")
    return KEEP


# --- step 2: generate ------------------------------------------------------------------------


def generate_candidates(
    generator: CachingGenerator,
    template: PromptTemplate,
    plan: GenerationPlan,
    synthetic_type: str,
    tasks: list[str],
    first_task_index: int = 0,
) -> list[Candidate]:
    """One candidate per (task, example); `tasks` may be a slice of the brainstormed list
    that starts at `first_task_index` (a part of the work on a worker, `shard_generate`):
    draws and seeds follow the task's index in the whole list, so a part asks exactly what
    the whole list would."""
    candidates, requests = [], []
    for task_index, task in enumerate(tasks, start=first_task_index):
        for example_index in range(plan.cfg.examples_per_task):
            rng = random.Random(f"{plan.seed}|{synthetic_type}|{task_index}|{example_index}")
            attributes = template.draw_attributes(rng)
            seed = derived_seed(plan.seed, synthetic_type, task_index, example_index)
            candidates.append(
                Candidate(synthetic_type, task, task_index, example_index, attributes, seed)
            )
            requests.append(plan.request(template, {"task": task, **attributes}, seed))
    desc = f"generate {synthetic_type}"
    answers: list[tuple[Any, Verdict]]
    if plan.fielded:
        prompts = [request.prompt for request in requests]
        samplings = [request.sampling for request in requests]
        keys, steps = object_steps(template.output_schema)
        answers = [
            (
                dict(zip(keys, answer.values, strict=True)) if answer.verdict.keep else None,
                answer.verdict,
            )
            for answer in generate_fielded(generator, prompts, samplings, steps, desc)
        ]
    else:
        results = generator.generate(requests, desc=desc)
        answers = [
            parse_json_answer(result, request.prompt.prefix)
            for request, result in zip(requests, results, strict=True)
        ]
    for candidate, (value, verdict) in zip(candidates, answers, strict=True):
        if verdict.keep:
            candidate.fields, candidate.verdict = judge_answer(value, template)
        else:
            candidate.verdict = verdict
    return candidates


def judge_answer(value: Any, template: PromptTemplate) -> tuple[dict[str, str | None], Verdict]:
    """Check a parsed answer against the schema and map it onto pairs fields."""
    verdict = check_schema(value, template.output_schema)
    if not verdict.keep:
        return {}, verdict
    mapping = template.spec.row
    assert mapping is not None  # generate templates are checked to have one
    fields: dict[str, str | None] = {
        "query": value[mapping.query].strip(),
        "positive": value[mapping.positive].strip(),
        "negative": value[mapping.negative].strip() if mapping.negative else None,
        "label": value[mapping.label].strip() if mapping.label else None,
    }
    return fields, _check_content(fields, template)


def _check_content(fields: dict[str, str | None], template: PromptTemplate) -> Verdict:
    """Copies: of the query into a document, of the positive as the negative, of an example.

    Classification answers are exempt from the document checks: their "documents" are
    labels, which may occur in the text and will often equal an example's label.
    """
    mapping = template.spec.row
    assert mapping is not None
    query, positive, negative = fields["query"] or "", fields["positive"] or "", fields["negative"]
    checks = [
        check_negative_differs(positive, negative),
        check_not_example(query, template.example_values(mapping.query)),
    ]
    if mapping.label is None:
        for key, document in ((mapping.positive, positive), (mapping.negative, negative)):
            if key is not None and document:
                checks.append(check_query_not_copied(query, document))
                checks.append(check_not_example(document, template.example_values(key)))
    return next((verdict for verdict in checks if not verdict.keep), KEEP)


# --- step 3: filter over the set -------------------------------------------------------------


def filter_candidates(
    candidates: list[Candidate], teacher_cfg: TeacherConfig, cfg: GeneratorConfig
) -> None:
    """Set-level checks per synthetic type; updates each surviving candidate's verdict."""
    by_type: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        if candidate.verdict.keep:
            by_type.setdefault(candidate.synthetic_type, []).append(candidate)
    teacher = None
    for synthetic_type, group in by_type.items():
        _apply(group, exact_duplicates([c.fields["query"] or "" for c in group], "duplicate_query"))
        if SYNTHETIC_KINDS[synthetic_type].task_type != TaskType.CLASSIFICATION:
            group = [c for c in group if c.verdict.keep]
            positives = [c.fields["positive"] or "" for c in group]
            _apply(group, exact_duplicates(positives, "duplicate_positive"))
        group = [c for c in group if c.verdict.keep]
        if not group:
            continue
        if teacher is None:
            teacher = _load_teacher_or_none(teacher_cfg)
        if teacher is None:
            _apply(group, [drop("check_failed:teacher")] * len(group))
            continue
        _teacher_checks(group, teacher, cfg)


def _apply(group: list[Candidate], verdicts: list[Verdict]) -> None:
    for candidate, verdict in zip(group, verdicts, strict=True):
        if candidate.verdict.keep and not verdict.keep:
            candidate.verdict = verdict


def _load_teacher_or_none(teacher_cfg: TeacherConfig) -> Any:
    from embedcurate.pipeline.mining.teacher import load_teacher

    try:
        return load_teacher(teacher_cfg, eager=True)
    except Exception:  # the rows are dropped as unchecked, never kept
        logger.exception("teacher %s could not be loaded", teacher_cfg.model)
        return None


def _teacher_checks(group: list[Candidate], teacher: Any, cfg: GeneratorConfig) -> None:
    """Near duplicates, round trip and easiness, from one encoding of queries and documents."""
    queries = [c.fields["query"] or "" for c in group]
    documents: list[str] = []
    column: dict[str, int] = {}
    for candidate in group:
        for text in (candidate.fields["positive"], candidate.fields["negative"]):
            if text is not None and text not in column:
                column[text] = len(documents)
                documents.append(text)
    try:
        query_embeddings = teacher.encode_queries(queries)  # (rows, dim)
        scores = query_embeddings @ teacher.encode_documents(documents).T  # (rows, documents)
    except Exception:  # unencoded rows are dropped as unchecked, never kept
        logger.exception("teacher could not encode %d generated examples", len(group))
        _apply(group, [drop("check_failed:teacher_encode")] * len(group))
        return
    threshold = cfg.near_duplicate_threshold
    _apply(
        group,
        run_check(
            "near_duplicate", lambda: near_duplicates(query_embeddings, threshold), len(group)
        ),
    )
    positive_columns = [column[c.fields["positive"] or ""] for c in group]
    top_k = cfg.round_trip_top_k
    _apply(
        group,
        run_check("round_trip", lambda: round_trip(scores, positive_columns, top_k), len(group)),
    )
    if cfg.easiness_margin is not None:
        _apply(
            group, run_check("too_easy", lambda: _easiness(group, scores, column, cfg), len(group))
        )


def _easiness(
    group: list[Candidate], scores: Any, column: dict[str, int], cfg: GeneratorConfig
) -> list[Verdict]:
    assert cfg.easiness_margin is not None
    positive_scores, negative_scores = [], []
    for row, candidate in enumerate(group):
        positive_scores.append(float(scores[row, column[candidate.fields["positive"] or ""]]))
        negative = candidate.fields["negative"]
        negative_scores.append(None if negative is None else float(scores[row, column[negative]]))
    return too_easy(positive_scores, negative_scores, cfg.easiness_margin)


# --- step 4: rows ----------------------------------------------------------------------------


def candidate_row(
    candidate: Candidate, template: PromptTemplate, plan: GenerationPlan
) -> dict[str, Any]:
    kind = SYNTHETIC_KINDS[candidate.synthetic_type]
    query = candidate.fields["query"] or ""
    positive = candidate.fields["positive"] or ""
    negative = candidate.fields["negative"]
    positive_id = f"syn-doc-{text_hash(positive)}"
    identity = [
        template.prompt_id,
        candidate.synthetic_type,
        candidate.task,
        candidate.example_index,
        candidate.seed,
    ]
    score = candidate.attributes.get("high_score") if kind.task_type == TaskType.STS else None
    provenance = {
        "synthetic_type": candidate.synthetic_type,
        "attributes": candidate.attributes,
        "task_index": candidate.task_index,
        "example_index": candidate.example_index,
        "seed": candidate.seed,
        "template": template.name,
        "prompt_form": plan.form,
        "guided_json": plan.guided,
        "backend": plan.cfg.backend,
    }
    return {
        "example_id": f"syn-{sha256_json(identity)[:16]}",
        "source": SOURCE,
        "task_type": kind.task_type.value,
        "task_name": kind.task_name,
        "stage": kind.stage,
        "instruction": candidate.task,
        "query_id": f"syn-q-{text_hash(query)}",
        "query": query,
        "positive_id": positive_id,
        "positive": positive,
        "positive_ids": [positive_id],
        "given_negatives": [negative] if negative else None,
        "label": candidate.fields["label"],
        "score": float(score) if score is not None else None,
        "symmetric": kind.symmetric,
        "generator": plan.cfg.model,
        "prompt_id": template.prompt_id,
        "provenance": json.dumps(provenance, sort_keys=True, ensure_ascii=False),
    }


# --- the stage -------------------------------------------------------------------------------


def generation_plan(stage_cfg: GenerateStageConfig) -> GenerationPlan:
    cfg = stage_cfg.generator
    form = prompt_form(cfg)
    return GenerationPlan(
        cfg=cfg, seed=stage_cfg.seed, form=form, guided=wants_guided_json(cfg, form)
    )


def load_templates(cfg: GeneratorConfig) -> dict[str, tuple[PromptTemplate, PromptTemplate]]:
    """The (brainstorm, generate) templates of each synthetic task type of the blend."""
    return {
        t: (load_template("brainstorm", t), load_template("generate", t)) for t in cfg.task_types
    }


def brainstorm_all(
    generator: CachingGenerator,
    templates: dict[str, tuple[PromptTemplate, PromptTemplate]],
    plan: GenerationPlan,
) -> dict[str, list[str]]:
    """The task definitions of every synthetic type (a planner's whole brainstorm step)."""
    return {
        synthetic_type: brainstorm_tasks(generator, brainstorm_template, plan, synthetic_type)[0]
        for synthetic_type, (brainstorm_template, _) in templates.items()
    }


def run_generate(
    out_dir: Path, stage_cfg: GenerateStageConfig, *, progress: bool = False
) -> StageReport:
    """Brainstorm, generate, filter and write synthetic PAIRS to `out_dir`; see the module doc."""
    out_dir = Path(out_dir)
    cfg = stage_cfg.generator
    report = StageReport(stage="generate", out_dir=str(out_dir))
    plan = generation_plan(stage_cfg)
    form = plan.form
    templates = load_templates(cfg)
    cache = response_cache(cfg)
    backend = make_backend(cfg)
    generator = CachingGenerator(backend, cache, progress=progress)
    timings: dict[str, float] = {}
    brainstorm_stats: dict[str, Any] = {}
    task_lists: dict[str, list[str]] = {}
    candidates: list[Candidate] = []
    try:
        for synthetic_type, (brainstorm_template, generate_template) in templates.items():
            started = time.perf_counter()
            tasks, brainstorm_stats[synthetic_type] = brainstorm_tasks(
                generator, brainstorm_template, plan, synthetic_type
            )
            task_lists[synthetic_type] = tasks
            timings[f"brainstorm_{synthetic_type}"] = time.perf_counter() - started
            started = time.perf_counter()
            candidates += generate_candidates(
                generator, generate_template, plan, synthetic_type, tasks
            )
            timings[f"generate_{synthetic_type}"] = time.perf_counter() - started
    finally:
        backend.close()
        cache.close()
    started = time.perf_counter()
    filter_candidates(candidates, stage_cfg.teacher, cfg)
    timings["filter"] = time.perf_counter() - started
    rows = []
    report.read(SOURCE, len(candidates))
    for candidate in candidates:
        if candidate.verdict.keep:
            report.keep(SOURCE)
            rows.append(candidate_row(candidate, templates[candidate.synthetic_type][1], plan))
        else:
            report.drop(SOURCE, candidate.verdict.reason or "unknown")
    prompt_ids = {
        t: {"brainstorm": b.prompt_id, "generate": g.prompt_id} for t, (b, g) in templates.items()
    }
    write_shards(
        rows_to_table(rows, TableKind.PAIRS),
        out_dir,
        TableKind.PAIRS,
        rows_per_shard=stage_cfg.rows_per_shard,
        config={
            "generator": cfg.portable(),
            "teacher": stage_cfg.teacher.portable(),
            "prompt_ids": prompt_ids,
        },
        seeds={"generate": stage_cfg.seed},
    )
    report.details = {
        "backend": cfg.backend,
        "model": cfg.model,
        "model_kind": model_kind(cfg),
        "prompt_form": form,
        "guided_json": plan.guided,
        "license": cfg.license,
        "prompt_ids": prompt_ids,
        "tasks": task_lists,
        "brainstorm": brainstorm_stats,
        "calls": generator.stats.to_dict(),
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
    }
    report.finish()
    report.save(out_dir)  # the cache's folder is this machine's: logged, never in the report
    logger.info("generate: responses cached in %s", cache.path)
    logger.info(
        "generate: %d of %d examples kept (%s)",
        report.num_kept,
        report.num_in,
        dict(report.dropped),
    )
    return report
