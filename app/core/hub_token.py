"""The access token for gated and private hub repos, kept only where huggingface_hub keeps it.

A token is checked with the hub, then saved with huggingface_hub's own login
(its token file, ``$HF_HOME/token``, readable only by the user), and read back
with its ``get_token``; Quantdesk's settings never hold it. Every
huggingface_hub-based tool on the machine therefore sees the same token, and
``HF_TOKEN`` in the environment, when set, wins over the file as it does for
those tools.

Also here: the one sentence a gated repo's refusal becomes, shared by the hub
browser (:mod:`app.core.hub`) and downloads (:mod:`app.core.downloads`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quant.errors import HubError, QuantError
from quant.hub.errors import transport_errors

logger = logging.getLogger(__name__)

# How long checking a token with the hub may take.
TOKEN_CHECK_TIMEOUT_S = 10.0
# What :func:`token_status` says when a token is saved but could not be checked.
TOKEN_SAVED = "token saved"
# What :func:`token_status` says when the hub refuses the saved token.
TOKEN_REJECTED = "token not accepted by the hub"
_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class TokenRejectedError(HubError):
    """The hub answered that an access token is not valid."""


def token_file() -> Path:
    """huggingface_hub's token file (``HF_TOKEN_PATH``, by default ``$HF_HOME/token``)."""
    from huggingface_hub import constants

    return Path(constants.HF_TOKEN_PATH)


def current_token() -> str | None:
    """The token huggingface_hub sends with its requests now (environment, then file)."""
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # a damaged token file must not break browsing public repos
        logger.warning("could not read the Hugging Face token", exc_info=True)
        return None


def token_from_environment() -> bool:
    """True when ``HF_TOKEN`` (or its old name) provides the token, over the file."""
    return any((os.environ.get(name) or "").strip() for name in _ENV_VARS)


def _settings_url() -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/settings/tokens"


