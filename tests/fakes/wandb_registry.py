"""Artifact collections, links and registries of the fake W&B server.

W&B keeps two kinds of artifact collections (GraphQL interface ``ArtifactCollection``):

- ``ArtifactSequence`` — the *source* collection a run logs versions into
  (``entity/project/name``); its versions are the
  :class:`~tests.fakes.wandb_store.FakeArtifact` objects of that name;
- ``ArtifactPortfolio`` — a collection of *links* to source versions: a W&B Registry
  collection (project ``wandb-registry-<registry>`` owned by the organization's entity) or
  a legacy Model Registry portfolio (project ``model-registry`` of a team entity). Each
  link (:class:`~tests.fakes.wandb_store.FakeMembership`) is numbered ``v0, v1, ...`` in
  link order and carries its own aliases.

Aliases are unique per collection: giving a version an alias takes it off the version
that had it; ``latest`` follows the newest version / the newest link.

The resolvers here are mixed into the server's root, project, artifact and mutation
resolvers (see ``wandb_server`` / ``wandb_upload``), so the shapes are what the real
client asks for: ``FetchRegistries``, ``RegistryCollections``, ``RegistryVersions``,
``ArtifactMembershipByName``, ``ProjectArtifacts``, ``LinkArtifact``, ``AddAliases``, ...
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .gql_mini import GqlError, Node
from .wandb_store import (
    FakeArtifact,
    FakeCollection,
    FakeMembership,
    FakeOrg,
    FakeProject,
    FakeRun,
    FakeSequenceInfo,
    b64md5,
    iso,
)

if TYPE_CHECKING:
    from .wandb_server import FakeWandbServer

REGISTRY_PREFIX = "wandb-registry-"
LEGACY_PROJECT = "model-registry"
#: Registries every organization has from the start (as on W&B).
DEFAULT_REGISTRIES = ("model", "dataset")
#: Server features announced when the Registry is enabled: the ones wandb 0.31 checks
#: before registry search, registry creation, membership-returning links and
#: cross-project use_artifact (``wandb.proto`` ServerFeature names).
REGISTRY_FEATURES = [
    "ARTIFACT_REGISTRY_SEARCH",
    "INCLUDE_ARTIFACT_TYPES_IN_REGISTRY_CREATION",
    "ARTIFACT_MEMBERSHIP_IN_LINK_ARTIFACT_RESPONSE",
    "ARTIFACT_COLLECTIONS_FILTERING_SORTING",
    "USE_ARTIFACT_WITH_ENTITY_AND_PROJECT_INFORMATION",
]
_VERSION = re.compile(r"^v(\d+)$")


def internal_id(project_id: str) -> str:
    """A project's GraphQL ``internalId``: base64 of ``ProjectInternalId:<n>`` (the client
    decodes it to build registry filters)."""
    return base64.b64encode(f"ProjectInternalId:{project_id}".encode()).decode()


# ---------------------------------------------------------------- collection views


@dataclass
class Member:
    """One version as a member of one collection (source or portfolio)."""

    coll: Coll
    art: FakeArtifact
    index: int
    aliases: list[str]  # the live list (FakeArtifact.aliases or FakeMembership.aliases)
    created_at: float
    id: str


@dataclass
class RegistrySettings:
    """What ``UpsertRegistry`` sets; the default registries allow every type."""

    access: str = "PRIVATE"
    allow_all_types: bool = True
    types: list[str] | None = None


@dataclass
class Coll:
    """A collection as the API shows it, sequence or portfolio."""

    name: str
    entity: str
    project: str
    type: str
    id: str
    created_at: float
    portfolio: FakeCollection | None
    arts: list[FakeArtifact]  # sequence versions (empty for portfolios)
    info: FakeSequenceInfo | FakeCollection

    @property
    def typename(self) -> str:
        return "ArtifactPortfolio" if self.portfolio is not None else "ArtifactSequence"

    def members(self) -> list[Member]:
        """Members oldest first."""
        if self.portfolio is not None:
            return [
                Member(self, m.artifact, m.version_index, m.aliases, m.created_at, m.id)
                for m in sorted(self.portfolio.members, key=lambda m: m.version_index)
            ]
        return [
            Member(self, a, a.version_index, a.aliases, a.created_at, f"m{a.id}")
            for a in sorted(self.arts, key=lambda a: a.version_index)
        ]

    def member(self, alias: str) -> Member | None:
        """The member named by an alias or a ``vN`` version label."""
        m = _VERSION.match(alias)
        for mem in self.members():
            if (m and mem.index == int(m.group(1))) or (not m and alias in mem.aliases):
                return mem
        return None

    def member_of(self, art: FakeArtifact) -> Member | None:
        return next((m for m in self.members() if m.art is art), None)


# ---------------------------------------------------------------- filters


def _loads(raw: Any) -> Any:
    if isinstance(raw, str):
        return json.loads(raw) if raw.strip() else None
    return raw


def matches(record: dict[str, Any], flt: Any) -> bool:
    """MongoDB-style filters as W&B takes them (``$and``/``$or``/``$in``/``$regex`` ...);
    a list-valued field matches when any element does. Unknown fields are errors."""
    if not flt:
        return True
    if not isinstance(flt, dict):
        raise GqlError(f"fake server: bad filter {flt!r}")
    for key, cond in flt.items():
        if key == "$and":
            ok = all(matches(record, c) for c in cond)
        elif key == "$or":
            ok = any(matches(record, c) for c in cond)
        elif key == "$nor":
            ok = not any(matches(record, c) for c in cond)
        else:
            if key not in record:
                raise GqlError(f"fake server: filter on {key!r} not implemented")
            ok = _cond(record[key], cond)
        if not ok:
            return False
    return True


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda v, w: v > w,
    "$gte": lambda v, w: v >= w,
    "$lt": lambda v, w: v < w,
    "$lte": lambda v, w: v <= w,
}


def _cond(actual: Any, cond: Any) -> bool:
    values = actual if isinstance(actual, list) else [actual]
    if not isinstance(cond, dict):
        return cond in values
    for op, arg in cond.items():
        if op == "$eq":
            ok = arg in values
        elif op == "$ne":
            ok = arg not in values
        elif op == "$in":
            ok = any(v in arg for v in values)
        elif op == "$nin":
            ok = not any(v in arg for v in values)
        elif op == "$regex":
            ok = any(isinstance(v, str) and re.search(arg, v) for v in values)
        elif op == "$exists":
            ok = (actual is not None) == bool(arg)
        elif op in _COMPARE:
            ok = any(v is not None and _COMPARE[op](v, arg) for v in values)
        else:
            raise GqlError(f"fake server: filter operator {op} not implemented")
        if not ok:
            return False
    return True


def _ordered(items: list[Any], order: str | None, fields: dict[str, Callable[[Any], Any]]) -> Any:
    if not order:
        return items
    desc = order.startswith("-")
    name = order.lstrip("+-")
    if name not in fields:
        raise GqlError(f"fake server: order by {name!r} not implemented")
    return sorted(items, key=fields[name], reverse=desc)


# ---------------------------------------------------------------- the store


class RegistryStore:
    """Collections, links, aliases and the organization of one fake server."""

    def __init__(
        self,
        srv: FakeWandbServer,
        enabled: bool = True,
        org_name: str = "acme-corp",
        org_entity: str = "acme-org",
    ) -> None:
        self.srv = srv
        self.enabled = enabled
        self.lock = srv.uploads.lock
        self.portfolios: dict[tuple[str, str, str], FakeCollection] = {}
        self.sequences: dict[str, FakeSequenceInfo] = {}
        #: Registry settings by (org entity, project): access, allowed artifact types.
        self.settings: dict[tuple[str, str], RegistrySettings] = {}
        self.org: FakeOrg | None = None
        if enabled:
            self.org = FakeOrg(name=org_name, entity=org_entity, teams=[srv.default_entity])
            for reg in DEFAULT_REGISTRIES:
                srv.add_project(org_entity, REGISTRY_PREFIX + reg, description=f"{reg} registry")

    @property
    def features(self) -> list[str]:
        return list(REGISTRY_FEATURES) if self.enabled else []

    # -- organization
    def org_of(self, entity: str | None) -> FakeOrg | None:
        org = self.org
        if org is None or entity is None:
            return None
        return org if entity in org.teams or entity in (org.entity, org.name) else None

    def org_by_name(self, name: str | None) -> FakeOrg | None:
        org = self.org
        return org if org is not None and name in (org.name, org.entity) else None

    # -- collections
    def sequence_info(self, art: FakeArtifact) -> FakeSequenceInfo:
        return self.sequences.setdefault(art.sequence_id, FakeSequenceInfo())

    def _sequence(self, proj: FakeProject, name: str) -> Coll | None:
        arts = sorted(
            (a for a in self.srv.artifacts(proj) if a.name == name),
            key=lambda a: a.version_index,
        )
        if not arts:
            return None
        first = arts[0]
        return Coll(
            name=name,
            entity=proj.entity,
            project=proj.name,
            type=first.type,
            id=first.sequence_id,
            created_at=first.created_at,
            portfolio=None,
            arts=arts,
            info=self.sequence_info(first),
        )

    def _portfolio(self, pf: FakeCollection) -> Coll:
        return Coll(pf.name, pf.entity, pf.project, pf.type, pf.id, pf.created_at, pf, [], pf)

    def collection(self, entity: str, project: str, name: str) -> Coll | None:
        pf = self.portfolios.get((entity, project, name))
        if pf is not None:
            return self._portfolio(pf)
        proj = self.srv.projects.get((entity, project))
        return self._sequence(proj, name) if proj else None

    def collections_in(self, proj: FakeProject) -> list[Coll]:
        """Sequences and portfolios of a project, newest collection first (W&B's default:
        collection id descending)."""
        names = dict.fromkeys(a.name for a in self.srv.artifacts(proj))
        out = [c for c in (self._sequence(proj, n) for n in names) if c is not None]
        out += [
            self._portfolio(pf)
            for (e, p, _), pf in self.portfolios.items()
            if (e, p) == (proj.entity, proj.name)
        ]
        return sorted(out, key=lambda c: int(c.id), reverse=True)

    def collection_by_id(self, cid: str) -> Coll | None:
        for pf in self.portfolios.values():
            if pf.id == cid:
                return self._portfolio(pf)
        for proj in self.srv.projects.values():
            for art in self.srv.artifacts(proj):
                if art.sequence_id == cid:
                    return self._sequence(proj, art.name)
        return None

    def source_of(self, art: FakeArtifact) -> Coll:
        coll = self.collection(art.entity, art.project, art.name)
        if coll is None:  # a version not attached to any run (cannot happen via the SDK)
            raise GqlError(f"artifact {art.id} has no source collection")
        return coll

    def memberships_of(self, art: FakeArtifact) -> list[Member]:
        """The version in its source collection, then in every portfolio linking it."""
        out: list[Member] = []
        src = self.collection(art.entity, art.project, art.name)
        mem = src.member_of(art) if src else None
        if mem is not None:
            out.append(mem)
        for pf in self.portfolios.values():
            for m in pf.members:
                if m.artifact is art:
                    out.append(
                        Member(
                            self._portfolio(pf), art, m.version_index, m.aliases, m.created_at, m.id
                        )
                    )
        return out

    # -- aliases
    @staticmethod
    def set_alias(coll: Coll, art: FakeArtifact, alias: str) -> None:
        """Give ``art`` the alias in ``coll``, taking it off whichever member had it."""
        if _VERSION.match(alias):
            raise GqlError(f"alias {alias!r} is reserved for version numbers")
        target = coll.member_of(art)
        if target is None:
            raise GqlError(f"artifact {art.id} is not in collection {coll.name!r}")
        for mem in coll.members():
            if mem.art is not art and alias in mem.aliases:
                mem.aliases.remove(alias)
        if alias not in target.aliases:
            target.aliases.append(alias)

    @staticmethod
    def drop_alias(coll: Coll, art: FakeArtifact, alias: str) -> None:
        target = coll.member_of(art)
        if target is not None and alias in target.aliases:
            target.aliases.remove(alias)

    def commit_aliases(self, art: FakeArtifact) -> None:
        """A committed version takes ``latest`` and its requested aliases from the
        other versions of its collection."""
        with self.lock:
            coll = self.collection(art.entity, art.project, art.name)
            if coll is None or coll.member_of(art) is None:  # logged by no run
                art.aliases[:] = list(dict.fromkeys(["latest", *art.aliases]))
                return
            for alias in ["latest", *art.aliases]:
                self.set_alias(coll, art, alias)

    def _alias_target(self, a: dict[str, Any]) -> Coll:
        name = a.get("artifactCollectionName") or ""
        coll = self.collection(a.get("entityName") or "", a.get("projectName") or "", name)
        if coll is None:
            raise GqlError(f"artifact collection {name!r} not found")
        return coll

    def add_aliases(self, art: FakeArtifact, inputs: list[dict[str, Any]]) -> None:
        with self.lock:
            for a in inputs:
                self.set_alias(self._alias_target(a), art, str(a["alias"]))

    def delete_aliases(self, art: FakeArtifact, inputs: list[dict[str, Any]]) -> None:
        with self.lock:
            for a in inputs:
                self.drop_alias(self._alias_target(a), art, str(a["alias"]))

    # -- links
    def link(
        self, art: FakeArtifact, entity: str, project: str, name: str, aliases: list[str]
    ) -> Member:
        """Link a source version into a portfolio (created on first link)."""
        with self.lock:
            if project.startswith(REGISTRY_PREFIX):
                org = self.org
                if org is None:
                    raise GqlError("the W&B Registry is not enabled on this server")
                if entity != org.entity:
                    raise GqlError(
                        f"registry {project!r} lives in the organization entity "
                        f"{org.entity!r}, not {entity!r}"
                    )
                if (entity, project) not in self.srv.projects:
                    raise GqlError(f"registry {project!r} not found")
                conf = self.settings.get((entity, project), RegistrySettings())
                if not conf.allow_all_types and art.type not in (conf.types or []):
                    raise GqlError(
                        f"artifact type {art.type!r} is not allowed in registry {project!r}"
                    )
            if (entity, project, name) in self.portfolios:
                pf = self.portfolios[(entity, project, name)]
            else:
                proj = self.srv.projects.get((entity, project))
                if proj is not None and self._sequence(proj, name) is not None:
                    raise GqlError(f"{entity}/{project}/{name} is a source collection")
                self.srv.add_project(entity, project)
                pf = FakeCollection(
                    name=name, entity=entity, project=project, type=art.type, created_at=time.time()
                )
                self.portfolios[(entity, project, name)] = pf
            if pf.type != art.type:
                raise GqlError(
                    f"cannot link a {art.type!r} artifact into {name!r} of type {pf.type!r}"
                )
            coll = self._portfolio(pf)
            new = coll.member_of(art) is None
            if new:
                pf.members.append(FakeMembership(art, pf.next_index(), [], created_at=time.time()))
            for alias in (["latest"] if new else []) + aliases:
                self.set_alias(coll, art, alias)
            mem = coll.member_of(art)
            assert mem is not None
            return mem

    def unlink(self, art: FakeArtifact, portfolio_id: str) -> None:
        with self.lock:
            for pf in self.portfolios.values():
                if pf.id == portfolio_id:
                    pf.members = [m for m in pf.members if m.artifact is not art]
                    return
            raise GqlError(f"portfolio {portfolio_id} not found")

    # -- runs
    def producer_of(self, art: FakeArtifact) -> FakeRun | None:
        proj = self.srv.projects.get((art.entity, art.project))
        if proj is None:
            return None
        if art.producer and art.producer in proj.runs:
            return proj.runs[art.producer]
        runs = sorted(proj.runs.values(), key=lambda r: (r.created_at, int(r.id)))
        return next((r for r in runs if art in r.logged_artifacts), None)

    def users_of(self, art: FakeArtifact) -> list[FakeRun]:
        return [
            r
            for p in self.srv.projects.values()
            for r in p.runs.values()
            if art in r.used_artifacts
        ]

    def artifact(self, aid: Any) -> FakeArtifact:
        art = self.srv.artifact_by_id(str(aid))
        if art is None:
            raise GqlError(f"artifact {aid} not found")
        return art


def _store(srv: FakeWandbServer) -> RegistryStore:
    return srv.registry


# ---------------------------------------------------------------- resolver nodes


def _project_node(srv: FakeWandbServer, entity: str, project: str) -> Any:
    from .wandb_server import _Project

    p = srv.projects.get((entity, project))
    return _Project(p, srv) if p else None


def _artifact_node(srv: FakeWandbServer, art: FakeArtifact) -> Any:
    from .wandb_server import _Artifact

    return _Artifact(art, srv)


def _run_node(srv: FakeWandbServer, run: FakeRun) -> Any:
    from .wandb_server import _Run

    return _Run(run, srv)


def _connection(items: list[Any], a: dict[str, Any], key: Callable[[Any], str]) -> dict[str, Any]:
    from .wandb_server import _connection as conn

    return conn(items, a.get("after"), a.get("first"), key)


def _tag_nodes(tags: list[str], owner: str) -> list[dict[str, Any]]:
    return [{"__typename": "Tag", "id": f"{owner}-tag-{t}", "name": t} for t in tags]


class CollectionNode(Node):
    """``ArtifactSequence`` / ``ArtifactPortfolio``."""

    def __init__(self, coll: Coll, srv: FakeWandbServer) -> None:
        self.c, self.srv = coll, srv
        self.typename = coll.typename

    def f_id(self, a: dict[str, Any]) -> Any:
        return self.c.id

    def f_name(self, a: dict[str, Any]) -> Any:
        return self.c.name

    def f_description(self, a: dict[str, Any]) -> Any:
        return self.c.info.description

    def f_createdAt(self, a: dict[str, Any]) -> Any:
        return iso(self.c.created_at)

    def f_updatedAt(self, a: dict[str, Any]) -> Any:
        stamps = [self.c.created_at] + [m.created_at for m in self.c.members()]
        return iso(max(stamps))

    def f_state(self, a: dict[str, Any]) -> Any:
        return "READY"

    def f_project(self, a: dict[str, Any]) -> Any:
        return _project_node(self.srv, self.c.entity, self.c.project)

    def f_defaultArtifactType(self, a: dict[str, Any]) -> Any:
        return {"__typename": "ArtifactType", "id": f"type-{self.c.type}", "name": self.c.type}

    def f_tags(self, a: dict[str, Any]) -> Any:
        nodes = _tag_nodes(self.c.info.tags, self.c.id)
        return {
            "edges": [{"node": n, "cursor": n["id"]} for n in nodes],
            "totalCount": len(nodes),
            "pageInfo": {"__typename": "PageInfo", "endCursor": None, "hasNextPage": False},
        }

    def f_aliases(self, a: dict[str, Any]) -> Any:
        nodes = [
            {"__typename": "ArtifactAlias", "id": f"{m.id}-{al}", "alias": al}
            for m in self.c.members()
            for al in m.aliases
        ]
        return _connection(nodes, a, lambda n: n["id"])

    def f_artifactMembership(self, a: dict[str, Any]) -> Any:
        mem = self.c.member(str(a.get("aliasName") or "latest"))
        return MembershipNode(mem, self.srv) if mem else None

    def f_artifactMemberships(self, a: dict[str, Any]) -> Any:
        nodes = [MembershipNode(m, self.srv) for m in reversed(self.c.members())]
        return _connection(nodes, a, lambda n: n.m.id)

    def f_artifacts(self, a: dict[str, Any]) -> Any:
        """Versions newest first; ``edges.version`` is the version *in this collection*."""
        mems = [
            m
            for m in reversed(self.c.members())
            if matches(
                {
                    "state": "COMMITTED",
                    "versionIndex": m.index,
                    "alias": list(m.aliases),
                    "aliases": list(m.aliases),
                    "tag": list(m.art.tags),
                },
                _loads(a.get("filters")),
            )
        ]
        mems = _ordered(
            mems,
            a.get("order"),
            {"createdAt": lambda m: m.created_at, "versionIndex": lambda m: m.index},
        )
        conn = _connection(mems, a, lambda m: m.id)
        conn["edges"] = [
            {
                "node": _artifact_node(self.srv, e["node"].art),
                "cursor": e["cursor"],
                "version": f"v{e['node'].index}",
            }
            for e in conn["edges"]
        ]
        return conn


class MembershipNode(Node):
    typename = "ArtifactCollectionMembership"

    def __init__(self, mem: Member, srv: FakeWandbServer) -> None:
        self.m, self.srv = mem, srv

    def f_id(self, a: dict[str, Any]) -> Any:
        return self.m.id

    def f_versionIndex(self, a: dict[str, Any]) -> Any:
        return self.m.index

    def f_createdAt(self, a: dict[str, Any]) -> Any:
        return iso(self.m.created_at)

    def f_aliases(self, a: dict[str, Any]) -> Any:
        coll = CollectionNode(self.m.coll, self.srv)
        return [
            {
                "__typename": "ArtifactAlias",
                "id": f"{self.m.id}-{al}",
                "alias": al,
                "artifactCollection": coll,
            }
            for al in self.m.aliases
        ]

    def f_artifactCollection(self, a: dict[str, Any]) -> Any:
        return CollectionNode(self.m.coll, self.srv)

    def f_artifact(self, a: dict[str, Any]) -> Any:
        return _artifact_node(self.srv, self.m.art)

    def f_files(self, a: dict[str, Any]) -> Any:
        art = self.m.art
        names = a.get("names") or sorted(art.files)
        nodes = [
            {
                "__typename": "File",
                "id": f"{art.id}:{n}",
                "name": n,
                "displayName": n.rsplit("/", 1)[-1],
                "url": self.srv.artifact_file_url(art, n),
                "directUrl": self.srv.artifact_file_url(art, n),
                "sizeBytes": len(art.files[n]),
                "storagePath": f"wandb_artifacts/{art.id}/{n}",
                "mimetype": "application/octet-stream",
                "updatedAt": iso(art.created_at),
                "digest": b64md5(art.files[n]),
                "md5": b64md5(art.files[n]),
            }
            for n in names
            if n in art.files
        ]
        return _connection(nodes, a, lambda n: n["id"])


class ArtifactTypeNode(Node):
    typename = "ArtifactType"

    def __init__(self, proj: FakeProject, name: str, srv: FakeWandbServer) -> None:
        self.p, self.name, self.srv = proj, name, srv

    def _colls(self, a: dict[str, Any]) -> list[Coll]:
        kinds = a.get("collectionTypes")
        out = [c for c in _store(self.srv).collections_in(self.p) if c.type == self.name]
        if kinds:
            want = {"SEQUENCE": "ArtifactSequence", "PORTFOLIO": "ArtifactPortfolio"}
            out = [c for c in out if c.typename in {want[k] for k in kinds}]
        return out

    def f_id(self, a: dict[str, Any]) -> Any:
        return f"type-{self.name}"

    def f_name(self, a: dict[str, Any]) -> Any:
        return self.name

    def f_description(self, a: dict[str, Any]) -> Any:
        return None

    def f_createdAt(self, a: dict[str, Any]) -> Any:
        return iso(self.p.created_at)

    def f_artifactCollection(self, a: dict[str, Any]) -> Any:
        coll = _store(self.srv).collection(self.p.entity, self.p.name, str(a.get("name")))
        return CollectionNode(coll, self.srv) if coll and coll.type == self.name else None

    f_artifactSequence = f_artifactCollection

    def f_artifactCollections(self, a: dict[str, Any]) -> Any:
        return _collections_conn(self._colls(a), a, self.srv)


def _collection_record(c: Coll) -> dict[str, Any]:
    return {
        "id": c.id,
        "artifact_collection_id": c.id,
        "collection_id": c.id,
        "name": c.name,
        "tag": list(c.info.tags),
        "description": c.info.description,
        "created_at": iso(c.created_at),
    }


def _collections_conn(colls: list[Coll], a: dict[str, Any], srv: FakeWandbServer) -> Any:
    flt = _loads(a.get("filters"))
    colls = [c for c in colls if matches(_collection_record(c), flt)]
    colls = _ordered(
        colls,
        a.get("order"),
        {
            "name": lambda c: c.name,
            "createdAt": lambda c: c.created_at,
            "created_at": lambda c: c.created_at,
            "updatedAt": lambda c: c.created_at,
            "updated_at": lambda c: c.created_at,
        },
    )
    nodes = [CollectionNode(c, srv) for c in colls]
    return _connection(nodes, a, lambda n: n.c.id)


class OrgNode(Node):
    typename = "Organization"

    def __init__(self, org: FakeOrg, srv: FakeWandbServer) -> None:
        self.o, self.srv = org, srv

    def f_id(self, a: dict[str, Any]) -> Any:
        return self.o.id

    def f_name(self, a: dict[str, Any]) -> Any:
        return self.o.name

    def f_orgEntity(self, a: dict[str, Any]) -> Any:
        return OrgEntityNode(self.o, self.srv)

    def f_advancedRegistryFeatures(self, a: dict[str, Any]) -> Any:
        return {"advancedSearch": False}


class OrgEntityNode(Node):
    """The organization's entity: owner of every ``wandb-registry-*`` project."""

    typename = "Entity"

    def __init__(self, org: FakeOrg, srv: FakeWandbServer) -> None:
        self.o, self.srv = org, srv

    def f_id(self, a: dict[str, Any]) -> Any:
        return f"{self.o.id}-entity"

    def f_name(self, a: dict[str, Any]) -> Any:
        return self.o.entity

    def f_entityType(self, a: dict[str, Any]) -> Any:
        return "organization"

    def f_organization(self, a: dict[str, Any]) -> Any:
        return OrgNode(self.o, self.srv)

    def _registries(self, flt: Any) -> list[FakeProject]:
        projs = [
            p
            for (e, n), p in self.srv.projects.items()
            if e == self.o.entity and n.startswith(REGISTRY_PREFIX)
        ]
        out = []
        for p in projs:
            rec = {
                "id": int(p.id),
                "project_id": int(p.id),
                "name": p.name,
                "entity_id": int(self.o.id),
                "description": p.description,
                "created_at": iso(p.created_at),
            }
            if matches(rec, flt):
                out.append(p)
        return sorted(out, key=lambda p: int(p.id))

    def f_projects(self, a: dict[str, Any]) -> Any:
        projs = _ordered(
            self._registries(_loads(a.get("filters"))),
            a.get("order"),
            {"name": lambda p: p.name, "created_at": lambda p: p.created_at},
        )
        nodes = [_project_node(self.srv, p.entity, p.name) for p in projs]
        return _connection(nodes, a, lambda n: n.p.id)

    def _collections(self, a: dict[str, Any]) -> list[Coll]:
        store = _store(self.srv)
        kinds = a.get("collectionTypes") or ["PORTFOLIO"]
        out: list[Coll] = []
        for p in self._registries(_loads(a.get("projectFilters"))):
            for c in store.collections_in(p):
                kind = "PORTFOLIO" if c.portfolio is not None else "SEQUENCE"
                if kind in kinds:
                    out.append(c)
        return out

    def f_artifactCollections(self, a: dict[str, Any]) -> Any:
        return _collections_conn(self._collections(a), a, self.srv)

    def f_artifactMemberships(self, a: dict[str, Any]) -> Any:
        cflt = _loads(a.get("collectionFilters"))
        vflt = _loads(a.get("filters"))
        colls = [
            c
            for c in self._collections({**a, "collectionTypes": ["PORTFOLIO"]})
            if matches(_collection_record(c), cflt)
        ]
        mems = []
        for c in colls:
            for m in reversed(c.members()):
                rec = {
                    "id": m.art.id,
                    "version": f"v{m.index}",
                    "alias": list(m.aliases),
                    "tag": list(m.art.tags),
                    "metadata": m.art.metadata,
                    "created_at": iso(m.created_at),
                }
                if matches(rec, vflt):
                    mems.append(MembershipNode(m, self.srv))
        return _connection(mems, a, lambda n: n.m.id)


