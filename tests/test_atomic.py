"""Files the app writes appear whole or not at all, with an ordinary file mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant.atomic import atomic_output, atomic_write_text


def test_new_file_is_readable_by_others_like_a_plain_write(tmp_path: Path) -> None:
    # In a folder others may enter (pytest's tmp_path is private, and a private
    # folder's new files are private: tests/adversarial/test_private_files.py).
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    target = shared / "report.json"
    atomic_write_text(target, "{}")
    plain = shared / "plain.json"
    plain.write_text("{}")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_rewrite_keeps_the_existing_mode(tmp_path: Path) -> None:
    target = tmp_path / "settings.json"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o600


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "settings.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]
