"""The issue-13 corpus, made with MLflow's own APIs: traces (nested spans, an error span,
events, a trace linked to a run), assessments (feedback, an expectation, an override), a
prompt with two versions and an alias, an evaluation dataset with records linked to the
experiment, and a logged model with a metric.

Run it in a subprocess (``python -m tests.genai_corpus URI [--more]``): MLflow's fluent
APIs keep global state (tracking URI, active experiment, the trace provider).
"""

from __future__ import annotations

import json
import sys

import mlflow

EXPERIMENT = "genai"
PROMPT = "qa-prompt"
DATASET = "qa-eval"


def _flush() -> None:
    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush is not None:
        flush()


def make_corpus(uri: str) -> dict[str, object]:
    """Build the corpus in the store at ``uri``; return the ids made (JSON-able)."""
    mlflow.set_tracking_uri(uri)
    exp_id = mlflow.set_experiment(EXPERIMENT).experiment_id

    @mlflow.trace(span_type="CHAIN")
    def answer(question: str) -> str:
        with mlflow.start_span(name="retrieve", span_type="RETRIEVER") as span:
            span.set_inputs({"query": question})
            span.set_attributes({"top_k": 3, "index": "docs-v2"})
            span.add_event(mlflow.entities.SpanEvent("cache-miss", attributes={"shard": 7}))
            span.set_outputs(["doc-1", "doc-2"])
        with mlflow.start_span(name="generate", span_type="LLM") as span:
            span.set_inputs({"prompt": f"Q: {question}"})
            span.set_outputs({"text": "42"})
        return "42"

    @mlflow.trace(span_type="TOOL")
    def broken() -> None:
        raise ValueError("tool failed")

    answer("what is six times seven?")
    try:
        broken()
    except ValueError:
        pass
    with mlflow.start_run(run_name="chat-run") as run:
        answer("and in a run?")
        model = mlflow.initialize_logged_model(name="qa-model", tags={"stage": "dev"})
        mlflow.log_metric("accuracy", 0.91, step=1, model_id=model.model_id)
    _flush()
    traces = mlflow.search_traces(
        locations=[exp_id], return_type="list", order_by=["timestamp_ms ASC"]
    )
    trace_ids = [t.info.trace_id for t in traces]
    mlflow.set_trace_tag(trace_ids[0], "team", "search")
    mlflow.log_feedback(
        trace_id=trace_ids[0],
        name="helpful",
        value=True,
        rationale="answers the question",
        source=mlflow.entities.AssessmentSource(source_type="HUMAN", source_id="ann@example.com"),
    )
    mlflow.log_expectation(trace_id=trace_ids[0], name="expected_answer", value="42")
    judged = mlflow.log_feedback(
        trace_id=trace_ids[2],
        name="correct",
        value=0.4,
        source=mlflow.entities.AssessmentSource(source_type="LLM_JUDGE", source_id="gpt-judge"),
    )
    mlflow.override_feedback(
        trace_id=trace_ids[2],
        assessment_id=judged.assessment_id,
        value=1.0,
        rationale="a person checked it",
        source=mlflow.entities.AssessmentSource(source_type="HUMAN", source_id="bob@example.com"),
    )
    mlflow.genai.register_prompt(
        name=PROMPT, template="Answer: {{question}}", commit_message="first", tags={"team": "qa"}
    )
    mlflow.genai.register_prompt(
        name=PROMPT,
        template=[
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "{{question}}"},
        ],
        commit_message="chat form",
        model_config={"model_name": "gpt-x", "temperature": 0.2},
    )
    mlflow.genai.set_prompt_alias(PROMPT, alias="production", version=2)
    from mlflow.genai.datasets import create_dataset

    ds = create_dataset(name=DATASET, experiment_id=[exp_id], tags={"purpose": "regression"})
    ds.merge_records(
        [
            {"inputs": {"question": "6*7?"}, "expectations": {"answer": "42"}},
            {"inputs": {"question": "2+2?"}, "expectations": {"answer": "4"}, "tags": {"k": "v"}},
        ]
    )
    return {
        "experiment_id": exp_id,
        "run_id": run.info.run_id,
        "trace_ids": trace_ids,
        "model_id": model.model_id,
        "dataset_id": ds.dataset_id,
    }


def add_more(uri: str) -> dict[str, object]:
    """One new trace, one new assessment on the first trace, one new prompt version."""
    mlflow.set_tracking_uri(uri)
    exp_id = mlflow.set_experiment(EXPERIMENT).experiment_id

    @mlflow.trace
    def later(x: int) -> int:
        return x + 1

    later(1)
    _flush()
    traces = mlflow.search_traces(
        locations=[exp_id], return_type="list", order_by=["timestamp_ms ASC"]
    )
    mlflow.log_feedback(trace_id=traces[0].info.trace_id, name="concise", value="yes")
    mlflow.genai.register_prompt(name=PROMPT, template="Answer well: {{question}}")
    return {"trace_ids": [t.info.trace_id for t in traces]}


if __name__ == "__main__":
    made = add_more(sys.argv[1]) if "--more" in sys.argv[2:] else make_corpus(sys.argv[1])
    print(json.dumps(made))
