"""``quantdesk models`` on a home folder laid out like each app's, on simulated machines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from app.core.cli import run_cli
from app.core.library import ModelLibrary, StarterModel
from app.core.settings import Settings
from quant.hardware.profile import (
    CpuInfo,
    GpuInfo,
    HardwareProfile,
    MemoryInfo,
    RuntimeInfo,
)
from tests.test_library_scan import EXPECTED, Tree, build_tree

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the apps' folders are laid out as on Linux"
)

GIB = 1024**3


def machine(*, available_gib: float = 11.0, gpu_gib: int | None = None) -> HardwareProfile:
    gpus: tuple[GpuInfo, ...] = ()
    if gpu_gib is not None:
        gpus = (
            GpuInfo(
                "nvidia",
                "NVIDIA H100 80GB HBM3",
                gpu_gib * GIB,
                (gpu_gib - 1) * GIB,
                "9.0",
                3352.0,
            ),
        )
    return HardwareProfile(
        cpu=CpuInfo("Testium 9000", "x86_64", 6, 12, ("avx2", "fma", "f16c"), "/proc/cpuinfo"),
        memory=MemoryInfo(16 * GIB, int(available_gib * GIB), 2 * GIB, 2 * GIB),
        gpus=gpus,
        backends=("cpu", "cuda") if gpus else ("cpu",),
        runtime=RuntimeInfo("0.3.36", bool(gpus), ("CPU",), ""),
        measured_bandwidth_gbps=40.0,
        source="probe",
    )


def saved(tmp_path: Path, name: str, profile: HardwareProfile) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(profile.to_dict()))
    return str(path)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, starter_model: Path) -> Tree:
    """A user's home with models in every app's folder, and the starter model verified."""
    home = tmp_path / "home"
    xdg = tmp_path / "xdg-data"
    hf = tmp_path / "hf-cache"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "OLLAMA_MODELS", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    tree = build_tree(Tree.linux_home(home, xdg, hf))
    st = starter_model.stat()
    ModelLibrary(Settings()).remember_starter(
        StarterModel(starter_model, st.st_size, st.st_mtime_ns)
    )
    return tree


def listing(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert run_cli(["models", "--json", *args]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def named(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names)), names
    return {r["name"]: r for r in rows}


def test_json_lists_every_model_once_with_facts_and_fit(
    home: Tree, tmp_path: Path, capsys: pytest.CaptureFixture[str], starter_model: Path
) -> None:
    laptop = saved(tmp_path, "laptop", machine())
    rows = listing(capsys, "--add-folder", str(home.folder), "--hardware", laptop)
    assert {(r["source"], r["name"]) for r in rows} == EXPECTED | {
        ("starter", "gemma-3-270m-q4_k_m")
    }
    r = named(rows)
    starter = r["gemma-3-270m-q4_k_m"]
    assert rows[0] is starter
    assert starter["path"] == str(starter_model)
    assert (starter["architecture"], starter["parameters"], starter["file_type"]) == (
        "gemma3",
        268_098_176,
        "Q4_K_M",
    )
    assert starter["context_length"] == 32768
    assert (starter["fit"], starter["fit_label"]) == ("cpu", "CPU only")
    assert starter["predicted_vram_bytes"] == 0
    assert starter["predicted_ram_bytes"] > starter["size_bytes"]
    assert starter["predicted_tokens_per_s"] > 1
    assert starter["broken"] is None and starter["also_at"] == []

    mine = r["mine"]
    assert (mine["source"], mine["source_label"]) == ("folder", "Folder")
    assert mine["has_chat_template"] is True and mine["fit"] == "cpu"
    assert r["lms-model.Q4_K_M"]["also_at"] == [str(home.files["g4a_link"])]
    hf = r["org/Tiny-GGUF · tiny.Q8_0"]
    assert hf["sha256"] == home.files["hf_blob"].name
    assert hf["also_at"] == [str(home.files["ollama_copy"])]
    broken = {n: x["broken"] for n, x in r.items() if x["broken"]}
    assert set(broken) == {"not-a-model", "truncated", "empty", "dangling", "gone:latest"}
    assert all(r[n]["fit"] is None and r[n]["architecture"] is None for n in broken)
    assert "ollama pull gone:latest" in broken["gone:latest"]


@pytest.mark.parametrize(
    "case",
    [
        (machine(gpu_gib=80), "gpu", "fits on GPU"),
        (machine(available_gib=0.2), "too-large", "too large"),
    ],
    ids=["h100", "no-free-memory"],
)
def test_the_starter_models_badge_follows_the_machine(
    home: Tree,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[HardwareProfile, str, str],
) -> None:
    profile, fit, label = case
    rows = named(listing(capsys, "--hardware", saved(tmp_path, "box", profile)))
    starter = rows["gemma-3-270m-q4_k_m"]
    assert (starter["fit"], starter["fit_label"]) == (fit, label)
    if fit == "gpu":
        assert starter["predicted_vram_bytes"] > 0
    assert run_cli(["models", "--hardware", saved(tmp_path, "box", profile)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("gemma-3-270m"))
    assert label in line


def test_table_shows_columns_badges_broken_reasons_and_copies(
    home: Tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ModelLibrary(Settings()).add_folder(home.folder)
    ModelLibrary(Settings()).mark_used(home.files["mine"])
    assert run_cli(["models", "--hardware", saved(tmp_path, "laptop", machine())]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME", "SOURCE", "ARCH", "PARAMS", "TYPE", "CTX", "SIZE", "FIT", "LAST", "USED", "PATH"
    ]  # fmt: skip
    starter = next(x for x in lines if x.startswith("gemma-3-270m-q4_k_m"))
    for cell in ("Starter", "gemma3", "268.1M", "Q4_K_M", "32K", "241.4 MiB", "CPU only"):
        assert cell in starter
    mine = next(x for x in lines if x.startswith("mine "))
    assert "Folder" in mine and "llama" in mine and "just now" in mine
    i = next(i for i, x in enumerate(lines) if x.startswith("not-a-model "))
    assert "BROKEN" in lines[i]
    assert lines[i + 1].startswith("    broken: not-a-model.gguf: not a GGUF file")
    j = next(i for i, x in enumerate(lines) if x.startswith("lms-model.Q4_K_M "))
    assert lines[j + 1] == f"    also at: {home.files['g4a_link']}"
    assert lines[-1].startswith("(5 broken files listed with the reason;")


def test_hash_merges_copies_and_later_listings_keep_them_merged(
    home: Tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ModelLibrary(Settings()).add_folder(home.folder)
    laptop = saved(tmp_path, "laptop", machine())
    before = named(listing(capsys, "--hardware", laptop))
    assert "lms-model.Q4_K_M" in before and before["copy-of-lms"]["also_at"] == []
    after = named(listing(capsys, "--hash", "--hardware", laptop))
    assert "lms-model.Q4_K_M" not in after
    copy = after["copy-of-lms"]
    assert set(copy["also_at"]) == {str(home.files["lms"]), str(home.files["g4a_link"])}
    assert copy["sha256"] and copy["fit"] == "cpu"
    assert set(named(listing(capsys, "--hardware", laptop))) == set(after)


def test_folders_are_added_and_removed(
    home: Tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    build = home.files["mine"].read_bytes()
    (extra / "solo.gguf").write_bytes(build)
    rows = named(listing(capsys, "--add-folder", str(extra), "--no-fit"))
    assert rows["solo"]["source"] == "folder"
    assert ModelLibrary(Settings()).folders() == [extra]
    rows = named(listing(capsys, "--remove-folder", str(extra), "--no-fit"))
    assert "solo" not in rows
    assert run_cli(["models", "--remove-folder", str(extra), "--no-fit"]) == 0
    assert "was not one of the library's folders" in capsys.readouterr().err
    assert run_cli(["models", "--add-folder", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder; check the path" in capsys.readouterr().err


def test_fit_uses_the_probe_unless_told_not_to(
    home: Tree, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import quant.hardware.probe as probe_mod

    calls: list[int] = []

    def fake_probe(*args: Any, **kwargs: Any) -> HardwareProfile:
        calls.append(1)
        return machine(gpu_gib=80)

    monkeypatch.setattr(probe_mod, "probe", fake_probe)
    rows = named(listing(capsys))
    assert calls == [1]
    assert rows["gemma-3-270m-q4_k_m"]["fit"] == "gpu"
    rows = named(listing(capsys, "--no-fit"))
    assert calls == [1]  # not probed again
    assert all(r["fit"] is None and r["fit_label"] == "" for r in rows.values())
    assert rows["gemma-3-270m-q4_k_m"]["architecture"] == "gemma3"


def test_file_names_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.ggufs import write_tiny_gguf

    folder = tmp_path / "models"
    good = write_tiny_gguf(folder / "evil\x1b]0;pwned\x07.gguf", name="\x1b[2J\u202eevil")
    bad = folder / "fake\rline\x1b[2J.gguf"
    bad.write_bytes(b"not a model at all")
    args = ["models", "--add-folder", str(folder), "--no-fit", "--no-other-apps"]
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in ("\x1b", "\x07", "\r", "\u202e")), out
    assert "evil\\x1b]0;pwned\\x07" in out
    assert "broken: fake\\x0dline\\x1b[2J.gguf: not a GGUF file" in out

    assert run_cli([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {Path(r["path"]) for r in rows} >= {good, bad}
