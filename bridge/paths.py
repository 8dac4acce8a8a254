"""The one guard for names that sources and servers hand the bridge as paths.

Manifest entry paths, run file names, MLflow artifact paths, W&B media paths, artifact
names and digests all end up as paths: in the destination (``artifacts/<name>/<digest>/
files/<entry>``) and in the bridge's own temp folders. None of them may lead outside the
folder they are joined to, so every such name passes :func:`check_relpath` (or
:func:`within` for a local join) before it is used. A refused name is a loss under the
"nothing lost" rule: :class:`PathRefused` is a :class:`ContentError`, so the engine names
it, writes the rest of the run and fails the run (exit 1).

``file://`` references are the other way a source names a local file: they are read only
from sources the operator trusts (offline folders) and only under the folders the operator
names (``--reference-root``): :func:`check_reference_target`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bridge.errors import ContentError

#: A Windows drive (``C:``, ``c:x``) at the start: absolute or drive-relative there.
_DRIVE = re.compile(r"^[A-Za-z]:")
REFUSED = "refused"  # the report's warning code for a refused path or reference


class PathRefused(ContentError):
    """A path or reference the bridge will not follow; the message names it and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=REFUSED)


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a plain relative "/"-separated path, or None.

    Refused: empty, NUL, absolute (``/x``, ``\\x``, ``C:``), any ``..`` or ``.``
    segment, empty segments (``a//b``, a trailing ``/``). A backslash counts as a
    separator for these checks (``..\\x`` escapes on Windows), not as a refusal by itself:
    it is an ordinary character in POSIX file names."""
    if not path:
        return "empty path"
    if "\0" in path:
        return "contains a NUL character"
    if path[0] in "/\\" or _DRIVE.match(path):
        return "absolute path"
    segments = re.split(r"[/\\]", path)
    if ".." in segments:
        return "contains '..'"
    if "." in segments or "" in segments:
        return "not normalized ('.' or an empty segment)"
    return None


def check_relpath(path: str, what: str = "path") -> str:
    """``path`` itself if it is a safe relative path; else :class:`PathRefused` naming it."""
    problem = path_problem(path)
    if problem is not None:
        raise PathRefused(f"refusing {what} {path!r}: {problem}")
    return path


def within(root: str | os.PathLike[str], rel: str, what: str = "path") -> Path:
    """``root / rel`` after checking ``rel`` and that the result, symlinks resolved, stays
    inside ``root`` (a link planted below ``root`` cannot redirect the join)."""
    check_relpath(rel, what)
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise PathRefused(f"refusing {what} {rel!r}: resolves outside {base}")
    return base / rel


def check_reference_target(uri: str, roots: Sequence[str] | None) -> Path:
    """The local file a ``file://`` reference names, if the operator allows reading it.

    ``roots`` None: this source's ``file://`` references name files on another machine
    (a server sent them) and are never read. Otherwise the target, symlinks resolved, must
    lie under one of ``roots`` (``--reference-root``), themselves resolved."""
    if roots is None:
        raise PathRefused(
            f"refusing reference {uri}: a file:// reference sent by a server is never read"
        )
    parsed = urllib.parse.urlsplit(uri)
    if parsed.netloc not in ("", "localhost"):
        raise PathRefused(f"refusing reference {uri}: names host {parsed.netloc!r}")
    raw = urllib.request.url2pathname(parsed.path)
    if "\0" in raw or not os.path.isabs(raw):
        raise PathRefused(f"refusing reference {uri}: not an absolute local path")
    if not roots:
        raise PathRefused(
            f"refusing reference {uri}: file:// targets are read only under a "
            "--reference-root folder, and none was given"
        )
    target = Path(raw).resolve()
    for root in roots:
        if target.is_relative_to(Path(root).expanduser().resolve()):
            return target
    raise PathRefused(
        f"refusing reference {uri}: {target} is outside every --reference-root "
        f"({', '.join(str(r) for r in roots)})"
    )


def open_no_follow(path: Path) -> int:
    """A read-only descriptor of ``path``, refusing a symlink swapped in as its last part
    after :func:`check_reference_target` resolved it."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
