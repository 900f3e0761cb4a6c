"""The mine stage: PAIRS (+ CORPUS) -> MINED, hard negatives chosen by a teacher on FAISS.

For each candidate pool (a source's CORPUS set when it has one, else the positives of every
row sharing the row's `task_name`), the stage

1. encodes the pool's documents once (embedding cache first; repeated texts once) and adds
   them to the index chunk by chunk. With the cache on, every pool's uncached documents are
   first encoded into the cache by the encode plan (`encode_plan`), here or, under a Dask or
   Ray runner, by one task per part on the workers (`shard_encode`), so the index is built
   from the cache and the output is the same whichever ran them;
2. walks the pairs shard by shard, encodes queries in chunks, searches the index, scores
   the row's positive and its `given_negatives` with the same teacher;
3. applies the rules of `pipeline.mining` per row and writes MINED rows with lineage.

Rows whose positive is not in their pool, or that keep fewer than `num_negatives` negatives
(under `on_too_few: drop`), are dropped and counted. The report's `details` carry what a data
card needs: score summaries and histograms, how many candidates the rule dropped, timings.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedcurate.pipeline.atomic import temp_path_for
from embedcurate.pipeline.blend import MineStageConfig
from embedcurate.pipeline.errors import ConfigError, EmbedCurateError, InputError
from embedcurate.pipeline.mining.embed_cache import (
    EmbeddingCache,
    default_cache_root,
    encode_cached,
)
from embedcurate.pipeline.mining.encode_plan import EncodePlan, group_size, planned_part_size
from embedcurate.pipeline.mining.index import GPU_MAX_K, IndexConfig, VectorIndex
from embedcurate.pipeline.mining.rules import (
    Candidates,
    Exclusion,
    MiningRule,
    Selection,
    SelectionConfig,
    eligible_positions,
    merge_given,
    select_negatives,
)
from embedcurate.pipeline.report import StageReport
from embedcurate.pipeline.schemas import TableKind, rows_to_table
from embedcurate.pipeline.shards import ShardWriter, iter_shards, read_manifest, read_shards
from embedcurate.pipeline.sources.beir import document_text
from embedcurate.pipeline.textnorm import text_hash

logger = logging.getLogger(__name__)

DOC_CHUNK = 16_384  # documents encoded and added to the index per step
WRITE_BATCH = 4096  # mined rows buffered before a write
NORM_TOLERANCE = 1e-3
SCORE_EDGES = np.round(np.arange(-1.0, 1.0001, 0.05), 2)  # histogram bins for the card


class MiningError(EmbedCurateError):
    """Mining cannot go on (bad embeddings, an empty pool, a window the index cannot serve)."""


class Teacher(Protocol):
    """What mining needs of a teacher (pipeline.teacher.HFTeacher, or a custom one)."""

    name: str

    @property
    def dimension(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def query_texts(self, texts: Sequence[str]) -> list[str]: ...

    def document_texts(self, texts: Sequence[str]) -> list[str]: ...

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class MineInputs:
    """PAIRS sets to mine, and the CORPUS set of each source that brings one."""

    pairs_dirs: list[Path]
    corpus_dirs: dict[str, Path] = field(default_factory=dict)


@dataclass
class Pool:
    """The documents one group of rows draws candidates from, in index row order."""

    key: str
    ids: pa.Array  # (num_docs,) string
    texts: list[str]
    labels: list[str | None] | None = None
    _keys: dict[int, str] = field(default_factory=dict)

    @property
    def num_docs(self) -> int:
        return len(self.texts)

    def text_key(self, row: int) -> str:
        """Normalised-text hash of a document, computed once per document on demand."""
        key = self._keys.get(row)
        if key is None:
            key = self._keys[row] = text_hash(self.texts[row])
        return key

    def rows_of(self, doc_ids: Sequence[str | None]) -> np.ndarray:
        """Index rows of `doc_ids` (-1 where absent or null)."""
        found = pc.index_in(pa.array(doc_ids, type=pa.string()), value_set=self.ids)
        return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass
class MineStats:
    """Figures gathered while mining, summarised into the report's details."""

    pos_scores: list[float] = field(default_factory=list)
    neg_scores: list[float] = field(default_factory=list)
    candidates_in_window: int = 0
    candidates_dropped_by_rule: int = 0
    rows_with_too_few: int = 0
    docs_encoded: int = 0
    docs_planned: int = 0  # of which by the encode plan (read back from the cache once each)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)