def _repo_url(repo_id: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/{repo_id}"


def gated_error(repo_id: str, again: str = "try again") -> HubError:
    """The sentence for a gated repo that refused this machine's request."""
    if current_token() is None:
        return HubError(
            f"{repo_id} is a gated model: request access on its page ({_repo_url(repo_id)}), "
            "then add an access token with 'quantdesk pull --token TOKEN' or in the Hub tab, "
            f"and {again}"
        )
    return HubError(
        f"{repo_id} is a gated model and the saved access token has no access to it yet: "
        f"request access on its page ({_repo_url(repo_id)}) and wait for approval, then {again}"
    )


@contextlib.contextmanager
def gated_errors(repo_id: str, again: str = "try again") -> Iterator[None]:
    """Turn huggingface_hub's ``GatedRepoError`` into :func:`gated_error`'s sentence."""
    from huggingface_hub.errors import GatedRepoError

    try:
        yield
    except GatedRepoError:
        raise gated_error(repo_id, again) from None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def whoami(token: str, *, timeout_s: float = TOKEN_CHECK_TIMEOUT_S) -> str:
    """The hub user ``token`` belongs to.

    Raises :class:`TokenRejectedError` when the hub refuses the token and
    :class:`HubError` when it cannot be asked (offline, no network, a server error).
    """
    from huggingface_hub import constants, get_session, hf_raise_for_status
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    if _offline():
        raise HubError(
            "cannot check the access token in offline mode (HF_HUB_OFFLINE is set); "
            "go online and try again"
        )
    try:
        r = get_session().get(
            f"{constants.ENDPOINT}/api/whoami-v2",
            headers=build_hf_headers(token=token),
            timeout=timeout_s,
        )
        hf_raise_for_status(r)
        data: Any = r.json()
    except QuantError:
        raise
    except OfflineModeIsEnabled:
        raise HubError(
            "cannot check the access token in offline mode (HF_HUB_OFFLINE is set); "
            "go online and try again"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise TokenRejectedError(
                "the Hugging Face hub did not accept this access token; copy a valid one "
                f"from {_settings_url()} and add it again"
            ) from None
        raise HubError(
            f"the hub answered HTTP {status or '?'} while checking the access token; "
            "try again later"
        ) from exc
    except transport_errors() as exc:
        raise HubError(
            f"cannot reach the Hugging Face hub to check the access token ({exc}); "
            "check the network connection and try again"
        ) from exc
    except ValueError as exc:  # not JSON
        raise HubError(
            "the hub sent an unreadable answer while checking the access token; try again later"
        ) from exc
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise HubError("the hub did not say whom the access token belongs to; try again later")
    return name


def save_token(token: str, *, timeout_s: float = TOKEN_CHECK_TIMEOUT_S) -> str:
    """Check ``token`` with the hub, save it as huggingface_hub's token; return the user name.

    The token goes to huggingface_hub's token file through its ``login`` (never
    to git credentials, never to Quantdesk's settings). Raises
    :class:`TokenRejectedError` for a token the hub refuses and :class:`HubError`
    when the hub cannot be asked or the file cannot be written.
    """
    from huggingface_hub import login

    token = token.strip()
    if not token:
        raise HubError(f"the access token is empty; copy one from {_settings_url()}")
    if any(c.isspace() for c in token):
        raise HubError(
            f"an access token is one word without spaces; copy it again from {_settings_url()}"
        )
    user = whoami(token, timeout_s=timeout_s)
    try:
        login(token=token, add_to_git_credential=False)
    except ValueError as exc:  # an organization token, or the hub changed its mind
        raise HubError(f"the access token cannot be used: {exc}") from None
    except transport_errors() as exc:
        raise HubError(
            f"cannot reach the Hugging Face hub to save the access token ({exc}); "
            "check the network connection and try again"
        ) from exc
    except OSError as exc:
        raise HubError(
            f"cannot write the token file {token_file()} ({exc.strerror or exc}); check "
            "that folder's permissions, or set HF_HOME to a writable folder"
        ) from exc
    logger.info("saved a Hugging Face access token for %s in %s", user, token_file())
    return user


def forget_token() -> bool:
    """Remove the saved token from huggingface_hub's files; True when there was one.

    A token that comes from the ``HF_TOKEN`` environment variable cannot be
    removed here: :class:`HubError` says so when it is the only one.
    """
    from huggingface_hub import logout
    from huggingface_hub.utils import get_stored_tokens  # type: ignore[attr-defined]

    path = token_file()
    try:
        saved = path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        saved = None
    except OSError as exc:
        raise HubError(
            f"cannot read the token file {path} ({exc.strerror or exc}); check its permissions"
        ) from exc
    removed = False
    if saved is not None:
        for name, value in get_stored_tokens().items():
            if value == saved:
                with contextlib.suppress(OSError):  # no git, or HF_TOKEN still set
                    logout(token_name=name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise HubError(
                f"cannot remove the token file {path} ({exc.strerror or exc}); check its "
                "permissions"
            ) from exc
        removed = True
        logger.info("removed the Hugging Face access token from %s", path)
    if not removed and token_from_environment():
        raise HubError(
            "the access token comes from the HF_TOKEN environment variable, which Quantdesk "
            "does not change; unset it and start Quantdesk again"
        )
    return removed


def token_status(*, timeout_s: float = 3.0) -> str | None:
    """Who the current token belongs to, for display; None when there is no token.

    The user name when the hub confirms the token, :data:`TOKEN_REJECTED` when it
    refuses it, and :data:`TOKEN_SAVED` when it cannot be asked (offline mode, no
    network).
    """
    token = current_token()
    if token is None:
        return None
    if _offline():
        return TOKEN_SAVED
    try:
        return whoami(token, timeout_s=timeout_s)
    except TokenRejectedError:
        return TOKEN_REJECTED
    except HubError as exc:
        logger.info("could not check the access token: %s", exc)
        return TOKEN_SAVED
