"""
Peak memory of this provider's bulk path against the size of the recipients file.

It writes CSV files of 10k, 100k and 1M rows (``user_id`` and the attributes ``order_id`` and
``tracking_number``), then runs the bulk path (:func:`~airflow_provider_ahachat.bulk.read_recipients`
into :class:`~airflow_provider_ahachat.bulk.BulkRunner` with a ledger, broadcasting the block
``shipping_update``) on each file in a fresh child process, one per size and mode:

- ``dry run``: ``dry_run=True`` streams and validates every row, renders every request, keeps
  the per-recipient index and writes the report, but sends nothing. It runs at every size.
- ``sent``: real requests to an AhaChat sandbox (a child process) with no added latency and no
  rate limit, so that sending is as fast as this machine allows; the sandbox's outbox is then
  checked for lost and doubled messages. It runs at ``--send-sizes`` (10k and 100k by default):
  at the 200 requests per second of a real bot, 1M rows would take 83 minutes.

The child measures its resident memory (RSS) just before the run, resets the kernel's high-water
mark (``/proc/self/clear_refs``, Linux), and reads the peak (``VmHWM``) after the run: the table
shows the peak and its growth over the RSS before the run. ``ru_maxrss`` alone would not do: on
Linux a child's ``ru_maxrss`` starts from its parent's RSS at fork time, and it holds the peak of
the imports too; it is in the JSON for reference. Wall time is the run alone.

Everything targets only the sandbox on loopback. The files go to a temporary folder and are
removed at the end: 41 MiB of CSV at 1M rows, plus the ledger's report and the engine's index,
which the bulk path keeps on disk rather than in memory.

Run: ``uv run python benchmarks/bulk_memory.py`` (about 5 minutes; ``--sizes 10000,100000`` to
leave out 1M, ``--json FILE`` to keep the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _audience import sizes, synthetic_user_id, write_recipients  # benchmarks/, beside this script

BLOCK = "shipping_update"
TOKEN_ENV = "AHACHAT_BENCH_TOKEN"


# --------------------------------------------------------------------------- the child


def _status_kib(field_name: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in KiB (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def child(file: Path, ledger: Path, url: str, bot_id: str, dry_run: bool, concurrency: int) -> dict[str, Any]:
    """Run the bulk path on ``file``; what it measured (runs in the child process)."""
    import logging

    from airflow_provider_ahachat.bulk import (
        BulkRunner,
        Ledger,
        count_recipients,
        read_recipients,
    )
    from airflow_provider_ahachat.client import AhaChatClient

    logging.basicConfig(level=logging.WARNING)
    token = os.environ[TOKEN_ENV]
    with AhaChatClient(bot_id, token, url, pool_size=concurrency) as client:
        action = client.bind("broadcast_block", block_name=BLOCK, attributes={"campaign": "bench"})
        runner = BulkRunner(
            client,
            action,
            ledger=Ledger(ledger),
            concurrency=concurrency,
            rate_limit=0,
            max_failures=0,
            dry_run=dry_run,
            progress_interval=3600,
        )
        before = _status_kib("VmRSS") or _maxrss_kib()
        maxrss_before = _maxrss_kib()
        reset = _reset_peak()
        started = time.perf_counter()
        summary = runner.run(read_recipients(file), total=count_recipients(file))
        seconds = time.perf_counter() - started
        peak = (_status_kib("VmHWM") if reset else None) or _maxrss_kib()
    return {
        "rss_before_kib": before,
        "peak_kib": peak,
        "peak_source": "VmHWM after reset" if reset else "ru_maxrss",
        "maxrss_before_kib": maxrss_before,
        "maxrss_kib": _maxrss_kib(),
        "seconds": seconds,
        "outcomes": summary["outcomes"],
        "requests_per_second": summary["requests_per_second"],
        "retries": summary["retries"],
    }


# --------------------------------------------------------------------------- the parent


@dataclass
class Figure:
    """One child's run."""

    rows: int
    mode: str
    fmt: str
    measured: dict[str, Any]
    file_mb: float
    lost: int | None = None
    doubled: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_mib(self) -> float:
        return float(self.measured["peak_kib"]) / 1024

    @property
    def growth_mib(self) -> float:
        return (float(self.measured["peak_kib"]) - float(self.measured["rss_before_kib"])) / 1024


