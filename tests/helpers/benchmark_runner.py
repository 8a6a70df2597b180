"""Runs a benchmark script of ``benchmarks/`` in a child process, as a user runs it (system tier)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from helpers.paths import BENCHMARKS

#: Seconds a benchmark has, after SIGTERM, to stop the servers it started and exit.
STOP_GRACE = 120


def run_benchmark(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """
    Run a benchmark script; past ``timeout``, SIGTERM it, so that it stops the servers it started
    (SIGKILL would orphan them). One that has not exited :data:`STOP_GRACE` seconds later is killed
    with its process group, rather than left waited for until pytest's own timeout.
    """
    command = [sys.executable, str(BENCHMARKS / script), *args]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                out, err = process.communicate(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                out, err = process.communicate()
            pytest.fail(f"{script} took over {timeout:.0f} s:\n{out[-3000:]}{err[-3000:]}")
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, out, err)