def pool_key(source: str, task_name: str, corpus_sources: set[str]) -> str:
    return f"corpus:{source}" if source in corpus_sources else f"task:{task_name}"


def _pool_keys(table: pa.Table, corpus_sources: set[str]) -> list[str]:
    return [
        pool_key(s, t, corpus_sources)
        for s, t in zip(
            table.column("source").to_pylist(), table.column("task_name").to_pylist(), strict=True
        )
    ]


def check_embeddings(embeddings: np.ndarray, where: str, normalized: bool) -> None:
    """Refuse NaN/inf and, when the teacher promises unit vectors, anything else."""
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise MiningError(
            f"{where}: the teacher returned NaN or infinite values (first at text {row})"
        )
    if normalized and len(embeddings):
        norms = np.linalg.norm(embeddings, axis=1)
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise MiningError(
                f"{where}: the teacher returned unnormalised embeddings (text {row} has norm "
                f"{norms[row]:.4f}); normalise them or set teacher.normalize: false"
            )


def checked_encoder(
    teacher: Teacher,
    where: str,
    normalized: bool,
    on_encoded: Callable[[int], None] | None = None,
    *,
    prepare: Callable[[], None] | None = None,
) -> Callable[[list[str]], np.ndarray]:
    """The teacher's `encode`, refusing bad embeddings before they reach the cache;
    `on_encoded(n)` hears of every n texts encoded; `prepare()` runs before each call (the
    miner loads a lazy teacher there, timed apart from encoding)."""

    def encode(texts: list[str]) -> np.ndarray:
        if prepare is not None:
            prepare()
        embeddings = teacher.encode(texts)
        check_embeddings(embeddings, where, normalized)
        if on_encoded is not None:
            on_encoded(len(texts))
        return embeddings

    return encode


