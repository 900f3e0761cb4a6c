"""Decontamination: find training rows that overlap an evaluation set, and drop or count them.

A row is flagged for an eval set when its query or its positive is

- an **exact** duplicate of an eval text: the same `pipeline.textnorm.text_hash` (lower-cased,
  NFKC, punctuation and spacing ignored), or
- a **near** duplicate: with G(t) the set of word n-grams of a normalised text
  (`decontamination.ngram`, default 8), the overlap with an eval text e,

      overlap(t, e) = |G(t) ∩ G(e)| / min(|G(t)|, |G(e)|),

  reaches `decontamination.overlap_threshold` (default 0.5). Dividing by the smaller set
  catches a near copy whichever text is longer: an eval passage quoted inside a longer
  training document, or a lightly edited eval question. Texts shorter than n words have one
  n-gram (themselves), so they match only a text of the same few words.

Eval texts are an eval set's queries and the documents its qrels judge relevant (not the
whole corpus: BEIR corpora are often shared between the train and test splits, and a
training positive drawn from the same corpus is not a leak; an eval question-answer pair
is). A `text` eval set is a file (or a folder of `.txt` files) with one text per line.

Scaling: the eval n-grams are indexed once (hashed n-gram -> eval texts); training pairs are
streamed one shard at a time, and a text none of whose n-grams is in the index costs one set
lookup per n-gram.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from embedcurate.pipeline.blend import (
    DecontaminateStageConfig,
    DecontaminationConfig,
    EvalSetConfig,
)
from embedcurate.pipeline.errors import InputError
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind
from embedcurate.pipeline.shards import ShardWriter, iter_shards, read_manifest
from embedcurate.pipeline.sources.beir import document_text, load_beir
from embedcurate.pipeline.textnorm import text_hash, word_ngrams

logger = logging.getLogger(__name__)

MatchKind = Literal["exact", "near"]
DROP_REASONS: dict[MatchKind, str] = {
    "exact": "eval_exact_duplicate",
    "near": "eval_near_duplicate",
}
MATCHED_FIELDS = ("query", "positive")


@dataclass
class EvalSetInfo:
    kind: str
    split: str | None
    num_queries: int = 0
    num_documents: int = 0
    num_texts: int = 0


@dataclass
class EvalIndex:
    """Exact hashes and n-gram postings of every eval text, built once per run."""

    ngram: int
    overlap_threshold: float
    sets: dict[str, EvalSetInfo] = field(default_factory=dict)
    _exact: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _postings: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    _text_set: list[str] = field(default_factory=list)  # eval text id -> eval set name
    _text_grams: list[int] = field(default_factory=list)  # eval text id -> |G(e)|

    def add_texts(self, eval_set: str, texts: Iterable[str]) -> int:
        """Index texts of an eval set; returns how many distinct ones were added."""
        added = 0
        seen: set[str] = set()
        for text in texts:
            key = text_hash(text)
            if not text.strip() or key in seen:
                continue
            seen.add(key)
            self._exact[key].add(eval_set)
            grams = self._grams(text)
            text_id = len(self._text_set)
            self._text_set.append(eval_set)
            self._text_grams.append(len(grams))
            for gram in grams:
                self._postings[gram].append(text_id)
            added += 1
        return added

    def _grams(self, text: str) -> set[int]:
        return {hash(gram) for gram in word_ngrams(text, self.ngram)}

    def match(self, text: str) -> dict[str, MatchKind]:
        """Eval sets the text duplicates, each with how (exact beats near)."""
        found: dict[str, MatchKind] = dict.fromkeys(self._exact.get(text_hash(text), ()), "exact")
        grams = self._grams(text)
        hits = [gram for gram in grams if gram in self._postings]
        if not hits:
            return found
        shared: Counter[int] = Counter()
        for gram in hits:
            shared.update(self._postings[gram])
        for text_id, count in shared.items():
            eval_set = self._text_set[text_id]
            if eval_set in found:
                continue
            if count / min(len(grams), self._text_grams[text_id]) >= self.overlap_threshold:
                found[eval_set] = "near"
        return found

    @property
    def num_texts(self) -> int:
        return len(self._text_set)


def _text_file_lines(path: Path) -> list[str]:
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise InputError(path, "text eval set: no .txt files in this folder")
    lines: list[str] = []
    for file in files:
        try:
            lines.extend(file.read_text(encoding="utf-8").splitlines())
        except UnicodeDecodeError as exc:
            raise InputError(file, f"not valid UTF-8: {exc}") from exc
    return lines


def _add_eval_set(index: EvalIndex, eval_set: EvalSetConfig) -> None:
    if eval_set.kind == "beir":
        folder = load_beir(eval_set.path, eval_set.split)
        judged = {doc_id for docs in folder.qrels.values() for doc_id in docs}
        documents = [
            document_text(title, text)
            for doc_id, title, text in zip(
                folder.corpus["doc_id"].to_pylist(),
                folder.corpus["title"].to_pylist(),
                folder.corpus["text"].to_pylist(),
                strict=True,
            )
            if doc_id in judged
        ]
        queries = list(folder.queries.values())
        num_texts = index.add_texts(eval_set.name, [*queries, *documents])
        info = EvalSetInfo("beir", eval_set.split, len(queries), len(documents), num_texts)
    else:
        lines = _text_file_lines(eval_set.path)
        num_texts = index.add_texts(eval_set.name, lines)
        info = EvalSetInfo("text", None, num_texts=num_texts)
    index.sets[eval_set.name] = info
    logger.info("eval set %s: %d texts indexed", eval_set.name, num_texts)


def build_eval_index(config: DecontaminationConfig) -> EvalIndex:
    names = [eval_set.name for eval_set in config.eval_sets]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"decontamination eval set names must be unique: {', '.join(repeated)}")
    index = EvalIndex(ngram=config.ngram, overlap_threshold=config.overlap_threshold)
    for eval_set in config.eval_sets:
        _add_eval_set(index, eval_set)
    return index


@dataclass(frozen=True)
class RowMatch:
    """What one training row duplicates: eval set -> (how, which of the row's fields)."""

    sets: dict[str, tuple[MatchKind, tuple[str, ...]]]

    @property
    def kind(self) -> MatchKind | None:
        kinds = {kind for kind, _ in self.sets.values()}
        return "exact" if "exact" in kinds else ("near" if kinds else None)


def match_rows(table: pa.Table, index: EvalIndex) -> list[RowMatch]:
    """One RowMatch per row of a pairs table (empty `sets` for a clean row)."""
    cache: dict[str, dict[str, MatchKind]] = {}  # texts repeat (one document, many queries)

    def lookup(text: str) -> dict[str, MatchKind]:
        if text not in cache:
            cache[text] = index.match(text)
        return cache[text]

    columns = {name: table.column(name).to_pylist() for name in MATCHED_FIELDS}
    results = []
    for row in range(table.num_rows):
        per_set: dict[str, tuple[MatchKind, tuple[str, ...]]] = {}
        for name in MATCHED_FIELDS:
            for eval_set, kind in lookup(columns[name][row]).items():
                old_kind, fields = per_set.get(eval_set, (kind, ()))
                best: MatchKind = "exact" if "exact" in (old_kind, kind) else "near"
                per_set[eval_set] = (best, (*fields, name))
        results.append(RowMatch(per_set))
    return results


@dataclass
class FlagCounts:
    """Rows of one source flagged for one eval set (or for any, in `flagged_rows`)."""

    rows: int = 0
    exact: int = 0
    near: int = 0
    query: int = 0
    positive: int = 0

    def add(self, kind: MatchKind, fields: tuple[str, ...] = ()) -> None:
        self.rows += 1
        setattr(self, kind, getattr(self, kind) + 1)
        for name in fields:
            setattr(self, name, getattr(self, name) + 1)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Tally:
    per_set: dict[str, dict[str, FlagCounts]] = field(default_factory=dict)
    per_source: dict[str, FlagCounts] = field(default_factory=dict)

    def add(self, source: str, match: RowMatch) -> None:
        for eval_set, (kind, fields) in match.sets.items():
            counts = self.per_set.setdefault(source, {}).setdefault(eval_set, FlagCounts())
            counts.add(kind, fields)
        assert match.kind is not None
        self.per_source.setdefault(source, FlagCounts()).add(match.kind)


def _clean_table(
    table: pa.Table, index: EvalIndex | None, drop: bool, report: StageReport, tally: _Tally
) -> pa.Table:
    sources = table.column("source").to_pylist()
    matches = match_rows(table, index) if index is not None else None
    keep = [True] * table.num_rows
    for row, source in enumerate(sources):
        report.read(source)
        match = matches[row] if matches is not None else None
        if match is None or match.kind is None:
            report.keep(source)
            continue
        tally.add(source, match)
        if drop:
            keep[row] = False
            report.drop(source, DROP_REASONS[match.kind])
        else:
            report.keep(source)
    return table if all(keep) else table.filter(pa.array(keep))


def _output_names(pairs_dirs: Sequence[Path]) -> list[str]:
    names = [Path(p).name for p in pairs_dirs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"pairs folders must have distinct names; repeated: {repeated}")
    return names


def run_decontaminate(
    pairs_dirs: Sequence[Path],
    out_dir: Path,
    cfg: DecontaminateStageConfig,
    *,
    provenance: dict[str, Any] | None = None,
) -> StageReport:
    """Write each pairs set to `out_dir/<its folder name>/` without (or flagging) eval overlaps.

    Without eval sets in the blend the sets are copied unchanged, so the flow downstream reads
    one place either way. Counts per source and per eval set go into the report's details.
    `provenance` (the resolved blend) is recorded in the manifests instead of the section.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    config = cfg.decontamination
    report = StageReport(stage="decontaminate", out_dir=str(out_dir))
    index = build_eval_index(config) if config.eval_sets else None
    tally = _Tally()
    outputs: dict[str, dict[str, int]] = {}
    for pairs_dir, name in zip(pairs_dirs, _output_names(pairs_dirs), strict=True):
        manifest = read_manifest(pairs_dir)
        progress = tqdm(total=manifest.num_rows, desc=f"decontaminate {name}", disable=None)
        with ShardWriter(
            out_dir / name,
            TableKind.PAIRS,
            rows_per_shard=cfg.rows_per_shard,
            config=provenance or cfg.portable(),
            seeds={"seed": cfg.seed},
            extra={"stage": "decontaminate"},
        ) as writer:
            for table in iter_shards(pairs_dir, TableKind.PAIRS):
                writer.write(_clean_table(table, index, config.drop, report, tally))
                progress.update(table.num_rows)
        progress.close()
        assert writer.manifest is not None
        outputs[name] = {"num_in": manifest.num_rows, "num_out": writer.manifest.num_rows}
    report.details = _details(config, index, tally, outputs)
    report.finish().save(out_dir)
    logger.info(
        "decontamination: %d rows in, %d flagged, %d dropped",
        report.num_in,
        sum(c.rows for c in tally.per_source.values()),
        sum(report.dropped.values()),
    )
    return report


def _details(
    config: DecontaminationConfig,
    index: EvalIndex | None,
    tally: _Tally,
    outputs: dict[str, dict[str, int]],
) -> dict[str, Any]:
    return {
        "drop": config.drop,
        "ngram": config.ngram,
        "overlap_threshold": config.overlap_threshold,
        "eval_sets": {
            name: dict(info.__dict__) for name, info in (index.sets if index else {}).items()
        },
        "flagged": {
            source: {eval_set: c.to_dict() for eval_set, c in sorted(per_set.items())}
            for source, per_set in sorted(tally.per_set.items())
        },
        "flagged_rows": {
            source: {"rows": c.rows, "exact": c.exact, "near": c.near}
            for source, c in sorted(tally.per_source.items())
        },
        "outputs": outputs,
    }
