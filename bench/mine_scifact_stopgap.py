"""STOP-GAP mining for the trainer's real check, until the mining stage (issue 4) lands.

This is NOT the pipeline's mining stage. It mines BEIR train pairs the way the blend's default
rule describes, with numpy over teacher embeddings the caller computed with `pipeline.teacher`
(or the identical untrained MiniLM embedder): every document is scored for every query (exact
search), every labelled positive of the query is excluded, the positive-aware rule
percpos:0.95 (NV-Retriever, arXiv 2407.15831) drops candidates scoring above 0.95 x the
positive's score, and the hardest `num_negatives` survivors within the top `range_max` are
kept, hardest first. `bench/trainer_scifact.py` writes the rows as a MINED set and runs the
real template stage (`pipeline.templates.run_template`) on it to get TRAIN shards.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RULE_FRACTION = 0.95


def mine_rows(
    pairs: list[dict[str, Any]],
    doc_ids: list[str],
    doc_texts: list[str],
    doc_emb: np.ndarray,  # (num_docs, d), L2-normalised
    query_emb: dict[str, np.ndarray],  # query text -> (d,), L2-normalised
    *,
    num_negatives: int,
    range_max: int,
    teacher: str,
) -> list[dict[str, Any]]:
    """PAIRS rows -> MINED rows (hard negatives with ids, scores, ranks and lineage)."""
    doc_index = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    mined = []
    for row in pairs:
        scores = doc_emb @ query_emb[row["query"]]  # (num_docs,)
        pos_score = float(scores[doc_index[row["positive_id"]]])
        excluded = {doc_index[p] for p in row["positive_ids"] if p in doc_index}
        ranked = [int(i) for i in np.argsort(-scores) if int(i) not in excluded][:range_max]
        threshold = RULE_FRACTION * pos_score
        kept = [(rank, i) for rank, i in enumerate(ranked, 1) if scores[i] < threshold]
        chosen = kept[:num_negatives]
        mined.append(
            {
                **row,
                "negatives": [doc_texts[i] for _, i in chosen],
                "negative_ids": [doc_ids[i] for _, i in chosen],
                "neg_scores": [float(scores[i]) for _, i in chosen],
                "neg_ranks": [rank for rank, _ in chosen],
                "pos_score": pos_score,
                "teacher": teacher,
                "mining_rule": f"percpos:{RULE_FRACTION}",
                "candidates_dropped": len(ranked) - len(kept),
            }
        )
    return mined
