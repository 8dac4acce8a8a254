"""Kill campaign cases for the pipelined watermark commits of the REST sink.

tests/test_kill_campaign.py's server scenario (MLflow sqlite → an `mlflow server`) writes a
2,500-point run, below the 20,000 points between the engine's commits: its history path
never reaches a commit while requests are in flight. Here every sync of the case runs with
``BRIDGE_HISTORY_COMMIT_EVERY=300`` (engine/apply_history.py), so the run's history (read
in chunks of 1,000 points) passes three commits, each recording the previous commit's snapshot once its mark is acknowledged
while later ``log_batch`` requests are in flight; the sync is SIGKILLed at the commits and
inside requests, re-run, and checked exactly as the campaign checks its cases (every point
exactly once, watermarks equal to the destination's counts, `bridge verify` exits 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_kill_campaign as campaign
from test_kill_campaign import KILLED, BridgeRunner, Case, _named, _problems, _sync

# The campaign's fixtures (its fork server, its scenarios), instances of this module's own.
runner = campaign.runner
scenarios = campaign.scenarios

ENV = {"BRIDGE_HISTORY_COMMIT_EVERY": "300"}
CASES = [
    _named("server", "apply.history.batch.before_flush#2"),
    _named("server", "apply.history.batch.after_flush#2"),
    _named("server", "apply.history.batch.after_watermark#3"),
    _named("server", "mlflow.log_batch.after#2"),
    _named("server", "mlflow.log_batch.before#3"),
    _named("server", "apply.history.final.before_flush"),
]


def _stage(runner: BridgeRunner, src: str, dest: str, state: Path, point: str) -> None:
    res = _sync(runner, src, dest, state, BRIDGE_KILL_AT=point, **ENV)
    marker = f"bridge.faults: SIGKILL at {point if '#' in point else point + '#1'}"
    assert res.rc == KILLED and marker in res.stderr, (
        f"kill point {point!r} was not reached (exit {res.rc})\n{res.stderr[-3000:]}"
    )
    campaign.TALLY.kills += 1
    campaign.TALLY.named_points.add(point.partition("#")[0])


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sigkill_inside_pipelined_commits_loses_and_doubles_nothing(
    case: Case, scenarios: dict[str, Any], runner: BridgeRunner
) -> None:
    scenario = scenarios["get"](case.scenario)
    case_dir = scenario.new_case()
    src, dest = scenario.prepare(case_dir)
    state = case_dir / "state.db"
    for point in case.kills:
        _stage(runner, src, dest, state, point)
    res = _sync(runner, src, dest, state, **ENV)
    if res.rc != 0:
        res = _sync(runner, src, dest, state, **ENV)
    assert res.rc == 0, f"[{case.id}] no recovery (exit {res.rc})\n{res.stderr[-3000:]}"
    report = json.loads(res.stdout)
    verify = runner.run(["verify", src, dest, "--state", str(state)])
    snap = scenario.take(case_dir)
    problems = _problems(scenario, snap, state, report["dest"])
    if verify.rc != 0:
        problems.append(f"bridge verify exited {verify.rc}:\n{verify.stdout[-3000:]}")
    campaign.TALLY.cases += 1
    campaign.TALLY.runs_checked += len(snap.runs)
    campaign.TALLY.points_checked += sum(len(p) for p in snap.points.values())
    campaign.TALLY.losses += len(problems)
    assert not problems, f"[{case.id}]:\n" + "\n".join(problems)
