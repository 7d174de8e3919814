"""The hostile hub and hostile template attacks of test_hostile_hub.py and
test_hostile_templates.py, counted in the table, plus seeded variations of them.

``hub``: a malicious mirror's commit ids, ETags, listing commit and file names (the
existing lists, then random strings built from path pieces) against a download and
a listing; nothing may change outside the HF cache, links in it stay inside, and a
refusal is one sentence. ``templates``: the existing hostile chat templates, then
random compositions of loops, growth and recursion, rendered in the sandbox (a
refusal is one ``ChatTemplateError`` sentence, a render stays within the limits), and
a model file carrying one loaded by ``quantdesk chat``.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.adversarial.assets import Assets
from tests.adversarial.gguf_doc import STRING
from tests.adversarial.harness import (
    Case,
    CaseContext,
    CaseFailure,
    expect_cli,
    expect_expected_error,
    snapshot,
    visible,
)

FAMILIES: dict[str, Any] = {}
# The progress lines ``quantdesk pull`` prints on stderr while it asks and downloads.
PULL_STATUS = r"^Asking the hub about .*…$"


@contextlib.contextmanager
def served_hub(ctx: CaseContext) -> Iterator[tuple[Any, dict[str, str]]]:
    """A fake hub for this case (tests/fakehub.py), in-process settings pointed at it,
    and the environment a CLI subprocess needs to talk to it."""
    import pytest

    from tests.fakehub import serve_fake_hub

    cache = ctx.folder / "hf-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTDESK_HOME", str(ctx.home))
        with serve_fake_hub(mp, cache) as hub:
            env = dict(ctx.env)
            env.update(
                HF_ENDPOINT=hub.url,
                HF_HUB_CACHE=str(cache),
                HF_HUB_OFFLINE="0",
                HF_HOME=str(cache.parent / "hf-home"),
            )
            yield hub, env


# --------------------------------------------------------------------------- hub

_PIECES = (
    "..",
    "/",
    "\\",
    "%2e%2e",
    "outside",
    "\x1b]0;x\x07",
    "\x00",
    ".incomplete",
    "0123456789abcdef0123456789abcdef01234567",
    "a" * 300,
    "~",
    "$HOME",
    "C:",
    '"',
    "W/",
    "refs/pr/1",
    " ",
    "\n",
)


def _hostile_string(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 6)))


def _outside_unchanged(root: Path, before: dict[str, Any], cache: Path) -> None:
    after = {k: v for k, v in snapshot(root).items() if not _in_cache_or_home(k)}
    if after != before:
        changed = sorted(set(after) ^ set(before)) or sorted(
            k for k in after if after[k] != before.get(k)
        )
        raise CaseFailure(
            "the download changed files outside the HF cache: "
            + ", ".join(visible(c, 80) for c in changed[:3])
        )
    from quant.untrusted import inside

    for folder, _dirs, files in os.walk(cache):
        for name in files:
            p = Path(folder) / name
            if p.is_symlink():
                try:
                    inside(cache, p)
                except Exception:
                    raise CaseFailure(f"a link in the cache points outside it: {p.name}") from None


def _in_cache_or_home(rel: str) -> bool:
    return rel.split(os.sep, maxsplit=1)[0] in ("hf-cache", "hf-home", "home", "tmp")


def hub_download_case(field: str, value: str, origin: str) -> Case:
    """A download through a mirror that answers ``field`` (commit or etag) with ``value``."""

    def run(ctx: CaseContext) -> None:
        from app.core.downloads import download_gguf
        from tests.adversarial.test_hostile_hub import NAME, REPO, SIZE
        from tests.test_downloads import gguf_bytes

        outside = ctx.folder / "outside"
        outside.mkdir()
        (outside / NAME).write_bytes(b"the user's own model")
        with served_hub(ctx) as (hub, _env):
            hub.repos[REPO] = {NAME: gguf_bytes(SIZE)}
            hub.hostile[field] = value
            before = {k: v for k, v in snapshot(ctx.folder).items() if not _in_cache_or_home(k)}
            try:
                entry = download_gguf(REPO, NAME)
            except Exception as exc:
                expect_expected_error(exc, "the refusal")
            else:
                if not Path(entry.path).is_relative_to(ctx.folder / "hf-cache"):
                    raise CaseFailure(f"the download landed outside the cache: {entry.path}")
            _outside_unchanged(ctx.folder, before, ctx.folder / "hf-cache")
        if (outside / NAME).read_bytes() != b"the user's own model":
            raise CaseFailure("the file outside the cache was overwritten")

    return Case(
        "hub",
        f"{origin} {field} {visible(value, 40)!s}",
        run,
        f"a hub answering the download of Tiny-Q4_K_M.gguf with {field} {value[:80]!r}; "
        "app.core.downloads.download_gguf(REPO, NAME)",
        isolated=False,
        deadline_s=60,
    )


def hub_listing_case(field: str, value: str, origin: str) -> Case:
    """A listing whose commit (``sha``) or file name is ``value``."""

    def run(ctx: CaseContext) -> None:
        from app.core.hub import repo_files
        from quant.untrusted import UntrustedValueError, hub_commit, repo_file_name
        from tests.adversarial.test_hostile_hub import NAME, REPO, SIZE
        from tests.test_downloads import gguf_bytes

        with served_hub(ctx) as (hub, _env):
            hub.repos[REPO] = {NAME: gguf_bytes(SIZE), "good-Q8_0.gguf": gguf_bytes(SIZE, 1)}
            if field == "sha":
                hub.hostile["sha"] = value
            else:
                hub.hostile["names"] = {NAME: value}
            try:
                repo = repo_files(REPO)
            except Exception as exc:
                expect_expected_error(exc, "the refusal")
                return
        try:
            if repo.sha is not None:
                hub_commit(repo.sha)
            for f in repo.files:
                repo_file_name(f.filename)
        except UntrustedValueError as exc:
            raise CaseFailure(
                f"the listing kept a hostile value: {visible(str(exc), 160)}"
            ) from None
        if "good-Q8_0.gguf" not in [f.filename for f in repo.files]:
            raise CaseFailure("the honest file was dropped from the listing")

    return Case(
        "hub",
        f"{origin} listing {field} {visible(value, 40)!s}",
        run,
        f"a hub listing with {field} {value[:80]!r}; app.core.hub.repo_files(REPO)",
        isolated=False,
        deadline_s=60,
    )


def hub_cli_case(value: str) -> Case:
    def run(ctx: CaseContext) -> None:
        from tests.adversarial.test_hostile_hub import NAME, REPO, SIZE
        from tests.test_downloads import gguf_bytes

        with served_hub(ctx) as (hub, env):
            hub.repos[REPO] = {NAME: gguf_bytes(SIZE)}
            hub.hostile["commit"] = value
            ran = ctx.cli("pull", REPO, "--file", NAME, env=env)
        expect_cli(ran, status_line=PULL_STATUS)
        if ran.returncode == 0:
            raise CaseFailure("the download was accepted from a hostile commit id")

    return Case(
        "hub",
        f"pull --file with commit {visible(value, 40)!s}",
        run,
        f"a hub answering X-Repo-Commit {value[:80]!r}; "
        "quantdesk pull acme/tiny-GGUF --file Tiny-Q4_K_M.gguf",
        isolated=False,
        deadline_s=120,
    )


def hub_cases(assets: Assets, rng: random.Random, long: bool) -> list[Case]:
    from tests.adversarial.test_hostile_hub import HOSTILE_COMMITS, HOSTILE_ETAGS

    commits, etags = list(HOSTILE_COMMITS), list(HOSTILE_ETAGS)
    out: list[Case] = []
    if not long:
        out += [hub_download_case("commit", v, "known") for v in rng.sample(commits, 3)]
        out += [hub_download_case("etag", v, "known") for v in rng.sample(etags, 2)]
        out.append(hub_listing_case("names", "../../outside/x.gguf", "known"))
        out.append(hub_download_case("commit", _hostile_string(rng), "random"))
        out.append(hub_cli_case(commits[0]))
        return out
    out += [hub_download_case("commit", v, f"known #{i}") for i, v in enumerate(commits)]
    out += [hub_download_case("etag", v, f"known #{i}") for i, v in enumerate(etags)]
    out += [hub_listing_case("names", v, "known") for v in ("../../outside/x.gguf", "/abs.gguf")]
    out += [hub_listing_case("sha", v, "known") for v in commits[4:8]]
    for field in ("commit", "etag"):
        out += [hub_download_case(field, _hostile_string(rng), f"random #{i}") for i in range(30)]
    for field in ("names", "sha"):
        out += [hub_listing_case(field, _hostile_string(rng), f"random #{i}") for i in range(15)]
    out += [hub_cli_case(v) for v in commits[:6]]
    return out


FAMILIES["hub"] = hub_cases


# --------------------------------------------------------------------------- templates


def _render_case(name: str, source: str, *, must_refuse: bool, origin: str) -> Case:
    def run(ctx: CaseContext) -> None:
        from quant.prompts.sandbox import DEFAULT_LIMITS, ChatTemplateError, render_template
        from tests.adversarial.test_hostile_templates import CONTEXT

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            text = render_template(source, CONTEXT)
        except ChatTemplateError as exc:
            expect_expected_error(exc, "the refusal")
            text = None
        except Exception as exc:
            expect_expected_error(exc, "the refusal")
            raise CaseFailure(f"{type(exc).__name__} instead of ChatTemplateError") from None
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        if grown > 600:
            raise CaseFailure(f"peak memory grew by {grown:.0f} MiB while rendering")
        if text is not None:
            if must_refuse:
                raise CaseFailure(f"rendered {len(text):,} characters instead of refusing")
            if len(text) > DEFAULT_LIMITS.chars:
                raise CaseFailure(f"rendered {len(text):,} characters, past the limit")

    return Case(
        "templates",
        f"{origin} {name}",
        run,
        f"the chat template {source[:100]!r}{'…' if len(source) > 100 else ''}; "
        "quant.prompts.sandbox.render_template(TEMPLATE, one user message)",
        isolated=False,
        deadline_s=60,
    )


def _chat_case(assets: Assets, name: str, source: str) -> Case:
    def run(ctx: CaseContext) -> None:
        doc = assets.tiny_doc.with_kv("tokenizer.chat_template", STRING, source.encode())
        path = doc.image().write(ctx.folder / "hostile-template.gguf")
        ran = ctx.cli("chat", path, "--prompt", "hi", "--max-tokens", "4", "--mode", "template")
        expect_cli(ran, stdout_is_terminal_text=False)

    return Case(
        "templates",
        f"chat with {name}",
        run,
        f"the tiny GGUF with tokenizer.chat_template {source[:80]!r}; "
        "quantdesk chat FILE --prompt hi --max-tokens 4 --mode template",
        deadline_s=120,
    )


def _random_template(rng: random.Random) -> tuple[str, str]:
    n = rng.choice((10, 1000, 100_000, 10**7))
    m = rng.choice((2, 60_000, 10**9))
    kind = rng.choice(("loops", "repeat", "grow", "recurse", "format", "join"))
    if kind == "loops":
        depth = rng.randint(2, 4)
        src = "".join(f"{{% for i{d} in range({n}) %}}" for d in range(depth))
        src += "x" + "{% endfor %}" * depth
    elif kind == "repeat":
        src = f"{{{{ 'ab' * {n} * {m} }}}}"
    elif kind == "grow":
        src = (
            "{% set ns = namespace(x='ab') %}"
            f"{{% for i in range({rng.randint(10, 80)}) %}}{{% set ns.x = ns.x ~ ns.x %}}"
            "{% endfor %}{{ ns.x|length }}"
        )
    elif kind == "recurse":
        src = "{% macro f(n) %}{{ f(n + 1) }}{{ f(n + 2) }}{% endmacro %}{{ f(0) }}"
    elif kind == "format":
        src = f"{{{{ '%0{m}d' % {n} }}}}{{{{ '{{:>{m}}}'.format(1) }}}}"
    else:
        src = f"{{{{ ([('x' * {n})] * {m})|join }}}}"
    return f"{kind} n={n} m={m}", src


def template_cases(assets: Assets, rng: random.Random, long: bool) -> list[Case]:
    from tests.adversarial.test_hostile_templates import HOSTILE

    names = list(HOSTILE)
    out: list[Case] = []
    if not long:
        for name in rng.sample(names, 8):
            out.append(_render_case(name, HOSTILE[name], must_refuse=True, origin="known"))
        for _ in range(2):
            label, src = _random_template(rng)
            out.append(_render_case(label, src, must_refuse=False, origin="random"))
        out.append(_chat_case(assets, "center literal", HOSTILE["center literal"]))
        return out
    out += [_render_case(n, HOSTILE[n], must_refuse=True, origin="known") for n in names]
    for i in range(60):
        label, src = _random_template(rng)
        out.append(_render_case(f"#{i} {label}", src, must_refuse=False, origin="random"))
    out += [_chat_case(assets, n, HOSTILE[n]) for n in names]
    return out


FAMILIES["templates"] = template_cases