class EntityNode(Node):
    """``entity(name:)``: a team (in the organization), a personal entity, or the org's."""

    typename = "Entity"

    def __init__(self, name: str, srv: FakeWandbServer) -> None:
        self.name, self.srv = name, srv

    def f_id(self, a: dict[str, Any]) -> Any:
        return f"entity-{self.name}"

    def f_name(self, a: dict[str, Any]) -> Any:
        return self.name

    def f_isTeam(self, a: dict[str, Any]) -> Any:
        """Teams and the org's entity; the viewer's own entity counts as a team when it
        belongs to the organization (the fake's default entity plays both roles)."""
        return (
            self.name != self.srv.default_entity or _store(self.srv).org_of(self.name) is not None
        )

    def f_xxhashDigestsEnabled(self, a: dict[str, Any]) -> Any:
        return False

    def f_organization(self, a: dict[str, Any]) -> Any:
        org = _store(self.srv).org_of(self.name)
        return OrgNode(org, self.srv) if org else None

    def f_user(self, a: dict[str, Any]) -> Any:
        """A team entity has no user; a personal one lists its organizations (none)."""
        if _store(self.srv).org_of(self.name):
            return None
        return {"__typename": "User", "id": "1", "organizations": []}

    def f_project(self, a: dict[str, Any]) -> Any:
        return _project_node(self.srv, self.name, str(a.get("name") or ""))


