"""A Plan (dry run) or a Plan with outcomes (real run) as text, JSON or Markdown."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

from bridge.display import md_code
from bridge.engine.model import ModelPlan, Plan, RunPlan
from bridge.reporting.items import plan_items_dict, plan_items_markdown, plan_items_text
from bridge.reporting.jsonstream import iter_json
from bridge.reporting.lines import md, text_lines


def _what(run: RunPlan) -> str:
    parts: list[str] = []
    points = run.points_new if run.outcome in ("pending", "skipped") else run.points_written
    if run.action in ("create", "resume", "update"):
        if points is not None:
            parts.append(f"+{points} points")
        if run.n_params:
            parts.append(f"{run.n_params} params")
        if run.n_tags:
            parts.append(f"{run.n_tags} tags")
        files = run.files_new if run.outcome in ("pending", "skipped") else run.files_written
        if files:
            parts.append(f"{files} files")
        if run.artifacts_new:
            parts.append(
                f"{len(run.artifacts_new)} artifact versions ({run.bytes_new or 0} bytes): "
                + "; ".join(run.artifacts_new)
            )
    if run.edits_to_dest:
        parts.append("edited at source → dest: " + ", ".join(sorted(run.edits_to_dest)))
    if run.edits_to_source:
        parts.append("edited in dest → source: " + ", ".join(sorted(run.edits_to_source)))
    if run.reason:
        parts.append(run.reason)
    if run.error:
        parts.append(f"error: {run.error}")
    return ", ".join(parts)


def as_dict(plan: Plan, lazy: bool = False) -> dict[str, Any]:
    """The machine-readable summary (`--json`, `--format json`). ``lazy``: ``runs`` is a
    generator, read from the plan's lines as :func:`json_chunks` writes it (a list holds
    every run's dict: ~4 KB a run at 10,000 runs)."""
    runs = (_run_dict(r) for r in plan.runs)
    return {
        "source": plan.source,
        "dest": plan.dest,
        "dry_run": plan.dry_run,
        "exit_code": plan.exit_code(),
        "counts": plan.counts(),
        "outcomes": plan.outcomes(),
        "points_written": sum(r.points_written for r in plan.runs),
        "runs": runs if lazy else list(runs),
        "models": [
            {
                **m.model_dump(exclude={"warnings", "conflicts", "resolved"}),
                "bytes_new": m.bytes_new,
            }
            for m in plan.models
        ],
        **plan_items_dict(plan),
        "warnings": [w.model_dump() for w in plan.warnings],
        "conflicts": [c.model_dump() for c in plan.conflicts],
        "errors": plan.errors,
    }


def _run_dict(r: RunPlan) -> dict[str, Any]:
    return {
        "source_id": r.source_id,
        "name": r.name,
        "project": r.project,
        "action": r.action,
        "outcome": r.outcome,
        "dest_id": r.dest_id,
        "reason": r.reason,
        "points_new": r.points_new,
        "points_written": r.points_written,
        "params_to_write": r.n_params,
        "tags_to_write": r.n_tags,
        "files_new": r.files_new,
        "files_written": r.files_written,
        "artifacts_new": r.artifacts_new,
        "bytes_new": r.bytes_new,
        "edits_to_dest": r.edits_to_dest,
        "edits_to_source": r.edits_to_source,
        "error": r.error,
    }


def json_chunks(plan: Plan) -> Iterator[str]:
    """:func:`as_json`'s text in pieces, one run at a time (reporting/jsonstream.py)."""
    return iter_json(as_dict(plan, lazy=True))


def model_lines(model: ModelPlan) -> list[str]:
    """What happens to one registered model: versions created, aliases moved (text)."""
    label = model.action if model.outcome != "failed" else "FAILED"
    head = f"  {label:<9} {model.source_id} -> {model.dest_name}"
    if model.versions:
        head += f": +{len(model.versions)} versions ({model.bytes_new} bytes)"
    if model.error:
        head += f" error: {model.error}"
    out = [head]
    for v in model.versions:
        to = v.dest_version or "(next)"
        note = f" — {v.note}" if v.note else ""
        out.append(f"      version {v.source_version} -> {to}{note}")
    for a in model.aliases:
        note = f" — {a.note}" if a.note else ""
        out.append(
            f"      alias {a.alias}: {a.action} {a.dest_from or '-'} -> {a.dest_to or '-'}"
            f" (source: {a.source_version or 'removed'}){note}"
        )
    return out


def _by_project(run: RunPlan) -> tuple[str, str]:
    """The order reports list runs in."""
    return run.project, run.source_id


def as_json(plan: Plan) -> str:
    return "".join(json_chunks(plan))


def as_text(plan: Plan) -> str:
    return "".join(text_chunks(plan))


