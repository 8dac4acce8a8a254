"""Run a command as its own process and report its wall time and peak RSS.

A fresh wrapper process runs the command, so ``ru_maxrss`` of the wrapper's children is
that command's alone (not the bench's, not an earlier command's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

#: The PostgreSQL server benches make their databases on (as the tests: BRIDGE_TEST_PG).
PG_ADMIN = os.environ.get("BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_database(prefix: str = "bench_") -> str:
    """A fresh PostgreSQL database (drop it with :func:`drop_pg_database`); its URL."""
    import sqlalchemy as sa

    name = prefix + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    """Drop a database :func:`pg_database` made (its connections ended first)."""
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin.dispose()


_WRAPPER = (
    "import json,resource,subprocess,sys;"
    "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
    "print(json.dumps({'rc':p.returncode,'out':p.stdout,'err':p.stderr[-2000:],"
    "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
)

# With ``tree``: the peak of the *sum* of RSS over the command and every process it starts
# (a W&B offline history child, bridge/adapters/wandb/history_process.py, runs beside the
# sync: ``ru_maxrss`` gives the largest process only), sampled from /proc every 50 ms.
_TREE_WRAPPER = """
import json, os, subprocess, sys, threading
page = os.sysconf("SC_PAGE_SIZE")
def tree_rss(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
peak, done = [0], threading.Event()
def sample():
    while not done.wait(0.05):
        peak[0] = max(peak[0], tree_rss(p.pid))
t = threading.Thread(target=sample, daemon=True)
t.start()
out, err = p.communicate()
done.set()
t.join()
print(json.dumps({"rc": p.returncode, "out": out, "err": err[-2000:], "rss": peak[0] // 1024}))
"""


def measure(cmd: list[str], what: str, tree: bool = False) -> tuple[float, float, str]:
    """Seconds, peak RSS (MiB) and stdout of ``cmd``; exits naming ``what`` if it fails.
    ``tree``: the RSS is the peak of the sum over the process and its children."""
    t0 = time.perf_counter()
    res: dict[str, Any] = json.loads(
        subprocess.run(
            [sys.executable, "-c", _TREE_WRAPPER if tree else _WRAPPER, *cmd],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    seconds = time.perf_counter() - t0
    if res["rc"] != 0:
        raise SystemExit(f"{what} failed ({res['rc']}): {res['err']}")
    return seconds, res["rss"] / 1024, str(res["out"])


def summarize(path: Path, top: int = 30) -> None:
    """Inclusive and self shares of each function in a py-spy raw (collapsed-stack) file."""
    from collections import Counter

    incl: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        # "func (path/file.py:line)" → "func file.py": one entry per function, not per line
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].split(":")[0] for f in stack.split(";")]
        total += int(n)
        for frame in set(frames):
            incl[frame] += int(n)
        own[frames[-1]] += int(n)
    print(f"{path.name}: {total} samples; inclusive:")
    for frame, n in incl.most_common(top):
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
    print("self:")
    for frame, n in own.most_common(top // 2):
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
