"""``quantdesk search`` and ``quantdesk pull`` end to end, against the local fake hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.core.runtime import import_llama_first

import_llama_first()

import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402

from app.core.cli import run_cli  # noqa: E402
from app.core.commands import pull  # noqa: E402
from app.core.library import ModelLibrary  # noqa: E402
from quant.gguf.types import GGMLType  # noqa: E402
from quant.progress import Progress  # noqa: E402
from tests.fakehub import SHA, FakeHub, serve_fake_hub  # noqa: E402
from tests.test_facts_gguf import arch_kv, llama_like, write_gguf  # noqa: E402
from tests.test_hub import LAPTOP, seed_search  # noqa: E402

REPO = "acme/Tiny-GGUF"


def tiny_gguf(path: Path, weight_type: GGMLType) -> bytes:
    specs = [(n, s, weight_type if len(s) == 2 else t) for n, s, t in llama_like(n_layers=2)]
    (out,) = write_gguf(path, "llama", arch_kv("llama"), specs)
    return out.read_bytes()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def hub(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve_fake_hub(monkeypatch, cache) as fake:
        fake.repos[REPO] = {
            "Tiny-Q4_K_M.gguf": tiny_gguf(tmp_path / "q4.gguf", GGMLType.Q4_K),
            "Tiny-Q8_0.gguf": tiny_gguf(tmp_path / "q8.gguf", GGMLType.Q8_0),
            "Tiny-F16.gguf": tiny_gguf(tmp_path / "f16.gguf", GGMLType.F16),
            "mmproj-Tiny-f16.gguf": b"GGUF" + bytes(100),
            "README.md": b"# tiny",
        }
        yield fake


@pytest.fixture
def laptop(tmp_path: Path) -> str:
    path = tmp_path / "laptop.json"
    path.write_text(json.dumps(LAPTOP))
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = run_cli(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- search


def test_search_prints_a_table_and_json(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    seed_search(hub)
    rc, out, err = cli(capsys, "search", "llama")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["REPO", "DOWNLOADS", "LIKES", "UPDATED"]
    assert lines[1].split() == ["acme/Llama-8B-GGUF", "500", "5", "2024-05-01"]
    assert lines[2].split() == ["bart/Llama-8B-Instruct-GGUF", "(gated)", "100", "50", "2025-01-02"]
    assert "quantdesk pull REPO" in out

    rc, out, _ = cli(capsys, "search", "llama", "--sort", "likes", "--limit", "1", "--json")
    data = json.loads(out)
    assert [d["repo_id"] for d in data] == ["bart/Llama-8B-Instruct-GGUF"]
    assert data[0]["gated"] is True and data[0]["last_modified"].startswith("2025-01-02")

    rc, out, _ = cli(capsys, "search", "llama", "--all-files", "--json")
    assert json.loads(out)[0]["repo_id"] == "meta/Llama-8B"
    rc, out, _ = cli(capsys, "search", "zzz")
    assert rc == 0
    assert out.strip() == (
        "No models on the hub match 'zzz'; try fewer words, or --all-files for repos "
        "without GGUF files."
    )


def test_search_failures_are_one_sentence(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.errors["/api/models"] = 500
    rc, out, err = cli(capsys, "search", "llama")
    assert rc == 2 and out == ""
    assert err.startswith("quantdesk: error: the Hugging Face hub had a server error (HTTP 500)")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    rc, _, err = cli(capsys, "search", "llama")
    assert rc == 2 and "in offline mode (HF_HUB_OFFLINE is set)" in err
    with pytest.raises(SystemExit):
        run_cli(["search", "llama", "--limit", "0"])
    assert "0 is not between 1 and 100" in capsys.readouterr().err


# --------------------------------------------------------------------------- pull: listing


def test_pull_without_a_file_lists_files_with_fit_badges(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], laptop: str
) -> None:
    rc, out, err = cli(capsys, "pull", REPO, "--hardware", laptop)
    assert rc == 0, err
    assert out.startswith(f"{REPO}: 3 GGUF model files")
    header = next(line for line in out.splitlines() if line.startswith("FILE"))
    assert header.split() == ["FILE", "TYPE", "SIZE", "FIT", "GEN", "TOK/S", "RAM", "VRAM"]
    picked = [line for line in out.splitlines() if line.startswith("* ")]
    assert len(picked) == 2  # the marked row and the "Recommended" line
    assert "CPU only" in picked[0]
    assert "Projectors (image input, used with a model file):" in out
    assert "mmproj-Tiny-f16.gguf" in out
    assert f"quantdesk pull {REPO} --file best" in out
    assert hub.downloads(".gguf") and all(r[2] for r in hub.downloads(".gguf"))  # headers only

    rc, out, _ = cli(capsys, "pull", REPO, "--hardware", laptop, "--json")
    data = json.loads(out)
    best = data["best"]
    assert best in {"Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf", "Tiny-F16.gguf"}
    (marked,) = [f for f in data["files"] if f["recommended"]]
    assert marked["file"]["filename"] == best and marked["fit"] == "cpu"
    assert data["problem"] is None and data["repo"]["projectors"][0]["is_projector"]


def test_pull_lists_without_badges_when_the_header_cannot_be_read(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], laptop: str
) -> None:
    hub.info[REPO] = {"gated": "manual"}
    rc, out, _ = cli(capsys, "pull", REPO, "--hardware", laptop)
    assert rc == 0
    assert f"{REPO} (gated): 3 GGUF model files" in out
    assert f"No fit badges: {REPO} is a gated model: request access on its page" in out
    rc, _, err = cli(capsys, "pull", REPO, "--hardware", laptop, "--file", "best")
    assert rc == 2 and "cannot tell which file fits" in err and "--token" in err


# --------------------------------------------------------------------------- pull: download


def test_pull_best_downloads_with_a_progress_bar_into_the_library(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], laptop: str, cache: Path
) -> None:
    rc, out, _ = cli(capsys, "pull", REPO, "--hardware", laptop, "--json")
    best = json.loads(out)["best"]
    data = hub.repos[REPO][best]
    assert isinstance(data, bytes)
    hub.throttle(16 * 1024, 0.005)

    rc, out, err = cli(capsys, "pull", REPO, "--hardware", laptop, "--file", "best")
    assert rc == 0, err
    path = cache / "models--acme--Tiny-GGUF" / "snapshots" / SHA / best
    assert out.strip() == str(path)
    assert path.read_bytes() == data
    assert f"Best file for this machine: {best}" in err
    bars = [line for line in err.splitlines() if line.startswith("[")]
    assert bars[-1].startswith("[" + "#" * 24 + "] 100.0%")
    assert any(" of " in b and "/s" in b and "left" in b for b in bars)  # bytes, rate, ETA
    assert (
        f"is in the Hugging Face cache and the library; chat with it: quantdesk chat {path}" in err
    )
    assert path in [e.path for e in ModelLibrary().entries()]


def test_ctrl_c_keeps_a_resumable_part_and_the_same_command_resumes(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "Tiny-F16.gguf"
    total = len(hub.repos[REPO][name])
    hub.throttle(4 * 1024, 0.005)
    real = pull.ProgressBar.__call__

    def interrupt(self: pull.ProgressBar, p: Progress) -> None:
        real(self, p)
        if 0 < p.bytes_done < total and p.bytes_total:
            raise KeyboardInterrupt

    monkeypatch.setattr(pull.ProgressBar, "__call__", interrupt)
    rc, out, err = cli(capsys, "pull", REPO, "--file", name)
    assert rc == 130 and out == ""
    assert f"download of {name} interrupted at " in err
    assert "kept in the Hugging Face cache, so run the same command again to resume" in err
    (part,) = cache.glob("models--acme--Tiny-GGUF/blobs/*.incomplete")
    kept = part.stat().st_size
    assert 0 < kept < total

    monkeypatch.setattr(pull.ProgressBar, "__call__", real)
    hub.throttle(1024 * 1024, 0.0)
    rc, out, err = cli(capsys, "pull", REPO, "--file", name)
    assert rc == 0, err
    assert hub.downloads(name)[-1][2] == f"bytes={kept}-"
    assert Path(out.strip()).read_bytes() == hub.repos[REPO][name]


def test_pull_json_progress_lines(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.throttle(8 * 1024, 0.002)
    rc, out, _ = cli(capsys, "pull", REPO, "--file", "Tiny-Q8_0.gguf", "--json-progress")
    assert rc == 0
    events: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    progress = [e for e in events if "stage" in e]
    assert progress and all(e["stage"] == "download" for e in progress)
    assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
    result = events[-1]["result"]
    assert result["filename"] == "Tiny-Q8_0.gguf" and result["in_library"] is True
    assert Path(result["path"]).is_file()


def test_pull_a_gated_repo_with_a_token(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.info[REPO] = {"gated": "manual"}
    hub.tokens = {"hf_alice": "alice"}
    rc, _, err = cli(capsys, "pull", REPO, "--file", "Tiny-Q8_0.gguf")
    assert rc == 2
    assert f"{REPO} is a gated model: request access on its page ({hub.url}/{REPO})" in err
    assert "'quantdesk pull --token TOKEN'" in err
    rc, _, err = cli(capsys, "pull", REPO, "--file", "Tiny-Q8_0.gguf", "--token", "hf_nope")
    assert rc == 2 and "did not accept this access token" in err
    rc, out, err = cli(capsys, "pull", REPO, "--file", "Tiny-Q8_0.gguf", "--token", "hf_alice")
    assert rc == 0, err
    assert "Access token saved for alice." in err
    assert Path(out.strip()).read_bytes() == hub.repos[REPO]["Tiny-Q8_0.gguf"]


def test_pull_names_the_files_a_repo_has(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli(capsys, "pull", REPO, "--file", "Tiny-Q2_K.gguf")
    assert rc == 2
    assert (
        f"{REPO}: no GGUF model file named Tiny-Q2_K.gguf; its model files are "
        "Tiny-Q4_K_M.gguf, Tiny-Q8_0.gguf, Tiny-F16.gguf" in err
    )
    rc, _, err = cli(capsys, "pull", REPO, "--file", "mmproj-Tiny-f16.gguf")
    assert rc == 2 and "mmproj-Tiny-f16.gguf is a projector for image input, not a model" in err
    hub.repos["acme/safetensors-only"] = {"config.json": b"{}", "model.safetensors": b"x"}
    rc, _, err = cli(capsys, "pull", "acme/safetensors-only")
    assert rc == 2 and "acme/safetensors-only has no GGUF model files" in err
    assert not hub.downloads(".gguf")


def test_pull_offline_serves_a_downloaded_file_without_asking(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, _ = cli(capsys, "pull", REPO, "--file", "Tiny-Q8_0.gguf")
    assert rc == 0
    path = out.strip()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    asked = len(hub.requests)
    rc, out, _ = cli(capsys, "pull", REPO, "--file", "Tiny-Q8_0.gguf")
    assert rc == 0 and out.strip() == path and len(hub.requests) == asked
    rc, _, err = cli(capsys, "pull", REPO, "--file", "Tiny-F16.gguf")
    assert rc == 2
    assert f"{REPO}: cannot download Tiny-F16.gguf in offline mode (HF_HUB_OFFLINE is set)" in err
    rc, _, err = cli(capsys, "pull", REPO)
    assert rc == 2 and "offline mode" in err and len(hub.requests) == asked


def test_hub_names_cannot_drive_the_terminal(
    hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "evil/Llama\x1b]0;pwned\x07\u202e-GGUF"
    hub.info[hostile] = {"tags": ["gguf"], "downloads": 1, "likes": 1}
    rc, out, _ = cli(capsys, "search", "llama")
    assert rc == 0
    assert not any(c in out for c in ("\x1b", "\x07", "\u202e")), out
    assert "evil/Llama\\x1b]0;pwned\\x07\\u202e-GGUF" in out
    rc, out, _ = cli(capsys, "search", "llama", "--json")
    assert hostile in [d["repo_id"] for d in json.loads(out)]
