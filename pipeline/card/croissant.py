"""`croissant.json`: Croissant (MLCommons) metadata beside a shard set, with its RAI fields.

The JSON-LD is built with `mlcroissant`, the format's reference library, so what we write is
what its loader reads: the distribution lists every data file with its sha256 (and a file set
that the record set reads them through), the record set lists the columns with their types,
`license` lists the licences of the sources, and the Responsible-AI (`rai:`) fields say only
what the blend and the stage reports record: how the rows were collected and generated, which
filters ran and how many rows each dropped, and the limits we know of.

Columns whose values are lists of objects (Tevatron's passages) have no Croissant field type
that `mlcroissant` can read from JSON Lines; they are named in the description instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedcurate.pipeline.atomic import write_bytes_atomic
from embedcurate.pipeline.blend import BlendConfig
from embedcurate.pipeline.manifest import Manifest
from embedcurate.pipeline.report import StageReport

logger = logging.getLogger(__name__)

CROISSANT_NAME = "croissant.json"
RECORD_SET = "train"
FILE_SET = "shards"
ENCODINGS = {".parquet": "application/x-parquet", ".jsonl": "application/jsonlines"}
# What we know limits every set we write, whatever the blend.
KNOWN_LIMITATIONS = (
    "Hard negatives are the documents a teacher model ranked close to the query; some may be "
    "unlabelled positives (false negatives) that no human reviewed.",
    "Each row keeps the licence of its source; the set as a whole is only as open as its most "
    "restrictive source.",
)


def _data_type(data_type: pa.DataType) -> Any | None:
    """The Croissant type of an Arrow scalar type (None when Croissant has no fitting one)."""
    import mlcroissant as mlc

    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return mlc.DataType.TEXT
    if pa.types.is_integer(data_type):
        return mlc.DataType.INTEGER
    if pa.types.is_floating(data_type):
        return mlc.DataType.FLOAT
    if pa.types.is_boolean(data_type):
        return mlc.DataType.BOOL
    return None


def _fields(schema: pa.Schema) -> tuple[list[Any], list[str]]:
    """Record-set fields for the columns Croissant can type, and the names of the others."""
    import mlcroissant as mlc

    fields, untyped = [], []
    for column in schema:
        is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
        data_type = _data_type(column.type.value_type if is_list else column.type)
        if data_type is None:
            untyped.append(column.name)
            continue
        fields.append(
            mlc.Field(
                id=f"{RECORD_SET}/{column.name}",
                name=column.name,
                data_types=[data_type],
                is_array=True if is_list else None,
                array_shape="-1" if is_list else None,
                source=mlc.Source(file_set=FILE_SET, extract=mlc.Extract(column=column.name)),
            )
        )
    return fields, untyped


def _distribution(manifest: Manifest) -> list[Any]:
    """One file object per shard (with its sha256) and the file set that holds them all."""
    import mlcroissant as mlc

    suffix = Path(manifest.shards[0].file).suffix
    encoding = ENCODINGS[suffix]
    files = [
        mlc.FileObject(
            id=entry.file,
            name=entry.file,
            content_url=entry.file,
            content_size=f"{entry.bytes} B",
            encoding_formats=[encoding],
            sha256=entry.sha256,
        )
        for entry in manifest.shards
    ]
    folder = Path(manifest.shards[0].file).parent.as_posix()
    pattern = f"train-*{suffix}" if folder == "." else f"{folder}/train-*{suffix}"
    file_set = mlc.FileSet(
        id=FILE_SET, name=FILE_SET, includes=[pattern], encoding_formats=[encoding]
    )
    return [*files, file_set]


def source_licenses(blend: BlendConfig | None, sources: Iterable[str]) -> dict[str, str]:
    """Licence per source name, from the blend (the generator's for synthetic rows)."""
    configured = {source.name: source.license for source in blend.sources} if blend else {}
    if blend and blend.generator:
        configured.setdefault("synthetic", blend.generator.license)
    return {name: configured.get(name, "unknown") for name in sorted(sources)}


def _collection(blend: BlendConfig | None, licenses: dict[str, str]) -> tuple[str, list[str]]:
    """rai:dataCollection (text) and rai:dataCollectionType (list) from the blend."""
    if blend is None:
        return (
            "Not recorded: the shard set's manifest holds no blend. Sources and licences: "
            + ", ".join(f"{name} ({lic})" for name, lic in licenses.items()),
            ["Others"],
        )
    parts = []
    for source in blend.sources:
        where = source.hub_id or (Path(source.path).name if source.path else source.kind)
        parts.append(
            f"{source.name}: {source.kind} source {where} (task {source.task or source.name}, "
            f"{source.task_type}, stage {source.stage}, licence {source.license})"
        )
    types = ["Secondary data analysis"]
    if blend.generator:
        generator = blend.generator
        parts.append(
            f"synthetic: generated by {generator.backend}:{generator.model} "
            f"(licence {generator.license}), filtered before use"
        )
        types.append("Software collection")
    text = (
        "Rows were read from existing datasets and, where the blend names a generator, "
        "written by a language model; a teacher model then mined hard negatives. "
    ) + "; ".join(parts)
    return text, types


def _preprocessing(reports: Iterable[StageReport]) -> list[str]:
    """One line per stage report: rows in, kept, and each drop reason with its count."""
    lines = []
    for report in reports:
        dropped = ", ".join(f"{reason}: {n}" for reason, n in sorted(report.dropped.items()))
        sources = ", ".join(sorted(report.sources))
        lines.append(
            f"{report.stage} ({sources}): {report.num_in} rows in, {report.num_kept} kept"
            + (f", dropped {dropped}" if dropped else ", none dropped")
        )
    return lines or ["No stage report was found beside the shards: drop counts are unknown."]


def _limitations(blend: BlendConfig | None) -> list[str]:
    limits = list(KNOWN_LIMITATIONS)
    if blend is None or blend.generator:
        limits.append(
            "Synthetic rows are filtered automatically (schema, duplicates, teacher round trip) "
            "but were not reviewed by people."
        )
    if blend is not None and not blend.decontamination:
        limits.append("No decontamination against evaluation sets was configured.")
    return limits


def build_croissant(
    manifest: Manifest,
    schema: pa.Schema,
    *,
    name: str,
    description: str,
    blend: BlendConfig | None,
    reports: Iterable[StageReport],
    licenses: dict[str, str],
) -> dict[str, Any]:
    """The Croissant JSON-LD of a shard set (as a dict), validated by mlcroissant."""
    import mlcroissant as mlc

    fields, untyped = _fields(schema)
    if untyped:
        description += (
            f" Columns {', '.join(untyped)} hold lists of objects and are not typed in the "
            "record set; read them from the files."
        )
    collection, collection_types = _collection(blend, licenses)
    metadata = mlc.Metadata(
        name=name,
        description=description,
        license=sorted(set(licenses.values())) or ["unknown"],
        version="1.0.0",
        date_published=datetime.fromisoformat(manifest.created_at) if manifest.created_at else None,
        cite_as=f"{name} (embedcurate, content hash {manifest.content_hash[:16]})",
        distribution=_distribution(manifest),
        record_sets=[mlc.RecordSet(id=RECORD_SET, name=RECORD_SET, fields=fields)],
        data_collection=collection,
        data_collection_type=collection_types,
        data_preprocessing_protocol=_preprocessing(reports),
        data_limitations=_limitations(blend),
    )
    errors = metadata.issues.errors
    if errors:
        raise ValueError(f"Croissant metadata for {name} does not validate: {sorted(errors)}")
    return metadata.to_json()


def write_croissant(shard_dir: Path, payload: dict[str, Any]) -> Path:
    path = Path(shard_dir) / CROISSANT_NAME
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
    return path
