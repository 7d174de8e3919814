"""User settings survive restarts, and a damaged file is kept, not overwritten."""

from __future__ import annotations

from pathlib import Path

from app.core.settings import Settings


def test_settings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    s = Settings(path)
    s.set("theme", "dark")
    s.section("chat")["temperature"] = 0.5
    s.save()
    again = Settings(path)
    assert again.get("theme") == "dark"
    assert again.section("chat") == {"temperature": 0.5}


def test_unreadable_settings_are_set_aside_and_the_app_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    damaged = b'{"theme": "dark", "library": {"added": ["/models/a.gg'
    path.write_bytes(damaged)
    s = Settings(path)
    assert s.get("theme") is None
    assert s.recovered_from is not None
    assert s.recovered_from.read_bytes() == damaged
    s.set("theme", "light")
    s.save()
    # The next save wrote a fresh file; the damaged one is still there to recover from.
    assert Settings(path).get("theme") == "light"
    assert s.recovered_from.read_bytes() == damaged
