"""BEIR retrieval evaluation with exact search: nDCG@10 and recall@100.

Queries are embedded with the instruction template (`Instruct: {task}\\nQuery: {query}`,
instruction left out of pooling; the task's definition comes from the instruction table by the
folder's name), documents as BEIR joins them (`title text`), both
L2-normalised; every query is scored against every document (exact inner-product search, no
index) and the top 100 kept. The metrics follow BEIR's pytrec_eval settings:

    DCG@k  = Σ_{r=1..k} rel(d_r) / log2(r + 1),  nDCG@k = DCG@k / ideal DCG@k
    recall@k = |relevant ∩ top k| / |relevant|

averaged over the split's queries that have at least one relevant document. As in BEIR, a
document whose id equals the query's id is never retrieved for it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedcurate.model.embedder import DEFAULT_RETRIEVAL_INSTRUCTION, Embedder
from embedcurate.pipeline.sources.beir import BeirFolder, document_text, load_beir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalScores:
    dataset: str
    split: str
    ndcg_at_10: float
    recall_at_100: float
    num_queries: int
    num_docs: int
    instruction: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def instruction_for(beir_dir: str | Path) -> str:
    """The instruction table's definition for the folder's name (`scifact` -> SciFact), else a
    generic retrieval instruction."""
    from embedcurate.pipeline.instructions import load_instruction_table

    table = load_instruction_table()
    name = Path(beir_dir).resolve().name
    if name in table:
        return table.get(name).definition
    logger.info("%s is not in the instruction table; using a generic instruction", name)
    return DEFAULT_RETRIEVAL_INSTRUCTION


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    gains = [relevant.get(doc_id, 0) for doc_id in ranked[:k]]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    ideal_dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / ideal_dcg if ideal_dcg > 0 else 0.0


def recall_at_k(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def exact_top_k(
    query_emb: np.ndarray, doc_emb: np.ndarray, k: int, *, chunk: int = 256
) -> np.ndarray:
    """(num_queries, k) document indices by descending inner product, queries in chunks."""
    docs = torch.from_numpy(doc_emb)  # (num_docs, d)
    k = min(k, doc_emb.shape[0])
    out = np.empty((query_emb.shape[0], k), dtype=np.int64)
    for start in range(0, query_emb.shape[0], chunk):
        scores = torch.from_numpy(query_emb[start : start + chunk]) @ docs.T  # (chunk, num_docs)
        out[start : start + chunk] = scores.topk(k, dim=1).indices.numpy()
    return out


def corpus_texts(folder: BeirFolder) -> tuple[list[str], list[str]]:
    """(doc ids, `title text` passages) in corpus order."""
    titles = folder.corpus.column("title").to_pylist()
    texts = folder.corpus.column("text").to_pylist()
    doc_texts = [document_text(t, x) for t, x in zip(titles, texts, strict=True)]
    return folder.corpus.column("doc_id").to_pylist(), doc_texts


def retrieval_metrics(
    folder: BeirFolder, query_emb: np.ndarray, doc_emb: np.ndarray
) -> tuple[float, float]:
    """(nDCG@10, recall@100) for embeddings of `folder.queries` (in order) and its corpus."""
    doc_ids = folder.corpus.column("doc_id").to_pylist()
    top = exact_top_k(query_emb, doc_emb, 101)  # one spare for a dropped self-match
    ndcgs, recalls = [], []
    for row, query_id in enumerate(folder.queries):
        ranked = [doc_ids[i] for i in top[row] if doc_ids[i] != query_id][:100]
        relevant = folder.qrels[query_id]
        ndcgs.append(ndcg_at_k(ranked, relevant, 10))
        recalls.append(recall_at_k(ranked, relevant, 100))
    if not ndcgs:
        return 0.0, 0.0
    return float(np.mean(ndcgs)), float(np.mean(recalls))


def evaluate_beir(
    embedder: Embedder,
    beir_dir: str | Path,
    *,
    split: str = "test",
    instruction: str | None,
    batch_size: int = 32,
    progress: bool = False,
    doc_emb: np.ndarray | None = None,
) -> RetrievalScores:
    """Embed the split's queries and the corpus (unless `doc_emb` gives it), then score."""
    started = time.perf_counter()
    folder = load_beir(beir_dir, split)
    doc_ids, doc_texts = corpus_texts(folder)
    query_ids = list(folder.queries)
    logger.info("%s/%s: %d queries, %d documents", beir_dir, split, len(query_ids), len(doc_ids))
    if doc_emb is None:
        doc_emb = embedder.encode_documents(doc_texts, batch_size=batch_size, progress=progress)
    query_emb = embedder.encode_queries(
        [folder.queries[q] for q in query_ids],
        instruction,
        batch_size=batch_size,
        progress=progress,
    )
    ndcg, recall = retrieval_metrics(folder, query_emb, doc_emb)
    return RetrievalScores(
        dataset=Path(beir_dir).name,
        split=split,
        ndcg_at_10=ndcg,
        recall_at_100=recall,
        num_queries=len(query_ids),
        num_docs=len(doc_ids),
        instruction=instruction,
        seconds=time.perf_counter() - started,
    )
