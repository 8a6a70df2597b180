"""
Airflow's command line, run in a child interpreter as a user runs it (``airflow providers list``...):
:func:`airflow` for one command, :func:`run_airflow_commands` for several in one interpreter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any


def airflow(*args: str, env: dict[str, str], timeout: float = 600) -> str:
    """Run ``airflow <args>`` (``python -m airflow``) with ``env``; its output, or raise with it."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


#: Runs Airflow's command line (``airflow.__main__.main``, what ``python -m airflow`` runs) once per
#: command given, in one interpreter: Airflow starts once, and each command still parses its own
#: arguments and reads the environment it is given. Everything is written unbuffered to one stream,
#: each command's output between markers.
AIRFLOW_COMMANDS = """
import json, os, sys
from airflow.__main__ import main

for number, (argv, env) in enumerate(json.loads(sys.argv[1])):
    os.environ.update(env)
    sys.argv = ["airflow", *argv]
    print(f"<<<command {number}>>>")
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    print(f"<<<exit {number} {code}>>>")
"""


def run_airflow_commands(
    *commands: tuple[list[str], dict[str, str]], env: dict[str, str] | None = None
) -> tuple[list[tuple[int, str]], str]:
    """
    Run ``airflow <argv>`` for each ``(argv, env)`` in one child interpreter, in that order.

    :param env: variables set for the whole interpreter, on top of this process's environment.
    :return: each command's exit code and output (stdout and stderr together), and the whole output.
    """
    result = subprocess.run(
        [sys.executable, "-u", "-c", AIRFLOW_COMMANDS, json.dumps(commands)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    answers = []
    for number in range(len(commands)):
        match = re.search(rf"<<<command {number}>>>\n(.*)<<<exit {number} (-?\d+)>>>", result.stdout, re.S)
        assert match, result.stdout[-3000:]
        answers.append((int(match.group(2)), match.group(1)))
    return answers, result.stdout


def json_output(code: int, output: str) -> Any:
    """The JSON a command printed with ``--output json``."""
    assert code == 0, output[-3000:]
    (line,) = [line for line in output.splitlines() if line.startswith("[")]
    return json.loads(line)
