"""MLflow 3 workspace items (traces, prompts, evaluation datasets): the reader's
:class:`ItemSource` and the writer's :class:`ItemSink`, each dispatching by kind to one
module per kind (``traces_read``/``traces_write``, ``prompts``, ``datasets``).

Each kind's part gets the reader or writer it serves (``store``: its ``client``, ``kind``
— "sqlite", "postgresql", "rest", "file" ... —, ``display_uri``, ``experiments()`` on the
reader, ``options``) and implements the small interface of :mod:`.item_parts`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bridge.adapters.features import ItemChange, ItemLinks, ItemSink, ItemSource

# The kind interface lives in item_parts (kind modules import it from there, so they and
# this dispatcher never import each other); re-exported here for existing imports.
from bridge.adapters.mlflow.item_parts import ITEM_SOURCE_TAG, KindReader, KindWriter
from bridge.schema_items import Item, ItemHeader, ItemKind

__all__ = ["ITEM_SOURCE_TAG", "KindReader", "KindWriter", "MlflowItemSink", "MlflowItemSource"]


def _kind_readers(store: Any) -> dict[ItemKind, KindReader]:
    from bridge.adapters.mlflow.datasets import DatasetReader
    from bridge.adapters.mlflow.models_items import RunlessModelReader
    from bridge.adapters.mlflow.prompts import PromptReader
    from bridge.adapters.mlflow.traces_read import TraceReader

    return {
        "trace": TraceReader(store),
        "prompt": PromptReader(store),
        "dataset": DatasetReader(store),
        "model": RunlessModelReader(store),
    }


def _kind_writers(store: Any) -> dict[ItemKind, KindWriter]:
    from bridge.adapters.mlflow.datasets import DatasetWriter
    from bridge.adapters.mlflow.models_items_write import RunlessModelWriter
    from bridge.adapters.mlflow.prompts import PromptWriter
    from bridge.adapters.mlflow.traces_write import TraceWriter

    return {
        "trace": TraceWriter(store),
        "prompt": PromptWriter(store),
        "dataset": DatasetWriter(store),
        "model": RunlessModelWriter(store),
    }


class MlflowItemSource(ItemSource):
    """Reader mixin: MLflow 3 traces, prompts and evaluation datasets."""

    _items_by_kind: dict[ItemKind, KindReader] | None = None

    def _item_parts(self) -> dict[ItemKind, KindReader]:
        if self._items_by_kind is None:
            self._items_by_kind = _kind_readers(self)
        return self._items_by_kind

    def item_kinds(self) -> set[ItemKind]:
        return set(self._item_parts())

    def list_items(self, kind: ItemKind) -> Iterator[ItemHeader]:
        return self._item_parts()[kind].list()

    def read_item(self, header: ItemHeader) -> Item:
        return self._item_parts()[header.kind].read(header)


class MlflowItemSink(ItemSink):
    """Writer mixin: MLflow 3 traces, prompts and evaluation datasets."""

    _items_by_kind: dict[ItemKind, KindWriter] | None = None

    def _item_parts(self) -> dict[ItemKind, KindWriter]:
        if self._items_by_kind is None:
            self._items_by_kind = _kind_writers(self)
        return self._items_by_kind

    def item_kinds(self) -> set[ItemKind]:
        return {kind for kind, part in self._item_parts().items() if part.stored()}

    def prepare_items(self, kind: ItemKind, headers: list[ItemHeader]) -> None:
        self._item_parts()[kind].prepare(headers)

    def find_item(self, header: ItemHeader, links: ItemLinks) -> str | None:
        return self._item_parts()[header.kind].find(header, links)

    def plan_item(self, item: Item, dest_id: str | None, links: ItemLinks) -> ItemChange:
        return self._item_parts()[item.header.kind].plan(item, dest_id, links)

    def apply_item(self, item: Item, change: ItemChange, links: ItemLinks) -> str:
        return self._item_parts()[item.header.kind].apply(item, change, links)

    def read_item_back(self, kind: ItemKind, dest_id: str) -> Item | None:
        return self._item_parts()[kind].read_back(dest_id)
