"""Artifacts, lineage and registries made by the real SDK online, for registry tests.

:func:`make_registry_corpus` drives the installed ``wandb`` package (in a subprocess, as
users run it) against a W&B-compatible server — the loopback fake
(``tests/fakes/wandb_server.py``) in the tests — and returns what it made:

* run ``reg-a`` logs dataset ``train-data`` v0 with alias ``best`` and model ``clf`` v0,
  and links ``clf`` v0 into the W&B Registry collection
  ``wandb-registry-model/clf-registry`` with alias ``staging``
  (``run.link_artifact``) and into the legacy ``model-registry/clf-portfolio``;
* run ``reg-b`` logs ``train-data`` v1 with ``best`` (``best`` and ``latest`` move from v0
  to v1) and the reference artifact ``raw-refs`` (a ``file://`` entry and an unchecked
  ``s3://`` entry);
* run ``reg-c`` uses ``train-data:v1`` (lineage: an input dataset made by another run) and
  logs ``clf`` v1, which is then linked with ``Artifact.link`` into the registry collection
  with alias ``prod`` and into the legacy portfolio with alias ``champion``;
* collection description and tags are set on both registry collections.

:func:`move_alias` moves an alias later (e.g. ``prod`` back to the collection's v0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

RUN_IDS = {"a": "reg-a", "b": "reg-b", "c": "reg-c"}
DATASET = "train-data"
MODEL = "clf"
REFS = "raw-refs"
REGISTRY = "model"  # the registry: project "wandb-registry-model" of the org entity
COLLECTION = "clf-registry"
PORTFOLIO = "clf-portfolio"  # legacy Model Registry portfolio in ENTITY/model-registry
COLLECTION_DESCRIPTION = "classifier promoted to serving"
COLLECTION_TAGS = ["tabular", "baseline"]
PORTFOLIO_DESCRIPTION = "legacy portfolio of the classifier"
S3_REF = "s3://corpus-bucket/raw/part-0000.csv"

_CORPUS = textwrap.dedent(
    """
    import json, os, sys, wandb
    entity, project, work = sys.argv[1], sys.argv[2], sys.argv[3]
    collection, portfolio = sys.argv[4], sys.argv[5]
    spec = json.loads(sys.argv[6])
    os.chdir(work)
    settings = wandb.Settings(console="off", x_disable_stats=True, disable_git=True)
    out = {"digests": {}, "ids": {}}

    def write(name, text):
        with open(name, "w") as fh:
            fh.write(text)
        return name

    def logged(run, art, aliases=None):
        art = run.log_artifact(art, aliases=aliases or [])
        art.wait()
        out["digests"][art.name] = art.digest
        out["ids"][art.name] = art.id
        return art

    # run A: dataset v0 (best), model v0 -> registry (staging) and legacy portfolio
    run = wandb.init(entity=entity, project=project, id=spec["a"], job_type="prep",
                     settings=settings)
    ds = wandb.Artifact("train-data", type="dataset", description="training rows",
                        metadata={"rows": 2})
    ds.add_file(write("train.csv", "x,y\\n1,0\\n2,1\\n"), name="train.csv")
    logged(run, ds, ["best"])
    clf = wandb.Artifact("clf", type="model", description="first model",
                         metadata={"acc": 0.81})
    clf.add_file(write("model.txt", "weights v0\\n"), name="model/weights.txt")
    clf = logged(run, clf)
    link = run.link_artifact(clf, "wandb-registry-model/" + collection, aliases=["staging"])
    out["link_v0"] = {"name": link.name, "aliases": link.aliases, "is_link": link.is_link}
    run.link_artifact(clf, "model-registry/" + portfolio)
    run.finish()

    # run B: dataset v1 (best moves here), reference artifact
    run = wandb.init(entity=entity, project=project, id=spec["b"], job_type="prep",
                     settings=settings)
    ds = wandb.Artifact("train-data", type="dataset", description="training rows",
                        metadata={"rows": 3})
    ds.add_file(write("train.csv", "x,y\\n1,0\\n2,1\\n3,1\\n"), name="train.csv")
    logged(run, ds, ["best"])
    refs = wandb.Artifact("raw-refs", type="dataset", description="raw data by reference")
    refs.add_reference("file://" + os.path.abspath(write("local.csv", "a,b\\n9,9\\n")),
                       name="local.csv")
    refs.add_reference(spec["s3"], name="s3/part-0000.csv", checksum=False)
    logged(run, refs)
    run.finish()

    # run C: uses dataset v1, logs model v1 -> registry (prod) and legacy (champion)
    run = wandb.init(entity=entity, project=project, id=spec["c"], job_type="train",
                     settings=settings)
    used = run.use_artifact("train-data:v1")
    out["used"] = used.name
    clf = wandb.Artifact("clf", type="model", description="second model",
                         metadata={"acc": 0.87})
    clf.add_file(write("model.txt", "weights v1\\n"), name="model/weights.txt")
    logged(run, clf)
    run.finish()

    api = wandb.Api()
    src = api.artifact(f"{entity}/{project}/clf:v1")
    link = src.link("wandb-registry-model/" + collection, aliases=["prod"])
    out["link_v1"] = {"name": link.name, "aliases": link.aliases, "is_link": link.is_link}
    src.link(f"{entity}/model-registry/{portfolio}", aliases=["champion"])
    out["org_entity"] = link.entity

    coll = api.artifact_collection("model", f"{link.entity}/wandb-registry-model/{collection}")
    coll.description = spec["description"]
    coll.tags = spec["tags"]
    coll.save()
    legacy = api.artifact_collection("model", f"{entity}/model-registry/{portfolio}")
    legacy.description = spec["portfolio_description"]
    legacy.save()
    print("CORPUS " + json.dumps(out))
    """
)

_MOVE = textwrap.dedent(
    """
    import json, sys, wandb
    path, alias = sys.argv[1], sys.argv[2]
    art = wandb.Api().artifact(path)
    if alias not in art.aliases:
        art.aliases.append(alias)
        art.save()
    print("MOVED " + json.dumps({"name": art.name, "aliases": art.aliases}))
    """
)


def _env(base_url: str, api_key: str, workdir: Path) -> dict[str, str]:
    """Online SDK environment with every W&B directory under ``workdir``."""
    env = dict(os.environ)
    env.update(
        WANDB_MODE="online",
        WANDB_SILENT="true",
        WANDB_BASE_URL=base_url,
        WANDB_API_KEY=api_key,
        WANDB_DIR=str(workdir),
        WANDB_DATA_DIR=str(workdir / "data"),
        WANDB_CACHE_DIR=str(workdir / "cache"),
        WANDB_CONFIG_DIR=str(workdir / "config"),
        WANDB_DISABLE_GIT="true",
    )
    env.pop("WANDB_ENTITY", None)
    env.pop("WANDB_PROJECT", None)
    return env


def _run(script: str, args: list[str], env: dict[str, str], cwd: Path, tag: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"SDK script failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith(tag + " "))
    return json.loads(line[len(tag) + 1 :])


def make_registry_corpus(
    base_url: str, entity: str, project: str, workdir: Path, api_key: str = "k" * 40
) -> dict[str, Any]:
    """Create the corpus (see the module docstring) on the server at ``base_url``.

    Returns run ids, artifact digests and ids by ``name:vN``, the organization entity and
    the expected registry state::

        {"entity", "project", "org_entity", "runs": {"a", "b", "c"},
         "digests": {"train-data:v0": ..., ...}, "ids": {...},
         "registry": {"path": "ORG_ENTITY/wandb-registry-model/clf-registry",
                      "versions": {"v0": {"source": "clf:v0", "aliases": [...]}, ...}},
         "legacy": {"path": "ENTITY/model-registry/clf-portfolio", "versions": {...}},
         "dataset_aliases": {"v0": [], "v1": ["best", "latest"]}, ...}
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        **RUN_IDS,
        "s3": S3_REF,
        "description": COLLECTION_DESCRIPTION,
        "tags": COLLECTION_TAGS,
        "portfolio_description": PORTFOLIO_DESCRIPTION,
    }
    made = _run(
        _CORPUS,
        [entity, project, str(workdir), COLLECTION, PORTFOLIO, json.dumps(spec)],
        _env(base_url, api_key, workdir),
        workdir,
        "CORPUS",
    )
    org_entity = made["org_entity"]
    return {
        "entity": entity,
        "project": project,
        "org_entity": org_entity,
        "runs": dict(RUN_IDS),
        "digests": made["digests"],
        "ids": made["ids"],
        "used": {RUN_IDS["c"]: [f"{DATASET}:v1"]},
        "producers": {
            f"{DATASET}:v0": RUN_IDS["a"],
            f"{DATASET}:v1": RUN_IDS["b"],
            f"{REFS}:v0": RUN_IDS["b"],
            f"{MODEL}:v0": RUN_IDS["a"],
            f"{MODEL}:v1": RUN_IDS["c"],
        },
        "dataset_aliases": {"v0": [], "v1": ["best", "latest"]},
        "model_aliases": {"v0": [], "v1": ["latest"]},
        "s3_ref": S3_REF,
        "local_ref_file": str(workdir / "local.csv"),
        "registry": {
            "name": REGISTRY,
            "collection": COLLECTION,
            "path": f"{org_entity}/wandb-registry-{REGISTRY}/{COLLECTION}",
            "description": COLLECTION_DESCRIPTION,
            "tags": list(COLLECTION_TAGS),
            "versions": {
                "v0": {"source": f"{MODEL}:v0", "aliases": ["staging"]},
                "v1": {"source": f"{MODEL}:v1", "aliases": ["latest", "prod"]},
            },
        },
        "legacy": {
            "collection": PORTFOLIO,
            "path": f"{entity}/model-registry/{PORTFOLIO}",
            "description": PORTFOLIO_DESCRIPTION,
            "versions": {
                "v0": {"source": f"{MODEL}:v0", "aliases": []},
                "v1": {"source": f"{MODEL}:v1", "aliases": ["champion", "latest"]},
            },
        },
        "links": {"v0": made["link_v0"], "v1": made["link_v1"]},
    }


def move_alias(
    base_url: str,
    path: str,
    alias: str,
    workdir: Path | None = None,
    api_key: str = "k" * 40,
) -> dict[str, Any]:
    """Give the version at ``path`` (``ENTITY/PROJECT/COLLECTION:vN``, a registry path
    ``ORG_ENTITY/wandb-registry-model/clf-registry:v0`` included) ``alias`` through the
    real SDK (``artifact.aliases.append``; ``save``); W&B takes it off the version of that
    collection that had it. Returns the version's name and aliases as the SDK saw them
    after the save. ``workdir`` holds the SDK's folders (a temporary one by default)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="move-alias-") as tmp:
            return move_alias(base_url, path, alias, Path(tmp), api_key)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    moved: dict[str, Any] = _run(
        _MOVE, [path, alias], _env(base_url, api_key, workdir), workdir, "MOVED"
    )
    return moved
