#!/usr/bin/env python3
"""
Prints when a release of apache-airflow reached the package index, plus an hour (the time its last
file was uploaded, ISO 8601 UTC): what ``uv pip install --exclude-newer`` takes to resolve the
release's dependencies as they were then, where Airflow's constraints file for it cannot be read.

Reads the index's JSON page of the project (PEP 691), from ``$UV_INDEX_URL`` or PyPI.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from datetime import datetime, timedelta


def release_time(version: str, index: str) -> datetime:
    """
    The upload time of the last file of ``apache-airflow==version`` on ``index``.

    :param version: the release, such as ``3.1.8``.
    :param index: the simple index's URL, such as ``https://pypi.org/simple``.
    """
    request = urllib.request.Request(
        f"{index.rstrip('/')}/apache-airflow/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        files = json.load(answer)["files"]
    prefixes = (
        f"apache_airflow-{version}-",
        f"apache_airflow-{version}.tar.gz",
        f"apache-airflow-{version}.",
    )
    times = [f["upload-time"] for f in files if f["filename"].startswith(prefixes) and f.get("upload-time")]
    if not times:
        raise SystemExit(f"apache-airflow {version}: no file with an upload time on {index}")
    return max(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: airflow_release_time.py <apache-airflow version>")
    index = os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
    when = release_time(sys.argv[1], index) + timedelta(hours=1)
    print(when.strftime("%Y-%m-%dT%H:%M:%SZ"))


if __name__ == "__main__":
    main()
