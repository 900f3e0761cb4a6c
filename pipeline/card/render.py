"""Render a card (the data of `card.json`) as Markdown from `data_cards/template.md`, and
as a standalone HTML page.

The template is plain Markdown with `{{ name }}` placeholders, each filled with a block this
module renders (a table, a list, a paragraph). Rendering is strict: a placeholder without a
value, or a value without a placeholder, is an error naming the template, so the template
and the code cannot drift apart silently.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from embedcurate.pipeline.redact import scrub_text

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
TEMPLATE_NAME = "template.md"


def template_text() -> tuple[str, str]:
    """(text, where it came from) of the packaged card template."""
    resource = resources.files("embedcurate.data_cards") / TEMPLATE_NAME
    return resource.read_text(encoding="utf-8"), str(resource)


def render_template(template: str, values: Mapping[str, str], *, origin: str = "template") -> str:
    names = set(PLACEHOLDER.findall(template))
    missing = sorted(names - set(values))
    unused = sorted(set(values) - names)
    if missing:
        raise KeyError(f"{origin}: no value for placeholder(s) {', '.join(missing)}")
    if unused:
        raise KeyError(f"{origin}: value(s) {', '.join(unused)} have no placeholder")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)].strip(), template)


# --- Markdown building blocks -------------------------------------------------------------


def format_value(value: Any) -> str:
    """One value as card text (the Markdown card and the terminal view share this)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) or "-"
    return str(value)


