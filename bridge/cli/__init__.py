"""The `bridge` command line: parse options, call bridge.api, print, set the exit code.

Exit codes: 0 all synced (warnings allowed); 1 some run failed (the others were still
synced); 2 usage or configuration error (bad URI, unreachable server, unreadable folder);
3 conflicts were reported (and left untouched). A failed run takes precedence over conflicts.

Modules: ``options`` (shared options), ``output`` (escaped, redacted printing), and one
module per command family (``cmd_sync``, ``cmd_state``, ``cmd_mirror``, ``cmd_verify``).
"""

from __future__ import annotations

import logging
import os
import sys

import click

from bridge.cli.cmd_mirror import mirror
from bridge.cli.cmd_state import conflicts, status
from bridge.cli.cmd_sync import diff, sync
from bridge.cli.cmd_verify import verify
from bridge.cli.options import EXIT_HELP
from bridge.display import escape_logging
from bridge.redact import install as install_redaction
from bridge.telemetry import disable_telemetry


def _quiet_libraries() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_TRUNCATE_LONG_VALUES", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("alembic", "mlflow", "wandb", "urllib3", "botocore"):
        logging.getLogger(name).setLevel(logging.ERROR)


@click.group(epilog=EXIT_HELP)
@click.version_option(package_name="tracking-bridge")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
def main(verbose: bool) -> None:
    """Migrate and mirror experiment history between W&B and MLflow.

    \b
    URIs:
      wandb-offline:DIR       W&B offline run folders (read from .wandb logs, no network)
      wandb:ENTITY/PROJECT    a W&B server through wandb.Api
      mlflow:TRACKING_URI     any MLflow store: sqlite:///f.db, http://host:5000, postgresql://...
      tensorboard:LOGDIR      TensorBoard event files under LOGDIR (a source only)
    """
    disable_telemetry()
    _quiet_libraries()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    escape_logging()
    install_redaction()  # after escaping: it runs last on every handler
    if not verbose:
        _quiet_libraries()


for _command in (sync, diff, conflicts, status, mirror, verify):
    main.add_command(_command)

__all__ = ["main"]
