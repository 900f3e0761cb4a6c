"""The sources stage: public and local data into the pairs table, for both training stages.

`run_sources(out_dir, cfg)` reads each source of its section (a BEIR folder or hub dataset; a
JSONL, Parquet or CSV file with a column mapping; a Hugging Face dataset by hub id or local
path) and writes, under the run folder `out_dir`:

- `pairs/<source>/`   PAIRS shards, one row per (query, positive) — see `pipeline.pair_rows`
- `corpus/<source>/`  CORPUS shards, for sources that bring documents: a BEIR corpus, the
                      distinct positives (and given negatives) of a flat retrieval file, every
                      sentence of an STS set. Classification and clustering sources have none:
                      their negatives are given on the rows.
- `pairs/report.json` the summary of every source's report under `pairs/`; each
                      `pairs/<source>/report.json` holds that source's part, so per-source
                      runs in parallel each write their own (the summary is rebuilt under a
                      lock from them).

In two passes: every source's candidate rows are built and staged first, then caps decide
which rows each keeps (`pipeline.selection`: `max_rows`, `weight` against
`output.max_rows_per_stage`, and the blend's seed), so the outcome never depends on read order.

Counting, per source in the report: `num_in` is the records read (file rows, dataset rows, or
a BEIR split's qrels judgments); `num_kept` the pairs rows written (an STS pair gives two);
`dropped` every record or row left out, by reason — bad input under `on_error: drop`, and the
rules (`below_sts_threshold`, `duplicate_pair`, `singleton_label`, `max_rows`, ...).
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedcurate.pipeline.blend import SourceConfig, SourcesStageConfig
from embedcurate.pipeline.errors import BadRowPolicy, ConfigError, InputError
from embedcurate.pipeline.instructions import (
    SYMMETRIC_BY_DEFAULT,
    InstructionTable,
    load_instruction_table,
)
from embedcurate.pipeline.report import REPORT_NAME, SourceCounts, StageReport
from embedcurate.pipeline.schemas import TableKind, TaskType, rows_to_table, schema_for
from embedcurate.pipeline.shards import ShardWriter, write_shards
from embedcurate.pipeline.sources.beir import BeirScan, document_text, local_beir_parts, scan_beir
from embedcurate.pipeline.sources.budgets import Allotment, allot_rows, choose_rows
from embedcurate.pipeline.sources.readers import (
    iter_delimited,
    iter_jsonl,
    iter_parquet,
    parquet_columns,
    read_header,
)
from embedcurate.pipeline.sources.rows import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    BuiltRows,
    FieldReader,
    Record,
    SourceCounter,
    SourceTask,
    example_id,
    example_rows,
    retrieval_rows,
    sts_rows,
)

logger = logging.getLogger(__name__)

PAIRS_DIR = "pairs"
CORPUS_DIR = "corpus"
CORPUS_BATCH_ROWS = 10_000
TAB_SUFFIXES = {".tsv", ".tab", ".txt"}


def pairs_dir(out_dir: Path, source_name: str) -> Path:
    return Path(out_dir) / PAIRS_DIR / source_name


def corpus_dir(out_dir: Path, source_name: str) -> Path:
    return Path(out_dir) / CORPUS_DIR / source_name


# ---------------------------------------------------------------------------------------------
# Task resolution: which instruction, task type, stage and document side a source gets


def default_task_name(source: SourceConfig, table: InstructionTable) -> str:
    """`task`, else the first of the folder, hub dataset and source names the table knows."""
    return source.task_name(table)


def resolve_task(source: SourceConfig, table: InstructionTable) -> SourceTask:
    """The source's task from the instruction table (its `instruction` overrides the definition).

    The task type and stage default to the table's: retrieval tasks feed stage 1, the others
    stage 2 (NV-Embed keeps them out of stage 1, whose in-batch negatives would be wrong for
    them). A type that contradicts the table is an error unless the source brings its own
    instruction; a non-retrieval source set to stage 1 is an error.
    """
    name = default_task_name(source, table)
    explicit = source.model_fields_set
    # Without its own instruction a source must name a known task (the error lists them).
    needs_entry = source.instruction is None or name in table
    entry = table.get(name, f"source {source.name!r}") if needs_entry else None
    task_type = TaskType(source.task_type)
    if entry is not None and "task_type" not in explicit:
        task_type = entry.task_type
    elif entry is not None and source.instruction is None and task_type != entry.task_type:
        raise ConfigError(
            f"source {source.name!r}: task {entry.name} is a {entry.task_type} task in the "
            f"instruction table, but the source says task_type: {task_type} (give an "
            "`instruction:` to use another definition)"
        )
    stage = source.stage if "stage" in explicit else (1 if task_type == TaskType.RETRIEVAL else 2)
    if stage == 1 and task_type != TaskType.RETRIEVAL:
        raise ConfigError(
            f"source {source.name!r}: a {task_type} source cannot feed stage 1 (stage 1 trains "
            "with in-batch negatives, which same-label examples would poison); use stage: 2"
        )
    if source.kind == "beir" and task_type != TaskType.RETRIEVAL:
        raise ConfigError(f"source {source.name!r}: a beir source is a retrieval task")
    same_type = entry is not None and entry.task_type == task_type
    return SourceTask(
        source=source.name,
        task_name=entry.name if entry is not None else name,
        task_type=task_type,
        definition=(source.instruction or (entry.definition if entry else "")).strip(),
        symmetric=entry.symmetric if same_type and entry else task_type in SYMMETRIC_BY_DEFAULT,
        stage=stage,
    )


def check_columns(source: SourceConfig, task: SourceTask) -> None:
    """Refuse a column mapping with fields this task type does not use."""
    if source.kind == "beir":
        if source.columns:
            raise ConfigError(f"source {source.name!r}: a beir source takes no `columns`")
        return
    allowed = REQUIRED_FIELDS[task.task_type] + OPTIONAL_FIELDS[task.task_type]
    unknown = sorted(set(source.columns) - set(allowed))
    if unknown:
        raise ConfigError(
            f"source {source.name!r}: columns {', '.join(unknown)} are not used by a "
            f"{task.task_type} source; allowed: {', '.join(allowed)}"
        )


# ---------------------------------------------------------------------------------------------
# Reading records of each kind


@dataclass(frozen=True)
class _Records:
    where: str
    rows: Iterator[Record]
    columns: list[str] | None  # known up front (header, schema), or None (JSONL)
    header_line: int | None = None


def _delimiter(source: SourceConfig, path: Path) -> str:
    if source.delimiter is not None:
        return source.delimiter
    return "\t" if path.suffix.lower() in TAB_SUFFIXES else ","


def _open_records(source: SourceConfig, policy: BadRowPolicy) -> _Records:
    path = source.path
    if source.kind == "hf":
        from embedcurate.pipeline.sources.hub import load_hf_split

        table = load_hf_split(source.hub_id, path, source.hf_config, source.split)
        return _Records(table.where, table.rows, table.columns)
    assert path is not None  # the blend requires a path for file kinds
    if not path.is_file():
        raise InputError(path, f"{source.kind} file not found")
    if source.kind == "jsonl":
        return _Records(str(path), iter_jsonl(path, policy), None)
    if source.kind == "parquet":
        return _Records(str(path), iter_parquet(path), parquet_columns(path))
    delimiter = _delimiter(source, path)
    columns = read_header(path, delimiter, quoting=source.quoting) if source.header else None
    rows = iter_delimited(
        path, policy, delimiter=delimiter, header=source.header, quoting=source.quoting
    )
    return _Records(str(path), rows, columns, header_line=1 if source.header else None)


def _require_columns(records: _Records, reader: FieldReader, fields: Sequence[str]) -> None:
    """A column the whole file lacks is a configuration error, not a bad row: raise."""
    if records.columns is None:
        return
    wanted = [reader.column(name) for name in fields] + list(reader.keep_where)
    missing = [column for column in wanted if column not in records.columns]
    if missing:
        raise InputError(
            records.where,
            f"missing column(s) {', '.join(map(repr, missing))}; the columns are: "
            f"{', '.join(records.columns)} (map ours to yours with `columns:`)",
            records.header_line,
        )


# ---------------------------------------------------------------------------------------------
# Building the candidate rows of one source


@dataclass(frozen=True)
class _Staged:
    task: SourceTask
    path: Path
    num_rows: int
    corpus_dir: Path | None
    num_docs: int | None


def _corpus_rows(source: str, documents: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"source": source, "doc_id": doc_id, "title": title or None, "text": text}
        for doc_id, (title, text) in documents.items()
    ]


class _CorpusSink:
    """Streams documents into a CORPUS shard set in batches (a BEIR corpus can be millions)."""

    def __init__(self, writer: ShardWriter, source: str) -> None:
        self.writer = writer
        self.source = source
        self.buffer: dict[str, tuple[str, str]] = {}
        self.num_docs = 0

    def add(self, doc_id: str, title: str, text: str) -> None:
        self.buffer[doc_id] = (title, text)
        self.num_docs += 1
        if len(self.buffer) >= CORPUS_BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_rows(_corpus_rows(self.source, self.buffer))
            self.buffer = {}


def _corpus_writer(source: SourceConfig, out_dir: Path, cfg: SourcesStageConfig) -> ShardWriter:
    return ShardWriter(
        corpus_dir(out_dir, source.name),
        TableKind.CORPUS,
        rows_per_shard=cfg.rows_per_shard,
        config={"source": source.portable()},
    )


def _beir_rows(
    source: SourceConfig,
    task: SourceTask,
    out_dir: Path,
    cfg: SourcesStageConfig,
    policy: BadRowPolicy,
    report: StageReport,
) -> tuple[BuiltRows, int]:
    """Rows from a BEIR split; the corpus streams into CORPUS shards as it is checked."""
    texts = SourceCounts()

    def drop_text(reason: str) -> None:
        texts.dropped[reason] += 1

    text_policy = BadRowPolicy(source.on_error, drop_text)
    if source.path is not None:
        parts = local_beir_parts(source.path, source.split, policy, text_policy)
    else:
        from embedcurate.pipeline.sources.hub import hub_beir_parts

        assert source.hub_id is not None
        parts = hub_beir_parts(source.hub_id, source.split)
    from tqdm import tqdm

    with (
        _corpus_writer(source, out_dir, cfg) as writer,
        tqdm(desc=f"{source.name} corpus", unit=" docs", disable=None) as progress,
    ):
        sink = _CorpusSink(writer, source.name)

        def add_document(doc_id: str, title: str, text: str) -> None:
            sink.add(doc_id, title, text)
            progress.update()

        scan = scan_beir(parts, policy, add_document, text_policy=text_policy)
        sink.flush()
    report.read(source.name, scan.num_judgments)
    # a judgment scored 0 becomes its query's given negative, never a row of its own
    report.drop(source.name, "judged_not_relevant", scan.num_not_relevant)
    _record_texts(report, source.name, scan, texts)
    return BuiltRows(rows=_rows_from_scan(scan, task, parts.qrels.where)), scan.num_docs


def _record_texts(report: StageReport, name: str, scan: BeirScan, texts: SourceCounts) -> None:
    """The BEIR corpus and queries, counted apart from the judgments the source counts."""
    texts.num_kept = scan.num_docs + scan.num_queries
    texts.num_in = texts.num_kept + texts.num_dropped
    report.details.setdefault("texts", {})[name] = {
        **texts.to_dict(),
        "num_docs": scan.num_docs,
        "num_queries": scan.num_queries,
        "num_title_only_docs": scan.num_title_only,
    }
    if scan.num_title_only:
        logger.info(
            "%s: %d documents have a title and an empty text; kept as their title",
            name,
            scan.num_title_only,
        )


def _rows_from_scan(scan: BeirScan, task: SourceTask, qrels_where: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for query_id, positives in scan.qrels.items():
        negatives = [
            document_text(*scan.judged_docs[doc_id])
            for doc_id in scan.judged_negatives.get(query_id, [])
        ]
        for doc_id in positives:
            line = scan.judgment_lines[(query_id, doc_id)]
            rows.append(
                {
                    "example_id": example_id(task.source, query_id, doc_id),
                    "source": task.source,
                    "task_type": task.task_type.value,
                    "task_name": task.task_name,
                    "stage": task.stage,
                    "instruction": task.definition,
                    "query_id": query_id,
                    "query": scan.queries[query_id],
                    "positive_id": doc_id,
                    "positive": document_text(*scan.judged_docs[doc_id]),
                    "positive_ids": list(positives),
                    "given_negatives": negatives or None,
                    "symmetric": task.symmetric,
                    "provenance": f"{qrels_where}:{line}",
                }
            )
    return rows


def _counted_drop(report: StageReport, source_name: str) -> Callable[[str], None]:
    def skip(reason: str) -> None:
        report.drop(source_name, reason)

    return skip


def _flat_rows(
    source: SourceConfig,
    task: SourceTask,
    cfg: SourcesStageConfig,
    policy: BadRowPolicy,
    report: StageReport,
    counter: SourceCounter,
) -> BuiltRows:
    records = _open_records(source, policy)
    reader = FieldReader(
        records.where,
        dict(source.columns),
        policy,
        skip=_counted_drop(report, source.name),
        keep_where=dict(source.keep_where),
    )
    mapped_optional = [f for f in OPTIONAL_FIELDS[task.task_type] if f in source.columns]
    _require_columns(records, reader, [*REQUIRED_FIELDS[task.task_type], *mapped_optional])
    if task.task_type == TaskType.RETRIEVAL:
        return retrieval_rows(records.rows, task, reader, counter)
    if task.task_type == TaskType.STS:
        return sts_rows(
            records.rows,
            task,
            reader,
            counter,
            threshold=source.sts_threshold,
            score_max=source.score_max,
        )
    return example_rows(
        records.rows,
        task,
        reader,
        counter,
        seed=cfg.seed,
        num_negatives=cfg.num_negatives,
    )


def _stage_source(
    source: SourceConfig,
    task: SourceTask,
    out_dir: Path,
    staging_dir: Path,
    cfg: SourcesStageConfig,
    report: StageReport,
) -> _Staged:
    """Build a source's candidate rows (writing its corpus) and stage them as one Parquet."""
    policy = BadRowPolicy(source.on_error, _counted_drop(report, source.name))
    counter = SourceCounter()
    num_docs: int | None = None
    if source.kind == "beir":
        built, num_docs = _beir_rows(source, task, out_dir, cfg, policy, report)
    else:
        built = _flat_rows(source, task, cfg, policy, report, counter)
        if built.documents is not None:
            documents = {doc_id: ("", text) for doc_id, text in built.documents.items()}
            with _corpus_writer(source, out_dir, cfg) as writer:
                writer.write_rows(_corpus_rows(source.name, documents))
            num_docs = len(documents)
    report.read(source.name, counter.num_read)
    if counter.notes:
        report.details.setdefault("notes", {})[source.name] = dict(sorted(counter.notes.items()))
    staged_path = staging_dir / f"{source.name}.parquet"
    table = (
        rows_to_table(built.rows, TableKind.PAIRS)
        if built.rows
        else schema_for(TableKind.PAIRS).empty_table()
    )
    if table.num_rows == 0:
        raise InputError(_where(source), _no_rows_message(source, report))
    pq.write_table(table, staged_path)
    logger.info("%s: %d candidate rows", source.name, table.num_rows)
    return _Staged(
        task=task,
        path=staged_path,
        num_rows=table.num_rows,
        corpus_dir=corpus_dir(out_dir, source.name) if num_docs is not None else None,
        num_docs=num_docs,
    )