def text_chunks(plan: Plan, lines_per_chunk: int = 256) -> Iterator[str]:
    """:func:`as_text` in pieces of whole lines, the runs read one at a time: a 10,000-run
    report is printed as it is made, never held whole."""
    batch: list[str] = []
    for line in _text_lines(plan):
        batch.append(line)
        if len(batch) >= lines_per_chunk:
            yield text_lines(batch)
            batch = []
    if batch:
        yield text_lines(batch)


def _text_lines(plan: Plan) -> Iterator[str]:
    head = "dry run — nothing written" if plan.dry_run else "sync"
    yield f"{head}: {plan.source} -> {plan.dest}"
    if plan.pass_id or plan.shard:  # a sharded pass (bridge/passes.py)
        final = "ran here" if plan.final_step else "not here"
        yield f"shard: {plan.shard or '-'}; pass: {plan.pass_id or '-'}; final step: {final}"
    # By project, then source id; read back one line at a time (engine/lines.py).
    for project, runs in groupby(plan.runs.ordered(_by_project), key=lambda r: r.project):
        yield f"project {project}"
        for run in runs:
            label = run.action if run.outcome != "failed" else "FAILED"
            name = f" ({run.name})" if run.name else ""
            what = _what(run)
            yield f"  {label:<9} {run.source_id}{name}" + (f": {what}" if what else "")
    lines: list[str] = []
    if plan.models:
        lines.append("registered models")
        for model in plan.models:
            lines.extend(model_lines(model))
    lines.extend(plan_items_text(plan))
    if plan.conflicts:
        lines.append("conflicts (left untouched):")
        for c in plan.conflicts:
            lines.append(
                f"  {c.source_id} {c.field}: source={c.source_value!r} "
                f"dest={c.dest_value!r} last-synced={c.synced_value!r} — {c.reason}"
            )
    if plan.warnings:
        lines.append("warnings:")
        for w in plan.warnings:
            lines.append(f"  {w.source_id} [{w.code}] {w.message}")
    for err in plan.errors:
        lines.append(f"error: {err}")
    counts = ", ".join(f"{n} {a}" for a, n in sorted(plan.counts().items())) or "no runs"
    failed = sum(1 for r in plan.runs if r.outcome == "failed") + sum(
        1 for m in plan.models if m.outcome == "failed"
    )
    failed += sum(1 for i in plan.items if i.outcome == "failed")
    lines.append(
        f"summary: {counts}; {sum(r.points_written for r in plan.runs)} points written; "
        f"{failed} failed; {len(plan.conflicts)} conflicts; {len(plan.warnings)} warnings"
    )
    yield from lines


def as_markdown(plan: Plan) -> str:
    title = "Dry run" if plan.dry_run else "Sync"
    out = [f"## {title}: {md_code(plan.source)} → {md_code(plan.dest)}", ""]
    counts = ", ".join(f"**{n}** {a}" for a, n in sorted(plan.counts().items())) or "no runs"
    out += [
        counts,
        "",
        "| project | run | name | action | outcome | details |",
        "|---|---|---|---|---|---|",
    ]
    for r in plan.runs.ordered(_by_project):
        out.append(
            f"| {md(r.project)} | {md_code(r.source_id)} | {md(r.name)} | {r.action} "
            f"| {r.outcome} | {md(_what(r))} |"
        )
    if plan.models:
        out += [
            "",
            "### Registered models",
            "",
            "| model | destination | action | outcome | versions | aliases |",
            "|---|---|---|---|---|---|",
        ]
        for m in plan.models:
            versions = ", ".join(
                f"{v.source_version}→{v.dest_version or 'next'}" for v in m.versions
            )
            aliases = ", ".join(
                f"{a.alias}: {a.action} {a.dest_from or '-'}→{a.dest_to or '-'}" for a in m.aliases
            )
            out.append(
                f"| {md_code(m.source_id)} | {md(m.dest_name)} | {m.action} | {m.outcome} "
                f"| {md(versions)} ({m.bytes_new} bytes) | {md(aliases)} |"
            )
    out += plan_items_markdown(plan)
    if plan.conflicts:
        out += [
            "",
            "### Conflicts",
            "",
            "| run | field | source | destination | last synced | why |",
            "|---|---|---|---|---|---|",
        ]
        for c in plan.conflicts:
            out.append(
                f"| {md_code(c.source_id)} | {md(c.field)} | {md(c.source_value)} "
                f"| {md(c.dest_value)} | {md(c.synced_value)} | {md(c.reason)} |"
            )
    if plan.warnings:
        out += ["", "### Warnings", "", "| run | code | message |", "|---|---|---|"]
        for w in plan.warnings:
            out.append(f"| {md_code(w.source_id)} | {md(w.code)} | {md(w.message)} |")
    return "\n".join(out) + "\n"
