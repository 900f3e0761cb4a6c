"""Calibration: score a sample the way mining would and show what each rule would drop.

Score scales differ between teachers (MiniLM's cosines sit lower than e5-mistral's), so a
threshold that suits one drops nothing or everything with another; `embedcurate mine
--calibrate` prints these figures before a rule is chosen. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedcurate.pipeline.blend import MineStageConfig
from embedcurate.pipeline.mining.rules import MiningRule, dropped_share
from embedcurate.pipeline.mining.stage import (
    MineInputs,
    Miner,
    Teacher,
    mine_pools,
    open_cache,
    score_summary,
)
from embedcurate.pipeline.report import StageReport

PERCPOS_GRID = (0.85, 0.9, 0.95, 0.98, 1.0)
MARGINPOS_GRID = (0.0, 0.02, 0.05, 0.1, 0.15)


@dataclass
class Calibration:
    """Score distributions and, per candidate rule, the share of window candidates it drops."""

    teacher: str
    num_rows: int
    pos_score: dict[str, float | int]
    window_score: dict[str, float | int]
    top1_score: dict[str, float | int]
    dropped_share: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "num_rows": self.num_rows,
            "pos_score": self.pos_score,
            "window_score": self.window_score,
            "top1_score": self.top1_score,
            "dropped_share": self.dropped_share,
        }


def calibrate_mining(
    inputs: MineInputs,
    cfg: MineStageConfig,
    *,
    teacher: Teacher | None = None,
    max_rows: int = 2000,
    percents: Sequence[float] = PERCPOS_GRID,
    margins: Sequence[float] = MARGINPOS_GRID,
    use_cache: bool | None = None,
) -> Calibration:
    """Score the first `max_rows` rows as mining would, and what each rule would drop.

    Score scales differ between teachers (MiniLM's cosines sit lower than e5-mistral's), so a
    threshold that suits one drops nothing or everything with another. Nothing is written.
    """
    if teacher is None:
        from embedcurate.pipeline.mining.teacher import load_teacher

        teacher = load_teacher(cfg.teacher)
    report = StageReport(stage="calibrate")
    use_cache = cfg.teacher.cache if use_cache is None else use_cache
    miner = Miner(cfg, teacher, open_cache(cfg, teacher, use_cache), report)
    pos_scores: list[float] = []
    windows: list[np.ndarray] = []
    for _, selection, pos_score in mine_pools(inputs, miner):
        pos_scores.append(pos_score)
        windows.append(np.asarray(selection.window_scores, dtype=np.float32))
        if len(pos_scores) >= max_rows:
            break
    pos_array = np.asarray(pos_scores)
    rules = [f"percpos:{p:g}" for p in percents] + [f"marginpos:{m:g}" for m in margins]
    return Calibration(
        teacher=teacher.name,
        num_rows=len(pos_scores),
        pos_score=score_summary(pos_scores),
        window_score=score_summary(np.concatenate(windows).tolist() if windows else []),
        top1_score=score_summary([float(w[0]) for w in windows if len(w)]),
        dropped_share={
            rule: round(dropped_share(pos_array, windows, MiningRule.parse(rule)), 4)
            for rule in rules
        },
    )
