"""One translation of Hugging Face hub failures into sentences a user can act on.

Used by the header-only inspection of hub repos (:mod:`quant.facts.hub`), the
Hub tab and ``quantdesk search``/``pull`` (``app.core.hub``), file downloads
(``app.core.downloads``) and the conversion job's download; each passes its own
wording for what it was fetching and what to do next. Offline mode
(``HF_HUB_OFFLINE``, or a caller's own offline switch) is told by
:func:`offline_error` in one wording.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from quant.errors import HubError, QuantError


def is_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def offline_error(what: str, next_step: str, *, repo_id: str | None = None) -> HubError:
    """The sentence for a request refused in offline mode: "cannot ``what`` …; ``next_step``"."""
    where = f"{repo_id}: " if repo_id else ""
    why = " (HF_HUB_OFFLINE is set)" if is_offline() else ""
    return HubError(f"{where}cannot {what} in offline mode{why}; {next_step}")


def transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures of the HTTP client huggingface_hub uses (httpx2, httpx or requests).

    Not the clients' ``HTTPError`` roots: huggingface_hub's HTTP status errors
    derive from them, and an answer such as 404 is not a network failure.
    """
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, attr in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        cls = getattr(sys.modules.get(module), attr, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


@contextmanager
def hub_errors(
    repo_id: str,
    what: str,
    *,
    offline: Callable[[], HubError],
    again: str = "try again",
    missing_hint: str = "",
    network_hint: str = "check the network connection and try again",
) -> Iterator[None]:
    """Turn huggingface_hub and network failures while fetching ``what`` into HubErrors."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except QuantError:
        raise
    except OfflineModeIsEnabled:
        raise offline() from None
    except GatedRepoError:
        raise HubError(
            f"{repo_id}: the repo is gated; accept its licence on the hub page and add an "
            "access token (Models → Hub → Token…, or 'quantdesk pull --token TOKEN'), "
            f"then {again}"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{repo_id}: no such model on the Hugging Face hub; check the spelling "
            "(private repos need an access token: Models → Hub → Token…, or "
            "'quantdesk pull --token TOKEN')"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id}: the requested revision does not exist on the hub") from None
    except RemoteEntryNotFoundError:
        raise HubError(f"{repo_id}: {what} is not in the repo on the hub{missing_hint}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubError(
            f"{repo_id}: the hub answered HTTP {status} for {what}; try again later"
        ) from exc
    except transport_errors() as exc:
        raise HubError(
            f"{repo_id}: cannot reach the Hugging Face hub for {what} ({exc}); {network_hint}"
        ) from exc