def _cell(value: Any) -> str:
    """A Markdown table cell: backslashes and pipes escaped, whitespace folded."""
    text = format_value(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split()) or "-"


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    headers = list(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    return table(["setting", "value"], ([f"`{key}`", value] for key, value in pairs))


def _image(card: Mapping[str, Any], name: str, alt: str) -> str:
    path = card.get("plots", {}).get(name)
    return f"![{alt}]({path})" if path else ""


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _blocks(*parts: str) -> str:
    return "\n\n".join(part for part in parts if part)


# --- Sections -------------------------------------------------------------------------------


def _title(card: Mapping[str, Any]) -> str:
    name = card.get("name") or "embedcurate"
    suffix = " (planned; not run here)" if card["status"] == "planned" else ""
    return f"{name}: text-embedding training data{suffix}"


def _intro(card: Mapping[str, Any]) -> str:
    description = card.get("description") or ""
    if card["status"] == "planned":
        needs = ", ".join(card.get("requires") or []) or "resources this machine lacks"
        return _blocks(
            description,
            f"**Not run.** This card was rendered from the blend alone. The blend needs {needs} "
            "(its `requires`), so no run of it has produced shards here. It lists what the "
            "blend asks for. "
            "It holds no row counts, scores or samples, because none exist yet; run "
            "`embedcurate curate` on the blend where it can run to get the real card.",
        )
    dataset, figures = card["dataset"], card["figures"]
    by_stage = figures["rows"]["by_stage"]
    stages = ", ".join(f"stage {stage}: {n:,} rows" for stage, n in by_stage.items())
    files = "train-*.parquet"
    return _blocks(
        description,
        f"**{dataset['num_rows']:,} rows** of the `{dataset['kind']}` table in "
        f"{dataset['num_shards']} zstd Parquet shard(s), {dataset['num_bytes']:,} bytes "
        f"({stages or 'no rows'}). Curated by embedcurate following NV-Embed "
        "(arXiv 2405.17428): instruction-templated queries and teacher-mined hard negatives.",
        f'Read it with `datasets.load_dataset("parquet", data_files="{files}")` or '
        f'`polars.scan_parquet("{files}")` in this folder; `manifest.json` lists every shard '
        "with its sha256.",
    )


def _sources(card: Mapping[str, Any]) -> str:
    if not card["sources"]:
        return "Unknown: no blend and no shards name a source."
    rows = [
        [
            s["name"], s["kind"], s["location"], s["task"], s["task_type"], s["stage"],
            s["max_rows"], s["license"], s["language"], s["rows_in_shards"],
        ]
        for s in card["sources"]
    ]  # fmt: skip
    headers = [
        "source", "kind", "location", "task", "task type", "stage", "cap", "licence",
        "language", "rows in shards",
    ]  # fmt: skip
    return table(headers, rows)


def _stage_counts(card: Mapping[str, Any]) -> str:
    if card["status"] == "planned":
        return "Not run: no stage reports."
    if not card["stages"]:
        return "Unknown: no stage reports were found in the run folder."
    blocks = []
    for entry in card["stages"]:
        if "problem" in entry:
            blocks.append(f"**`{entry['report']}`**: {entry['problem']}")
            continue
        num_rows = entry.get("num_rows", entry["num_kept"])
        head = (
            f"**{entry['stage']}** (`{entry['report']}`): {entry['num_in']:,} in, "
            f"{entry['num_kept']:,} kept, {entry['num_dropped']:,} dropped"
            f"{f', {num_rows:,} rows written' if num_rows != entry['num_kept'] else ''}, "
            f"{entry['elapsed_s']:.1f} s"
        )
        rows = [
            [
                name,
                counts["num_in"],
                counts["num_kept"],
                counts["num_dropped"],
                counts.get("num_rows", counts["num_kept"]),
                ", ".join(f"{reason}: {n:,}" for reason, n in counts["dropped"].items()),
            ]
            for name, counts in entry["sources"].items()
        ]
        details = "; ".join(f"`{key}`: {_cell(value)}" for key, value in entry["details"].items())
        headers = ["source", "in", "kept", "dropped", "rows written", "drop reasons"]
        blocks.append(
            _blocks(
                head,
                table(headers, rows) if rows else "",
                _text_counts(entry.get("texts") or {}),
                f"Details: {details}" if details else "",
            )
        )
    return _blocks(*blocks)


def _text_counts(texts: Mapping[str, Any]) -> str:
    """Documents and queries a source read beside its records (a BEIR corpus), if any."""
    if not texts:
        return ""
    rows = [
        [
            name,
            counts["num_in"],
            counts.get("num_docs"),
            counts.get("num_queries"),
            counts.get("num_title_only_docs", 0),
            ", ".join(f"{reason}: {n:,}" for reason, n in counts["dropped"].items()),
        ]
        for name, counts in texts.items()
    ]
    headers = ["source", "texts read", "documents", "queries", "title only", "dropped"]
    return "Documents and queries:\n\n" + table(headers, rows)


def _drop_reasons(card: Mapping[str, Any]) -> str:
    if card["drop_reasons"]:
        rows = [[d["stage"], f"`{d['reason']}`", d["rows"]] for d in card["drop_reasons"]]
        return table(["stage", "reason", "rows"], rows)
    if card["status"] == "planned":
        return "Not run: nothing dropped yet."
    if not card["stages"]:
        return "Unknown: no stage reports were found."
    return "No stage report records a dropped row."


def _generator(card: Mapping[str, Any]) -> str:
    section = card["generator"]
    generator = section["configured"]
    if generator is None:
        if card["lineage"].get("blend_from") is None:
            return "Unknown: no blend."
        return "The blend has no generator: no synthetic rows."
    fields = (
        "backend", "model", "model_kind", "base_url", "api_key_env", "task_types", "num_tasks",
        "examples_per_task", "temperature", "max_tokens", "round_trip_top_k", "license",
    )  # fmt: skip
    settings = key_values((key, generator.get(key)) for key in fields)
    prompts = section["prompt_ids"]
    if prompts:
        prompt_table = table(
            ["shard set", "generator/prompt id", "rows"],
            ([p["set"], f"`{p['prompt']}`", p["rows"]] for p in prompts),
        )
    elif card["status"] == "planned":
        prompt_table = "Prompt ids: not run."
    else:
        prompt_table = "Prompt ids: none found in the shard sets of the run folder."
    return _blocks(settings, "Rows per prompt template (its content hash):", prompt_table)


def _teacher_mining(card: Mapping[str, Any]) -> str:
    section = card["teacher_mining"]
    teacher, mining = section["teacher"], section["mining"]
    parts = []
    if teacher is None or mining is None:
        parts.append("Configured teacher and rule: unknown (no blend).")
    else:
        parts.append(
            key_values(
                [
                    ("teacher.model", teacher["model"]),
                    ("teacher.pooling", teacher["pooling"]),
                    ("teacher.query_instruction", teacher["query_instruction"]),
                    ("teacher.max_length", teacher["max_length"]),
                    ("teacher.dtype", teacher["dtype"]),
                    ("index", mining["index"]),
                    ("index.ivf_nlist", mining["ivf_nlist"]),
                    ("mining.rule", mining["rule"]),
                    ("mining.num_negatives", mining["num_negatives"]),
                    ("mining.rank_window", f"{mining['range_min']}-{mining['range_max']}"),
                    ("mining.sampling", mining["sampling"]),
                    ("mining.on_too_few", mining["on_too_few"]),
                ]
            )
        )
        parts.append(
            "The rule `percpos:P` keeps a candidate only if its score is below P times the "
            "positive's (NV-Retriever's TopK-PercPos, arXiv 2407.15831); every labelled positive "
            "of the query is excluded."
        )
    observed = [("teacher", k, n) for k, n in section["teachers_in_shards"].items()]
    observed += [("rule", k, n) for k, n in section["rules_in_shards"].items()]
    if observed:
        parts.append(_blocks("Recorded on the rows:", table(["column", "value", "rows"], observed)))
    return _blocks(*parts)


def _summary_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    columns = ("count", "mean", "min", "p05", "p50", "p95", "max")
    return [[name, *(summary.get(c) for c in columns)] for name, summary in summaries.items()]


SUMMARY_HEADERS = ["", "count", "mean", "min", "p5", "median", "p95", "max"]


def _scores(card: Mapping[str, Any]) -> str:
    figures = card["figures"]
    if figures is None:
        return "Not run: no scores."
    scores = figures["scores"]
    if scores is None:
        return f"None: a `{figures['kind']}` table carries no teacher scores."
    return _blocks(
        table(SUMMARY_HEADERS, _summary_rows(scores)),
        _image(card, "positive_scores", "positive scores"),
        _image(card, "negative_scores", "negative scores"),
        _image(card, "margin", "margin between positive and hardest negative"),
    )


def _negatives_per_row(card: Mapping[str, Any]) -> str:
    figures = card["figures"]
    if figures is None:
        return "Not run."
    total = figures["num_rows"]
    rows = [[k, n, _share(n, total)] for k, n in figures["negatives_per_row"].items()]
    return table(["negatives", "rows", "share"], rows)


def _lengths(card: Mapping[str, Any]) -> str:
    figures = card["figures"]
    if figures is None:
        return "Not run."
    return _blocks(
        table(SUMMARY_HEADERS, _summary_rows(figures["lengths"])),
        _image(card, "lengths", "text lengths"),
    )


def _composition(card: Mapping[str, Any]) -> str:
    figures = card["figures"]
    if figures is None:
        return "Not run."
    rows_by = figures["rows"]
    total = figures["num_rows"]
    by_type = [
        [stage, task_type, n, _share(n, total)]
        for stage, parts in rows_by["by_stage_task_type"].items()
        for task_type, n in parts.items()
    ]
    by_source = [
        [stage, source, n, _share(n, total)]
        for stage, parts in rows_by["by_stage_source"].items()
        for source, n in parts.items()
    ]
    return _blocks(
        table(["stage", "task type", "rows", "share"], by_type),
        table(["stage", "source", "rows", "share"], by_source),
        _image(card, "composition", "rows per stage and task type"),
    )


COLLISION_TEXT = {
    "stage1_rows": "stage-1 rows checked",
    "rows_sharing_positive": "rows whose positive is also another row's positive",
    "distinct_shared_positives": "distinct positive texts shared by several rows",
    "rows_duplicating_query": "rows whose query is also another row's query",
    "distinct_duplicated_queries": "distinct query texts on several rows",
    "rows_duplicating_pair": "rows repeating another row's (query, positive)",
    "rows_positive_is_a_negative": "rows whose positive is a negative on some row",
}


def _collisions(card: Mapping[str, Any]) -> str:
    figures = card["figures"]
    if figures is None:
        return "Not run."
    collisions = figures["collisions"]
    total = collisions["stage1_rows"]
    rows = [
        [COLLISION_TEXT.get(key, key), n, "" if key == "stage1_rows" else _share(n, total)]
        for key, n in collisions.items()
    ]
    return _blocks(
        "In stage 1 every other row's positive and negatives in a batch act as negatives for "
        "a row. Rows that share a positive, or repeat a query with another positive, turn "
        "into false negatives there; texts are compared exactly, without the instruction.",
        table(["", "rows", "share of stage 1"], rows),
    )


def _labels(card: Mapping[str, Any]) -> str:
    figures = card["figures"]
    if figures is None:
        return "Not run."
    if not figures["labels"]:
        return "No classification or clustering rows carry a label."
    blocks = []
    for task, labels in figures["labels"].items():
        total = sum(labels.values())
        rows = [[label, n, _share(n, total)] for label, n in labels.items()]
        blocks.append(
            _blocks(f"**{task}** ({total:,} rows)", table(["label", "rows", "share"], rows))
        )
    return _blocks(*blocks)


def _decontamination(card: Mapping[str, Any]) -> str:
    section = card["decontamination"]
    status, configured = section["status"], section["configured"]
    parts = []
    if configured and configured["eval_sets"]:
        parts.append(
            _blocks(
                f"Eval sets named in the blend (exact: normalised-text hash; near: word "
                f"{configured['ngram']}-gram overlap of at least {configured['overlap_threshold']} "
                f"of the shorter text; flagged rows are "
                f"{'dropped' if configured['drop'] else 'kept and counted'}):",
                table(
                    ["eval set", "kind", "path", "split"],
                    (
                        [
                            e["name"],
                            e["kind"],
                            e["path"],
                            e["split"] if e["kind"] == "beir" else None,
                        ]
                        for e in configured["eval_sets"]
                    ),
                ),
            )
        )
    if status == "unknown":
        parts.append("Unknown: no blend, and no decontamination report was found.")
    elif status == "not configured" and card["status"] == "planned":
        parts.append("The blend names no evaluation sets: a run of it would not be decontaminated.")
    elif status == "not configured":
        parts.append("Not decontaminated: the blend names no evaluation sets.")
    elif status == "configured, no report":
        parts.append(
            "**Unknown whether these rows are clean**: the blend names evaluation sets but no "
            "decontamination report was found in the run folder."
        )
    for report in section["reports"]:
        parts.append(_decontamination_report(report))
    if card["status"] == "planned" and configured and configured["eval_sets"]:
        parts.append("Not run: no rows checked yet.")
    return _blocks(*parts)


def _decontamination_report(report: Mapping[str, Any]) -> str:
    eval_sets = report.get("eval_sets", {})
    sets_table = table(
        ["eval set", "kind", "queries", "documents", "texts indexed"],
        (
            [name, info.get("kind"), info.get("num_queries"), info.get("num_documents"),
             info.get("num_texts")]
            for name, info in eval_sets.items()
        ),
    )  # fmt: skip
    flagged_rows = [
        [source, eval_set, c.get("rows"), c.get("exact"), c.get("near"), c.get("query"),
         c.get("positive")]
        for source, per_set in report.get("flagged", {}).items()
        for eval_set, c in per_set.items()
    ]  # fmt: skip
    flagged = (
        table(
            ["source", "eval set", "rows flagged", "exact", "near", "via query", "via positive"],
            flagged_rows,
        )
        if flagged_rows
        else "No training row matched an evaluation text."
    )
    totals = report.get("flagged_rows", {})
    action = "dropped" if report.get("drop") else "kept (the blend says not to drop)"
    summary = ", ".join(f"{source}: {c.get('rows', 0):,}" for source, c in totals.items())
    return _blocks(
        f"Report `{report['report']}`: rows flagged per source ({action}): {summary or 'none'}.",
        sets_table,
        flagged,
    )


RATE_HEADERS = ["", "judged", "positive", "negative", "unsure", "false-negative rate", "95% CI"]


def _rate_rows(groups: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for name, g in groups.items():
        rate, ci = g["false_negative_rate"], g["ci95"]
        shown_rate = "-" if rate is None else f"{100 * rate:.1f}%"
        shown_ci = "-" if ci is None else f"{100 * ci[0]:.1f}%-{100 * ci[1]:.1f}%"
        rows.append(
            [name, g["judged"], g["positive"], g["negative"], g["unsure"], shown_rate, shown_ci]
        )
    return rows


def _false_negatives(card: Mapping[str, Any]) -> str:
    section = card.get("false_negatives")
    if not section:
        return (
            "No judge ran on this set (a blend's `judge:` section, or `embedcurate judge "
            "RUN_DIR`), so how many of its negatives are unlabelled positives is unknown."
        )
    audit = section["audit"]
    parts = [
        key_values(
            [
                ("mode", section["mode"]),
                ("judge", section["judge"]),
                ("rows judged", audit.get("rows_judged")),
                ("mining rule", section.get("mining_rule")),
                ("agreement with the rule", audit.get("agreement_with_rule")),
                ("unsure answers by reason", audit.get("unsure_reasons")),
                ("negatives removed by reason", section.get("negatives_removed")),
                ("negatives refilled", section.get("negatives_refilled")),
                ("rows relabelled", section.get("rows_relabelled")),
            ]
        ),
        "The rate counts, among the negatives as mined (the ones the trainer would see) that the "
        "judge decided, those it judged relevant to the query; unsure answers (failed calls, "
        "unparseable answers, an exhausted budget) are left out of the rate and counted. The "
        "interval is Wilson's score interval.",
    ]
    if audit.get("overall"):
        groups = {"all": audit["overall"]}
        groups.update({f"source {k}": v for k, v in audit.get("by_source", {}).items()})
        groups.update({f"rank {k}": v for k, v in audit.get("by_rank", {}).items()})
        parts.append(table(RATE_HEADERS, _rate_rows(groups)))
    if audit.get("rule_vs_judge"):
        parts.append(
            _blocks(
                "The mining rule (re-applied to each judged negative's teacher score) against "
                "the judge:",
                table(["rule / judge", "negatives"], list(audit["rule_vs_judge"].items())),
            )
        )
    near = section.get("near_duplicates")
    if near:
        rows = [
            [name, near[name]["texts"], near[name]["near_duplicates"]]
            for name in ("queries", "positives")
            if near.get(name)
        ]
        parts.append(
            _blocks(
                f"Near-duplicates across the set (MinHash, Jaccard >= {near['threshold']} over "
                f"{near['shingle_words']}-word shingles; exact copies are in the collision "
                "section):",
                table(["texts", "count", "near-copies of an earlier text"], rows),
            )
        )
    parts.append(_image(card, "judge_scores", "judge score against teacher rank"))
    return _blocks(*parts)


def _lineage(card: Mapping[str, Any]) -> str:
    lineage = card["lineage"]
    keys = (
        "run_id", "config_hash", "blend_hash", "blend_matches_manifest", "blend_from",
        "code_version", "card_code_version", "seeds", "blend_seed", "created_at",
        "schema_fingerprint", "schema_version", "content_hash",
    )  # fmt: skip
    parts = [key_values((key, _lineage_value(lineage.get(key))) for key in keys if key in lineage)]
    dataset = card.get("dataset")
    if dataset:
        parts.append(
            table(
                ["shard", "rows", "sha256"],
                ([f["file"], f["rows"], f"`{f['sha256']}`"] for f in dataset["files"]),
            )
        )
    upstream = lineage.get("upstream") or []
    if upstream:
        parts.append(
            _blocks(
                "Shard sets upstream in the run folder:",
                table(
                    ["set", "table", "rows", "shards", "config hash", "content hash"],
                    (
                        [u["path"], u.get("kind"), u.get("num_rows"), u.get("num_shards"),
                         (u.get("config_hash") or "")[:16], (u.get("content_hash") or "")[:16]]
                        for u in upstream
                    ),
                ),
            )
        )  # fmt: skip
    return _blocks(*parts)


def _lineage_value(value: Any) -> Any:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return value


def _samples(card: Mapping[str, Any]) -> str:
    if not card["samples"]:
        return "Not run: no rows." if card["status"] == "planned" else "No rows."
    blocks = []
    for index, sample in enumerate(card["samples"], start=1):
        rows = [[f"`{key}`", value] for key, value in sample.items() if value is not None]
        blocks.append(_blocks(f"**Sample {index}**", table(["column", "value"], rows)))
    return _blocks(*blocks)


def _unknowns(card: Mapping[str, Any]) -> str:
    if not card["unknowns"]:
        return "Nothing: every figure above comes from the shards and the stage reports."
    return "\n".join(f"- {note}" for note in card["unknowns"])


SECTIONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "title": _title,
    "intro": _intro,
    "sources": _sources,
    "stage_counts": _stage_counts,
    "drop_reasons": _drop_reasons,
    "generator": _generator,
    "teacher_mining": _teacher_mining,
    "scores": _scores,
    "negatives_per_row": _negatives_per_row,
    "lengths": _lengths,
    "composition": _composition,
    "collisions": _collisions,
    "labels": _labels,
    "decontamination": _decontamination,
    "false_negatives": _false_negatives,
    "lineage": _lineage,
    "samples": _samples,
    "unknowns": _unknowns,
}


def yaml_header(card: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(card["header"]), sort_keys=False, allow_unicode=True, width=100)


def render_markdown(card: Mapping[str, Any], template: str | None = None) -> str:
    """README.md text for a card: YAML header, then the template's sections."""
    origin = "template"
    if template is None:
        template, origin = template_text()
    values = {name: render(card) for name, render in SECTIONS.items()}
    values["yaml_header"] = yaml_header(card)
    return render_template(template, values, origin=origin).rstrip() + "\n"


# --- HTML -----------------------------------------------------------------------------------

FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
IMAGE_SRC = re.compile(r'src="(plots/[A-Za-z0-9_.\-]+\.png)"')
STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
img { max-width: 100%; }
pre { background: #f5f5f5; padding: 0.5rem; overflow-x: auto; }
code { background: #f5f5f5; }
"""


def render_html(card_dir: str | Path) -> str:
    """A standalone HTML page of the card in `card_dir`, its plots inlined as base64 PNGs."""
    from markdown_it import MarkdownIt

    card_dir = Path(card_dir)
    text = (card_dir / "README.md").read_text(encoding="utf-8")
    match = FRONT_MATTER.match(text)
    header, body = (match.group(1), text[match.end() :]) if match else ("", text)
    # html=False: texts from the data are escaped, never passed through as markup.
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    content = IMAGE_SRC.sub(lambda m: _inline_png(card_dir, m.group(1)), markdown.render(body))
    title_match = re.search(r"^# (.+)$", body, re.MULTILINE)
    title = html.escape(title_match.group(1) if title_match else "data card")
    metadata = (
        f"<details><summary>Dataset-card metadata (YAML)</summary><pre>{html.escape(header)}"
        "</pre></details>"
        if header
        else ""
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n{metadata}\n{content}</body></html>\n"
    )
    return scrub_text(page)


def _inline_png(card_dir: Path, relative: str) -> str:
    path = card_dir / relative
    if not path.is_file():
        return f'src="{relative}"'
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'src="data:image/png;base64,{encoded}"'