# ---------------------------------------------------------------- mixins


class RootFields:
    """Registry fields of the query root."""

    srv: FakeWandbServer

    def f_entity(self, a: dict[str, Any]) -> Any:
        name = a.get("name") or self.srv.default_entity
        store = _store(self.srv)
        known = set(self.srv.entities()) | ({store.org.entity} if store.org else set())
        return EntityNode(name, self.srv) if name in known else None

    def f_organization(self, a: dict[str, Any]) -> Any:
        org = _store(self.srv).org_by_name(a.get("name"))
        return OrgNode(org, self.srv) if org else None

    def f_artifactCollection(self, a: dict[str, Any]) -> Any:
        coll = _store(self.srv).collection_by_id(str(a.get("id")))
        return CollectionNode(coll, self.srv) if coll else None

    f_artifactSequence = f_artifactCollection
    f_artifactPortfolio = f_artifactCollection


class ProjectFields:
    """Collections, memberships, types and registry attributes of a project."""

    srv: FakeWandbServer
    p: FakeProject

    def _coll(self, name: str) -> Coll | None:
        return _store(self.srv).collection(self.p.entity, self.p.name, name)

    def _member(self, spec: str) -> Member | None:
        name, _, alias = spec.partition(":")
        coll = self._coll(name)
        return coll.member(alias or "latest") if coll else None

    def f_artifactCollection(self, a: dict[str, Any]) -> Any:
        coll = self._coll(str(a.get("name") or ""))
        return CollectionNode(coll, self.srv) if coll else None

    def f_artifactCollectionMembership(self, a: dict[str, Any]) -> Any:
        """``name: "collection:alias"`` (``api.artifact`` / ``run.use_artifact``)."""
        mem = self._member(str(a.get("name") or ""))
        return MembershipNode(mem, self.srv) if mem else None

    def f_artifact(self, a: dict[str, Any]) -> Any:
        mem = self._member(str(a.get("name") or ""))
        return _artifact_node(self.srv, mem.art) if mem else None

    def f_artifactCollections(self, a: dict[str, Any]) -> Any:
        colls = _store(self.srv).collections_in(self.p)
        kinds = a.get("collectionTypes")
        if kinds:
            colls = [c for c in colls if ("PORTFOLIO" if c.portfolio else "SEQUENCE") in kinds]
        return _collections_conn(colls, a, self.srv)

    def f_artifactType(self, a: dict[str, Any]) -> Any:
        name = str(a.get("name") or "")
        types = {c.type for c in _store(self.srv).collections_in(self.p)}
        return ArtifactTypeNode(self.p, name, self.srv) if name in types else None

    def _settings(self) -> RegistrySettings:
        return _store(self.srv).settings.get((self.p.entity, self.p.name), RegistrySettings())

    def f_artifactTypes(self, a: dict[str, Any]) -> Any:
        """Types in use (and, with ``includeAll``, the types a registry allows)."""
        names = {c.type for c in _store(self.srv).collections_in(self.p)}
        if a.get("includeAll"):
            names |= set(self._settings().types or [])
        nodes = [ArtifactTypeNode(self.p, n, self.srv) for n in sorted(names)]
        return _connection(nodes, a, lambda n: n.name)

    def f_access(self, a: dict[str, Any]) -> Any:
        return self._settings().access

    def f_allowAllArtifactTypesInRegistry(self, a: dict[str, Any]) -> Any:
        return self._settings().allow_all_types

    def f_updatedAt(self, a: dict[str, Any]) -> Any:
        return iso(self.p.created_at)


