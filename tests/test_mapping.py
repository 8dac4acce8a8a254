"""Mapping rules: defaults file, key sanitizing (checked with MLflow's own validator), values."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric_name, _validate_param_name

from bridge.errors import BridgeError
from bridge.mapping import (
    DEFAULT_MAPPING_PATH,
    Mapping,
    flatten,
    is_legal_key,
    load_mapping,
    restore_key,
    sanitize_key,
    to_text,
)


def mlflow_accepts(key: str) -> bool:
    try:
        _validate_metric_name(key)
        _validate_param_name(key)
    except MlflowException:
        return False
    return len(key) <= 250


def test_shipped_toml_is_exactly_the_defaults() -> None:
    assert DEFAULT_MAPPING_PATH.is_file()
    assert load_mapping(DEFAULT_MAPPING_PATH) == Mapping()
    assert load_mapping(None) == Mapping()


def test_user_file_overrides_only_given_keys(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('experiment_name = "{entity}/{project}"\nper_tag_tags = false\n')
    m = load_mapping(f)
    assert m.experiment_for("proj", "team") == "team/proj"
    assert m.experiment_for("proj", None) == "/proj"
    assert m.per_tag_tags is False
    assert m.flatten_separator == "."


@pytest.mark.parametrize(
    "text",
    [
        "experiment_nmae = 'x'\n",  # typo: unknown key
        "experiment_name = '{run}'\n",  # unknown placeholder
        "truncation_marker = '{oops}'\n",
        "experiment_name = \n",  # not TOML
    ],
)
def test_bad_user_file_is_one_line_bridge_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "m.toml"
    f.write_text(text)
    with pytest.raises(BridgeError) as err:
        load_mapping(f)
    assert "\n" not in str(err.value) and str(f) in str(err.value)


def test_missing_mapping_file() -> None:
    with pytest.raises(BridgeError, match="cannot read mapping file"):
        load_mapping(Path("/nonexistent/m.toml"))


LEGAL = ["loss", "train/loss", "a b-c_d.e", "eval:acc", "système/température", "x" * 250, ":"]
TRICKY = [
    "acc@1",
    "a:b@c",
    "a:3Ab",  # legal but looks encoded
    "eval:AB",
    "k:_x",
    "/abs",
    "a//b",
    "a/",
    "/",
    "..",
    "../up",
    "..x",
    ".",
    "a/./b",
    "a/..",
    "q\n",
    "tab\there",
    "emoji 😀",
    "charts/episode (return)",
    "100%",
    "a~b",
]


@pytest.mark.parametrize("key", LEGAL)
def test_legal_keys_are_unchanged(key: str) -> None:
    assert mlflow_accepts(key)
    assert sanitize_key(key) == key
    assert restore_key(key) == key


@pytest.mark.parametrize("key", TRICKY)
def test_tricky_keys_are_encoded_legal_and_reversible(key: str) -> None:
    stored = sanitize_key(key)
    assert stored != key
    assert mlflow_accepts(stored), stored
    assert is_legal_key(stored)
    assert restore_key(stored) == key


def test_documented_examples() -> None:
    assert sanitize_key("acc@1") == "acc:401"
    assert sanitize_key("a:b@c") == "a:3Ab:40c"
    assert sanitize_key("/abs") == ":2Fabs"
    assert sanitize_key("..") == ".:2E"
    assert sanitize_key("a//b") == "a/:2Fb"
    assert sanitize_key("emoji 😀") == "emoji :F0:9F:98:80"


def test_fuzz_round_trip_and_injective() -> None:
    rng = random.Random(7)
    alphabet = list("ab/.:-_ ~@%()é😀\n0A") + [":3A", ":_", "..", "//"]
    seen: dict[str, str] = {}
    for _ in range(3000):
        key = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        stored = sanitize_key(key)
        assert mlflow_accepts(stored), (key, stored)
        assert restore_key(stored) == key, (key, stored)
        assert seen.setdefault(stored, key) == key  # no two keys share a stored key


def test_long_keys_are_hashed_and_restored_by_key_map() -> None:
    a = "p/" + "x" * 300 + "a"
    b = "p/" + "x" * 300 + "b"
    sa, sb = sanitize_key(a), sanitize_key(b)
    assert sa != sb
    assert len(sa) <= 250 and mlflow_accepts(sa)
    assert sa.startswith("p/" + "x" * 228) and ":_" in sa
    assert sanitize_key(a) == sa  # deterministic
    assert restore_key(sa, {sa: a}) == a
    # Long keys with multi-byte escapes are never cut inside one character's escape.
    emoji = "😀" * 100
    se = sanitize_key(emoji)
    assert mlflow_accepts(se)
    assert restore_key(se).startswith("😀" * 19)
    assert mlflow_accepts(sanitize_key(""))


def test_to_text_is_deterministic_json_for_non_strings() -> None:
    assert to_text("adam") == "adam"
    assert to_text(True) == "true"
    assert to_text(1.5) == "1.5"
    assert to_text(3) == "3"
    assert to_text(None) == "null"
    assert to_text(math.nan) == "NaN"
    assert to_text(-math.inf) == "-Infinity"
    assert to_text([1, "a", None]) == '[1,"a",null]'
    assert to_text({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_flatten_dicts_but_not_lists_or_typed_values() -> None:
    data = {
        "opt": {"lr": 0.1, "betas": [0.9, 0.99], "sched": {"kind": "cos"}},
        "empty": {},
        "img": {"_type": "image-file", "path": "a.png"},
        "n": 1,
    }
    assert dict(flatten(data)) == {
        "opt.lr": 0.1,
        "opt.betas": [0.9, 0.99],
        "opt.sched.kind": "cos",
        "empty": {},
        "img": {"_type": "image-file", "path": "a.png"},
        "n": 1,
    }
    assert dict(flatten({"a": {"b": 1}}, sep="/")) == {"a/b": 1}


def test_mapping_overrides_use_each_writers_own_rules(tmp_path: Path) -> None:
    """--mapping reads a W&B destination's file with the MLflow → W&B rules, an MLflow
    destination's with the W&B → MLflow rules (each shipped file is valid for its writer)."""
    from bridge.api import _use_mapping
    from bridge.uris import open_writer

    root = Path(__file__).resolve().parents[1] / "mappings"
    wandb_writer = open_writer(f"wandb-offline:{tmp_path / 'out'}")
    _use_mapping(wandb_writer, str(root / "mlflow-to-wandb.toml"))
    assert type(wandb_writer.mapping).__name__ == "WandbMapping"  # type: ignore[attr-defined]
    mlflow_writer = open_writer(f"mlflow:sqlite:///{tmp_path / 'm.db'}")
    _use_mapping(mlflow_writer, str(root / "wandb-to-mlflow.toml"))
    assert type(mlflow_writer.mapping).__name__ == "Mapping"  # type: ignore[attr-defined]
    with pytest.raises(BridgeError, match="mlflow-to-wandb"):
        _use_mapping(wandb_writer, str(root / "wandb-to-mlflow.toml"))
