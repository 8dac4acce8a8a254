"""Logged models are listed once per experiment and sync (issue 14): the item pass's
run-less models reuse the run pass's listing (logged_read.listed_models_once) — and are
copied as before."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_mlflow_runless_models import _corpus, _same, _sync

from bridge.adapters.mlflow import logged_read


def test_one_listing_per_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    _corpus(src, tmp_path / "src")
    listings: Counter[str] = Counter()
    real = logged_read.listed_models

    def counted(store: Any, experiment_id: str) -> list[Any]:
        if store.display_uri.endswith("src.db"):
            listings[str(experiment_id)] += 1
        return real(store, experiment_id)

    monkeypatch.setattr(logged_read, "listed_models", counted)
    plan = _sync(src, dst, tmp_path)
    assert plan.item_counts["model"]["create"] == 2
    assert listings and set(listings.values()) == {1}
    _same(src, dst, tmp_path, 0)
    listings.clear()
    again = _sync(src, dst, tmp_path)  # a new sync lists again (nothing kept across syncs)
    assert again.item_counts["model"]["unchanged"] == 2
    assert listings and set(listings.values()) == {1}
