"""Shipped mapping files are package data, found per (source kind, destination kind) by
:func:`bridge.mapping.default_mapping` in a checkout and in an installed wheel (issue 12)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from bridge.mapping import DEFAULT_MAPPING_PATH, Mapping, default_mapping, load_mapping

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {("wandb", "mlflow"), ("mlflow", "wandb")}


def test_default_mapping_finds_each_shipped_pair() -> None:
    for source, dest in SHIPPED:
        path = default_mapping(source, dest)
        assert path is not None and path.is_file()
        assert path.name == f"{source}-to-{dest}.toml"
        assert path.parent.name == "mappings" and path.parent.parent.name == "bridge"
    assert DEFAULT_MAPPING_PATH == default_mapping("wandb", "mlflow")
    assert load_mapping(default_mapping("wandb", "mlflow")) == Mapping()


def test_default_mapping_is_none_for_a_pair_without_a_file() -> None:
    assert default_mapping("mlflow", "mlflow") is None
    assert default_mapping("nosuchbackend", "mlflow") is None


@pytest.mark.parametrize("kind", ["", "../x", "wandb/../../etc", "Wandb", "a.b", "x-y"])
def test_default_mapping_refuses_what_is_not_a_kind(kind: str) -> None:
    with pytest.raises(ValueError, match="not a backend kind"):
        default_mapping(kind, "mlflow")
    with pytest.raises(ValueError, match="not a backend kind"):
        default_mapping("wandb", kind)


def test_importlib_resources_sees_the_files() -> None:
    names = {p.name for p in (resources.files("bridge") / "mappings").iterdir()}
    assert {f"{s}-to-{d}.toml" for s, d in SHIPPED} <= names


def test_the_checkout_keeps_a_top_level_mappings_entry() -> None:
    for source, dest in SHIPPED:
        top = REPO / "mappings" / f"{source}-to-{dest}.toml"
        assert top.read_bytes() == default_mapping(source, dest).read_bytes()  # type: ignore[union-attr]


def test_an_installed_wheel_finds_its_mapping_files(tmp_path: Path) -> None:
    """Build the wheel from a copy of the project, install it by unpacking (a pure wheel),
    and ask the installed package for its files in a fresh interpreter."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "bridge", src / "bridge", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    # Build isolation: pip brings the setuptools pyproject.toml asks for (the venv's may be older).
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)]
    built = subprocess.run(build, capture_output=True, text=True)
    if built.returncode != 0:  # no package index for the build backend: cannot build here
        pytest.skip(f"the wheel could not be built: {built.stderr.strip()[-300:]}")
    (wheel,) = dist.glob("tracking_bridge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {f"bridge/mappings/{s}-to-{d}.toml" for s, d in SHIPPED} <= names
        site = tmp_path / "site"
        zf.extractall(site)
    probe = (
        "from bridge.mapping import default_mapping, load_mapping, Mapping\n"
        "from bridge.adapters.wandb.mapping import DEFAULT_WANDB_MAPPING_PATH as W\n"
        "p = default_mapping('wandb', 'mlflow')\n"
        "assert load_mapping(p) == Mapping()\n"
        "print(p); print(W)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    found = [Path(line) for line in done.stdout.split()]
    assert found == [
        site / "bridge" / "mappings" / "wandb-to-mlflow.toml",
        site / "bridge" / "mappings" / "mlflow-to-wandb.toml",
    ]
