"""The one set of rules for split-model part names and projector files."""

from __future__ import annotations

import pytest

from quant.gguf.split import (
    SplitName,
    is_first_or_whole,
    is_projector,
    parse_split_name,
    split_parts,
)


def test_a_part_name_gives_its_model_and_every_part() -> None:
    name = parse_split_name("q8/Big-Q8_0-00002-of-00003.gguf")
    assert name == SplitName("q8/Big-Q8_0", 2, 3)
    assert name.first == "q8/Big-Q8_0-00001-of-00003.gguf"
    assert split_parts("q8/Big-Q8_0-00002-of-00003.gguf") == [
        "q8/Big-Q8_0-00001-of-00003.gguf",
        "q8/Big-Q8_0-00002-of-00003.gguf",
        "q8/Big-Q8_0-00003-of-00003.gguf",
    ]
    assert split_parts("Big-Q4_K_M.gguf") == ["Big-Q4_K_M.gguf"]


@pytest.mark.parametrize(
    "filename",
    [
        "Big-00000-of-00003.gguf",  # parts count from 1
        "Big-00004-of-00003.gguf",  # beyond the count
        "Big-1-of-3.gguf",  # llama.cpp writes five digits
        "Big-00001-of-00003.safetensors",
        "Best-of-breed-Q4_K_M.gguf",
    ],
)
def test_names_that_are_not_parts(filename: str) -> None:
    assert parse_split_name(filename) is None
    assert is_first_or_whole(filename)


def test_only_the_first_part_stands_for_the_model() -> None:
    assert is_first_or_whole("Big-00001-of-00002.gguf")
    assert not is_first_or_whole("Big-00002-of-00002.gguf")


@pytest.mark.parametrize(
    ("filename", "projector"),
    [
        ("mmproj-model-f16.gguf", True),
        ("Qwen2-VL-7B-Instruct-mmproj-f16.gguf", True),
        ("gemma-3-4b.MMPROJ.Q8_0.gguf", True),
        ("mmproj/model-Q4_K_M.gguf", False),  # a folder's name says nothing
        ("model-Q4_K_M.gguf", False),
    ],
)
def test_projectors_are_told_by_their_name(filename: str, projector: bool) -> None:
    assert is_projector(filename) is projector