class ArtifactFields:
    """Alias, membership and lineage fields of an artifact version."""

    srv: FakeWandbServer
    a: FakeArtifact

    def f_aliases(self, args: dict[str, Any]) -> Any:
        """Aliases in every collection holding the version, each naming its collection
        (the client keeps those of the collection it fetched the version through), the
        ``vN`` version label among them: the client takes a version fetched through a
        collection listing (``ProjectArtifacts``) to be ``vN`` of that collection from it."""
        return [
            {
                "__typename": "ArtifactAlias",
                "id": f"{m.id}-{al}",
                "alias": al,
                "artifactCollection": CollectionNode(m.coll, self.srv),
            }
            for m in _store(self.srv).memberships_of(self.a)
            for al in [*m.aliases, f"v{m.index}"]
        ]

    def f_tags(self, args: dict[str, Any]) -> Any:
        return _tag_nodes(self.a.tags, self.a.id)

    def f_artifactMemberships(self, args: dict[str, Any]) -> Any:
        nodes = [MembershipNode(m, self.srv) for m in _store(self.srv).memberships_of(self.a)]
        return _connection(nodes, args, lambda n: n.m.id)

    def f_artifactCollections(self, args: dict[str, Any]) -> Any:
        nodes = [CollectionNode(m.coll, self.srv) for m in _store(self.srv).memberships_of(self.a)]
        return _connection(nodes, args, lambda n: n.c.id)

    def f_createdBy(self, args: dict[str, Any]) -> Any:
        run = _store(self.srv).producer_of(self.a)
        return _run_node(self.srv, run) if run else None

    def f_usedBy(self, args: dict[str, Any]) -> Any:
        nodes = [_run_node(self.srv, r) for r in _store(self.srv).users_of(self.a)]
        return _connection(nodes, args, lambda n: n.r.id)


