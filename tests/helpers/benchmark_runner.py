"""Runs a benchmark script of ``benchmarks/`` in a child process, as a user runs it (system tier)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.paths import BENCHMARKS


def run_benchmark(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script; past ``timeout``, SIGTERM it (SIGKILL would orphan the servers it started)."""
    command = [sys.executable, str(BENCHMARKS / script), *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            out, err = process.communicate(timeout=120)
            pytest.fail(f"{script} took over {timeout:.0f} s:\n{out[-3000:]}{err[-3000:]}")
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, out, err)
