"""The state store: one class over the parts, so callers keep one object."""

from __future__ import annotations

from bridge.state.claims import ClaimsMixin
from bridge.state.conflicts import ConflictsMixin
from bridge.state.items import ItemsMixin
from bridge.state.pairs import PairsMixin
from bridge.state.passes import PassesMixin
from bridge.state.registry import RegistryMixin
from bridge.state.runs import RunsMixin


class StateStore(
    RunsMixin, ConflictsMixin, PairsMixin, RegistryMixin, ClaimsMixin, ItemsMixin, PassesMixin
):
    """Thread-safe access to the state tables (writes are serialized)."""