def _where(source: SourceConfig) -> str:
    return str(source.path) if source.path is not None else str(source.hub_id)


def _no_rows_message(source: SourceConfig, report: StageReport) -> str:
    """Why a source gave nothing, in blend keys: an empty result is never a success."""
    counts = report.sources[source.name]
    dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.dropped.items()))
    return (
        f"source {source.name!r} yields no rows ({counts.num_in} records read"
        f"{', dropped: ' + dropped if dropped else ''}); check its path, split, columns, "
        "keep_where and sts_threshold in the blend, or remove the source"
    )


# ---------------------------------------------------------------------------------------------
# Selecting and writing


def _count_selection(
    report: StageReport, name: str, allotment: Allotment, table: pa.Table, chosen: np.ndarray
) -> None:
    """Count the records the caps kept and cut; rows written are recorded apart.

    A record (a line, a dataset row, a judgment) is kept when any of its rows is chosen and
    cut otherwise; its rows share a provenance. Cut records are split between `max_rows` and
    `stage_budget` in proportion to the rows each cap removed.
    """
    provenance = table.column("provenance").to_pylist()
    kept = {provenance[i] for i in chosen.tolist()}
    cut = len(set(provenance)) - len(kept)
    report.keep(name, len(kept))
    over = allotment.over_max_rows + allotment.over_stage_budget
    by_max_rows = round(cut * allotment.over_max_rows / over) if over else 0
    report.drop(name, "max_rows", by_max_rows)
    report.drop(name, "stage_budget", cut - by_max_rows)
    report.sources[name].num_rows = allotment.kept


