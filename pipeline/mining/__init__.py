"""Positive-aware hard-negative mining (NV-Retriever, arXiv 2407.15831).

`stage` is the mining stage (`run_mine`); `rules` holds the pure selection rules; `teacher`
loads the scoring model (torch, lazily); `index` is the only FAISS import; `embed_cache`
keeps embeddings keyed by teacher and text; `calibration` prints what each rule would drop.
"""
