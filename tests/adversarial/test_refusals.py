"""What the attack suite found, each held in place by a direct test of the product.

A vocabulary llama.cpp cannot spell with, an index naming files outside its folder,
token ids far past the embedding, names of 10,000 characters or with escape
sequences, a hub answer that cannot be parsed, and a disk that refuses a write: each
is one sentence the user can act on, never a crash, a traceback or raw control
characters on the terminal.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from quant.errors import DiskWriteError, ModelFormatError, UnsupportedArchitectureError
from tests.convert import checkpoints as ckpt
from tests.ggufs import write_tiny_gguf

ESC = "\x1b"


def _byte_tokens_gguf(tmp_path: Path, old: bytes, new: bytes) -> Path:
    """The tiny GGUF with byte tokens, its token ``old`` spelled ``new``."""
    from tests.adversarial import gguf_doc as g

    path = write_tiny_gguf(tmp_path / "bytes.gguf", byte_tokens=True)
    doc = g.parse(path)
    tokens = doc.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, g.Arr) and old in tokens.items
    items = tuple(new if t == old else t for t in tokens.items)
    doc = doc.with_kv("tokenizer.ggml.tokens", g.ARRAY, g.Arr(tokens.item_type, items))
    return doc.image().write(path)


# --------------------------------------------------------------------------- vocabulary


def test_a_byte_token_llama_cpp_cannot_find_is_refused_before_any_load(tmp_path: Path) -> None:
    from app.core.chat.probe import known_verdict
    from app.core.chat.session import ChatLoadError, ChatSession, LoadFailure
    from app.core.chat.settings import LoadPlan
    from quant.gguf.header import read_gguf_header
    from quant.gguf.validate import validate_for_llama

    path = _byte_tokens_gguf(tmp_path, b"<0x70>", b"<0xZZ>")
    with pytest.raises(ModelFormatError, match=r"none for byte 0x70 \('p'\)"):
        validate_for_llama(read_gguf_header(path), vocabulary=True)
    with pytest.raises(ChatLoadError) as info:
        ChatSession.load(path, LoadPlan(n_ctx=256), check_fit=False)
    assert info.value.failure is LoadFailure.CORRUPT
    assert "byte 0x70" in str(info.value) and "\n" not in str(info.value)
    # Refused by the header check: no test load in a child process was needed.
    assert known_verdict(path) is None


def test_a_byte_spelled_by_its_own_character_needs_no_byte_token(tmp_path: Path) -> None:
    from quant.gguf.header import read_gguf_header
    from quant.gguf.validate import validate_for_llama

    # llama.cpp falls back to the one-character token "p" when <0x70> is missing.
    path = _byte_tokens_gguf(tmp_path, b"<0x70>", b"p")
    validate_for_llama(read_gguf_header(path), vocabulary=True)


# --------------------------------------------------------------------------- model folders


def _sharded_llama(tmp_path: Path) -> Path:
    tok = ckpt.train_bpe("gpt2", vocab_size=300)
    return ckpt.build_llama(tmp_path / "model", tok, shards=2, num_hidden_layers=1).path


def _point_index_at(folder: Path, shard: str) -> None:
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = shard
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("outside", ["../victim.safetensors", "ABSOLUTE", "/dev/zero"])
def test_an_index_naming_a_file_outside_the_folder_is_refused(tmp_path: Path, outside: str) -> None:
    from quant.convert.errors import CheckpointError
    from quant.convert.safetensors_io import open_checkpoint

    folder = _sharded_llama(tmp_path)
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(next(folder.glob("*.safetensors")).read_bytes())
    _point_index_at(folder, str(victim) if outside == "ABSOLUTE" else outside)
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(folder)
    message = str(info.value)
    assert "is not a file inside model" in message and "nothing was read" in message


@pytest.mark.parametrize("outside", ["../victim.safetensors", "ABSOLUTE", "/dev/zero"])
def test_inspect_reads_no_shard_an_index_names_outside_the_folder(
    tmp_path: Path, outside: str
) -> None:
    """The facts reader follows the same rule as the converter (one index rule)."""
    from quant.facts import inspect_model

    folder = _sharded_llama(tmp_path)
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(next(folder.glob("*.safetensors")).read_bytes())
    _point_index_at(folder, str(victim) if outside == "ABSOLUTE" else outside)
    with pytest.raises(ModelFormatError, match=r"is not a file inside model.*nothing was read"):
        inspect_model(folder)


def test_shards_linked_into_a_blob_store_still_convert(tmp_path: Path) -> None:
    """The Hugging Face cache links each snapshot file to a blob outside the snapshot."""
    from quant.convert.safetensors_io import open_checkpoint

    folder = _sharded_llama(tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for shard in folder.glob("*.safetensors"):
        blob = blobs / shard.name
        shard.rename(blob)
        shard.symlink_to(os.path.relpath(blob, folder))
    assert len(open_checkpoint(folder).shards) == 2


def test_a_token_id_far_past_the_embedding_is_refused_at_once(tmp_path: Path) -> None:
    from quant.convert.errors import TokenizerError
    from quant.convert.tokenizer import load_vocab

    folder = ckpt.build_llama(tmp_path / "model", ckpt.train_bpe("gpt2", vocab_size=300)).path
    tj = json.loads((folder / "tokenizer.json").read_text())
    tj["added_tokens"].append({"id": 10**9, "content": "<huge>", "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    config = json.loads((folder / "config.json").read_text())
    with pytest.raises(TokenizerError, match="token id 1,000,000,000"):
        load_vocab(folder, config, int(config["vocab_size"]))


@pytest.mark.parametrize("name", ["X" * 10_000, f"LlamaForCausalLM{ESC}]0;x\a"])
def test_an_unsupported_architecture_is_named_escaped_and_short(name: str) -> None:
    from quant.convert.architectures import family_spec

    with pytest.raises(UnsupportedArchitectureError) as info:
        family_spec({"architectures": [name, name, name, name, name, name]})
    message = str(info.value)
    assert ESC not in message and "\a" not in message and len(message) < 1000
    assert "and 2 more" in message


# --------------------------------------------------------------------------- terminal text


def test_the_inspect_summary_cuts_names_the_file_sets(tmp_path: Path) -> None:
    from app.core.commands.inspect import write_summary
    from quant.facts import inspect_model

    facts = inspect_model(write_tiny_gguf(tmp_path / "tiny.gguf"))
    long = replace(
        facts, architecture="a" * 10_000, license="l" * 10_000, tokenizer_model="t" * 10_000
    )
    out = io.StringIO()
    write_summary(long, out)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) < 200
    shown = next(line.split() for line in lines if line.split()[0] == "architecture")
    assert shown[1].startswith("aaa") and "…" in shown[1] and len(shown[1]) <= 120


@pytest.mark.parametrize(
    "name",
    ["evil\x1b]0;pwned\x07.gguf", "nl\nINJECTED.gguf", "\u202efdp.gguf", "x" * 250 + ".gguf"],
)
def test_a_broken_files_name_is_escaped_in_the_librarys_sentence(tmp_path: Path, name: str) -> None:
    from app.core.library import read_entry

    path = tmp_path / name
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelFormatError) as info:
        read_entry(path)
    message = str(info.value)
    assert "not a GGUF file" in message
    assert not any(ch in message for ch in "\x1b\x07\n\u202e")
    assert len(message) < 400


def test_a_hub_answer_that_cannot_be_parsed_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub

    from app.core import hub
    from quant.errors import HubError

    def model_info(self: Any, repo_id: str, **kwargs: Any) -> Any:
        raise ValueError(f"Cannot parse '{ESC}[2J2024' as a datetime.")

    monkeypatch.setattr(hub, "is_offline", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    with pytest.raises(HubError) as info:
        hub.repo_files("acme/tiny-GGUF")
    message = str(info.value)
    assert message.startswith("acme/tiny-GGUF: the hub's answer about the repo cannot be read")
    assert ESC not in message


# --------------------------------------------------------------------------- full disk


def test_a_refused_write_is_one_sentence_naming_its_folder() -> None:
    from quant.errors import refused_write

    full = refused_write(OSError(errno.ENOSPC, "No space left on device", "/data/out/.m.partial"))
    assert isinstance(full, DiskWriteError)
    assert str(full) == (
        "cannot write in /data/out: the disk is full; free some space or choose another "
        "folder, then try again"
    )
    read_only = refused_write(OSError(errno.EROFS, "Read-only file system", "/mnt/x.gguf"))
    assert read_only is not None and "read-only" in str(read_only)
    assert refused_write(OSError(errno.EIO, "I/O error")) is None
    assert refused_write(ValueError("no")) is None


def test_a_short_write_on_a_full_disk_is_said_as_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy and gguf-py say "18432 requested and 14304 written", with no errno."""
    import shutil

    from quant import atomic
    from quant.errors import refused_write

    real = shutil.disk_usage
    monkeypatch.setattr(
        atomic.shutil,
        "disk_usage",
        lambda p: real(p)._replace(free=4096),  # a full disk
    )
    out = tmp_path / "out" / "f16.gguf"
    with pytest.raises(OSError) as info, atomic.atomic_output(out) as tmp:
        tmp.write_bytes(b"part")
        raise OSError("18432 requested and 14304 written")
    assert info.value.errno == errno.ENOSPC
    said = refused_write(info.value)
    assert said is not None and str(said).startswith(f"cannot write in {out.parent}:")
    assert list(out.parent.iterdir()) == []  # the partial file is gone