def _write_selected(
    source: SourceConfig,
    staged: _Staged,
    allotment: Allotment,
    out_dir: Path,
    cfg: SourcesStageConfig,
    table_hash: str,
    report: StageReport,
) -> None:
    table = pq.read_table(staged.path, memory_map=True)
    ids = table.column("example_id").to_pylist()
    chosen = choose_rows(ids, allotment.kept, cfg.seed, source.name)
    _count_selection(report, source.name, allotment, table, chosen)
    selected = table.take(pa.array(chosen)) if len(chosen) < table.num_rows else table
    write_shards(
        selected,
        pairs_dir(out_dir, source.name),
        TableKind.PAIRS,
        rows_per_shard=cfg.rows_per_shard,
        config={
            "source": source.portable(),
            "seed": cfg.seed,
            "instructions_hash": table_hash,
            "num_negatives": cfg.num_negatives,
            "rows_kept": allotment.kept,
        },
        seeds={"seed": cfg.seed},
        extra={"task_name": staged.task.task_name, "stage": staged.task.stage},
    )


def _source_details(staged: _Staged, allotment: Allotment) -> dict[str, Any]:
    task = staged.task
    return {
        "task_name": task.task_name,
        "task_type": task.task_type.value,
        "stage": task.stage,
        "symmetric": task.symmetric,
        "instruction": task.definition,
        # relative to the run folder, like every path a report or card records
        "pairs_dir": str(pairs_dir(Path(), task.source)),
        "corpus_dir": str(corpus_dir(Path(), task.source)) if staged.corpus_dir else None,
        "num_docs": staged.num_docs,
        "num_candidates": allotment.available,
        "num_rows": allotment.kept,
    }


