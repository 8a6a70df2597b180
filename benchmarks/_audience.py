"""
What both bulk benchmarks send to: the sandbox's generated customers, each with their own order.

Kept free of the sandbox package, whose import (uvicorn, FastAPI) would weigh on the memory
benchmark's baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

FIELDS = ("user_id", "order_id", "tracking_number")


def synthetic_user_id(number: int) -> str:
    """The sandbox's generated customer ``number`` (as ``sandbox.world.synthetic_user_id``)."""
    return f"9{number:015d}"


def recipient_row(number: int) -> dict[str, str]:
    """Customer ``number`` of the sandbox's generated ones, with their own order."""
    return {
        "user_id": synthetic_user_id(number),
        "order_id": f"DH{number:08d}",
        "tracking_number": f"GHN{number:010d}",
    }


def recipient_rows(count: int) -> Iterator[dict[str, str]]:
    """The first ``count`` customers' rows."""
    return (recipient_row(number) for number in range(count))


def write_recipients(path: Path, count: int) -> None:
    """A CSV (with a header) or, for any other extension, JSON Lines file of ``count`` rows."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        if path.suffix == ".csv":
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(recipient_rows(count))
        else:
            handle.writelines(json.dumps(row) + "\n" for row in recipient_rows(count))


def sizes(most: int) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated whole numbers from 1 to ``most``."""

    def parse(text: str) -> list[int]:
        numbers = [int(part) for part in text.split(",") if part.strip()]
        if not numbers or any(not 1 <= number <= most for number in numbers):
            raise argparse.ArgumentTypeError(f"sizes: whole numbers from 1 to {most}, comma-separated")
        return numbers

    return parse


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews the figures."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # pragma: no cover - not on this platform
        return "unknown"
