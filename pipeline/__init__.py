"""embedcurate's curation stages as plain functions over Arrow tables.

Importing this package must stay cheap: torch, transformers, faiss, vllm and openai
load only inside the one module that needs each, and only when it is called.
"""

__version__ = "0.1.0"