class RegistryMutations:
    """Link, alias, collection and registry mutations (what ``Artifact.link``,
    ``Artifact.save``, ``ArtifactCollection.save`` and ``Api.create_registry`` send)."""

    srv: FakeWandbServer

    def f_linkArtifact(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        store = _store(self.srv)
        if not inp.get("artifactID"):
            raise GqlError("linkArtifact: artifactID is required")
        art = store.artifact(inp["artifactID"])
        name = inp.get("artifactPortfolioName")
        if not name and inp.get("artifactPortfolioID"):
            coll = store.collection_by_id(str(inp["artifactPortfolioID"]))
            name = coll.name if coll else None
        if not name:
            raise GqlError("linkArtifact: no portfolio named")
        entity = inp.get("entityName") or art.entity
        project = inp.get("projectName") or art.project
        aliases = [str(x["alias"]) for x in inp.get("aliases") or []]
        mem = store.link(art, entity, project, str(name), aliases)
        return {"versionIndex": mem.index, "artifactMembership": MembershipNode(mem, self.srv)}

    def f_unlinkArtifact(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        store = _store(self.srv)
        store.unlink(store.artifact(inp.get("artifactID")), str(inp.get("artifactPortfolioID")))
        return {"success": True}

    def f_addAliases(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        store = _store(self.srv)
        store.add_aliases(store.artifact(inp.get("artifactID")), inp.get("aliases") or [])
        return {"success": True}

    def f_deleteAliases(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        store = _store(self.srv)
        store.delete_aliases(store.artifact(inp.get("artifactID")), inp.get("aliases") or [])
        return {"success": True}

    def f_updateArtifact(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        store = _store(self.srv)
        art = store.artifact(inp.get("artifactID"))
        with store.lock:
            if inp.get("description") is not None:
                art.description = inp["description"]
            if inp.get("metadata") is not None:
                art.metadata = json.loads(inp["metadata"])
            for t in inp.get("tagsToAdd") or []:
                if t["tagName"] not in art.tags:
                    art.tags.append(t["tagName"])
            for t in inp.get("tagsToDelete") or []:
                if t["tagName"] in art.tags:
                    art.tags.remove(t["tagName"])
            if inp.get("aliases") is not None:  # old clients: the source aliases, replaced
                coll = store.source_of(art)
                wanted = [str(x["alias"]) for x in inp["aliases"]]
                for alias in list(art.aliases):
                    if alias not in wanted:
                        store.drop_alias(coll, art, alias)
                for alias in wanted:
                    store.set_alias(coll, art, alias)
        return {"artifact": _artifact_node(self.srv, art)}

    def _update_collection(self, cid: Any, inp: dict[str, Any]) -> Any:
        store = _store(self.srv)
        coll = store.collection_by_id(str(cid))
        if coll is None:
            raise GqlError(f"artifact collection {cid} not found")
        with store.lock:
            if inp.get("description") is not None:
                coll.info.description = inp["description"]
            if inp.get("name") and inp["name"] != coll.name:
                if coll.portfolio is None:
                    for art in coll.arts:
                        art.name = inp["name"]
                else:
                    del store.portfolios[(coll.entity, coll.project, coll.name)]
                    coll.portfolio.name = inp["name"]
                    store.portfolios[(coll.entity, coll.project, inp["name"])] = coll.portfolio
        fresh = store.collection_by_id(str(cid))
        assert fresh is not None
        return {"artifactCollection": CollectionNode(fresh, self.srv)}

    def f_updateArtifactSequence(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        return self._update_collection(inp.get("artifactSequenceID"), inp)

    def f_updateArtifactPortfolio(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        return self._update_collection(inp.get("artifactPortfolioID"), inp)

    def _tagged(self, inp: dict[str, Any]) -> Coll:
        store = _store(self.srv)
        coll = store.collection(
            inp.get("entityName") or "",
            inp.get("projectName") or "",
            inp.get("artifactCollectionName") or "",
        )
        if coll is None:
            raise GqlError(f"artifact collection {inp.get('artifactCollectionName')!r} not found")
        return coll

    def f_createArtifactCollectionTagAssignments(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        coll = self._tagged(inp)
        names = [str(t["tagName"]) for t in inp.get("tags") or []]
        with _store(self.srv).lock:
            for n in names:
                if n not in coll.info.tags:
                    coll.info.tags.append(n)
        return {"tags": _tag_nodes(names, coll.id)}

    def f_deleteArtifactCollectionTagAssignments(self, a: dict[str, Any]) -> Any:
        inp = a.get("input") or {}
        coll = self._tagged(inp)
        with _store(self.srv).lock:
            for t in inp.get("tags") or []:
                if t["tagName"] in coll.info.tags:
                    coll.info.tags.remove(t["tagName"])
        return {"success": True}

    def f_upsertModel(self, a: dict[str, Any]) -> Any:
        """``UpsertRegistry`` (``Api.create_registry`` / ``Registry.save``): a project."""
        inp = a.get("input") or {}
        entity = inp.get("entityName") or self.srv.default_entity
        name = str(inp.get("name") or "")
        if not name:
            raise GqlError("upsertModel: name is required")
        inserted = (entity, name) not in self.srv.projects
        proj = self.srv.add_project(entity, name)
        if inp.get("description") is not None:
            proj.description = inp["description"]
        if name.startswith(REGISTRY_PREFIX):
            conf = _store(self.srv).settings.setdefault((entity, name), RegistrySettings())
            if inp.get("access") is not None:
                conf.access = inp["access"]
            if inp.get("allowAllArtifactTypesInRegistry") is not None:
                conf.allow_all_types = bool(inp["allowAllArtifactTypesInRegistry"])
            if inp.get("artifactTypes") is not None:
                types = [str(t["name"]) for t in inp["artifactTypes"]]
                conf.types = list(dict.fromkeys([*(conf.types or []), *types]))
        return {"inserted": inserted, "project": _project_node(self.srv, entity, name)}


__all__ = [
    "REGISTRY_FEATURES",
    "REGISTRY_PREFIX",
    "LEGACY_PROJECT",
    "RegistryStore",
    "RootFields",
    "ProjectFields",
    "ArtifactFields",
    "RegistryMutations",
    "internal_id",
]
