"""The data card: what a data engineer reads before trusting a shard set.

`run_card` writes three things beside the shards:

- `README.md`: a Hugging Face dataset-card YAML header, then the sections of
  `data_cards/template.md` (sources, stage counts, drop reasons, generator, teacher and
  mining rule, score and length histograms, composition, collisions, labels,
  decontamination, lineage, samples, and what the card does not know);
- `card.json`: the same figures for programs;
- `plots/*.png`: the histograms and the composition chart the card links.

Every count comes from the shards (streamed one shard at a time, `pipeline.card_stats`) or
from the stage reports found in the run folder; what neither records is listed as unknown,
never guessed. Everything written passes through `pipeline.redact` first.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from embedcurate.pipeline.atomic import write_bytes_atomic
from embedcurate.pipeline.blend import BlendConfig, SourceConfig, parse_blend
from embedcurate.pipeline.card.croissant import build_croissant, source_licenses, write_croissant
from embedcurate.pipeline.card.hub import license_fields
from embedcurate.pipeline.card.stats import ShardStats, compute_stats
from embedcurate.pipeline.errors import ConfigError, ShardSetError
from embedcurate.pipeline.manifest import (
    MANIFEST_NAME,
    Manifest,
    code_version,
    config_hash,
    read_manifest,
)
from embedcurate.pipeline.redact import redact, scrub_text
from embedcurate.pipeline.report import REPORT_NAME, StageReport
from embedcurate.pipeline.schemas import TableKind, schema_for
from embedcurate.pipeline.stages import STAGE_NAMES, stage_rank

logger = logging.getLogger(__name__)

CARD_FORMAT = 1
README_NAME = "README.md"
CARD_JSON_NAME = "card.json"
PLOTS_DIR = "plots"
CARD_REPORT_DIR = "reports"  # the card's own report; report.json belongs to the shards' stage
# Stages in the order the curate flow runs them; reports of other stages follow.
SYNTHETIC_SOURCE = "synthetic"  # the generator's rows (OUT/pairs/synthetic/)
TASK_CATEGORIES = {
    "retrieval": "text-retrieval",
    "classification": "text-classification",
    "clustering": "text-classification",
    "sts": "sentence-similarity",
}
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)


@dataclass(frozen=True)
class FoundReport:
    """A stage report found in the run folder; `report` is None when it could not be read."""

    path: str  # relative to the run folder
    report: StageReport | None
    problem: str = ""

    @property
    def stage(self) -> str:
        return self.report.stage if self.report else "?"


def display_path(path: str | Path, base: Path | None = None) -> str:
    """A path as the card shows it: relative to `base` (or the working folder) when inside."""
    path = Path(path)
    for root in (base, Path.cwd()):
        if root is None:
            continue
        try:
            return str(path.resolve().relative_to(root.resolve())) or "."
        except ValueError:
            continue
    return str(path)


def collect_reports(run_dir: Path, train_dir: Path) -> list[FoundReport]:
    """Every `report.json` under the run folder (and beside the shards), in stage order,
    each row counted once: the one collector behind the card and the Prefect counts table."""
    paths = {p for p in run_dir.rglob(REPORT_NAME) if not _hidden(p, run_dir)}
    if (train_dir / REPORT_NAME).is_file():
        paths.add(train_dir / REPORT_NAME)
    found: list[FoundReport] = []
    for path in sorted(paths):
        shown = display_path(path, run_dir)
        try:
            found.append(FoundReport(shown, StageReport.load(path)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s: unreadable stage report (%s)", path, exc)
            found.append(FoundReport(shown, None, f"unreadable: {exc}"))
    # reports of work done on the train set afterwards (an export) describe other sets
    found = [f for f in found if f.report is None or f.stage in STAGE_NAMES]
    found = _without_covered(found)
    return sorted(found, key=lambda item: (stage_rank(item.stage), item.path))


def _without_covered(found: list[FoundReport]) -> list[FoundReport]:
    """Drop per-part reports that an aggregate report of the same stage already counts.

    A stage may save one report per source beside each output (`pairs/<source>/report.json`)
    and one for the whole stage above them (`pairs/report.json`); counting both would count
    every row twice. A report is dropped when a report of the same stage in an ancestor
    folder lists all of its sources.
    """
    kept = []
    for item in found:
        covered = item.report is not None and any(
            other.report is not None
            and other is not item
            and other.report.stage == item.report.stage
            and Path(item.path).parent.is_relative_to(Path(other.path).parent)
            and Path(item.path).parent != Path(other.path).parent
            and set(item.report.sources) <= set(other.report.sources)
            for other in found
        )
        if covered:
            logger.debug("%s: counted by an aggregate report of its stage", item.path)
        else:
            kept.append(item)
    return kept


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _prompt_ids(shard_dir: Path, manifest: Manifest) -> dict[str, int]:
    """Rows per `generator/prompt_id` in a pairs or mined set, reading two columns per shard."""
    counts: Counter[str] = Counter()
    for entry in manifest.shards:
        table = pq.read_table(shard_dir / entry.file, columns=["generator", "prompt_id"])
        for generator, prompt_id in zip(
            table["generator"].to_pylist(), table["prompt_id"].to_pylist(), strict=True
        ):
            if prompt_id is not None:
                counts[f"{generator or 'unknown'}/{prompt_id}"] += 1
    return dict(sorted(counts.items()))


def collect_upstream_sets(run_dir: Path, train_dir: Path) -> list[dict[str, Any]]:
    """Lineage of the other shard sets in the run folder (sources, clean, mined ...)."""
    sets: list[dict[str, Any]] = []
    for manifest_path in sorted(run_dir.rglob(MANIFEST_NAME)):
        shard_dir = manifest_path.parent
        if _hidden(manifest_path, run_dir) or shard_dir.resolve() == train_dir.resolve():
            continue
        try:
            manifest = read_manifest(shard_dir)
        except ShardSetError as exc:
            logger.warning("%s", exc)
            sets.append({"path": display_path(shard_dir, run_dir), "problem": str(exc)})
            continue
        entry: dict[str, Any] = {
            "path": display_path(shard_dir, run_dir),
            "kind": manifest.kind,
            "num_rows": manifest.num_rows,
            "num_shards": len(manifest.shards),
            "config_hash": manifest.config_hash,
            "content_hash": manifest.content_hash,
            "code_version": manifest.code_version,
            "created_at": manifest.created_at,
        }
        if manifest.kind in (TableKind.PAIRS.value, TableKind.MINED.value):
            entry["prompt_ids"] = _prompt_ids(shard_dir, manifest)
        sets.append(entry)
    return sets


def blend_from_manifest(manifest: Manifest) -> BlendConfig | None:
    """The blend a shard set was written with, when its manifest recorded one."""
    if not manifest.config:
        return None
    try:
        return parse_blend(manifest.config, source=MANIFEST_NAME, check_paths=False)
    except ConfigError:
        return None


def size_category(num_rows: int) -> str:
    for limit, name in SIZE_CATEGORIES:
        if num_rows < limit:
            return name
    return "n>1B"


def hf_features(kind: str) -> list[dict[str, Any]]:
    """The table's columns in the `dataset_info.features` form of Hugging Face cards."""
    features: list[dict[str, Any]] = []
    for field in schema_for(kind):
        data_type = field.type
        if hasattr(data_type, "value_type"):
            features.append({"name": field.name, "sequence": _hf_dtype(data_type.value_type)})
        else:
            features.append({"name": field.name, "dtype": _hf_dtype(data_type)})
    return features