# Per-source parts of the report's details: `details[key][source]` <-> a source's `details[key]`
_PER_SOURCE_DETAILS = {"sources": "source", "notes": "notes", "texts": "texts"}


def _save_source_report(report: StageReport, name: str, out_dir: Path) -> None:
    own = StageReport(stage=report.stage, out_dir=str(pairs_dir(out_dir, name)))
    own.sources[name] = report.sources[name]
    for key, own_key in _PER_SOURCE_DETAILS.items():
        if name in report.details.get(key, {}):
            own.details[own_key] = report.details[key][name]
    own.started_at = report.started_at
    own.finish().save(pairs_dir(out_dir, name))


def _save_summary(out_dir: Path, report: StageReport) -> None:
    """`pairs/report.json`: every source's own report under `pairs/`, summed.

    A flow reads sources as concurrent tasks (threads or processes) in one run folder; each
    writes only its own `pairs/<source>/` and then rebuilds the summary from all of them under
    a lock, so the summary never depends on which task finished last.
    """
    pairs = out_dir / PAIRS_DIR
    with open(pairs / ".report.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        summary = StageReport(stage=report.stage, out_dir=str(out_dir))
        summary.details = {key: {} for key in _PER_SOURCE_DETAILS}
        parts = [StageReport.load(path) for path in sorted(pairs.glob(f"*/{REPORT_NAME}"))]
        parts = [part for part in parts if part.stage == report.stage]  # not `synthetic`
        for part in parts:
            for name, counts in part.sources.items():
                summary.sources[name] = counts
                for key, own_key in _PER_SOURCE_DETAILS.items():
                    if own_key in part.details:
                        summary.details[key][name] = part.details[own_key]
        summary.details = {key: value for key, value in summary.details.items() if value}
        summary.details.update(
            {
                key: report.details[key]
                for key in ("instructions_hash", "seed")
                if key in report.details
            }
        )
        summary.started_at = min(part.started_at for part in parts)
        summary.finish()
        summary.elapsed_s = round(sum(part.elapsed_s for part in parts), 3)
        summary.save(pairs)


def run_sources(out_dir: Path, cfg: SourcesStageConfig) -> StageReport:
    """Write every source's PAIRS (and CORPUS, where it brings documents) under `out_dir`."""
    out_dir = Path(out_dir)
    sources = cfg.sources
    table = load_instruction_table()
    report = StageReport(stage="sources", out_dir=str(out_dir))
    tasks = {source.name: resolve_task(source, table) for source in sources}
    for source in sources:
        check_columns(source, tasks[source.name])
        report.read(source.name, 0)  # list every source, even one that yields nothing
    (out_dir / PAIRS_DIR).mkdir(parents=True, exist_ok=True)
    staged: dict[str, _Staged] = {}
    with tempfile.TemporaryDirectory(prefix=".sources-staging-", dir=out_dir) as staging:
        for source in sources:
            logger.info("reading source %s (%s)", source.name, source.kind)
            staged[source.name] = _stage_source(
                source, tasks[source.name], out_dir, Path(staging), cfg, report
            )
        allotments = allot_rows(
            available={name: s.num_rows for name, s in staged.items()},
            max_rows={source.name: source.max_rows for source in sources},
            weights={source.name: source.weight for source in sources},
            stage_of={name: s.task.stage for name, s in staged.items()},
            stage_budgets=dict(cfg.max_rows_per_stage),
        )
        report.details["sources"] = {}
        for source in sources:
            allotment = allotments[source.name]
            _write_selected(
                source, staged[source.name], allotment, out_dir, cfg, table.content_hash, report
            )
            report.details["sources"][source.name] = _source_details(staged[source.name], allotment)
    report.details["instructions_hash"] = table.content_hash
    report.details["seed"] = cfg.seed
    for source in sources:
        _save_source_report(report, source.name, out_dir)
    report.finish()
    _save_summary(out_dir, report)
    return report
