"""The judge stage: MINED -> MINED, negatives audited, dropped or relabelled by a judge.

Mined hard negatives include unlabelled positives (false negatives); the mining rule removes
most, not all (NV-Retriever, arXiv 2407.15831). A judge (a cross-encoder, an LLM, or a
cascade of both) gives each (query, negative) a verdict and a score, and the stage

- `audit`: judges a seeded sample of rows and changes nothing; the report (and the card)
  gives the false-negative rate with a 95% Wilson interval, per source and per teacher-rank
  bucket, and how often the judge agrees with the mining rule;
- `drop`: removes judged positives from the negatives and moves the next stored candidates
  up (mining stores `judge.num_reserve` survivors of its rule beyond `num_negatives`, so the
  refill is exactly what mining would have picked next, without a second search);
- `relabel`: moves judged positives into the row's positives (`positive_ids`, and their texts
  into `extra_positives`, which the trainer keeps out of the row's negatives), then refills;
  each positive is added once, and a copy of a text that already is one is dropped.

Independently of the judge, near-duplicate negatives (of the positive or of a harder
negative) are removed and counted by reason. The mining settings (num_negatives, rule,
on_too_few, teacher) are read from the mined set's manifest, so the stage needs only the
blend's `judge:` section. Every judged negative keeps the judge's name, score and verdict.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from embedcurate.pipeline.blend import (
    BlendConfig,
    JudgeConfig,
    MineStageConfig,
    MiningConfig,
    parse_blend,
)
from embedcurate.pipeline.errors import ConfigError
from embedcurate.pipeline.judge.near_duplicates import (
    MinHasher,
    SetNearDuplicates,
    near_duplicate_reasons,
)
from embedcurate.pipeline.judge.stats import AuditStats
from embedcurate.pipeline.judge.verdicts import Judge, JudgeError, Judgement, JudgePair, Verdict
from embedcurate.pipeline.manifest import Manifest
from embedcurate.pipeline.mining.rules import MiningRule
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import ShardWriter, iter_shards, require_valid

logger = logging.getLogger(__name__)

DEFAULT_AUDIT_SAMPLE = 1000
JUDGED_POSITIVE = "judged_positive"
RELABELLED = "relabelled"
JUDGE_UNSURE = "judge_unsure"
TOO_FEW_AFTER_JUDGE = "too_few_negatives_after_judge"


@dataclass(frozen=True)
class MinedSettings:
    """What the stage needs of the blend the mined set was written with."""

    blend: BlendConfig | None
    mining: MiningConfig
    rows_per_shard: int

    @classmethod
    def from_manifest(cls, manifest: Manifest, where: Path) -> MinedSettings:
        blend = None
        if manifest.config:
            # a set mined without the blend records the mine stage's own section instead
            with contextlib.suppress(ConfigError):
                blend = parse_blend(manifest.config, source=str(where), check_paths=False)
        if blend is not None:
            return cls(blend, blend.mining, blend.output.rows_per_shard)
        try:
            section = MineStageConfig.model_validate(manifest.config or {})
        except ValidationError as exc:
            logger.warning("%s: mining settings unreadable (%s); using defaults", where, exc)
            return cls(blend=None, mining=MiningConfig(), rows_per_shard=20_000)
        return cls(blend=None, mining=section.mining, rows_per_shard=section.rows_per_shard)


def make_judge(cfg: JudgeConfig) -> Judge | None:
    """The judge `cfg.judge` names; models and backends are loaded only now."""
    if cfg.judge is None:
        return None
    if cfg.judge == "llm":
        from embedcurate.pipeline.judge.llm import LLMJudge

        return LLMJudge(cfg.llm)
    assert cfg.cross_encoder is not None  # JudgeConfig checks it
    from embedcurate.pipeline.judge.cross_encoder import CrossEncoderJudge

    cheap = CrossEncoderJudge(cfg.cross_encoder)
    if cfg.judge == "cross-encoder":
        return cheap
    from embedcurate.pipeline.judge.cascade import CascadeJudge
    from embedcurate.pipeline.judge.llm import LLMJudge

    return CascadeJudge(cheap, LLMJudge(cfg.llm))


def sampled_rows(num_rows: int, cfg: JudgeConfig, where: Path) -> set[int] | None:
    """Global indices of the rows to judge (None: all), a seeded sample without replacement."""
    size = cfg.sample if cfg.sample is not None else None
    if size is None and cfg.mode == "audit":
        size = min(DEFAULT_AUDIT_SAMPLE, num_rows)
    if size is None:
        return None
    if size > num_rows:
        raise JudgeError(
            f"{where}: a sample of {size} rows was asked for (judge.sample, --sample) but the "
            f"mined set holds {num_rows}; ask for at most {num_rows}"
        )
    return set(random.Random(cfg.seed).sample(range(num_rows), size))


@dataclass
class JudgeCounts:
    """Negative-level counts (rows are counted by the StageReport)."""

    removed: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    refilled: int = 0
    relabelled_rows: int = 0
    short_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "negatives_removed": dict(sorted(self.removed.items())),
            "verdicts": dict(sorted(self.verdicts.items())),
            "negatives_refilled": self.refilled,
            "rows_relabelled": self.relabelled_rows,
            "rows_with_fewer_negatives": self.short_rows,
        }


class RowJudge:
    """Applies verdicts and near-duplicate reasons to one mined row at a time."""

    def __init__(self, cfg: JudgeConfig, settings: MinedSettings) -> None:
        self.cfg = cfg
        self.num_negatives = settings.mining.num_negatives
        self.on_too_few = settings.mining.on_too_few
        self.rule = MiningRule.parse(settings.mining.rule)
        self.audit = AuditStats()
        self.counts = JudgeCounts()

    def negatives_to_judge(self, row: dict[str, Any]) -> int:
        """Audit judges what the trainer would see; drop and relabel also the reserve."""
        stored = len(row["negatives"] or [])
        return min(stored, self.num_negatives) if self.cfg.mode == "audit" else stored

    def record_audit(self, row: dict[str, Any], judgements: Sequence[Judgement | None]) -> None:
        pos_score = row["pos_score"]
        threshold = self.rule.threshold(pos_score) if pos_score is not None else None
        for i, judgement in enumerate(judgements[: self.num_negatives]):
            if judgement is None:
                continue
            score = row["neg_scores"][i]
            rule_keeps = threshold is None or score <= threshold
            self.audit.add(
                row["source"],
                row["neg_ranks"][i],
                judgement.verdict.value,
                judgement.score,
                judgement.judge,
                judgement.reason,
                rule_keeps,
            )
        self.audit.num_rows += 1

    def removal_reason(self, judgement: Judgement | None, near_reason: str | None) -> str | None:
        if near_reason is not None:
            return near_reason
        if judgement is None or self.cfg.mode == "audit":
            return None
        if judgement.verdict is Verdict.POSITIVE:
            return RELABELLED if self.cfg.mode == "relabel" else JUDGED_POSITIVE
        if judgement.verdict is Verdict.UNSURE and self.cfg.on_unsure == "drop":
            return JUDGE_UNSURE
        return None

    def apply(
        self,
        row: dict[str, Any],
        judgements: Sequence[Judgement | None],
        near_reasons: Sequence[str | None],
    ) -> dict[str, Any] | None:
        """The judged row, or None when it is left with too few negatives under `drop`."""
        negatives = list(row["negatives"] or [])
        judged = list(judgements) + [None] * (len(negatives) - len(judgements))
        if any(j is not None for j in judged):
            self.record_audit(row, judged)
        for judgement in judged:
            if judgement is not None:
                self.counts.verdicts[judgement.verdict.value] += 1
        reasons = [self.removal_reason(j, n) for j, n in zip(judged, near_reasons, strict=True)]
        reasons = relabel_once(row, reasons)
        kept = [i for i, reason in enumerate(reasons) if reason is None][: self.num_negatives]
        # the candidates looked at: up to the last one kept when the row is full, else all
        full = bool(kept) and len(kept) == self.num_negatives
        consulted = kept[-1] + 1 if full else len(negatives)
        for reason in reasons[:consulted]:
            if reason is not None:
                self.counts.removed[reason] += 1
        self.counts.refilled += sum(1 for i in kept if i >= self.num_negatives)
        out = dict(row)
        for column in ("negatives", "negative_ids", "neg_scores", "neg_ranks"):
            out[column] = [row[column][i] for i in kept]
        if any(judged[i] is not None for i in kept):
            out["neg_judges"] = [_judge_name(judged[i]) for i in kept]
            out["neg_judge_scores"] = [_judge_score(judged[i]) for i in kept]
            out["neg_verdicts"] = [_verdict(judged[i]) for i in kept]
        moved = [i for i, reason in enumerate(reasons[:consulted]) if reason == RELABELLED]
        if moved:
            self.counts.relabelled_rows += 1
            out["positive_ids"] = list(row["positive_ids"] or []) + [
                row["negative_ids"][i] for i in moved
            ]
            out["extra_positives"] = list(row.get("extra_positives") or []) + [
                negatives[i] for i in moved
            ]
        if len(kept) < self.num_negatives:
            self.counts.short_rows += 1
            if self.on_too_few == "drop" and len(kept) < min(len(negatives), self.num_negatives):
                return None
        return out


def relabel_once(row: dict[str, Any], reasons: Sequence[str | None]) -> list[str | None]:
    """`reasons` with RELABELLED left only on negatives that add a new positive to the row.

    Mining can store one text under several document ids, and a text can already be a
    positive (the row's `positive`, or an `extra_positives` entry of an earlier run). A judged
    positive whose id or exact text is already a positive, or was relabelled by a harder
    negative of the row, adds nothing: it leaves the negatives as JUDGED_POSITIVE, so each
    positive enters `positive_ids`/`extra_positives` once (under its first id) and the
    `relabelled` count is the number of positives added.
    """
    known_ids = set(row["positive_ids"] or [])
    known_texts = {row["positive"], *(row.get("extra_positives") or [])}
    out: list[str | None] = []
    candidates = zip(row["negative_ids"] or [], row["negatives"] or [], strict=True)
    for reason, (doc_id, text) in zip(reasons, candidates, strict=True):
        if reason == RELABELLED and (doc_id in known_ids or text in known_texts):
            reason = JUDGED_POSITIVE
        elif reason == RELABELLED:
            known_ids.add(doc_id)
            known_texts.add(text)
        out.append(reason)
    return out


def _judge_name(judgement: Judgement | None) -> str | None:
    return None if judgement is None else judgement.judge


def _judge_score(judgement: Judgement | None) -> float | None:
    return None if judgement is None else judgement.score


def _verdict(judgement: Judgement | None) -> str | None:
    return None if judgement is None else judgement.verdict.value


class ShardJudge:
    """One shard's rows: the judge's pairs asked in one go, near-duplicates, then rows."""

    def __init__(
        self, cfg: JudgeConfig, judge: Judge | None, row_judge: RowJudge, teacher: Any = None
    ) -> None:
        self.cfg = cfg
        self.judge = judge
        self.row_judge = row_judge
        self.teacher = teacher
        self.hasher = MinHasher(cfg.near_duplicates) if cfg.near_duplicates else None

    def judgements(
        self, rows: list[dict[str, Any]], chosen: list[bool]
    ) -> list[list[Judgement | None]]:
        pairs: list[JudgePair] = []
        owners: list[tuple[int, int]] = []
        for r, (row, judged) in enumerate(zip(rows, chosen, strict=True)):
            if not judged or self.judge is None:
                continue
            for i in range(self.row_judge.negatives_to_judge(row)):
                pairs.append(JudgePair(row["instruction"] or "", row["query"], row["negatives"][i]))
                owners.append((r, i))
        per_row: list[list[Judgement | None]] = [[] for _ in rows]
        if not pairs:
            return per_row
        assert self.judge is not None
        answers = self.judge.judge(pairs)
        if len(answers) != len(pairs):
            raise JudgeError(
                f"judge {self.judge.name} answered {len(answers)} of {len(pairs)} pairs"
            )
        for (r, i), answer in zip(owners, answers, strict=True):
            row_list = per_row[r]
            row_list.extend([None] * (i + 1 - len(row_list)))
            row_list[i] = answer
        return per_row

    def near_reasons(self, rows: list[dict[str, Any]]) -> list[list[str | None]]:
        if self.hasher is None:
            return [[None] * len(row["negatives"] or []) for row in rows]
        near = self.cfg.near_duplicates
        assert near is not None
        cosines = self._teacher_cosines(rows) if near.teacher_cosine else [None] * len(rows)
        return [
            near_duplicate_reasons(
                self.hasher, row["positive"], row["negatives"] or [], c, near.teacher_cosine
            )
            for row, c in zip(rows, cosines, strict=True)
        ]

    def _teacher_cosines(self, rows: list[dict[str, Any]]) -> list[np.ndarray | None]:
        """Per row, the cosine matrix of [positive, *negatives] under the mining teacher."""
        texts = sorted({t for row in rows for t in [row["positive"], *(row["negatives"] or [])]})
        if not texts:
            return [None] * len(rows)
        embeddings = self.teacher.encode(self.teacher.document_texts(texts))
        embeddings = embeddings / np.maximum(
            np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12
        )
        position = {text: i for i, text in enumerate(texts)}
        out: list[np.ndarray | None] = []
        for row in rows:
            rows_of = [position[t] for t in [row["positive"], *(row["negatives"] or [])]]
            block = embeddings[rows_of]  # (1 + num_negatives, dim)
            out.append(block @ block.T)
        return out


def _teacher_for(cfg: JudgeConfig, settings: MinedSettings) -> Any:
    near = cfg.near_duplicates
    if near is None or near.teacher_cosine is None:
        return None
    from embedcurate.pipeline.mining.teacher import load_teacher

    return load_teacher(settings.blend.teacher if settings.blend is not None else None)


def judged_config(mined_manifest: Manifest, cfg: JudgeConfig) -> dict[str, Any]:
    """The mined set's blend with the judge section (no machine-local cache folder)."""
    section = cfg.model_dump(mode="json", exclude={"llm": {"generator": {"cache_dir"}}})
    return {**mined_manifest.config, "judge": section}


def run_judge(
    mined_dir: Path,
    out_dir: Path,
    cfg: JudgeConfig,
    *,
    judge: Judge | None = None,
) -> StageReport:
    """Judge the MINED set at `mined_dir` into a MINED set at `out_dir`, with its report.

    `judge` defaults to the one `cfg.judge` names; pass one to reuse a loaded model. The
    output set is written atomically (no manifest until every shard is in place).
    """
    mined_dir, out_dir = Path(mined_dir), Path(out_dir)
    manifest = require_valid(mined_dir, TableKind.MINED)
    settings = MinedSettings.from_manifest(manifest, mined_dir)
    chosen = sampled_rows(manifest.num_rows, cfg, mined_dir)
    if judge is None:
        judge = make_judge(cfg)
    report = StageReport(stage="judge", out_dir=str(out_dir))
    try:
        _judge_shards(mined_dir, out_dir, cfg, settings, manifest, chosen, judge, report)
    finally:
        _close(judge)
    report.finish().save(out_dir)
    warn_if_implausible(report.details["audit"]["overall"])
    logger.info(
        "judge (%s): %d rows kept of %d; negatives removed %s",
        cfg.mode,
        report.num_kept,
        report.num_in,
        report.details["negatives_removed"],
    )
    return report


def _judge_shards(
    mined_dir: Path,
    out_dir: Path,
    cfg: JudgeConfig,
    settings: MinedSettings,
    manifest: Manifest,
    chosen: set[int] | None,
    judge: Judge | None,
    report: StageReport,
) -> None:
    """Stream the mined set shard by shard into the judged set; fill the report."""
    row_judge = RowJudge(cfg, settings)
    shard_judge = ShardJudge(cfg, judge, row_judge, _teacher_for(cfg, settings))
    near = cfg.near_duplicates
    queries = SetNearDuplicates(near) if near else None
    positives = SetNearDuplicates(near) if near else None
    offset = 0
    with ShardWriter(
        out_dir,
        TableKind.MINED,
        rows_per_shard=settings.rows_per_shard,
        config=judged_config(manifest, cfg),
        seeds={"judge": cfg.seed},
        extra={"judge": None if judge is None else judge.name, "mode": cfg.mode},
    ) as writer:
        for table in iter_shards(mined_dir, TableKind.MINED, validate=False):
            rows = table.to_pylist()
            flags = [chosen is None or offset + i in chosen for i in range(len(rows))]
            offset += len(rows)
            judgements = shard_judge.judgements(rows, flags)
            near_reasons = shard_judge.near_reasons(rows)
            kept_rows = []
            for row, row_judgements, reasons in zip(rows, judgements, near_reasons, strict=True):
                report.read(row["source"])
                if queries is not None and positives is not None:
                    queries.add(row["query"])
                    positives.add(row["positive"])
                judged = row_judge.apply(row, row_judgements, reasons)
                if judged is None:
                    report.drop(row["source"], TOO_FEW_AFTER_JUDGE)
                else:
                    report.keep(row["source"])
                    kept_rows.append(judged)
            writer.write_rows(kept_rows)
    report.details = {
        "mode": cfg.mode,
        "judge": None if judge is None else judge.name,
        "sample": None if chosen is None else len(chosen),
        "seed": cfg.seed,
        "num_negatives": row_judge.num_negatives,
        "mining_rule": str(row_judge.rule),
        "on_unsure": cfg.on_unsure,
        **row_judge.counts.to_dict(),
        "audit": row_judge.audit.to_dict(),
        "near_duplicates": None
        if near is None
        else {
            **near.model_dump(mode="json"),
            "queries": queries.to_dict() if queries else None,
            "positives": positives.to_dict() if positives else None,
        },
        **_judge_costs(judge),
    }


IMPLAUSIBLE_RATE = 0.5
UNSURE_WARNING_SHARE = 0.2


def warn_if_implausible(overall: dict[str, Any]) -> None:
    """Say loudly when many answers were unsure, or when the judge calls most mined negatives
    positives: more likely broken than right (the packaged 270M base model says yes to nearly
    everything, bench/RESULTS.md)."""
    judged, unsure = overall.get("judged", 0), overall.get("unsure", 0)
    if judged and unsure / judged > UNSURE_WARNING_SHARE:
        logger.warning(
            "the judge could not decide %d of %d negatives (failed calls, unparsed answers, "
            "spent budget); they are kept as negatives unless judge.on_unsure is drop",
            unsure,
            judged,
        )
    rate = overall.get("false_negative_rate")
    if rate is not None and rate > IMPLAUSIBLE_RATE and overall.get("judged", 0) >= 10:
        logger.warning(
            "the judge called %.0f%% of %d mined negatives positives; check it on labelled "
            "pairs before trusting drop or relabel (a small base LLM tends to say yes to all)",
            100 * rate,
            overall["judged"],
        )


def _judge_costs(judge: Judge | None) -> dict[str, Any]:
    """LLM calls and cache hits, and what the cascade escalated, where the judge has them."""
    out: dict[str, Any] = {}
    for part in (judge, getattr(judge, "cheap", None), getattr(judge, "expensive", None)):
        generator = getattr(part, "generator", None)
        if generator is not None:
            out["llm_calls"] = generator.stats.to_dict()
            out["prompt_id"] = part.prompt_id  # type: ignore[union-attr]
    if hasattr(judge, "num_escalated"):
        out["escalated"] = judge.num_escalated  # type: ignore[union-attr]
    return out


def _close(judge: Judge | None) -> None:
    for part in (judge, getattr(judge, "cheap", None), getattr(judge, "expensive", None)):
        close = getattr(part, "close", None)
        if close is not None:
            close()