def encode_part_texts(
    texts: list[str],
    teacher: Teacher,
    cache: EmbeddingCache,
    cfg: MineStageConfig,
    where: str,
    *,
    on_encoded: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Encode one part of the encode plan into the cache, in the plan's groups of texts.

    Texts already cached are skipped (a part retried after a kill encodes only the groups
    its first try did not commit), wherever this runs: in the mine stage or on a worker.
    """
    encode_cached(
        texts,
        checked_encoder(teacher, where, cfg.teacher.normalize, on_encoded, prepare=prepare),
        teacher.dimension,
        cache,
        part_size=group_size(cfg.mining.encode_part_size),
        on_progress=on_progress,
    )


class EncodeProgress:
    """Documents encoded so far: a bar on a terminal, and a log line with docs/s and the time
    left every LOG_EVERY_S seconds (Prefect and redirected output show no bar)."""

    LOG_EVERY_S = 10.0

    def __init__(self, desc: str, total: int | None) -> None:
        from tqdm.auto import tqdm

        self.desc = desc
        self.total = total or 0
        self.done = 0
        self.bar = tqdm(total=total, desc=desc, unit=" docs", unit_scale=True, disable=None)
        self.started = self.last_log = time.perf_counter()

    def grow(self, total: int) -> None:
        """A new total (the encode plan learns its size as it reads the pools)."""
        if total != self.total:
            self.total = self.bar.total = total
            self.bar.refresh()

    def __enter__(self) -> EncodeProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def advance(self, num_docs: int) -> None:
        self.done += num_docs
        self.bar.update(num_docs)
        now = time.perf_counter()
        if now - self.last_log >= self.LOG_EVERY_S or self.done >= self.total:
            self.last_log = now
            logger.info("%s", self.line(now - self.started))

    def line(self, elapsed_s: float) -> str:
        """`desc: done/total docs, rate docs/s, ETA` (rate over the whole pass so far)."""
        rate = self.done / elapsed_s if elapsed_s > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        eta = "?" if math.isinf(left) else _clock(left)
        return f"{self.desc}: {self.done:,}/{self.total:,} docs, {rate:,.1f} docs/s, ETA {eta}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def judge_reserve(cfg: MineStageConfig) -> int:
    """Survivors of the rule kept beyond `num_negatives` for the judge stage to refill from.

    The template stage uses only the first `num_negatives`, so the reserve changes nothing
    downstream unless the judge removes a negative and moves the next one up.
    """
    return cfg.num_reserve


class Miner:
    """Mines one run: the teacher, its cache, the index per pool and the rules."""

    def __init__(
        self,
        cfg: MineStageConfig,
        teacher: Teacher,
        cache: EmbeddingCache | None,
        report: StageReport,
    ) -> None:
        self.cfg = cfg
        self.mining = cfg.mining
        self.teacher = teacher
        self.cache = cache
        self.report = report
        self.stats = MineStats()
        self._load_s_unclaimed = 0.0  # teacher load time not yet taken out of a timing
        self.rule = MiningRule.parse(cfg.mining.rule)
        self.selection = SelectionConfig(
            rule=self.rule,
            num_negatives=cfg.mining.num_negatives + judge_reserve(cfg),
            range_min=cfg.mining.range_min,
            range_max=cfg.mining.range_max,
            sampling=cfg.mining.sampling,
            seed=cfg.seed,
        )
        self.index_cfg = IndexConfig(
            kind=cfg.mining.index, nlist=cfg.mining.ivf_nlist, nprobe=cfg.mining.ivf_nprobe
        )

    # -- encoding -------------------------------------------------------------------------

    def embed(
        self, texts: list[str], where: str, progress: EncodeProgress | None = None
    ) -> np.ndarray:
        """Embeddings of texts as the teacher sees them, through the cache, checked.

        The teacher is asked only for texts the cache lacks; a custom or lazily loaded
        teacher therefore loads nothing when every text is cached.
        """
        return encode_cached(
            texts,
            checked_encoder(
                self.teacher,
                where,
                self.cfg.teacher.normalize,
                self._count,
                prepare=self._load_teacher_timed,
            ),
            self.teacher.dimension,
            self.cache,
            on_progress=progress.advance if progress is not None else None,
        )

    def _load_teacher_timed(self) -> None:
        """Load a lazy teacher's weights, timed apart from encoding (a first OpenVINO load
        converts the model), so that encoding rates measure encoding."""
        if getattr(self.teacher, "loaded", True):
            return
        started = time.perf_counter()
        self.teacher.load()  # type: ignore[attr-defined]
        seconds = time.perf_counter() - started
        self.stats.timings["teacher_load_s"] += seconds
        self._load_s_unclaimed += seconds

    def _count(self, num_texts: int) -> None:
        self.stats.docs_encoded += num_texts

    def _count_planned(self, num_texts: int) -> None:
        self._count(num_texts)
        self.stats.docs_planned += num_texts

    def run_encode_plan(self, inputs: MineInputs) -> None:
        """Encode every pool's uncached documents into the cache, part by part, as any runner
        would (`pipeline.mining.encode_plan`), before an index is built.

        `build_index` then reads every document from the cache, so the mined shards do not
        depend on whether the parts ran here or on workers. Without a cache there is no plan
        and `build_index` encodes as it goes.
        """
        if self.cache is None:
            return
        part_size = planned_part_size(self.mining.encode_part_size, count_documents(inputs))
        plan = EncodePlan(pool_document_texts(inputs, self.teacher), self.cache, part_size)
        with EncodeProgress("encode documents", None) as progress:
            for number, texts in enumerate(plan):
                progress.grow(plan.num_texts)
                t0 = time.perf_counter()
                encode_part_texts(
                    texts,
                    self.teacher,
                    self.cache,
                    self.cfg,
                    f"encode part {number}",
                    on_encoded=self._count_planned,
                    on_progress=progress.advance,
                    prepare=self._load_teacher_timed,
                )
                self._timed("encode_documents_s", t0)

    def _timed(self, name: str, started: float) -> None:
        """Add the time since `started` to `name`, less a teacher load that happened within."""
        elapsed = time.perf_counter() - started - self._load_s_unclaimed
        self._load_s_unclaimed = 0.0
        self.stats.timings[name] += elapsed

    def build_index(self, pool: Pool) -> VectorIndex:
        if pool.num_docs == 0:
            raise MiningError(f"pool {pool.key}: no documents to mine from")
        index = VectorIndex(self.teacher.dimension, pool.num_docs, self.index_cfg)
        # with the cache, the encode plan encoded the documents: building reads them back
        verb = "encode" if self.cache is None else "index"
        with EncodeProgress(f"{verb} {pool.key}", pool.num_docs) as progress:
            for start in range(0, pool.num_docs, DOC_CHUNK):
                t0 = time.perf_counter()
                chunk = self.teacher.document_texts(pool.texts[start : start + DOC_CHUNK])
                embeddings = self.embed(chunk, f"pool {pool.key}, documents {start}+", progress)
                self._timed("encode_documents_s", t0)
                t0 = time.perf_counter()
                index.add(embeddings)
                self._timed("index_build_s", t0)
        t0 = time.perf_counter()
        index.finalize()
        self._timed("index_build_s", t0)
        return index

    # -- search ---------------------------------------------------------------------------

    def retrieve(
        self, index: VectorIndex, queries: np.ndarray, exclusions: list[Exclusion], pool: Pool
    ) -> list[Candidates]:
        """Each query's candidates, searched deep enough to leave `range_max` after exclusion.

        The first search asks for range_max + the most positives any query has + a little
        slack; queries left short (many same-label or duplicate documents) are searched again
        with twice the k, up to the pool size or the GPU's limit.
        """
        limit = min(index.max_k, pool.num_docs)
        most_positives = max((len(e.positive_ids) for e in exclusions), default=1)
        k = min(limit, self.mining.range_max + most_positives + 8)
        found: list[Candidates | None] = [None] * len(queries)
        pending = list(range(len(queries)))
        while pending:
            scores, rows = index.search(queries[pending], k)
            short = []
            for j, i in enumerate(pending):
                found[i] = self._candidates(scores[j], rows[j], pool)
                if k < limit and (
                    len(eligible_positions(found[i], exclusions[i])) < self.mining.range_max
                ):
                    short.append(i)
            pending, k = short, min(limit, k * 2)
        return [c for c in found if c is not None]

    # -- one chunk of rows ----------------------------------------------------------------

    def mine_rows(
        self, rows: list[dict[str, Any]], pool: Pool, index: VectorIndex
    ) -> Iterator[tuple[dict[str, Any], Selection, float]]:
        """Yield (row, selection, pos_score) for each row whose positive is in the pool."""
        positive_rows = self._positive_rows(rows, pool)
        usable = []
        for row, doc_row in zip(rows, positive_rows, strict=True):
            if doc_row < 0:
                self.report.drop(row["source"], "positive_not_in_corpus")
            else:
                usable.append((row, int(doc_row)))
        if not usable:
            return
        t0 = time.perf_counter()
        queries = self.embed(
            self.teacher.query_texts([row["query"] for row, _ in usable]), f"pool {pool.key}"
        )
        self._timed("encode_queries_s", t0)
        positives = index.reconstruct(np.array([doc_row for _, doc_row in usable]))
        pos_scores = (queries * positives).sum(axis=1)  # (rows,)
        rule_scores = self._lowest_positive_scores(usable, queries, pos_scores, pool, index)
        exclusions = [self._exclusion(row, pool, doc_row) for row, doc_row in usable]
        t0 = time.perf_counter()
        retrieved = self.retrieve(index, queries, exclusions, pool)
        self._timed("search_s", t0)
        given = self._given_scores([row for row, _ in usable], queries, pool)
        t0 = time.perf_counter()
        for i, (row, _) in enumerate(usable):
            candidates = retrieved[i]
            if given[i] is not None:
                candidates = merge_given(candidates, *given[i])
            selection = select_negatives(
                candidates, exclusions[i], float(rule_scores[i]), self.selection, row["example_id"]
            )
            yield row, selection, float(pos_scores[i])
        self._timed("select_s", t0)

    @staticmethod
    def _lowest_positive_scores(
        usable: list[tuple[dict[str, Any], int]],
        queries: np.ndarray,
        pos_scores: np.ndarray,
        pool: Pool,
        index: VectorIndex,
    ) -> np.ndarray:
        """Per row, the lowest teacher score among all the query's labelled positives.

        The rule's threshold is set from it, not from this row's positive alone: a candidate
        the teacher ranks above any labelled positive of the query is more likely an
        unlabelled positive than a negative. (sentence-transformers' miner does the same.)
        """
        lowest = pos_scores.copy()
        owners: list[int] = []
        ids: list[str] = []
        for i, (row, _) in enumerate(usable):
            others = [p for p in row.get("positive_ids") or [] if p != row.get("positive_id")]
            owners.extend([i] * len(others))
            ids.extend(others)
        if not ids:
            return lowest
        doc_rows = pool.rows_of(ids)
        present = doc_rows >= 0
        if not present.any():
            return lowest
        owner_array = np.asarray(owners)[present]
        embeddings = index.reconstruct(doc_rows[present])  # (num_other_positives, dim)
        scores = (embeddings * queries[owner_array]).sum(axis=1)
        np.minimum.at(lowest, owner_array, scores)
        return lowest

    def _positive_rows(self, rows: list[dict[str, Any]], pool: Pool) -> np.ndarray:
        """Pool row of each row's positive: by id for corpora, by text for task pools."""
        if pool.key.startswith("corpus:"):
            return pool.rows_of([row["positive_id"] for row in rows])
        return pool.rows_of([_task_doc_id(row) for row in rows])

    @staticmethod
    def _exclusion(row: dict[str, Any], pool: Pool, doc_row: int) -> Exclusion:
        ids = set(row.get("positive_ids") or [])
        ids.add(pool.ids[doc_row].as_py())
        if row.get("positive_id"):
            ids.add(row["positive_id"])
        hashes = {text_hash(row["positive"]), pool.text_key(doc_row)}
        return Exclusion(frozenset(ids), frozenset(hashes), row.get("label"))

    @staticmethod
    def _candidates(scores: np.ndarray, rows: np.ndarray, pool: Pool) -> Candidates:
        valid = rows >= 0
        rows, scores = rows[valid], scores[valid]
        row_list = rows.tolist()
        return Candidates(
            ids=pool.ids.take(pa.array(rows)).to_pylist(),
            texts=[pool.texts[r] for r in row_list],
            scores=scores.astype(np.float32),
            labels=[pool.labels[r] for r in row_list] if pool.labels is not None else None,
            keys=[pool.text_key(r) for r in row_list],
        )

    def _given_scores(
        self, rows: list[dict[str, Any]], queries: np.ndarray, pool: Pool
    ) -> list[tuple[list[str], np.ndarray, list[str]] | None]:
        """Teacher scores of each row's given negatives, as (texts, scores, ids) or None."""
        flat: list[str] = []
        owners: list[int] = []
        for i, row in enumerate(rows):
            for text in row.get("given_negatives") or []:
                flat.append(text)
                owners.append(i)
        result: list[tuple[list[str], np.ndarray, list[str]] | None] = [None] * len(rows)
        if not flat:
            return result
        t0 = time.perf_counter()
        embeddings = self.embed(self.teacher.document_texts(flat), f"pool {pool.key}, given")
        self._timed("encode_documents_s", t0)
        scores = (embeddings * queries[np.array(owners)]).sum(axis=1)
        grouped: dict[int, list[int]] = defaultdict(list)
        for position, owner in enumerate(owners):
            grouped[owner].append(position)
        for owner, positions in grouped.items():
            texts = [flat[p] for p in positions]
            result[owner] = (
                texts,
                scores[positions].astype(np.float32),
                [f"given:{text_hash(t)}" for t in texts],
            )
        return result

    def write(self, writer: ShardWriter, rows: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        if rows:
            writer.write(rows_to_table(rows, TableKind.MINED))
        self._timed("write_s", t0)

    # -- bookkeeping ----------------------------------------------------------------------

    def record(self, row: dict[str, Any], selection: Selection, pos_score: float) -> bool:
        """Count a mined row; returns whether it is kept."""
        self.stats.candidates_in_window += selection.num_in_window
        self.stats.candidates_dropped_by_rule += selection.num_dropped_by_rule
        self.stats.pos_scores.append(pos_score)
        too_few = len(selection.ids) < self.mining.num_negatives
        if too_few:
            self.stats.rows_with_too_few += 1
            if self.mining.on_too_few == "drop":
                self.report.drop(row["source"], "too_few_negatives")
                return False
        self.stats.neg_scores.extend(selection.scores[: self.mining.num_negatives])
        self.report.keep(row["source"])
        return True

    def mined_row(self, row: dict[str, Any], selection: Selection, pos_score: float) -> dict:
        return {
            **row,
            "negatives": selection.texts,
            "negative_ids": selection.ids,
            "neg_scores": selection.scores,
            "neg_ranks": selection.ranks,
            "pos_score": pos_score,
            "teacher": self.teacher.name,
            "mining_rule": str(self.rule),
            "candidates_dropped": selection.num_dropped_by_rule,
        }


def _task_doc_id(row: dict[str, Any]) -> str:
    """A task pool document's id: the positive's id, or one derived from its text."""
    return row.get("positive_id") or f"text:{text_hash(row['positive'])}"


def load_corpus_pool(source: str, corpus_dir: Path) -> Pool:
    table = read_shards(corpus_dir, TableKind.CORPUS)
    if table.num_rows == 0:
        raise InputError(corpus_dir, f"CORPUS set of source {source!r} is empty")
    texts = [
        document_text(title, text)
        for title, text in zip(
            table.column("title").to_pylist(), table.column("text").to_pylist(), strict=True
        )
    ]
    return Pool(key=f"corpus:{source}", ids=table.column("doc_id").combine_chunks(), texts=texts)


def build_task_pools(pairs_dirs: Sequence[Path], corpus_sources: set[str]) -> dict[str, Pool]:
    """Pools of the unique positives (by id, else by text) of rows without a corpus."""
    ids: dict[str, list[str]] = defaultdict(list)
    texts: dict[str, list[str]] = defaultdict(list)
    labels: dict[str, list[str | None]] = defaultdict(list)
    seen: dict[str, set[str]] = defaultdict(set)
    for pairs_dir in pairs_dirs:
        for table in iter_shards(pairs_dir, TableKind.PAIRS):
            keys = _pool_keys(table, corpus_sources)
            for key, row in zip(keys, table.to_pylist(), strict=True):
                if not key.startswith("task:"):
                    continue
                doc_id = _task_doc_id(row)
                if doc_id in seen[key]:
                    continue
                seen[key].add(doc_id)
                ids[key].append(doc_id)
                texts[key].append(row["positive"])
                labels[key].append(row.get("label"))
    return {
        key: Pool(
            key=key,
            ids=pa.array(ids[key], type=pa.string()),
            texts=texts[key],
            labels=labels[key] if any(v is not None for v in labels[key]) else None,
        )
        for key in sorted(ids)
    }


def iter_pool_rows(
    pairs_dirs: Sequence[Path], key: str, corpus_sources: set[str], chunk_size: int
) -> Iterator[list[dict[str, Any]]]:
    """Rows of one pool, in input order, `chunk_size` at a time (read shard by shard)."""
    buffer: list[dict[str, Any]] = []
    for pairs_dir in pairs_dirs:
        for table in iter_shards(pairs_dir, TableKind.PAIRS):
            mask = pa.array([k == key for k in _pool_keys(table, corpus_sources)])
            for row in table.filter(mask).to_pylist():
                buffer.append(row)
                if len(buffer) >= chunk_size:
                    yield buffer
                    buffer = []
    if buffer:
        yield buffer


def pool_order(inputs: MineInputs) -> list[str]:
    """Every pool the pairs need, sorted: corpus pools, then task pools."""
    keys: set[str] = set()
    corpus_sources = set(inputs.corpus_dirs)
    for pairs_dir in inputs.pairs_dirs:
        for table in iter_shards(pairs_dir, TableKind.PAIRS):
            keys.update(_pool_keys(table, corpus_sources))
    return sorted(keys)


def cache_folder(cfg: MineStageConfig, teacher: Teacher) -> Path:
    """The teacher's folder in the embedding cache (`teacher.cache_dir`, else the default)."""
    return Path(cfg.teacher.cache_dir or default_cache_root()) / teacher.fingerprint


def check_writable(folder: Path) -> None:
    """Create `folder` and write a file in it, or say which folder and which setting to change.

    Checked before encoding, not when the first segment is committed, so an unwritable cache
    costs nothing but the message.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path_for(folder / "write-probe")  # a live writer's name: left alone
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"the embedding cache folder {folder} is not writable on {socket.gethostname()} "
            f"({exc.strerror or exc}); set teacher.cache_dir to a folder this machine can write"
        ) from exc


def open_cache(cfg: MineStageConfig, teacher: Teacher, use_cache: bool) -> EmbeddingCache | None:
    if not use_cache:
        return None
    folder = cache_folder(cfg, teacher)
    check_writable(folder)
    return EmbeddingCache(folder.parent, folder.name)


def check_window(cfg: MineStageConfig) -> None:
    from embedcurate.pipeline.mining.index import num_gpus

    if cfg.mining.range_max > GPU_MAX_K and num_gpus() > 0:
        raise MiningError(
            f"mining.range_max={cfg.mining.range_max} exceeds faiss-gpu's limit of {GPU_MAX_K} "
            "neighbours per query"
        )


def iter_pools(inputs: MineInputs) -> Iterator[tuple[str, Pool]]:
    """(key, pool) for every pool the pairs need, in `pool_order`; a corpus pool is read only
    when its turn comes, so one corpus is in memory at a time."""
    task_pools = build_task_pools(inputs.pairs_dirs, set(inputs.corpus_dirs))
    for key in pool_order(inputs):
        if key.startswith("corpus:"):
            source = key.removeprefix("corpus:")
            yield key, load_corpus_pool(source, inputs.corpus_dirs[source])
        else:
            yield key, task_pools[key]


def count_documents(inputs: MineInputs) -> int:
    """Rows of the corpus and pairs sets, from their manifests: an upper bound on the texts
    an encode plan holds (pairs bring their positives), known before any pool is read."""
    dirs = [*inputs.corpus_dirs.values(), *inputs.pairs_dirs]
    return sum(read_manifest(folder).num_rows for folder in dirs)


def pool_document_texts(inputs: MineInputs, teacher: Teacher) -> Iterator[list[str]]:
    """Each pool's documents as the teacher sees them, in pool order (the encode plan's input)."""
    for _key, pool in iter_pools(inputs):
        yield teacher.document_texts(pool.texts)


def mine_pools(
    inputs: MineInputs, miner: Miner
) -> Iterator[tuple[dict[str, Any], Selection, float]]:
    """Every row of every pool, mined, in pool order then input order."""
    corpus_sources = set(inputs.corpus_dirs)
    for key, pool in iter_pools(inputs):
        started = time.perf_counter()
        index = miner.build_index(pool)
        num_rows = 0
        for rows in iter_pool_rows(
            inputs.pairs_dirs, key, corpus_sources, miner.mining.query_chunk_size
        ):
            for row in rows:
                miner.report.read(row["source"])
            num_rows += len(rows)
            yield from miner.mine_rows(rows, pool, index)
        miner.stats.pools[key] = {
            "num_docs": pool.num_docs,
            "num_rows": num_rows,
            "index": index.kind,
            "on_gpu": index.on_gpu,
            "seconds": round(time.perf_counter() - started, 3),
            **index.describe(),
        }
        if pool.num_docs <= miner.mining.range_max:
            logger.warning(
                "pool %s has %d documents, not more than range_max=%d: rows may get few negatives",
                key,
                pool.num_docs,
                miner.mining.range_max,
            )
        del index


def score_summary(values: Sequence[float]) -> dict[str, float | int]:
    if not len(values):
        return {"count": 0}
    array = np.asarray(values, dtype=np.float64)
    quantiles = np.quantile(array, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "count": len(array),
        "mean": round(float(array.mean()), 4),
        "min": round(float(array.min()), 4),
        "p05": round(float(quantiles[0]), 4),
        "p25": round(float(quantiles[1]), 4),
        "median": round(float(quantiles[2]), 4),
        "p75": round(float(quantiles[3]), 4),
        "p95": round(float(quantiles[4]), 4),
        "max": round(float(array.max()), 4),
    }


def score_histogram(values: Sequence[float]) -> dict[str, list[float] | list[int]]:
    counts, _ = np.histogram(np.clip(values, -1.0, 1.0), bins=SCORE_EDGES)
    return {"edges": SCORE_EDGES.tolist(), "counts": counts.tolist()}


def teacher_runtime(teacher: Teacher) -> dict[str, Any]:
    """How the teacher computes (backend, precision, devices, CPU threads), where it says."""
    fields = {"backend": "backend", "dtype": "dtype_name", "devices": "devices"}
    runtime = {key: getattr(teacher, at) for key, at in fields.items() if hasattr(teacher, at)}
    if getattr(teacher, "threads", None):
        runtime["threads"] = teacher.threads  # type: ignore[attr-defined]
    return runtime


def mining_details(miner: Miner, elapsed_s: float) -> dict[str, Any]:
    stats = miner.stats
    num_docs = sum(p["num_docs"] for p in stats.pools.values())
    in_window = stats.candidates_in_window
    encode_s = stats.timings.get("encode_documents_s", 0.0) + stats.timings.get(
        "encode_queries_s", 0.0
    )
    return {
        "teacher": miner.teacher.name,
        "teacher_fingerprint": miner.teacher.fingerprint,
        "teacher_runtime": teacher_runtime(miner.teacher),
        "rule": str(miner.rule),
        "num_negatives": miner.mining.num_negatives,
        "range": [miner.mining.range_min, miner.mining.range_max],
        "sampling": miner.mining.sampling,
        "on_too_few": miner.mining.on_too_few,
        "seed": miner.cfg.seed,
        "index": miner.mining.index,
        "pools": stats.pools,
        "pos_score": score_summary(stats.pos_scores),
        "neg_score": score_summary(stats.neg_scores),
        "pos_score_hist": score_histogram(stats.pos_scores),
        "neg_score_hist": score_histogram(stats.neg_scores),
        "candidates_in_window": in_window,
        "candidates_dropped_by_rule": stats.candidates_dropped_by_rule,
        "dropped_share": round(stats.candidates_dropped_by_rule / in_window, 4)
        if in_window
        else 0.0,
        "rows_with_too_few": stats.rows_with_too_few,
        "texts_encoded": stats.docs_encoded,
        # False when every text came from the cache and the weights were never loaded
        "teacher_loaded": bool(getattr(miner.teacher, "loaded", True)),
        "cache": {  # counts only: the cache's folder is this machine's, not the run's
            "used": miner.cache is not None,
            # texts this run did not encode: the plan's are read back once, not hits
            "hits": miner.cache.stats.hits - stats.docs_planned if miner.cache else 0,
            "misses": miner.cache.stats.misses if miner.cache else 0,
        },
        "timings_s": {name: round(value, 3) for name, value in sorted(stats.timings.items())},
        "num_docs": num_docs,
        "docs_per_s": round(num_docs / elapsed_s, 1) if elapsed_s > 0 else math.inf,
        "encoded_per_s": round(stats.docs_encoded / encode_s, 1) if encode_s > 0 else None,
    }


def run_mine(
    inputs: MineInputs,
    out_dir: Path,
    cfg: MineStageConfig,
    *,
    teacher: Teacher | None = None,
    use_cache: bool | None = None,
    provenance: dict[str, Any] | None = None,
) -> StageReport:
    """Mine hard negatives for every pairs row; write the MINED set and its report to out_dir.

    `provenance` (the resolved blend) is recorded in the manifest instead of the section.

    `teacher` defaults to this process's `teacher.shared_teacher(cfg.teacher)` (the replica a
    worker's encode parts loaded, when they ran here), released when mining ends; pass one to
    reuse a loaded model or to mine with a custom embedder.
    """
    check_window(cfg)
    if teacher is not None:
        return _mine(inputs, Path(out_dir), cfg, teacher, use_cache, provenance)
    from embedcurate.pipeline.mining.teacher import release_shared_teacher, shared_teacher

    try:
        return _mine(inputs, Path(out_dir), cfg, shared_teacher(cfg.teacher), use_cache, provenance)
    finally:
        release_shared_teacher(cfg.teacher)


def _mine(
    inputs: MineInputs,
    out_dir: Path,
    cfg: MineStageConfig,
    teacher: Teacher,
    use_cache: bool | None,
    provenance: dict[str, Any] | None,
) -> StageReport:
    """`run_mine` with its teacher: the encode plan first (with the cache), then the pools."""
    report = StageReport(stage="mine", out_dir=str(out_dir))
    started = time.perf_counter()
    use_cache = cfg.teacher.cache if use_cache is None else use_cache
    miner = Miner(cfg, teacher, open_cache(cfg, teacher, use_cache), report)
    miner.run_encode_plan(inputs)
    with ShardWriter(
        out_dir,
        TableKind.MINED,
        rows_per_shard=cfg.rows_per_shard,
        config=provenance or cfg.portable(),
        seeds={"mining": cfg.seed},
        extra={"teacher": teacher.name, "mining_rule": str(miner.rule)},
    ) as writer:
        buffer: list[dict[str, Any]] = []
        for row, selection, pos_score in mine_pools(inputs, miner):
            if miner.record(row, selection, pos_score):
                buffer.append(miner.mined_row(row, selection, pos_score))
            if len(buffer) >= WRITE_BATCH:
                miner.write(writer, buffer)
                buffer = []
        miner.write(writer, buffer)
    report.details = mining_details(miner, time.perf_counter() - started)
    report.finish()
    report.save(out_dir)
    logger.info(
        "mined %d rows (%d dropped) in %.1fs",
        report.num_kept,
        sum(report.dropped.values()),
        report.elapsed_s,
    )
    return report
