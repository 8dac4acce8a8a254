"""Run a command as its own process and report its wall time and peak RSS.

A fresh wrapper process runs the command, so ``ru_maxrss`` of the wrapper's children is
that command's alone (not the bench's, not an earlier command's)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

_WRAPPER = (
    "import json,resource,subprocess,sys;"
    "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
    "print(json.dumps({'rc':p.returncode,'out':p.stdout,'err':p.stderr[-2000:],"
    "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
)


def measure(cmd: list[str], what: str) -> tuple[float, float, str]:
    """Seconds, peak RSS (MiB) and stdout of ``cmd``; exits naming ``what`` if it fails."""
    t0 = time.perf_counter()
    res: dict[str, Any] = json.loads(
        subprocess.run(
            [sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True
        ).stdout
    )
    seconds = time.perf_counter() - t0
    if res["rc"] != 0:
        raise SystemExit(f"{what} failed ({res['rc']}): {res['err']}")
    return seconds, res["rss"] / 1024, str(res["out"])
