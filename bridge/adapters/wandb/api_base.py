"""The W&B API reader's plumbing: one ``wandb.Api`` client, the key, retries with
backoff, bounded pagination, the reader's temp cache, and ``check()``."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from bridge.adapters.base import Reader, ReaderOptions
from bridge.adapters.wandb.api_check import (
    CHECK_ENTITY,
    CHECK_PROJECT,
    Unreachable,
    check_failure,
    json_object,
)
from bridge.adapters.wandb.key_scope import open_scoped
from bridge.adapters.wandb.retry import retry
from bridge.adapters.wandb.server import Target, api_key_for
from bridge.errors import BridgeError
from bridge.redact import redact

_T = TypeVar("_T")

PAGE_SIZE = 50
CHECK_TIMEOUT_S = 5.0
API_TIMEOUT_S = 60.0


def parse_time(text: str | None) -> int | None:
    """W&B DateTime ("2024-05-01T10:00:00", UTC when naive) -> epoch ms."""
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


class ApiAccess(Reader):
    """The server connection every part of the W&B API reader shares: the client, the
    key, retries, pagination and the download cache."""

    scheme = "wandb"

    def __init__(
        self, target: str, options: ReaderOptions | None = None, *, restore_bridge: bool = True
    ) -> None:
        super().__init__(target, options)
        self._t = Target(target)
        #: Read runs the bridge wrote as the runs it was given (see ``bridged``).
        self.restore_bridge = restore_bridge
        self._api: Any = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, self.options.workers))
        self._tmp: Path | None = None
        self._file_urls: dict[str, dict[str, str]] = {}
        self._producers: dict[str, str | None] = {}  # artifact id -> producing run source id
        self._download_locks: dict[str, threading.Lock] = {}
        self.attempts = 6
        self.base_delay = 0.5
        self.max_delay = 8.0
        self.api_timeout = API_TIMEOUT_S

    # ---- plumbing --------------------------------------------------------------------

    @property
    def display_uri(self) -> str:
        path = self._t.entity + (f"/{self._t.project}" if self._t.project else "")
        if self._t.explicit_url:
            return f"wandb:{path}?base_url={redact(self._t.explicit_url)}"
        return f"wandb:{path}"

    def _key(self) -> str:
        key = api_key_for(self._t.base_url)
        if not key:
            raise BridgeError(
                f"wandb: no API key for {self._t.base_url}; set WANDB_API_KEY or run "
                f"`wandb login --host {self._t.base_url}`"
            )
        return key

    def _client(self) -> Any:
        with self._lock:
            if self._api is None:
                import wandb

                # The entity override makes registry look-ups resolve ENTITY's organization.
                self._api = wandb.Api(
                    api_key=self._key(),
                    overrides={"base_url": self._t.base_url, "entity": self._t.entity},
                    timeout=int(self.api_timeout),
                )
            return self._api

    def _cache(self) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="bridge-wandb-"))
            return self._tmp

    def _retry(self, what: str, fn: Callable[[], _T]) -> _T:
        """Call ``fn`` with exponential backoff + jitter on transient failures."""
        return retry(
            fn,
            attempts=self.attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            slot=self._slots,
        )

    def _next_page(self, what: str, pager: Any, seen: set[Any]) -> bool:
        """Load a paginator's next page (with retries). A server that names a next page at
        a cursor it already gave would have us loop forever (found by the GraphQL answer
        fuzz): a cursor seen before, or the first page's, is a ValueError."""
        if getattr(pager, "last_response", None) is not None and pager.more:
            cursor = pager.cursor
            if cursor is None or cursor in seen:
                raise ValueError(f"{what}: the server repeats page cursor {cursor!r}")
            seen.add(cursor)
        # A page whose objects fail to convert has already moved the pager's cursor past
        # itself: each attempt starts from the answer before it, or a retry skips a page.
        before = pager.last_response

        def load() -> bool:
            pager.last_response = before
            return bool(pager._load_page())

        return self._retry(what, load)

    def _graphql(self, query: str, variables: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One raw POST /graphql with a short timeout, for check(): fast, clear failures."""
        body = json.dumps({"query": query, "variables": variables}).encode()
        try:
            with open_scoped(
                self._t.base_url + "/graphql",
                self._t.base_url,
                self._key(),
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=CHECK_TIMEOUT_S,
            ) as resp:
                return resp.status, json_object(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json_object(exc.read())

    def _check_request(self) -> tuple[str, dict[str, Any]]:
        """The check document for the URI: every variable it declares is used (a spec
        server rejects the document otherwise), and it names the entity or project."""
        if self._t.project:
            return CHECK_PROJECT, {"e": self._t.entity, "p": self._t.project}
        return CHECK_ENTITY, {"e": self._t.entity}

    def check(self) -> None:
        base = self._t.base_url
        key = self._key()
        query, variables = self._check_request()
        try:
            code, body = self._retry("check", lambda: self._check_call(query, variables))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BridgeError(
                f"wandb: cannot reach {base} ({reason}); check WANDB_BASE_URL or ?base_url="
            ) from None
        problem = check_failure(base, code, body, key)
        if problem:
            raise BridgeError(problem)
        payload = body.get("data") or {}
        if not payload.get("viewer"):
            raise BridgeError(f"wandb: {base} did not accept the API key; set WANDB_API_KEY")
        if self._t.project and not payload.get("project"):
            raise BridgeError(
                f"wandb: project {self._t.entity}/{self._t.project} not found on {base}; "
                "check the entity and project names"
            )
        if not self._t.project and not payload.get("entity"):
            raise BridgeError(
                f"wandb: entity {self._t.entity} not found on {base}; check the entity name"
            )

    def _check_call(self, query: str, variables: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            code, data = self._graphql(query, variables)
        except urllib.error.URLError as exc:
            raise Unreachable(str(exc.reason)) from None
        if code == 429 or code >= 500:
            raise urllib.error.HTTPError(self._t.base_url, code, "transient", {}, None)  # type: ignore[arg-type]
        return code, data

    def _api_run(self, path: str) -> Any:
        """A fresh run object (``Api.run`` caches runs forever, hiding later edits)."""
        from wandb.apis import public

        api = self._client()
        entity, project, run_id = path.split("/", 2)
        return self._retry(
            "run",
            lambda: public.Run(api._service_api, entity, project, run_id, lazy=False),
        )

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._api = None
