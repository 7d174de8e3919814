"""The advice sequence the CLI's ``recommend`` and the Advisor page share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.core.advice import advise
from app.core.cli import run_cli
from app.core.profiles import save_profile
from quant.errors import Cancelled
from quant.facts.model import ModelFacts
from quant.plan.advisor import Fit, Task
from quant.plan.memory import KvType
from quant.progress import CancelToken, Progress
from tests.ggufs import write_tiny_gguf
from tests.ui.conftest import H100, make_profile


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny-llama.gguf")


def test_advice_for_a_model_on_a_probed_machine(tiny: Path) -> None:
    reports: list[Progress] = []
    advice = advise(
        str(tiny), profile=make_profile(), task=Task.CODE, ctx=2048, on_progress=reports.append
    )
    assert advice.facts.architecture == "llama"
    assert advice.profile_name == "this machine"
    assert advice.profile.cpu.brand == "Testium 9000 Hexacore"
    rec = advice.recommendation
    assert rec.task is Task.CODE and rec.ctx == 2048
    assert rec.top is not None and rec.top.fit is Fit.CPU
    assert reports[0].message == "Reading tiny-llama.gguf…"


def test_advice_plans_the_load_the_chat_page_makes(tiny: Path) -> None:
    """Memory and speed are planned with the Chat page's default load settings (flash
    attention on, 512-token batches), so the advisor's numbers describe the chat a user
    starts from it."""
    from app.core.chat.session import estimate_fit
    from app.core.chat.settings import LoadPlan

    advice = advise(str(tiny), profile=make_profile(), ctx=2048)
    this = advice.recommendation.options[0]
    for o in advice.recommendation.options:
        assert o.memory is not None and o.memory.options == LoadPlan().runtime_options(), o.key
        assert o.memory.options.flash_attn
    fit = estimate_fit(tiny, LoadPlan(n_ctx=this.ctx), profile=advice.profile)
    assert fit.needed_bytes == this.ram_bytes  # the Chat page's fit check says the same


def test_advice_for_a_saved_machine(tiny: Path, tmp_path: Path) -> None:
    server = save_profile(make_profile(brand="Server", gpus=(H100,)), tmp_path / "server")
    advice = advise(str(tiny), profile=make_profile(), profile_path=server, kv_type=KvType.Q8_0)
    assert advice.profile_name == "server.json"
    assert advice.profile.gpus[0].name == H100.name
    assert advice.recommendation.top is not None
    assert advice.recommendation.top.fit is Fit.GPU
    assert advice.recommendation.kv_type is KvType.Q8_0


def test_a_cancelled_request_reads_nothing(tiny: Path) -> None:
    read: list[str] = []

    def inspect(source: str) -> ModelFacts:
        read.append(source)
        raise AssertionError("not reached")

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        advise(str(tiny), profile=make_profile(), inspect=inspect, cancel=token)
    assert read == []


def test_the_cli_gives_the_same_advice(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    laptop = save_profile(make_profile(), tmp_path / "laptop")
    assert run_cli(["recommend", str(tiny), "--hardware", str(laptop), "--json"]) == 0
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    advice = advise(str(tiny), profile_path=laptop)
    assert printed["top"] == json.loads(json.dumps(advice.recommendation.to_dict()))["top"]
    assert [(o["format"], o["file_type"]) for o in printed["options"]] == [
        (o.family.value, o.file_type) for o in advice.recommendation.options
    ]
