"""Bench: peak RSS of `bridge diff` on a W&B offline log holding one huge record.

Makes a small offline run with the real SDK, then a copy of its log with one extra config
record of ``--mib`` MiB (default 256) framed exactly as wandb-core frames records, and runs
`bridge diff wandb-offline:DIR mlflow:sqlite:///...` (a subprocess: its peak RSS is its own)
on the run without the record (the baseline), with it under the default cap, and with the
cap raised above the record (what reading it whole costs). Prints the figures and checks the
issue's bound: with the cap, peak RSS < 2 x cap + baseline.

    python bench/txlog_big_record.py [--mib 256] [--cap-mib 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import measure  # noqa: E402


def frame(payloads: list[bytes]) -> bytes:
    """Records framed as wandb-core frames them (tests/test_txlog.py checks that framing
    byte for byte on SDK logs); memoryview slices keep a 256 MiB record linear."""
    from bridge.adapters.wandb.txlog import BLOCK, FIRST, FULL, LAST, MIDDLE

    out = bytearray(struct.pack("<4sHB", b":W&B", 0xBEE1, 0))
    for payload in payloads:
        view, first = memoryview(payload), True
        while True:
            room = BLOCK - len(out) % BLOCK
            if room < 7:
                out += bytes(room)
                room = BLOCK
            frag, view = view[: room - 7], view[room - 7 :]
            last = not len(view)
            kind = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
            out += struct.pack("<IHB", zlib.crc32(frag, zlib.crc32(bytes([kind]))), len(frag), kind)
            out += frag
            first = False
            if last:
                break
    return bytes(out)


def with_big_record(folder: Path, out: Path, mib: int) -> Path:
    """A copy of the run folder whose log has a ``mib`` MiB config record after the run record."""
    from bridge.adapters.wandb.txlog import TxlogReader, pb

    shutil.copytree(folder, out, symlinks=True)
    (log,) = out.glob("*.wandb")
    payloads = [p for _, p in TxlogReader(log).payloads()]
    assert frame(payloads) == log.read_bytes()  # the framing is the SDK's
    rec = pb.Record()
    rec.config.update.add(key="blob", value_json='"' + "x" * (mib * 1024 * 1024) + '"')
    big = rec.SerializeToString()
    del rec
    log.write_bytes(frame(payloads[:2] + [big] + payloads[2:]))
    return out


def diff_rss(folder: Path, work: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Seconds, peak RSS (MiB) and output of `bridge diff` on one run folder."""
    db = work / f"mlflow-{os.getpid()}.db"
    cmd = [
        "env",
        *[f"{k}={v}" for k, v in env.items()],
        sys.executable,
        "-m",
        "bridge.cli",
        "diff",
        f"wandb-offline:{folder}",
        f"mlflow:sqlite:///{db}",
        "--state",
        str(work / "state.db"),
    ]
    return measure(cmd, f"bridge diff {folder.name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="size of the huge record")
    ap.add_argument("--cap-mib", type=int, default=64, help="BRIDGE_MAX_RECORD_MB to test")
    args = ap.parse_args()
    from sdk_runs import make_big_run

    with tempfile.TemporaryDirectory(prefix="txlog-big-") as tmp:
        work = Path(tmp)
        small = make_big_run(work / "sdk", n_points=500, n_metrics=5)
        big = with_big_record(small, work / "big" / small.name, args.mib)
        print(
            f"log with a {args.mib} MiB record: {next(big.glob('*.wandb')).stat().st_size:,} bytes"
        )
        capped = {"BRIDGE_MAX_RECORD_MB": str(args.cap_mib)}
        _, base, _ = diff_rss(small, work, capped)
        secs, rss, out = diff_rss(big, work, capped)
        whole = {"BRIDGE_MAX_RECORD_MB": str(args.mib * 2)}
        secs_whole, rss_whole, _ = diff_rss(big, work, whole)
        bound = base + 2 * args.cap_mib
        print(f"baseline (no big record):          peak RSS {base:7.0f} MiB")
        print(
            f"{args.mib} MiB record, cap {args.cap_mib} MiB:      peak RSS {rss:7.0f} MiB  ({secs:.1f} s)"
        )
        print(
            f"{args.mib} MiB record read whole (cap {args.mib * 2}): "
            f"peak RSS {rss_whole:7.0f} MiB  ({secs_whole:.1f} s)"
        )
        print(
            f"bound 2 x cap + baseline:          {bound:7.0f} MiB -> {'OK' if rss < bound else 'OVER'}"
        )
        if "cap" not in out:
            print("warning: the diff output does not name the skipped record")
        if rss >= bound:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