def run_child(
    file: Path,
    ledger: Path,
    url: str,
    bot_id: str,
    token: str,
    *,
    dry_run: bool,
    concurrency: int,
    timeout: float,
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(file),
        "--ledger",
        str(ledger),
        "--url",
        url,
        "--bot-id",
        bot_id,
        "--concurrency",
        str(concurrency),
        *(["--dry-run"] if dry_run else []),
    ]
    env = {**os.environ, TOKEN_ENV: token, "NO_PROXY": "*"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"the child failed (exit {done.returncode}):\n{done.stderr[-4000:].replace(token, '***')}"
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _row(*cells: str) -> str:
    widths = (10, 9, 6, 10, 12, 10, 8, 9, 6, 9)
    first, *rest = cells
    return f"{first:>{widths[0]}}" + "".join(
        f"{cell:>{width}}" for cell, width in zip(rest, widths[1:], strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=sizes(5_000_000), default=[10_000, 100_000, 1_000_000], help="rows, dry run"
    )
    parser.add_argument(
        "--send-sizes",
        type=sizes(5_000_000),
        default=[10_000, 100_000],
        help="rows really sent to the sandbox",
    )
    parser.add_argument("--no-send", action="store_true", help="dry runs only")
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="the recipients file")
    parser.add_argument("--concurrency", type=int, default=16, help="the provider's requests in flight")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds any one child may take")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    # The child's side: one run, its figures as one JSON line on standard output.
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ledger", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bot-id", help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        result = child(args.child, args.ledger, args.url, args.bot_id, args.dry_run, args.concurrency)
        print(json.dumps(result))
        return 0

    from airflow_provider_ahachat.sandbox import SandboxProcess

    sends = [] if args.no_send else args.send_sizes
    figures: list[Figure] = []
    with (
        tempfile.TemporaryDirectory(prefix="ahachat-bench-memory-") as tmp,
        SandboxProcess(latency_ms=0, rate_limit=0, log_level="warning") as sandbox,
    ):
        folder = Path(tmp)
        print(
            f"sandbox pid {sandbox.pid} at {sandbox.url} (no latency, no limit); python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}"
        )
        plan = [(size, True) for size in args.sizes] + [(size, False) for size in sends]
        files: dict[int, Path] = {}
        for size, dry_run in sorted(plan, key=lambda item: (item[0], not item[1])):
            if size not in files:
                files[size] = folder / f"recipients-{size}.{args.format}"
                write_recipients(files[size], size)
            file = files[size]
            if not dry_run:
                sandbox.reset()
                sandbox.generate_users(size)
            measured = run_child(
                file,
                folder / f"ledger-{size}-{'dry' if dry_run else 'sent'}",
                sandbox.url,
                sandbox.bot_id,
                sandbox.token,
                dry_run=dry_run,
                concurrency=args.concurrency,
                timeout=args.timeout,
            )
            figure = Figure(
                size, "dry run" if dry_run else "sent", args.format, measured, file.stat().st_size / 2**20
            )
            if not dry_run:
                counts = sandbox.outbox_counts(sandbox.bot_id)
                expected = {synthetic_user_id(n) for n in range(size)}
                figure.lost = sum(1 for user_id in expected if counts.get(user_id, 0) == 0)
                figure.doubled = sum(1 for user_id in expected if counts.get(user_id, 0) > 1) + sum(
                    n for user_id, n in counts.items() if user_id not in expected
                )
                del counts, expected
                sandbox.reset()
            figures.append(figure)
            print(
                f"  done: {size:,} rows, {figure.mode}: peak {figure.peak_mib:.1f} MiB, "
                f"{measured['seconds']:.1f} s",
                flush=True,
            )

    print()
    print(
        _row(
            "rows",
            "mode",
            "file",
            "file MiB",
            "RSS before",
            "peak RSS",
            "growth",
            "seconds",
            "lost",
            "doubled",
        )
    )
    for f in figures:
        print(
            _row(
                f"{f.rows:,}",
                f.mode,
                f.fmt,
                f"{f.file_mb:.1f}",
                f"{f.measured['rss_before_kib'] / 1024:.1f}",
                f"{f.peak_mib:.1f}",
                f"{f.growth_mib:+.1f}",
                f"{f.measured['seconds']:.1f}",
                "-" if f.lost is None else str(f.lost),
                "-" if f.doubled is None else str(f.doubled),
            )
        )
    print(
        "\nMiB of resident memory (RSS) of the child process that ran the bulk path; growth: the peak "
        "during the run minus the RSS just before it."
    )
    if args.json is not None:
        document = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "figures": [
                {
                    "rows": f.rows,
                    "mode": f.mode,
                    "format": f.fmt,
                    "file_mib": round(f.file_mb, 2),
                    "peak_mib": round(f.peak_mib, 1),
                    "growth_mib": round(f.growth_mib, 1),
                    "lost": f.lost,
                    "doubled": f.doubled,
                    **f.measured,
                }
                for f in figures
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