def _hf_dtype(data_type: Any) -> str:
    text = str(data_type)
    return {"float": "float32", "double": "float64", "halffloat": "float16"}.get(text, text)


@dataclass(frozen=True)
class CardInputs:
    """Everything a card is built from; any part may be missing (the card then says so)."""

    blend: BlendConfig | None
    manifest: Manifest | None
    stats: ShardStats | None
    reports: list[FoundReport]
    upstream: list[dict[str, Any]]
    run_dir: Path | None = None
    train_dir: Path | None = None
    blend_origin: str = ""  # where the blend came from: "argument", "manifest" or ""
    run_id: str | None = None  # the orchestrator's run id (a Prefect flow run), when known


def _source_rows(inputs: CardInputs) -> list[dict[str, Any]]:
    """One entry per source: the blend's settings and the rows the shards hold."""
    by_source = inputs.stats.by_source if inputs.stats else Counter()
    configured = {s.name: s for s in inputs.blend.sources} if inputs.blend else {}
    names = list(configured) + sorted(set(by_source) - set(configured))
    planned_generator = inputs.stats is None and inputs.blend and inputs.blend.generator
    if planned_generator and SYNTHETIC_SOURCE not in names:
        names.append(SYNTHETIC_SOURCE)  # a plan: the generator's rows are expected
    rows = []
    for name in names:
        source = configured.get(name)
        entry = _configured_source(source) if source else _unconfigured_source(name, inputs)
        entry["rows_in_shards"] = by_source.get(name, 0) if inputs.stats else None
        rows.append(entry)
    return rows


