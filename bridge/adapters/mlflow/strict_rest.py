"""Read calls to an MLflow server that refuse a damaged answer instead of reading it as data.

MLflow's REST client (3.17) turns an empty ``200`` body into ``{}`` (a Databricks proxy quirk),
so a cut connection on ``runs/search`` reads as "no runs" and on ``runs/get`` as a run with no
fields: a wrong copy reported done. A value protobuf cannot hold (a 2**64 step, a string where
a number goes) raises protobuf's ``ParseError``, which names neither the call nor the server.
Here the read calls the bridge makes go through one wrapper on the client's ``RestStore``
that checks the raw answer first: every failure is an ``MlflowException`` naming the endpoint,
which the reader turns into a failure of the run (or of the listing).
"""

from __future__ import annotations

import json
from typing import Any

#: The read calls the MLflow reader makes through the tracking store, by request message.
STRICT_READS = frozenset({"GetRun", "SearchRuns", "SearchExperiments", "GetMetricHistory"})


def strict_reads(store: Any) -> None:
    """Wrap ``store._call_endpoint`` (a ``RestStore``; anything else is left alone) so the
    read calls in :data:`STRICT_READS` check their answers. Idempotent."""
    if not hasattr(store, "_METHOD_TO_INFO") or getattr(store, "_bridge_strict", False):
        return
    original = store._call_endpoint

    def call(
        api: Any,
        json_body: str | None = None,
        endpoint: str | None = None,
        retry_timeout_seconds: Any = None,
        response_proto: Any = None,
    ) -> Any:
        if endpoint is not None or getattr(api, "__name__", "") not in STRICT_READS:
            return original(api, json_body, endpoint, retry_timeout_seconds, response_proto)
        return _checked_call(store, api, json_body, response_proto)

    store._call_endpoint = call
    store._bridge_strict = True


def _checked_call(store: Any, api: Any, json_body: str | None, response_proto: Any) -> Any:
    """MLflow's ``call_endpoint`` for one read call, with the raw answer checked."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    endpoint, method = store._METHOD_TO_INFO[api]
    body = json.loads(json_body) if json_body else None
    kwargs = {"params": body} if method == "GET" else {"json": body}
    response = http_request(
        host_creds=store.get_host_creds(), endpoint=endpoint, method=method, **kwargs
    )
    if response.status_code == 200 and not response.text.strip():
        raise MlflowException(f"API request to {endpoint}: the server answered 200 with no body")
    response = verify_rest_response(response, endpoint)
    proto = response_proto or api.Response()
    _parse(endpoint, response.text, proto)
    _check_fields(endpoint, api.__name__, body, proto)
    return proto


def _parse(endpoint: str, text: str, proto: Any) -> None:
    """The answer into ``proto``; any value protobuf cannot hold is a clear MlflowException."""
    from google.protobuf.json_format import ParseError
    from mlflow.exceptions import MlflowException
    from mlflow.utils.proto_json_utils import parse_dict

    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        _check_shape(doc, proto.DESCRIPTOR, "")
        parse_dict(js_dict=doc, message=proto)
    except (ParseError, ValueError, TypeError, KeyError, RecursionError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise MlflowException(
            f"API request to {endpoint}: unreadable answer ({type(exc).__name__}: {first})"
        ) from None


def _check_shape(doc: dict[str, Any], descriptor: Any, where: str) -> None:
    """Objects where the message has a message field, lists where it repeats: protobuf's
    ``ParseDict`` with unknown fields ignored reads ``"data": "x"`` as an empty message.
    A JSON bool only where a bool goes: protobuf reads ``"value": true`` as the number 1.0."""
    for name, value in doc.items():
        field = descriptor.fields_by_camelcase_name.get(name) or descriptor.fields_by_name.get(name)
        if field is None or value is None:
            continue
        at = f"{where}.{name}" if where else name
        repeated = bool(field.is_repeated)
        if repeated and not isinstance(value, list):
            raise ValueError(f"{at}: a JSON {type(value).__name__} where a list goes")
        if field.type != field.TYPE_BOOL and any(
            isinstance(v, bool) for v in (value if repeated else [value])
        ):
            raise ValueError(f"{at}: a JSON bool where a {_type_name(field)} goes")
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for i, item in enumerate(value if repeated else [value]):
            if not isinstance(item, dict):
                raise ValueError(f"{at}: a JSON {type(item).__name__} where an object goes")
            _check_shape(item, field.message_type, f"{at}[{i}]" if repeated else at)


def _type_name(field: Any) -> str:
    """The field's protobuf type for an error line (``double``, ``int64``, a message name)."""
    if field.message_type is not None:
        return str(field.message_type.name)
    names = {v: k[5:].lower() for k, v in vars(type(field)).items() if k.startswith("TYPE_")}
    return names.get(field.type, "non-bool value")


def _check_fields(endpoint: str, name: str, body: Any, proto: Any) -> None:
    """The fields a call must return: ``runs/get`` names the run that was asked for."""
    from mlflow.exceptions import MlflowException

    if name == "GetRun":
        asked = (body or {}).get("run_id") or (body or {}).get("run_uuid")
        got = proto.run.info.run_id
        if not got or (asked and got != asked):
            raise MlflowException(
                f"API request to {endpoint}: the answer is not run {asked!r} (got {got!r})"
            )
