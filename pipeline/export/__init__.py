"""Exports of a train shard set in the layouts other trainers read.

One module per trainer (`sentence_transformers`, `flagembedding`, `tevatron`) says how a train
row becomes that trainer's record; `writer.run_export` streams the set through one of them into
a shard set of its own, with a manifest, a short card and Croissant metadata.
"""

from embedcurate.pipeline.export.types import ExportConfig, ExportRow, TrainerFormat
from embedcurate.pipeline.export.writer import FORMATS, run_export

__all__ = ["FORMATS", "ExportConfig", "ExportRow", "TrainerFormat", "run_export"]