def _configured_source(source: SourceConfig) -> dict[str, Any]:
    location = source.hub_id or (display_path(source.path) if source.path else None)
    return {
        "name": source.name,
        "kind": source.kind,
        "location": location,
        "task": source.task or source.name,
        "task_type": source.task_type,
        "stage": source.stage,
        "max_rows": source.max_rows,
        "license": source.license,
        "language": source.language,
        "synthetic": False,
        "dataset_id": source.hub_id or f"local:{source.name}",
    }


def _unconfigured_source(name: str, inputs: CardInputs) -> dict[str, Any]:
    """A source the shards hold but the blend does not list: the generator's, or unknown."""
    generator = inputs.blend.generator if inputs.blend else None
    if name != SYNTHETIC_SOURCE:
        generator = None
    pairs = inputs.stats.by_stage_source if inputs.stats else Counter()
    stages = sorted(stage for (stage, source) in pairs if source == name)
    return {
        "name": name,
        "kind": "generated" if generator else "unknown",
        "location": f"{generator.backend}:{generator.model}" if generator else None,
        "task": None,
        "task_type": None,
        "stage": stages[0] if len(stages) == 1 else stages or None,
        "max_rows": None,
        "license": generator.license if generator else "unknown",
        "language": None,
        "synthetic": generator is not None,
        "dataset_id": "original" if generator else f"unknown:{name}",
    }


def uncompressed_bytes(shard_dir: Path, manifest: Manifest) -> int:
    """The set's size before compression, summed from the Parquet footers (no data read)."""
    total = 0
    for entry in manifest.shards:
        metadata = pq.ParquetFile(shard_dir / entry.file).metadata
        total += sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    return total


