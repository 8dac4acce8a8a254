"""A server that checks who calls (``mlflow server --app-name basic-auth``): its 401 and 403
answers as one line naming the server, the user and the fix.

* 401 (wrong or missing credentials) at the start of a pass: :class:`BridgeError` (exit 2),
  naming ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``;
* 403 on one experiment: :class:`~bridge.errors.PermissionDenied` for that experiment's runs
  (failed, exit 1); the pass goes on with the others.

The user name is shown (it is not a secret), never the password or the token.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar, cast

from bridge.errors import BridgeError, PermissionDenied
from bridge.schema import Project

F = TypeVar("F", bound=Callable[..., Any])

_SET_CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a REST error: 401, 403 (also from the error code alone; an
    artifact request's ``requests`` error from its response)."""
    code = getattr(exc, "error_code", None)
    if code == "UNAUTHENTICATED":
        return 401
    if code == "PERMISSION_DENIED":
        return 403
    get = getattr(exc, "get_http_status_code", None)
    response = getattr(exc, "response", None)
    status = get() if callable(get) else getattr(response, "status_code", None)
    return status if status in (401, 403) else None


def user(target: str = "") -> str | None:
    """Who the server sees: the basic-auth user name (of the URI's userinfo, else of
    ``MLFLOW_TRACKING_USERNAME``), the token, or None (anonymous)."""
    try:
        from_uri = urllib.parse.urlsplit(target).username
    except ValueError:
        from_uri = None
    if from_uri:
        return f"user {urllib.parse.unquote(from_uri)!r} (of the URI)"
    name = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if name and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return f"user {name!r}"
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return "the token in MLFLOW_TRACKING_TOKEN"
    return None


def check_error(exc: BaseException, where: str, target: str = "") -> BridgeError | None:
    """A failed first call to a server as its one line (exit 2), if it was a 401 or 403."""
    status = status_of(exc)
    who = user(target)
    if status == 401 and who is None:
        return BridgeError(
            f"{where}: the server requires a login (HTTP 401) and no credentials are set; "
            f"set {_SET_CREDENTIALS} (or MLFLOW_TRACKING_TOKEN)"
        )
    if status == 401:
        fix = "MLFLOW_TRACKING_TOKEN" if (who or "").startswith("the token") else _SET_CREDENTIALS
        return BridgeError(
            f"{where}: the server refused the credentials of {who} (HTTP 401: wrong user "
            f"name, password or token); check {fix}"
        )
    if status == 403:
        return BridgeError(
            f"{where}: permission denied (HTTP 403) for {who or 'an anonymous caller'} on the "
            "whole server; ask its admin for access, or use other credentials "
            f"({_SET_CREDENTIALS})"
        )
    return None


def denied(where: str, experiment: str, need: str, kind: str = "experiment") -> PermissionDenied:
    """One experiment (or registered model: ``kind``) the caller may not use: its runs
    (its versions) fail, the others go on."""
    return PermissionDenied(
        f"{kind} {experiment!r} on {where}: permission denied (HTTP 403) for "
        f"{user() or 'an anonymous caller'}; ask the server's admin for {need} on it"
    )


def run_error(
    exc: BaseException,
    where: str,
    experiment: str,
    need: str,
    target: str = "",
    kind: str = "experiment",
) -> Exception | None:
    """A REST error inside one experiment's work as the line its runs fail with (403), or
    the pass's one line (401: the credentials stopped working); None for other errors."""
    status = status_of(exc)
    if status == 403:
        return denied(where, experiment, need, kind)
    if status == 401:
        return check_error(exc, where, target)
    return None


def on_experiment(project_of: Callable[[tuple[Any, ...]], Project], need: str) -> Callable[[F], F]:
    """Decorate a writer method working in one experiment (``project_of(args)`` names its
    project): a 403 becomes :class:`PermissionDenied` naming the experiment."""
    return _translated(lambda self, args: self.experiment_name(project_of(args)), need)


def on_run(need: str) -> Callable[[F], F]:
    """Decorate a writer method writing into one existing run (its dest run id the first
    argument): a 403 becomes :class:`PermissionDenied` naming the run's experiment
    (``self.run_experiment_name(run_id)``, asked only then)."""
    return _translated(lambda self, args: self.run_experiment_name(args[0]), need)


def on_model(need: str) -> Callable[[F], F]:
    """Decorate a registry writer method on one registered model (its name the first
    argument; ``self.store`` the writer): a 403 becomes :class:`PermissionDenied` naming
    the model, which fails; the other models and the runs go on."""
    return _translated(lambda self, args: args[0], need, "registered model", "store")


def _translated(
    name_of: Callable[[Any, tuple[Any, ...]], str],
    need: str,
    kind: str = "experiment",
    store: str = "",
) -> Callable[[F], F]:
    """``store``: the attribute holding the writer (its URIs); "": the object itself."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except (BridgeError, PermissionDenied):
                raise
            except Exception as exc:
                if status_of(exc) is None:
                    raise
                name = name_of(self, args)
                writer = getattr(self, store) if store else self
                err = run_error(exc, writer.display_uri, name, need, writer.target, kind)
                if err is None:
                    raise
                raise err from None

        return cast(F, inner)

    return wrap
