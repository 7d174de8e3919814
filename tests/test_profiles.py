"""Hardware profiles: probe, save, load, choose the machine to plan for, remember saved ones."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from app.core.commands.common import load_hardware
from app.core.profiles import (
    MAX_RECENT,
    load_profile,
    probe_this_machine,
    profile_for,
    profile_name,
    recent_profile_files,
    remember_profile_file,
    save_profile,
)
from app.core.settings import Settings
from quant.errors import HardwareProfileError
from quant.hardware.profile import HardwareProfile
from quant.progress import CancelToken
from tests.ui.conftest import H100, make_profile


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stands in for the hardware probe; records each call's keywords."""
    import quant.hardware.probe as probe_mod

    calls: list[dict[str, Any]] = []

    def fake(**kwargs: Any) -> HardwareProfile:
        calls.append(kwargs)
        return make_profile(brand="Probed CPU")

    monkeypatch.setattr(probe_mod, "probe", fake)
    return calls


def test_a_saved_profile_reads_back_the_same(tmp_path: Path) -> None:
    server = make_profile(brand="Big Server CPU", gpus=(H100,))
    written = save_profile(server, tmp_path / "server")
    assert written == tmp_path / "server.json"  # the extension is added
    assert not list(tmp_path.glob("*.partial"))
    again = load_profile(written)
    assert again.cpu.brand == "Big Server CPU"
    assert again.gpus[0].name == H100.name
    assert save_profile(server, tmp_path / "kept.JSON") == tmp_path / "kept.JSON"


def test_a_file_that_is_not_a_profile_says_so(tmp_path: Path) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text("this is not json")
    with pytest.raises(HardwareProfileError, match=r"notes\.json"):
        load_profile(notes)


def test_the_machine_to_plan_for(tmp_path: Path, probes: list[dict[str, Any]]) -> None:
    saved = save_profile(make_profile(brand="Laptop CPU"), tmp_path / "laptop.json")
    probed = make_profile(brand="Already probed")
    # A saved profile wins; then a probe already made; then a fresh probe.
    assert profile_for(saved, probed=probed).cpu.brand == "Laptop CPU"
    assert profile_for(None, probed=probed) is probed
    assert probes == []
    assert profile_for().cpu.brand == "Probed CPU"
    assert probes == [
        {"measure_bandwidth": True, "use_cache": True, "on_progress": None, "cancel": None}
    ]
    assert (profile_name(saved), profile_name(None)) == ("laptop.json", "this machine")


def test_a_cancelled_plan_does_not_probe(probes: list[dict[str, Any]]) -> None:
    from quant.errors import Cancelled

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        profile_for(cancel=token)
    assert probes == []


def test_refresh_measures_again(probes: list[dict[str, Any]]) -> None:
    probe_this_machine(use_cache=False)
    assert probes[0]["use_cache"] is False and probes[0]["measure_bandwidth"] is True


def test_the_cli_hardware_flag_chooses_the_same_way(
    tmp_path: Path, probes: list[dict[str, Any]]
) -> None:
    saved = save_profile(make_profile(brand="Laptop CPU"), tmp_path / "laptop.json")
    assert load_hardware(argparse.Namespace(hardware=str(saved))).cpu.brand == "Laptop CPU"
    assert load_hardware(argparse.Namespace(hardware=None)).cpu.brand == "Probed CPU"
    assert load_hardware(argparse.Namespace()).cpu.brand == "Probed CPU"
    assert len(probes) == 2


def test_saved_profiles_are_offered_most_recent_first(tmp_path: Path) -> None:
    settings = Settings()
    files = [tmp_path / f"machine-{i}.json" for i in range(MAX_RECENT + 2)]
    for path in files:
        remember_profile_file(settings, path)
    remember_profile_file(settings, files[3])  # used again: first, listed once
    recent = recent_profile_files(Settings())  # saved with the settings
    assert recent[0] == files[3]
    assert len(recent) == MAX_RECENT and len(set(recent)) == MAX_RECENT
    assert recent[1:3] == [files[-1], files[-2]]