def hf_header(inputs: CardInputs, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The Hugging Face dataset-card metadata (the YAML block at the top of README.md)."""
    blend, stats, manifest = inputs.blend, inputs.stats, inputs.manifest
    licenses = sorted({s["license"] for s in sources}) or ["unknown"]
    languages = sorted({s["language"] for s in sources if s["language"]}) or ["unknown"]
    synthetic = any(s["synthetic"] for s in sources) or bool(blend and blend.generator)
    found = any(not s["synthetic"] for s in sources)
    creators = [name for name, on in (("found", found), ("machine-generated", synthetic)) if on]
    if stats is not None:
        task_types = set(stats.by_task_type)
    else:
        task_types = {s.task_type for s in blend.sources} if blend else set()
        if blend and blend.generator:
            task_types.add("retrieval")
    header: dict[str, Any] = {
        "pretty_name": f"{blend.name if blend else 'embedcurate'} training data",
        **license_fields(licenses),
        "source_licenses": {s["name"]: s["license"] for s in sources},
        "language": languages,
        "multilinguality": "monolingual" if len(languages) == 1 else "multilingual",
        "task_categories": sorted(
            {"feature-extraction", "sentence-similarity"}
            | {TASK_CATEGORIES[t] for t in task_types if t in TASK_CATEGORIES}
        ),
        "source_datasets": sorted({s["dataset_id"] for s in sources}) or ["unknown"],
        "annotations_creators": creators or ["unknown"],
        "language_creators": creators or ["unknown"],
        "tags": ["embeddings", "hard-negatives", "nv-embed", "embedcurate"],
    }
    if manifest is not None and stats is not None:
        num_bytes = sum(entry.bytes for entry in manifest.shards)
        header["size_categories"] = [size_category(stats.num_rows)]
        header["configs"] = [
            {
                "config_name": "default",
                "data_files": [
                    {"split": "train", "path": [entry.file for entry in manifest.shards]}
                ],
            }
        ]
        # `datasets` ignores a split without num_bytes (and warns); it is the data's size
        # uncompressed, as the Parquet footers record it.
        data_bytes = uncompressed_bytes(inputs.train_dir, manifest) if inputs.train_dir else 0
        header["dataset_info"] = {
            "features": hf_features(manifest.kind),
            "splits": [{"name": "train", "num_bytes": data_bytes, "num_examples": stats.num_rows}],
            "download_size": num_bytes,
            "dataset_size": data_bytes,
        }
    return header


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_short_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 8 and all(map(_is_scalar, value))


def _flat_details(details: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Scalar figures of a report's free-form `details`, nested keys joined by dots."""
    flat: dict[str, Any] = {}
    for key, value in details.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < 1:
            flat.update(_flat_details(value, f"{name}.", depth + 1))
        elif _is_scalar(value) or _is_short_scalar_list(value):
            flat[name] = value
    return dict(list(flat.items())[:40])


def _stage_entries(reports: list[FoundReport]) -> list[dict[str, Any]]:
    entries = []
    for found in reports:
        if found.report is None:
            entries.append({"report": found.path, "problem": found.problem})
            continue
        payload = found.report.to_dict()
        entries.append(
            {
                "stage": payload["stage"],
                "report": found.path,
                "num_in": payload["num_in"],
                "num_kept": payload["num_kept"],
                "num_rows": payload.get("num_rows", payload["num_kept"]),
                "num_dropped": sum(payload["dropped"].values()),
                "dropped": payload["dropped"],
                "sources": payload["sources"],
                # a sources stage's documents and queries, counted apart from its records
                "texts": payload["details"].get("texts", {}),
                "elapsed_s": payload["elapsed_s"],
                "details": _flat_details(payload["details"]),
            }
        )
    return entries


def _drop_reasons(reports: list[FoundReport]) -> list[dict[str, Any]]:
    totals: Counter[tuple[str, str]] = Counter()
    for found in reports:
        if found.report is not None:
            for reason, n in found.report.dropped.items():
                totals[(found.report.stage, reason)] += n
    ordered = sorted(totals.items(), key=lambda item: (stage_rank(item[0][0]), -item[1]))
    return [{"stage": stage, "reason": reason, "rows": n} for (stage, reason), n in ordered]


def _generator_section(inputs: CardInputs) -> dict[str, Any]:
    generator = inputs.blend.generator if inputs.blend else None
    prompt_ids = [
        {"set": shard_set["path"], "prompt": prompt, "rows": n}
        for shard_set in inputs.upstream
        for prompt, n in shard_set.get("prompt_ids", {}).items()
    ]
    if inputs.stats is not None:
        prompt_ids += [
            {"set": ".", "prompt": f"{generator_name}/{prompt_id}", "rows": n}
            for (generator_name, prompt_id), n in sorted(inputs.stats.prompt_ids.items())
        ]
    return {
        "configured": generator.portable() if generator else None,
        "prompt_ids": prompt_ids,
    }


def _teacher_mining_section(inputs: CardInputs) -> dict[str, Any]:
    blend, stats = inputs.blend, inputs.stats
    return {
        "teacher": blend.teacher.portable() if blend else None,
        "mining": blend.mining.portable() if blend else None,
        "teachers_in_shards": dict(sorted(stats.teachers.items())) if stats else {},
        "rules_in_shards": dict(sorted(stats.mining_rules.items())) if stats else {},
    }


def _decontamination_section(inputs: CardInputs) -> dict[str, Any]:
    config = inputs.blend.decontamination if inputs.blend else None
    reports = [
        {"report": found.path, **found.report.details, "dropped": dict(found.report.dropped)}
        for found in inputs.reports
        if found.report is not None and found.report.stage == "decontaminate"
    ]
    configured = config.portable() if config else None
    if configured:
        for eval_set in configured["eval_sets"]:
            eval_set["path"] = display_path(eval_set["path"])
    if reports:
        status = "ran"
    elif inputs.blend is None:
        status = "unknown"
    elif config is None or not config.eval_sets:
        status = "not configured"
    else:
        status = "configured, no report"
    return {"status": status, "configured": configured, "reports": reports}


def _run_id(inputs: CardInputs) -> str | None:
    if inputs.run_id:
        return inputs.run_id
    if inputs.manifest is not None and inputs.manifest.extra.get("run_id"):
        return str(inputs.manifest.extra["run_id"])
    for found in inputs.reports:
        if found.report is not None and found.report.details.get("run_id"):
            return str(found.report.details["run_id"])
    return None


def _lineage_section(inputs: CardInputs) -> dict[str, Any]:
    manifest, blend = inputs.manifest, inputs.blend
    blend_hash = config_hash(blend.portable()) if blend else None
    lineage: dict[str, Any] = {
        "blend_hash": blend_hash,
        "blend_from": inputs.blend_origin or None,
        "blend_seed": blend.seed if blend else None,
        "run_id": _run_id(inputs),
        "card_code_version": code_version(),
        "upstream": inputs.upstream,
        "reports": [found.path for found in inputs.reports],
    }
    if manifest is not None:
        lineage.update(
            {
                "config_hash": manifest.config_hash,
                "blend_matches_manifest": blend_hash == manifest.config_hash if blend else None,
                "code_version": manifest.code_version,
                "seeds": manifest.seeds,
                "created_at": manifest.created_at,
                "schema_fingerprint": manifest.schema_fingerprint,
                "schema_version": manifest.schema_version,
                "content_hash": manifest.content_hash,
            }
        )
    return lineage


def _unknowns(inputs: CardInputs, card: dict[str, Any]) -> list[str]:
    """Plain statements of what the inputs do not record (the card never fills these in)."""
    notes: list[str] = []
    if inputs.manifest is None:
        notes.append(
            "This blend has not been run here: no shards, so no row counts, scores, lengths, "
            "collisions or samples."
        )
    if inputs.blend is None:
        notes.append(
            "No blend was given and the manifest records none: source settings, licences, "
            "generator, teacher and mining settings are unknown."
        )
    if inputs.manifest is not None and not inputs.reports:
        notes.append(
            f"No stage reports were found in {display_path(inputs.run_dir or '.')}: rows read "
            "and dropped before these shards are unknown."
        )
    if any(found.report is None for found in inputs.reports):
        notes.append("Some stage reports could not be read (see 'Rows through the stages').")
    if inputs.stats is not None and not inputs.stats.has_scores:
        notes.append(f"A {inputs.stats.kind} table holds no teacher scores: no score histograms.")
    if inputs.manifest is not None and _run_id(inputs) is None:
        notes.append("No run id was recorded by the manifest or the stage reports.")
    if card["decontamination"]["status"] in ("configured, no report", "unknown"):
        notes.append(
            "Whether these rows overlap evaluation sets is unknown: no decontamination report "
            "was found."
        )
    for source in card["sources"]:
        if source["license"] == "unknown":
            notes.append(f"Source {source['name']}: licence unknown.")
    wants_prompts = inputs.blend is None or inputs.blend.generator is not None
    if inputs.manifest is not None and wants_prompts and not card["generator"]["prompt_ids"]:
        notes.append("Prompt ids: no pairs or mined set with generated rows was found.")
    return notes


def _plot_points(stats: ShardStats) -> dict[str, Any]:
    return {
        "positive": stats.pos_scores.points(),
        "negative": stats.neg_scores.points(),
        "margin": stats.margins.points(),
        "query": stats.query_chars.points(),
        "positive_text": stats.positive_chars.points(),
        "negatives_text": stats.negative_chars.points(),
    }


def draw_card_plots(stats: ShardStats, plots_dir: Path) -> dict[str, str]:
    """Draw the card's PNGs; returns name -> path relative to the card (only those drawn)."""
    from embedcurate.pipeline.card.plots import plot_composition, plot_histograms

    if plots_dir.is_dir():
        for stale in plots_dir.glob("*.png"):
            stale.unlink()
    points = _plot_points(stats)
    jobs = {
        "positive_scores": lambda p: plot_histograms(
            {"positive": points["positive"]}, p, title="Positive scores", xlabel="teacher score"
        ),
        "negative_scores": lambda p: plot_histograms(
            {"negatives": points["negative"]}, p, title="Negative scores", xlabel="teacher score"
        ),
        "margin": lambda p: plot_histograms(
            {"margin": points["margin"]},
            p,
            title="Margin: positive score minus hardest negative score",
            xlabel="score difference",
        ),
        "lengths": lambda p: plot_histograms(
            {
                "query": points["query"],
                "positive": points["positive_text"],
                "negatives": points["negatives_text"],
            },
            p,
            title="Text lengths",
            xlabel="characters (log scale)",
            log_scale=True,
        ),
        "composition": lambda p: plot_composition(
            _nested_counts(stats.by_stage_task_type), p, title="Rows per stage and task type"
        ),
    }
    drawn: dict[str, str] = {}
    for name, draw in jobs.items():
        if draw(plots_dir / f"{name}.png") is not None:
            drawn[name] = f"{PLOTS_DIR}/{name}.png"
    return drawn


def _judge_details(inputs: CardInputs) -> dict[str, Any] | None:
    """The latest judge stage report's details in the run folder, if a judge ran."""
    found = [f for f in inputs.reports if f.stage == "judge" and f.report is not None]
    return found[-1].report.details if found else None  # type: ignore[union-attr]


def _false_negatives_section(inputs: CardInputs) -> dict[str, Any] | None:
    """Audit figures and near-duplicate counts of the judge stage, without the plot points."""
    details = _judge_details(inputs)
    if details is None:
        return None
    audit = {k: v for k, v in details.get("audit", {}).items() if k != "score_vs_rank"}
    return {**{k: v for k, v in details.items() if k != "audit"}, "audit": audit}


def draw_judge_plot(inputs: CardInputs, plots_dir: Path) -> dict[str, str]:
    """The judge's score against the teacher's rank of each judged negative, when a judge ran."""
    from embedcurate.pipeline.card.plots import plot_judge_scores

    details = _judge_details(inputs)
    points = (details or {}).get("audit", {}).get("score_vs_rank")
    if not points or not points.get("scores"):
        return {}
    path = plot_judge_scores(points, plots_dir / "judge_scores.png")
    return {"judge_scores": f"{PLOTS_DIR}/judge_scores.png"} if path is not None else {}


def _nested_counts(counter: Counter[tuple[Any, Any]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (outer, inner), n in sorted(counter.items(), key=lambda item: tuple(map(str, item[0]))):
        nested.setdefault(str(outer), {})[str(inner)] = n
    return nested


def build_card(inputs: CardInputs, plots: dict[str, str] | None = None) -> dict[str, Any]:
    """The card as JSON-able data, secrets redacted; README.md is rendered from this."""
    blend, manifest, stats = inputs.blend, inputs.manifest, inputs.stats
    sources = _source_rows(inputs)
    figures = stats.to_dict() if stats else None
    samples = figures.pop("samples") if figures else []
    card: dict[str, Any] = {
        "card_format": CARD_FORMAT,
        "status": "complete" if manifest is not None else "planned",
        "name": blend.name if blend else (inputs.train_dir.name if inputs.train_dir else None),
        "description": blend.description if blend else "",
        "requires": list(blend.requires) if blend else [],
        "header": hf_header(inputs, sources),
        "dataset": None,
        "sources": sources,
        "figures": figures,
        "samples": samples,
        "stages": _stage_entries(inputs.reports),
        "drop_reasons": _drop_reasons(inputs.reports),
        "generator": _generator_section(inputs),
        "teacher_mining": _teacher_mining_section(inputs),
        "decontamination": _decontamination_section(inputs),
        "false_negatives": _false_negatives_section(inputs),
        "lineage": _lineage_section(inputs),
        "plots": plots or {},
    }
    if manifest is not None:
        card["dataset"] = {
            "kind": manifest.kind,
            "num_rows": manifest.num_rows,
            "num_shards": len(manifest.shards),
            "num_bytes": sum(entry.bytes for entry in manifest.shards),
            "files": [
                {"file": e.file, "rows": e.rows, "sha256": e.sha256} for e in manifest.shards
            ],
        }
    card["unknowns"] = _unknowns(inputs, card)
    return redact(card)


def write_card(card: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write card.json and README.md (rendered from the template), both scrubbed of secrets."""
    from embedcurate.pipeline.card.render import render_markdown

    card = redact(card)
    json_path, readme_path = out_dir / CARD_JSON_NAME, out_dir / README_NAME
    # Keys keep the card's order (sections as the README shows them), not alphabetical.
    text = json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(json_path, scrub_text(text).encode("utf-8"))
    write_bytes_atomic(readme_path, scrub_text(render_markdown(card)).encode("utf-8"))
    return [json_path, readme_path]


def run_card(
    train_dir: str | Path,
    run_dir: str | Path | None = None,
    cfg: BlendConfig | None = None,
    run_id: str | None = None,
) -> StageReport:
    """Write README.md, card.json and plots/ beside a shard set (the curate flow's last stage).

    `run_dir` is searched for stage reports and upstream shard sets; it defaults to the shard
    folder itself, which is what a bare set (the `mine` command's output) has. Without `cfg`
    the blend recorded in the manifest is used when there is one.
    """
    train_dir = Path(train_dir)
    run_dir = Path(run_dir) if run_dir is not None else train_dir
    report = StageReport(stage="card", out_dir=str(train_dir))
    manifest = read_manifest(train_dir)
    stats = compute_stats(train_dir)
    blend, origin = (cfg, "argument") if cfg is not None else (blend_from_manifest(manifest), "")
    inputs = CardInputs(
        blend=blend,
        manifest=manifest,
        stats=stats,
        reports=collect_reports(run_dir, train_dir),
        upstream=collect_upstream_sets(run_dir, train_dir),
        run_dir=run_dir,
        train_dir=train_dir,
        blend_origin=origin or ("manifest" if blend is not None else ""),
        run_id=run_id,
    )
    plots = draw_card_plots(stats, train_dir / PLOTS_DIR)
    plots.update(draw_judge_plot(inputs, train_dir / PLOTS_DIR))
    written = write_card(build_card(inputs, plots), train_dir)
    written.append(write_train_croissant(inputs))
    for source, n in sorted(stats.by_source.items()):
        report.read(source, n)
        report.keep(source, n)
    report.details = {
        "files": [path.name for path in written],
        "plots": sorted(plots.values()),
        "num_reports": len(inputs.reports),
        "num_upstream_sets": len(inputs.upstream),
    }
    report.finish().save(train_dir / CARD_REPORT_DIR, name=CARD_JSON_NAME)
    logger.info("data card for %d rows written to %s", stats.num_rows, train_dir / README_NAME)
    return report


def write_train_croissant(inputs: CardInputs) -> Path:
    """croissant.json beside the train shards, from the same inputs as the card."""
    manifest, stats, train_dir = inputs.manifest, inputs.stats, inputs.train_dir
    assert manifest is not None
    assert stats is not None
    assert train_dir is not None
    name = f"{inputs.blend.name if inputs.blend else train_dir.name} training data"
    payload = build_croissant(
        manifest,
        schema_for(manifest.kind),
        name=name,
        description=(inputs.blend.description if inputs.blend else "")
        or "Training rows for text-embedding models curated by embedcurate.",
        blend=inputs.blend,
        reports=[found.report for found in inputs.reports if found.report],
        licenses=source_licenses(inputs.blend, stats.by_source),
    )
    return write_croissant(train_dir, payload)


def render_plan_card(cfg: BlendConfig, out_dir: str | Path) -> list[Path]:
    """A card from the blend alone, for a blend that cannot run here (network, GPUs).

    It shows what the blend asks for (sources, licences, generator, teacher, rule,
    decontamination) and states plainly that there are no counts; it invents none.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = CardInputs(
        blend=cfg, manifest=None, stats=None, reports=[], upstream=[], blend_origin="argument"
    )
    return write_card(build_card(inputs), out_dir)