def test_a_full_disk_while_writing_a_text_file_names_the_file(tmp_path: Path) -> None:
    from quant import atomic

    target = tmp_path / "settings.json"
    with pytest.raises(OSError) as info, atomic.atomic_write(target) as fh:
        fh.write("{}")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename is not None
    assert Path(info.value.filename).parent == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_the_cli_says_a_full_disk_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.core import cli
    from app.core.commands import inspect as inspect_command

    def full(args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/home/u/.quantdesk/data/x.tmp")

    monkeypatch.setattr(inspect_command, "run", full)
    assert cli.run_cli(["inspect", "anything"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "quantdesk: error: cannot write in /home/u/.quantdesk/data: the disk is full; free "
        "some space or choose another folder, then try again"
    ]


def test_a_job_says_a_full_disk_as_its_error_line() -> None:
    from quant.protocol import EXIT_FAILED, JsonLines

    stream = io.StringIO()
    lines = JsonLines(stream)

    def job() -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", "/out/.q.gguf.partial")

    assert lines.run(job) == EXIT_FAILED
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert last == {
        "error": "cannot write in /out: the disk is full; free some space or choose another "
        "folder, then try again",
        "kind": "DiskWriteError",
    }


def test_a_log_file_on_a_full_disk_is_given_up_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.core.logging_setup import _PrivateRotatingFileHandler

    handler = _PrivateRotatingFileHandler(tmp_path / "q.log", maxBytes=1000, backupCount=1)

    class FullStream(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    handler.stream.close()
    handler.stream = FullStream()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    handler.emit(record)
    handler.emit(record)
    assert capsys.readouterr().err == ""
    handler.stream = io.StringIO()  # closing must not touch the refused stream
    handler.close()
