"""A local GGUF is converted once into a plain folder that is checked before it is kept.

The real GGUF path (the packaged Gemma) runs in the README test of training on it; here a tiny
saved decoder stands in for what transformers reads out of a GGUF.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from embedcurate.model.gguf_folder import Loaded, check_copy, convert_into, folder_for


def load_folder(folder: Path) -> Callable[[], Loaded]:
    def load() -> Loaded:
        config = AutoConfig.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, config=config, dtype=torch.float32)
        return config, model, AutoTokenizer.from_pretrained(folder)

    return load


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_converted_folder_loads_the_same_weights_config_and_tokenizer(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    source = tiny_backbone("gemma3")
    final = tmp_path / "models" / "converted" / "tiny"
    convert_into(load_folder(source), final)

    config, model, tokenizer = load_folder(source)()
    copy = AutoModel.from_pretrained(final, dtype=torch.float32, use_safetensors=True).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(copy[name], tensor), name
    assert AutoConfig.from_pretrained(final).sliding_window == config.sliding_window
    text = "Query: what makes bread rise"
    assert AutoTokenizer.from_pretrained(final)(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert not list(final.glob("*.bin")), "weights are kept as safetensors only"
    assert leftovers(final.parent) == []


def test_a_copy_that_differs_is_refused_naming_what_differs(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    config, model, tokenizer = load_folder(tiny_backbone("gemma3"))()
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    check_copy(saved, config, model.state_dict(), tokenizer)  # the faithful copy passes

    weights = dict(model.state_dict())
    changed = next(iter(weights))
    weights[changed] = weights[changed] + 1e-3
    other_config = type(config).from_dict({**config.to_dict(), "sliding_window": 8})
    lowercasing = AutoTokenizer.from_pretrained(saved, do_lower_case=False)
    with pytest.raises(RuntimeError) as refused:
        check_copy(saved, other_config, weights, lowercasing)
    message = str(refused.value)
    assert f"weight {changed} differs" in message
    assert "config sliding_window: 8 != 16" in message
    assert "tokenizer ids differ" in message


def test_a_conversion_that_fails_leaves_no_folder_and_no_staging(
    tiny_backbone: Callable[[str], Path], tmp_path: Path
) -> None:
    load = load_folder(tiny_backbone("gemma3"))
    final = tmp_path / "converted" / "tiny"

    def load_then_fail() -> Loaded:
        config, model, _ = load()
        return config, model, "not a tokenizer"  # type: ignore[return-value]

    with pytest.raises(AttributeError):
        convert_into(load_then_fail, final)
    assert not final.exists()
    assert leftovers(final.parent) == []

    convert_into(load, final)  # the next run converts
    first = sorted(path.stat().st_mtime_ns for path in final.iterdir())
    convert_into(load, final)  # a second converter (another process) keeps the first folder
    assert sorted(path.stat().st_mtime_ns for path in final.iterdir()) == first
    assert leftovers(final.parent) == []


def test_the_folder_follows_the_file_a_changed_gguf_converts_again(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF one")
    first = folder_for(gguf, tmp_path / "models")
    assert first == folder_for(gguf, tmp_path / "models")
    assert first.parent == tmp_path / "models" / "converted"
    assert first.name.startswith("model-")
    os.utime(gguf, ns=(1, 1))
    assert folder_for(gguf, tmp_path / "models") != first
