"""The interface one item kind's module implements (traces, prompts, datasets), apart from
the dispatcher in :mod:`bridge.adapters.mlflow.items` that imports those modules: a kind
module imports this, never the dispatcher, so the two never import each other (no cycle).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from bridge.adapters.features import ItemChange, ItemLinks
from bridge.schema_items import Item, ItemHeader

#: The tag (trace tag, prompt tag, dataset tag) every copy carries: its source identity.
ITEM_SOURCE_TAG = "bridge.source_id"


class KindReader(ABC):
    """Reads one item kind from an MLflow store (``store`` is the MlflowReader)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @abstractmethod
    def list(self) -> Iterator[ItemHeader]: ...

    @abstractmethod
    def read(self, header: ItemHeader) -> Item: ...


class KindWriter(ABC):
    """Writes one item kind into an MLflow store (``store`` is the MlflowWriter)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @abstractmethod
    def find(self, header: ItemHeader, links: ItemLinks) -> str | None: ...

    @abstractmethod
    def plan(self, item: Item, dest_id: str | None, links: ItemLinks) -> ItemChange: ...

    @abstractmethod
    def apply(self, item: Item, change: ItemChange, links: ItemLinks) -> str: ...

    @abstractmethod
    def read_back(self, dest_id: str) -> Item | None: ...

    def prepare(self, headers: list[ItemHeader]) -> None:
        """The headers the pass will look copies up for, in order, before the first
        ``find``: a part may read ahead in bulk (traces). Default: nothing."""
        return None

    def stored(self) -> bool:
        """False when this store cannot hold the kind at all (e.g. datasets in a file
        store): the writer then leaves it out of ``item_kinds`` and the engine reports
        the items not copied, once, instead of failing each one."""
        return True
