"""Where a W&B server is and how the bridge authenticates to it, for readers and writers.

``wandb:ENTITY[/PROJECT][?base_url=URL]`` names the server (``?base_url=``, else
``WANDB_BASE_URL``, else W&B's cloud); the key is the one the wandb CLI would use.
"""

from __future__ import annotations

import netrc
import os
import urllib.parse

from bridge.errors import BridgeError
from bridge.redact import register_secret

DEFAULT_BASE_URL = "https://api.wandb.ai"


def base_url_of(explicit: str | None) -> str:
    """The server's URL: ``?base_url=``, else ``WANDB_BASE_URL``, else W&B's cloud."""
    return (explicit or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def first_param(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name) or []
    return values[0] if values else None


class Target:
    """``ENTITY[/PROJECT][?base_url=URL]`` split into its parts."""

    def __init__(self, target: str) -> None:
        path, _, query = target.partition("?")
        params = urllib.parse.parse_qs(query)
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts or len(parts) > 2:
            raise BridgeError(
                f"wandb:{path}: expected wandb:ENTITY/PROJECT or wandb:ENTITY (all projects)"
            )
        self.entity = parts[0]
        self.project = parts[1] if len(parts) == 2 else None
        self.explicit_url: str | None = first_param(params, "base_url")
        self.base_url = base_url_of(self.explicit_url)


def api_key_for(base_url: str) -> str | None:
    """The API key the wandb CLI would use: WANDB_API_KEY, else ~/.netrc for the host."""
    key = os.environ.get("WANDB_API_KEY")
    if key:
        register_secret(key.strip())
        return key.strip()
    host = urllib.parse.urlparse(base_url).hostname or ""
    try:
        auth = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    key = auth[2] if auth and auth[2] else None
    register_secret(key)
    return key


def not_found(exc: BaseException) -> bool:
    """Whether a client error says the object does not exist (not worth retrying)."""
    text = str(exc).lower()
    return any(p in text for p in ("not found", "could not find", "404", "does not exist"))
