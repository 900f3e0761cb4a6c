"""Synthetic data generation the E5-Mistral way: brainstorm task definitions, then one JSON
example per (task, attribute draw), through one of three backends (embedded llama.cpp,
an OpenAI-compatible server, the vLLM offline engine), a response cache and row filters.

The stage is `pipeline.generation.stage.run_generate`. Backend libraries load lazily, each
inside its own module, so importing this package pulls none of them.
"""
