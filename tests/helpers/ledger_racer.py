"""
One bulk run on a ledger, as a process of its own, for the tests that race two runs on one ledger.

``python ledger_racer.py URL TOKEN FOLDER OUT [--rows N] [--wait S] [--ttl S] [--lease]``: sends a
text to users 1..N through ``URL`` with the ledger in ``FOLDER`` (a local folder, or a ``file://``
URL read as an ``ObjectStoragePath``), and writes what happened to ``OUT`` as JSON: the summary,
or the error with the ledger's holder.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

BOT = "12404829"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--wait", type=float, default=0.5)
    parser.add_argument("--ttl", type=float, default=60.0)
    parser.add_argument("--lease", action="store_true")
    args = parser.parse_args()

    from airflow_provider_ahachat.bulk import AhaChatBulkError, BulkRunner, Ledger
    from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
    from airflow_provider_ahachat.exceptions import AhaChatLedgerBusyError

    folder: Any
    if "://" in args.folder:
        from airflow_provider_ahachat.version_compat import object_storage_path

        folder = object_storage_path(args.folder)
    else:
        folder = pathlib.Path(args.folder)
    ledger = Ledger(folder, wait=args.wait, lease_ttl=args.ttl, hold_by="lease" if args.lease else None)
    result: dict[str, Any] = {"pid": os.getpid()}
    retry = RetryPolicy(max_retries=0)
    with AhaChatClient(BOT, args.token, args.url, retry=retry, read_timeout=300) as client:
        runner = BulkRunner(
            client,
            client.bind("send_text", {"text": "xin chào"}),
            ledger=ledger,
            concurrency=2,
            max_failure_ratio=1,
            progress_interval=60,
        )
        rows = [str(1000 + i) for i in range(args.rows)]
        print("ready", flush=True)  # about to take the ledger
        try:
            result["summary"] = runner.run(rows, len(rows))
        except AhaChatLedgerBusyError as err:
            result.update(error="busy", message=str(err), holder=err.holder)
        except AhaChatBulkError as err:
            result.update(error="bulk", message=str(err), summary=err.summary)
    pathlib.Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
