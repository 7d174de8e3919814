"""The hub browser: search, repo files, remote headers, fit badges, serving repos, tokens,
errors and offline mode, all against the local fake hub (no request leaves the machine)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.core.runtime import import_llama_first

import_llama_first()

import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402

from app.core import hub as hubmod  # noqa: E402
from app.core.chat.settings import LoadPlan  # noqa: E402
from app.core.downloads import download_gguf  # noqa: E402
from app.core.hub import (  # noqa: E402
    TOKEN_SAVED,
    FoundBy,
    HubSort,
    TokenRejectedError,
    best_file,
    detect_serving_format,
    file_facts,
    find_serving_repos,
    forget_token,
    hub_status,
    local_path,
    rank_files,
    repo_files,
    save_token,
    search_models,
    serving_command,
    token_status,
)
from quant.errors import HubError  # noqa: E402
from quant.gguf.types import LlamaFileType  # noqa: E402
from quant.hardware.profile import HardwareProfile  # noqa: E402
from quant.plan.advisor import Fit, OptionSource, Task, recommend  # noqa: E402
from quant.plan.formats import GpuFormat  # noqa: E402
from tests.fakehub import FakeHub, VirtualFile, serve_fake_hub, sha256  # noqa: E402
from tests.test_facts_gguf import arch_kv, llama_like, n_elements, write_gguf  # noqa: E402

GIB = 1024**3
REPO = "acme/Big-8B-GGUF"

LAPTOP: dict[str, Any] = {
    "cpu": {"brand": "Intel Core i7-1260P", "arch": "x86_64", "physical_cores": 4,
            "logical_cores": 16, "features": ["avx2", "fma", "f16c"]},
    "memory": {"total_bytes": 16 * GIB, "available_bytes": 12 * GIB},
    "measured_bandwidth_gbps": 45.0,
}  # fmt: skip
RTX4090: dict[str, Any] = {
    "cpu": {"brand": "AMD Ryzen 9 7950X", "arch": "x86_64", "physical_cores": 16,
            "logical_cores": 32, "features": ["avx2", "fma", "avx512f"]},
    "memory": {"total_bytes": 64 * GIB, "available_bytes": 51 * GIB},
    "gpus": [{"vendor": "nvidia", "name": "NVIDIA GeForce RTX 4090",
              "memory_total_bytes": 24 * GIB, "memory_free_bytes": 23 * GIB,
              "compute_capability": "8.9", "memory_bandwidth_gbps": 1008.0}],
    "backends": ["cpu", "cuda"],
    "measured_bandwidth_gbps": 60.0,
}  # fmt: skip


def big_specs() -> list[Any]:
    """Tensors shaped like an 8B Llama (a small vocabulary keeps the header small)."""
    return llama_like(n_layers=32, hidden=4096, ff=14336, vocab=512)


def big_kv() -> dict[str, Any]:
    kv = arch_kv("llama", 32)
    kv.update({
        "llama.embedding_length": 4096,
        "llama.feed_forward_length": 14336,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.context_length": 8192,
        "general.license": "llama3.1",
    })  # fmt: skip
    return kv


@pytest.fixture(scope="module")
def big_header(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The real header of an 8B-shaped Q4_K_M GGUF (its tensor data is never served)."""
    folder = tmp_path_factory.mktemp("big")
    (path,) = write_gguf(
        folder / "Big-Q4_K_M.gguf", "llama", big_kv(), big_specs(), with_data=False
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def split_headers(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The headers of an 8B-shaped model split into two GGUF files by gguf-py."""
    folder = tmp_path_factory.mktemp("split")
    specs = big_specs()
    paths = write_gguf(
        folder / "Big-Q8_0.gguf",
        "llama",
        big_kv(),
        specs,
        split_max_tensors=len(specs) // 2 + 1,
        with_data=False,
    )
    assert [p.name for p in paths] == [
        "Big-Q8_0-00001-of-00002.gguf",
        "Big-Q8_0-00002-of-00002.gguf",
    ]
    return [p.read_bytes() for p in paths]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve_fake_hub(monkeypatch, tmp_path / "hf-cache") as fake:
        yield fake


def big_repo(hub: FakeHub, header: bytes, split: list[bytes] | None = None) -> None:
    """An 8B GGUF repo: Q4_K_M, a split Q8_0, a split F16 missing a part, an unnamed mix."""
    q8 = split or [b"GGUF" + bytes(60), b"GGUF" + bytes(60)]
    hub.repos[REPO] = {
        "Big-Q4_K_M.gguf": VirtualFile(header, 4_920_000_000),
        "Big-Q8_0-00001-of-00002.gguf": VirtualFile(q8[0], 4_300_000_000),
        "Big-Q8_0-00002-of-00002.gguf": VirtualFile(q8[1], 4_230_000_000),
        "F16/Big-F16-00001-of-00003.gguf": VirtualFile(b"GGUF", 5_400_000_000),
        "F16/Big-F16-00003-of-00003.gguf": VirtualFile(b"GGUF", 5_300_000_000),
        "Big-UD-Q4_K_XL.gguf": VirtualFile(b"GGUF", 5_000_000_000),
        "mmproj-Big-f16.gguf": VirtualFile(b"GGUF", 600_000_000),
        "README.md": b"# big",
        "config.json": b"{}",
    }
    hub.info[REPO] = {
        "cardData": {"license": "llama3.1", "base_model": "acme/Big-8B"},
        "tags": ["gguf", "base_model:quantized:acme/Big-8B"],
        "downloads": 1234,
    }


# --------------------------------------------------------------------------- search


def seed_search(hub: FakeHub) -> None:
    hub.info.update({
        "acme/Llama-8B-GGUF": {"tags": ["gguf", "base_model:quantized:meta/Llama-8B"],
                               "downloads": 500, "likes": 5,
                               "lastModified": "2024-05-01T10:00:00.000Z",
                               "library_name": "gguf", "pipeline_tag": "text-generation"},
        "bart/Llama-8B-Instruct-GGUF": {"tags": ["gguf"], "downloads": 100, "likes": 50,
                                        "lastModified": "2025-01-02T10:00:00.000Z",
                                        "gated": "manual"},
        "meta/Llama-8B": {"tags": ["safetensors"], "downloads": 9000, "likes": 900,
                          "lastModified": "2023-01-01T00:00:00.000Z"},
        "zed/Mistral-7B-GGUF": {"tags": ["gguf"], "downloads": 7000, "likes": 70},
    })  # fmt: skip


def test_search_filters_sorts_and_limits(hub: FakeHub) -> None:
    seed_search(hub)
    found = search_models("llama")
    assert [m.repo_id for m in found] == ["acme/Llama-8B-GGUF", "bart/Llama-8B-Instruct-GGUF"]
    first, second = found
    assert (first.downloads, first.likes, first.library) == (500, 5, "gguf")
    assert first.last_modified == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert first.base_model == "meta/Llama-8B" and first.has_gguf and not first.gated
    assert first.pipeline_tag == "text-generation"
    assert second.gated and second.base_model is None
    query = hub.searches()[-1].query
    assert query["search"] == ["llama"] and query["filter"] == ["gguf"]
    assert query["sort"] == ["downloads"] and query["limit"] == ["30"]
    assert {"downloads", "likes", "lastModified", "gated"} <= set(query["expand"])

    by_likes = search_models("llama", sort="likes")
    assert by_likes[0].repo_id == "bart/Llama-8B-Instruct-GGUF"
    assert [m.repo_id for m in search_models("LLAMA", sort=HubSort.RECENT)] == [
        "bart/Llama-8B-Instruct-GGUF",
        "acme/Llama-8B-GGUF",
    ]
    assert hub.searches()[-1].query["sort"] == ["lastModified"]
    every = search_models("llama", gguf_only=False)
    assert every[0].repo_id == "meta/Llama-8B"
    assert "filter" not in hub.searches()[-1].query
    assert [m.repo_id for m in search_models("", limit=1)] == ["zed/Mistral-7B-GGUF"]
    assert search_models("no-such-model") == []
    assert search_models("llama")[0].to_dict()["last_modified"] == "2024-05-01T10:00:00+00:00"


def test_search_follows_the_hubs_pages(hub: FakeHub) -> None:
    seed_search(hub)
    hub.page_size = 1
    found = search_models("", gguf_only=False, limit=3)
    assert [m.repo_id for m in found] == [
        "meta/Llama-8B",
        "zed/Mistral-7B-GGUF",
        "acme/Llama-8B-GGUF",
    ]
    assert len(hub.searches()) == 3  # stops once it has enough, never fetches page 4


def test_bad_search_input_is_a_sentence(hub: FakeHub) -> None:
    with pytest.raises(HubError, match="cannot sort search results by 'stars'; choose downloads"):
        search_models("x", sort="stars")
    with pytest.raises(HubError, match="a search lists 1 to 100 models, not 0"):
        search_models("x", limit=0)
    assert hub.requests == []


# --------------------------------------------------------------------------- repo files


def test_repo_files_groups_split_parts_and_projectors(hub: FakeHub, big_header: bytes) -> None:
    big_repo(hub, big_header)
    repo = repo_files(REPO)
    assert [f.filename for f in repo.files] == [
        "Big-Q4_K_M.gguf",
        "Big-UD-Q4_K_XL.gguf",
        "Big-Q8_0-00001-of-00002.gguf",
        "F16/Big-F16-00001-of-00003.gguf",  # the parts it has: 10.7 GB
    ]
    q4, ud, q8, f16 = repo.files
    assert (q4.quant_type, q4.size_bytes, q4.is_split) == ("Q4_K_M", 4_920_000_000, False)
    assert q4.sha256 == sha256(hub.repos[REPO]["Big-Q4_K_M.gguf"])
    assert (q8.quant_type, q8.size_bytes, q8.is_split, q8.complete) == (
        "Q8_0", 8_530_000_000, True, True,
    )  # fmt: skip
    assert [p.filename for p in q8.parts] == [
        "Big-Q8_0-00001-of-00002.gguf",
        "Big-Q8_0-00002-of-00002.gguf",
    ]
    assert [p.sha256 for p in q8.parts] == [sha256(hub.repos[REPO][p.filename]) for p in q8.parts]
    assert f16.missing_parts == ("F16/Big-F16-00002-of-00003.gguf",) and not f16.complete
    assert (ud.quant_type, ud.label) == (None, "UD-Q4_K_XL")
    assert [p.filename for p in repo.projectors] == ["mmproj-Big-f16.gguf"]
    assert repo.projectors[0].is_projector
    assert list(repo.by_quant_type()) == ["Q4_K_M", "UD-Q4_K_XL", "Q8_0", "F16"]
    # The advisor sees one file per complete model; incomplete ones are not offered.
    assert [(r.filename, r.size_bytes, r.file_type) for r in repo.remote_files()] == [
        ("Big-Q4_K_M.gguf", 4_920_000_000, "Q4_K_M"),
        ("Big-UD-Q4_K_XL.gguf", 5_000_000_000, None),
        ("Big-Q8_0-00001-of-00002.gguf", 8_530_000_000, "Q8_0"),
    ]
    assert (repo.license, repo.base_model, repo.gated, repo.downloads) == (
        "llama3.1", "acme/Big-8B", False, 1234,
    )  # fmt: skip
    assert repo.file("Big-Q8_0-00002-of-00002.gguf") is q8  # any part names the model
    assert repo.file("Big-F16-00003-of-00003.gguf") is f16  # a bare name in a folder
    assert repo.file("nope.gguf") is None
    d = repo.to_dict()
    assert d["files"][2]["parts"][1]["size_bytes"] == 4_230_000_000
    assert d["projectors"][0]["is_projector"]


def test_unknown_repo_and_bad_ids(hub: FakeHub) -> None:
    with pytest.raises(HubError, match="acme/nope: no such model on the Hugging Face hub"):
        repo_files("acme/nope")
    with pytest.raises(HubError, match="'not a repo' is not a hub repo id"):
        repo_files("not a repo")


# --------------------------------------------------------------------------- remote facts


def _ranges(hub: FakeHub, suffix: str) -> list[tuple[int, int]]:
    out = []
    for _method, _path, wanted in hub.downloads(suffix):
        assert wanted is not None, "a GGUF was fetched without a byte range"
        start, end = wanted.removeprefix("bytes=").split("-")
        out.append((int(start), int(end)))
    return out


def test_file_facts_reads_only_the_header_by_ranges(hub: FakeHub, big_header: bytes) -> None:
    big_repo(hub, big_header)
    repo = repo_files(REPO)
    facts = file_facts(REPO, "Big-Q4_K_M.gguf", repo=repo)
    assert facts.name == REPO and facts.architecture == "llama"
    assert facts.parameters == n_elements(big_specs())
    assert (facts.n_layers, facts.n_kv_heads, facts.context_length) == (32, 8, 8192)
    assert facts.file_type == "Q4_K_M" and facts.license == "llama3.1"
    assert facts.file_size_bytes == 4_920_000_000
    assert [r.filename for r in facts.remote_files] == [r.filename for r in repo.remote_files()]
    ranges = _ranges(hub, "Big-Q4_K_M.gguf")
    fetched = sum(end - start + 1 for start, end in ranges)
    assert ranges and fetched <= 4 * 1024 * 1024  # a few MiB of a 4.9 GB file
    assert not hub.downloads("Big-Q8_0-00001-of-00002.gguf")


def test_file_facts_of_a_split_model_reads_every_parts_header(
    hub: FakeHub, big_header: bytes, split_headers: list[bytes]
) -> None:
    big_repo(hub, big_header, split_headers)
    facts = file_facts(REPO, "Big-Q8_0-00002-of-00002.gguf")  # any part names the model
    assert facts.parameters == n_elements(big_specs())
    assert facts.file_size_bytes == 8_530_000_000
    for part in ("Big-Q8_0-00001-of-00002.gguf", "Big-Q8_0-00002-of-00002.gguf"):
        assert _ranges(hub, part), f"no header read from {part}"
    with pytest.raises(HubError, match=r"split model with parts missing .*Big-F16-00002-of-00003"):
        file_facts(REPO, "F16/Big-F16-00001-of-00003.gguf")
    with pytest.raises(HubError, match=f"{REPO}: no GGUF file named nope.gguf; its model files"):
        file_facts(REPO, "nope.gguf")


# --------------------------------------------------------------------------- fit badges


def test_fit_badges_on_a_laptop_and_on_a_gpu(hub: FakeHub, big_header: bytes) -> None:
    big_repo(hub, big_header)
    repo = repo_files(REPO)
    facts = file_facts(REPO, "Big-Q4_K_M.gguf", repo=repo)

    laptop = HardwareProfile.from_dict(LAPTOP)
    ranked = rank_files(repo, facts, laptop)
    by_name = {r.file.name: r for r in ranked}
    q4, q8 = by_name["Big-Q4_K_M.gguf"], by_name["Big-Q8_0-00001-of-00002.gguf"]
    assert q4.fit is Fit.CPU and q4.recommended and best_file(ranked) is q4
    assert q8.fit is Fit.CPU and not q8.recommended
    assert q4.tokens_per_s is not None and q8.tokens_per_s is not None
    assert q4.tokens_per_s > q8.tokens_per_s  # fewer bytes per token on the same memory
    # What llama.cpp does not name, and a model with parts missing, get no badge, last.
    assert [r.file.name for r in ranked[-2:]] == [
        "Big-UD-Q4_K_XL.gguf",
        "Big-F16-00001-of-00003.gguf",
    ]
    assert all(r.option is None and r.fit_label == "unknown" for r in ranked[-2:])
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    # The badges are the advisor's own, not a second model of memory or speed.
    # (Planned as the Chat page loads a model, as the Advisor page plans it.)
    rec = recommend(facts, laptop, include_gpu_formats=False, options=LoadPlan().runtime_options())
    advisor = next(
        o
        for o in rec.options
        if o.source is OptionSource.HUB_FILE and o.filename == q4.file.filename
    )
    assert q4.option is not None
    assert (q4.option.fit, q4.option.ram_bytes) == (advisor.fit, advisor.ram_bytes)

    gpu = HardwareProfile.from_dict(RTX4090)
    ranked = rank_files(repo, facts, gpu, task=Task.CODE)
    best = best_file(ranked)
    assert best is not None and best.file.quant_type == "Q8_0"  # code keeps 8 bits
    assert best.fit is Fit.GPU and best.option is not None and best.option.vram_bytes > 8 * GIB
    assert best.to_dict()["fit_label"] == "fits on GPU"

    tiny = HardwareProfile.from_dict(
        {**LAPTOP, "memory": {"total_bytes": 4 * GIB, "available_bytes": 3 * GIB}}
    )
    ranked = rank_files(repo, facts, tiny)
    assert best_file(ranked) is None
    assert {r.fit for r in ranked if r.option} == {Fit.TOO_LARGE}


# --------------------------------------------------------------------------- gated repos


def test_gated_repo_without_token_then_with_one(
    hub: FakeHub, big_header: bytes, tmp_path: Path
) -> None:
    small = write_gguf(tmp_path / "Tiny-Q8_0.gguf", "llama", arch_kv("llama"), llama_like())[0]
    hub.repos["meta/Gated-GGUF"] = {
        "Big-Q4_K_M.gguf": VirtualFile(big_header, 4_920_000_000),
        "Tiny-Q8_0.gguf": small.read_bytes(),
    }
    hub.info["meta/Gated-GGUF"] = {"gated": "manual"}
    hub.tokens = {"hf_alice": "alice", "hf_bob": "bob"}
    hub.granted = {"meta/Gated-GGUF": {"alice"}}

    repo = repo_files("meta/Gated-GGUF")  # the listing is public, the files are not
    assert repo.gated
    no_token = (
        r"meta/Gated-GGUF is a gated model: request access on its page "
        rf"\({hub.url}/meta/Gated-GGUF\), then add an access token with "
        r"'quantdesk pull --token TOKEN' or in the Hub tab"
    )
    with pytest.raises(HubError, match=no_token + ", and try again"):
        file_facts("meta/Gated-GGUF", "Big-Q4_K_M.gguf", repo=repo)
    with pytest.raises(HubError, match=no_token + ", and download again"):
        download_gguf("meta/Gated-GGUF", "Tiny-Q8_0.gguf")
    assert token_status() is None

    with pytest.raises(TokenRejectedError, match="did not accept this access token"):
        save_token("hf_mallory")
    assert not Path(huggingface_hub.constants.HF_TOKEN_PATH).exists()
    assert save_token(" hf_bob\n") == "bob"
    with pytest.raises(HubError, match="the saved access token has no access to it yet"):
        download_gguf("meta/Gated-GGUF", "Tiny-Q8_0.gguf")

    assert save_token("hf_alice") == "alice"
    token_file = Path(huggingface_hub.constants.HF_TOKEN_PATH)
    assert token_file.read_text() == "hf_alice"
    assert token_file.is_relative_to(tmp_path)  # huggingface_hub's file, under the test's HF_HOME
    assert token_status() == "alice"
    facts = file_facts("meta/Gated-GGUF", "Big-Q4_K_M.gguf", repo=repo)
    assert facts.parameters == n_elements(big_specs())
    entry = download_gguf("meta/Gated-GGUF", "Tiny-Q8_0.gguf")
    assert entry.path.read_bytes() == small.read_bytes()
    assert all(c.token == "hf_alice" for c in hub.calls[-2:])

    assert forget_token() is True
    assert not token_file.exists() and token_status() is None
    assert forget_token() is False


def test_token_status_without_the_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.tokens = {"hf_alice": "alice"}
    save_token("hf_alice")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert token_status() == TOKEN_SAVED
    with pytest.raises(HubError, match="cannot check the access token in offline mode"):
        save_token("hf_alice")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.tokens = {}  # revoked on the hub
    assert token_status() == "token not accepted by the hub"
    with pytest.raises(HubError, match="the access token is empty"):
        save_token("  ")


# --------------------------------------------------------------------------- failures


def dead_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point huggingface_hub at a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", dead)
    template = dead + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    return dead


def test_server_errors_are_sentences_without_retries(hub: FakeHub, big_header: bytes) -> None:
    big_repo(hub, big_header)
    hub.errors["/api/models"] = 500
    started = time.monotonic()
    with pytest.raises(
        HubError, match=r"server error \(HTTP 500\) when asked to search .* minutes"
    ):
        search_models("big")
    assert time.monotonic() - started < 2.0 and len(hub.searches()) == 1
    with pytest.raises(
        HubError, match=f"{REPO}: the hub answered HTTP 500 for the repo's file list"
    ):
        repo_files(REPO)
    hub.errors = {"/api/models": 429}
    with pytest.raises(HubError, match=r"limiting requests \(HTTP 429\)"):
        search_models("big")
    hub.errors = {"/api/models": 503}
    status = hub_status()
    assert not status.online and status.reason is not None and "HTTP 503" in status.reason


def test_an_unreachable_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = dead_endpoint(monkeypatch)
    started = time.monotonic()
    with pytest.raises(HubError, match="cannot reach the Hugging Face hub to search for models"):
        search_models("llama")
    with pytest.raises(HubError, match=f"{REPO}: cannot reach the Hugging Face hub"):
        repo_files(REPO)
    with pytest.raises(HubError, match="cannot reach the Hugging Face hub"):
        find_serving_repos("acme/Base-8B")
    status = hub_status()
    assert time.monotonic() - started < 3.0
    assert not status.online and status.endpoint == dead
    assert status.reason is not None and status.reason.startswith(
        f"Cannot reach the Hugging Face hub at {dead}"
    )


def test_offline_mode_answers_at_once_without_requests(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, big_header: bytes
) -> None:
    big_repo(hub, big_header)
    repo = repo_files(REPO)
    hub.requests.clear()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    status = hub_status()
    assert not status.online and status.reason is not None and "HF_HUB_OFFLINE" in status.reason
    offline = r"in offline mode \(HF_HUB_OFFLINE is set\); the models on this computer still work"
    with pytest.raises(HubError, match="cannot search for models " + offline):
        search_models("llama")
    with pytest.raises(HubError, match=f"cannot look up {REPO} on the Hugging Face hub " + offline):
        repo_files(REPO)
    with pytest.raises(HubError, match=r"cannot read Big-Q4_K_M\.gguf on the Hugging Face hub"):
        file_facts(REPO, "Big-Q4_K_M.gguf", repo=repo)
    with pytest.raises(HubError, match="offline mode"):
        find_serving_repos("acme/Big-8B")
    assert time.monotonic() - started < 0.5
    assert hub.requests == []


def test_a_silent_hub_is_reported_offline_within_the_time_limit(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that accepts connections and never answers, like a dead proxy.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
        started = time.monotonic()
        status = hub_status(timeout_s=0.5)
        took = time.monotonic() - started
    assert not status.online and took < 1.5
    assert status.reason is not None and "did not answer within 0.5 s" in status.reason


def test_an_answering_hub_is_online(hub: FakeHub) -> None:
    status = hub_status()
    assert status.online and status.reason is None and status.endpoint == hub.url
    assert status.to_dict()["online"] is True


# --------------------------------------------------------------------------- serving repos


def st_files(*sizes: int) -> dict[str, bytes | VirtualFile]:
    files: dict[str, bytes | VirtualFile] = {"config.json": b"{}", "README.md": b"# q"}
    for i, size in enumerate(sizes, start=1):
        files[f"model-{i:05d}-of-{len(sizes):05d}.safetensors"] = VirtualFile(b"{}", size)
    return files


def seed_serving(hub: FakeHub) -> None:
    base = "acme/Base-8B"
    quantized = [f"base_model:quantized:{base}", f"base_model:{base}"]
    hub.repos.update(
        {
            base: st_files(5_000_000_000, 5_000_000_000, 6_000_000_000),
            "neural/Base-8B-FP8-dynamic": st_files(5_000_000_000, 3_700_000_000),
            "quant/Base-8B-AWQ": st_files(5_700_000_000),
            "quant/Base-8B-GPTQ-Int4": st_files(5_800_000_000),
            "nv/Base-8B-NVFP4": st_files(5_600_000_000),
            "other/Base-8B-W8A8": st_files(9_000_000_000),
            "fan/Base-8B-abliterated-GPTQ": st_files(5_800_000_000),
            "acme/Base-8B-GGUF": {"Base-8B-Q4_K_M.gguf": b"GGUF"},
            "fan/Base-8B-bnb-4bit": st_files(5_500_000_000),
            "hq/Meta-Base-8B-AWQ-INT4": st_files(5_750_000_000),
        }
    )
    hub.info.update({
        base: {"downloads": 100_000},
        "neural/Base-8B-FP8-dynamic": {
            "tags": ["compressed-tensors", *quantized], "downloads": 5000,
            "config": {"quantization_config": {"quant_method": "compressed-tensors",
                                               "format": "float-quantized"}}},
        "quant/Base-8B-AWQ": {"downloads": 3000, "config": {"quantization_config": {
            "quant_method": "awq", "bits": 4}}},
        "quant/Base-8B-GPTQ-Int4": {"tags": quantized, "downloads": 4000, "gated": "auto",
                                    "config": {"quantization_config": {"quant_method": "gptq"}}},
        "nv/Base-8B-NVFP4": {"tags": quantized, "downloads": 1000, "config": {
            "quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4"}}},
        "other/Base-8B-W8A8": {"downloads": 200},
        "fan/Base-8B-abliterated-GPTQ": {"downloads": 99_000},
        "acme/Base-8B-GGUF": {"tags": quantized, "downloads": 50_000},
        "fan/Base-8B-bnb-4bit": {"tags": quantized, "downloads": 800, "config": {
            "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}},
        "hq/Meta-Base-8B-AWQ-INT4": {"downloads": 2500},
    })  # fmt: skip


def test_find_serving_repos_by_metadata_and_by_name(hub: FakeHub) -> None:
    seed_serving(hub)
    found = find_serving_repos("acme/Base-8B", ctx=8192)
    assert [(r.repo_id, r.format, r.found_by) for r in found] == [
        ("neural/Base-8B-FP8-dynamic", GpuFormat.FP8, FoundBy.BASE_MODEL),
        ("quant/Base-8B-GPTQ-Int4", GpuFormat.GPTQ, FoundBy.BASE_MODEL),
        ("quant/Base-8B-AWQ", GpuFormat.AWQ, FoundBy.NAME),
        ("hq/Meta-Base-8B-AWQ-INT4", GpuFormat.AWQ, FoundBy.NAME),
        ("nv/Base-8B-NVFP4", GpuFormat.NVFP4, FoundBy.BASE_MODEL),
        ("other/Base-8B-W8A8", GpuFormat.INT8, FoundBy.NAME),
    ]  # a fine-tune, a GGUF repo and a bitsandbytes repo are not serving formats of it
    fp8, gptq, awq, _, nvfp4, _ = found
    assert fp8.size_bytes == 8_700_000_000 and awq.size_bytes == 5_700_000_000
    assert fp8.quant_method == "compressed-tensors" and awq.quant_method == "awq"
    assert fp8.command == "vllm serve neural/Base-8B-FP8-dynamic --max-model-len 8192"
    assert awq.command == "vllm serve quant/Base-8B-AWQ --max-model-len 8192"
    assert gptq.gated and any("Gated" in n for n in gptq.notes)
    assert any("compute capability 8.9" in n for n in fp8.notes)
    assert any("compute capability 10.0" in n for n in nvfp4.notes)
    assert fp8.to_dict()["format"] == "FP8" and fp8.to_dict()["found_by"] == "base_model"

    only = find_serving_repos("acme/Base-8B", GpuFormat.FP8)
    assert [r.repo_id for r in only] == ["neural/Base-8B-FP8-dynamic"]
    assert only[0].command == "vllm serve neural/Base-8B-FP8-dynamic"
    assert [r.repo_id for r in find_serving_repos("acme/Base-8B", limit=2)] == [
        "neural/Base-8B-FP8-dynamic",
        "quant/Base-8B-GPTQ-Int4",
    ]
    assert find_serving_repos("acme/Nothing-1B") == []


@pytest.mark.parametrize(
    ("repo_id", "tags", "config", "expected"),
    [
        ("a/M-FP8", (), None, GpuFormat.FP8),
        ("a/M", ("fp8",), None, GpuFormat.FP8),
        ("a/M-NVFP4", (), None, GpuFormat.NVFP4),
        ("a/M-FP4", (), None, GpuFormat.NVFP4),
        ("a/M-GPTQ-Int4", (), None, GpuFormat.GPTQ),
        ("a/M-w4a16", (), None, GpuFormat.GPTQ),
        ("a/M-AWQ", (), None, GpuFormat.AWQ),
        ("a/M-W8A8", (), None, GpuFormat.INT8),
        ("a/M", (), None, None),
        ("a/M", (), {"quantization_config": {"quant_method": "fp8"}}, GpuFormat.FP8),
        ("a/M", (), {"quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8"}},
         GpuFormat.FP8),
        ("a/M", (), {"quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"g": {"weights": {"num_bits": 4, "type": "float"}}}}},
         GpuFormat.NVFP4),
        ("a/M", (), {"quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int"}}}}},
         GpuFormat.INT8),
        # The config wins over a name that says otherwise.
        ("a/M-GPTQ", (), {"quantization_config": {"quant_method": "awq"}}, GpuFormat.AWQ),
    ],
)  # fmt: skip
def test_detect_serving_format(
    repo_id: str, tags: tuple[str, ...], config: dict[str, Any] | None, expected: GpuFormat | None
) -> None:
    assert detect_serving_format(repo_id, tags, config)[0] is expected


def test_serving_command_quotes_and_bf16() -> None:
    assert serving_command("a/M", GpuFormat.BF16, ctx=4096) == (
        "vllm serve a/M --dtype bfloat16 --max-model-len 4096"
    )
    assert serving_command("a/M x", GpuFormat.AWQ) == "vllm serve 'a/M x'"
    assert serving_command("a/M", GpuFormat.FP8, ctx=8192, tensor_parallel=4) == (
        "vllm serve a/M --max-model-len 8192 --tensor-parallel-size 4"
    )


# --------------------------------------------------------------------------- local copies


def test_local_path_after_a_download(hub: FakeHub, tmp_path: Path) -> None:
    parts = write_gguf(
        tmp_path / "Tiny-Q8_0.gguf", "llama", arch_kv("llama"), llama_like(), split_max_tensors=10
    )
    hub.repos["acme/tiny-GGUF"] = {p.name: p.read_bytes() for p in parts}
    repo = repo_files("acme/tiny-GGUF")
    (model,) = repo.files
    assert model.is_split and len(model.parts) == len(parts) > 1
    assert local_path(repo, model) is None
    entry = download_gguf("acme/tiny-GGUF", model.parts[-1].filename)
    assert local_path(repo, model) == entry.path
    assert entry.path.name == model.filename
    assert entry.source.value == "huggingface"
    assert model.quant_type == LlamaFileType.Q8_0.name


def test_the_module_exports_what_the_hub_tab_uses() -> None:
    assert set(hubmod.__all__) >= {
        "search_models", "repo_files", "file_facts", "rank_files", "find_serving_repos",
        "hub_status", "save_token", "forget_token", "token_status",
    }  # fmt: skip
