"""The model behind each row of a recorded GPU run (benchmarks/gpu/prompt_check.py --json).

A row names its file: ``shaped.gguf`` is the starter's shape (its own header), and
``llamaNb-TYPE.gguf`` a Llama shape built from a config in ``tests/data/configs``
(``shaped_model.py config``) in llama.cpp's mix for TYPE.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from quant.facts.config_params import facts_from_config
from quant.facts.model import ModelFacts, SourceKind
from quant.gguf.types import LlamaFileType
from quant.plan.memory import PlannedTensor, plan_tensors

CONFIGS = Path(__file__).parent / "data/configs"
SHAPES = {"llama8b": "llama-3.1-8b.json", "llama1b": "llama-3.2-1b.json"}


def run_model(
    run: dict[str, Any], starter: ModelFacts
) -> tuple[ModelFacts, tuple[PlannedTensor, ...]]:
    """The facts and per-tensor plan of the model a recorded row measured."""
    m = re.match(r"^(llama\d+b)-", str(run["model"]))
    if m is None:
        return starter, plan_tensors(starter)
    config = json.loads((CONFIGS / SHAPES[m.group(1)]).read_text(encoding="utf-8"))
    facts = facts_from_config(config, source=m.group(1), kind=SourceKind.CONFIG, name=m.group(1))
    ftype = LlamaFileType[run["file_type"]]
    facts = replace(facts, file_type=ftype.name)
    return facts, plan_tensors(facts, ftype)
