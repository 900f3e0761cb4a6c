"""Positive-aware hard-negative mining (NV-Retriever, arXiv 2407.15831).

`stage` is the mining stage (`run_mine`); `rules` holds the pure selection rules; `teacher`
loads the scoring model (torch, lazily); `index` is the only FAISS import; `embed_cache`
keeps embeddings keyed by teacher and text; `encode_plan` decides which groups of corpus texts
the teacher encodes (the same for every runner) and `shard_encode` runs its parts on Dask or
Ray workers; `calibration` prints what each rule would drop.
"""
