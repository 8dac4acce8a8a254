"""``wandb:ENTITY/PROJECT`` — read runs from a W&B server through ``wandb.Api``.

History is read in full, never sampled: the run's parquet export
(``download_history_exports``, streamed with pyarrow ``iter_batches``) plus the tail not
exported yet (``scan_history(min_step=...)``); without an export, ``scan_history`` alone.
The items produced match :class:`~bridge.adapters.wandb.offline_reader.WandbOfflineReader`
on the same run, so a run migrated from its offline folder or from the server ends equal
(runs the bridge wrote included: both undo its layout through ``bridged``).
Every network call is retried with exponential backoff and jitter: ``wandb-core`` retries
some failures itself, but not all, and a listing must not lose a page.
"""

from __future__ import annotations

from collections.abc import Iterator

from bridge.adapters.features import EditableSource, RegistrySource
from bridge.adapters.wandb import edits
from bridge.adapters.wandb.api_history import RunHistory
from bridge.adapters.wandb.api_listing import STATES_OF, ApiListing
from bridge.adapters.wandb.api_registry import ApiRegistry
from bridge.adapters.wandb.api_run import STATUS, ApiRunBody
from bridge.adapters.wandb.edits import EDITABLE
from bridge.adapters.wandb.ids import wandb_path
from bridge.adapters.wandb.server import DEFAULT_BASE_URL, api_key_for
from bridge.errors import BridgeError, RunError
from bridge.schema import (
    Editable,
    HistoryItem,
    Run,
    RunHeader,
)

__all__ = ["DEFAULT_BASE_URL", "STATES_OF", "STATUS", "WandbApiReader", "api_key_for"]


class WandbApiReader(ApiListing, ApiRunBody, ApiRegistry, RegistrySource, EditableSource):
    """Reads a W&B entity or project through the public API (``wandb.Api``)."""

    scheme = "wandb"

    # ---- two-way (--two-way): what people edit, as listed ----------------------------

    def _run_path(self, header: RunHeader) -> str:
        return str(header.locator.get("path") or wandb_path(header.source_id))

    def editable(self, header: RunHeader) -> Editable:
        """The run's notes and tags as this sync listed them (kept current by the W&B
        writer's ``set_editable``); read from the server for a header from elsewhere."""
        seen = header.locator.get(EDITABLE)
        if not isinstance(seen, dict):
            a = self._api_run(self._run_path(header))._attrs
            seen = edits.listed(a.get("notes"), a.get("tags"))
        return edits.editable_of(seen)

    # ---- history ---------------------------------------------------------------------

    def iter_history(self, run: Run) -> Iterator[HistoryItem]:
        path = run.header.locator.get("path") or wandb_path(run.header.source_id)
        try:
            yield from RunHistory(self, run, path).items()
        except (BridgeError, RunError):
            raise
        except Exception as exc:
            raise RunError(f"{run.header.source_id}: history unreadable: {exc}") from exc
