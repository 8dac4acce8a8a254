"""W&B's own run fields (group, job type, exit code) in the neutral schema.

The neutral :class:`~bridge.schema.Run` has no W&B vocabulary: the W&B readers put these
fields in ``run.extras["wandb"]``, and the W&B writers read them from there — or, for a
run of another kind, from that kind's namespace when it shares the notion (a TensorBoard
HParams session group is a run "group"), so the rendering stays what it was.
"""

from __future__ import annotations

from typing import Any

from bridge.schema import Run, source_kind

WANDB = "wandb"
GROUP = "group"
JOB_TYPE = "job_type"
EXIT_CODE = "exit_code"


def wandb_extras(
    group: str | None = None, job_type: str | None = None, exit_code: int | None = None
) -> dict[str, dict[str, Any]]:
    """The ``extras`` a W&B reader gives a run: the fields that are set, under "wandb"."""
    space = {
        key: value
        for key, value in ((GROUP, group), (JOB_TYPE, job_type), (EXIT_CODE, exit_code))
        if value is not None
    }
    return {WANDB: space} if space else {}


def run_field(run: Run, key: str) -> Any:
    """A W&B run field of ``run``: W&B's own value, else its source kind's (None if none)."""
    return run.extra(key, WANDB, source_kind(run.header.source_id))


class WeaveGap:
    """Writer mixin: why a W&B destination stores no workspace item of a kind — W&B keeps
    traces, prompts and evaluation datasets in Weave, not in runs, and models only as run
    artifacts (said once per pass with the count not copied)."""

    def item_gap(self, kind: str) -> str:
        if kind == "model":  # an MLflow logged model no run made
            return "W&B keeps models as run artifacts; no run made these"
        return "W&B Weave is not supported by this bridge yet"
