"""
Install that works, as the README says: from a built wheel and from a clone, each into a clean venv.

Each test builds what a user would install, installs it into a fresh virtual environment with only
the project's runtime dependencies (pinned by ``uv.lock``, taken from uv's cache when they are
there), and asks that environment's Airflow whether it sees the provider, its connection type and
its plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_ahachat import __version__

pytestmark = [pytest.mark.install, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent

#: Run in the new environment: what Airflow knows of the provider, as JSON.
CHECK = """
import json
from importlib.metadata import entry_points, version
from airflow.providers_manager import ProvidersManager
from airflow_provider_ahachat.sandbox.state import SandboxState

manager = ProvidersManager()
hook = manager.hooks["ahachat"]
print(json.dumps({
    "version": version("airflow-provider-ahachat"),
    "provider": manager.providers["airflow-provider-ahachat"].version,
    "hook": hook.hook_class_name if hook else None,
    "plugins": sorted(e.value for e in entry_points(group="airflow.plugins")),
    "seed_bot": SandboxState().default_bot.name,
}))
"""


def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        pytest.skip("uv is not on PATH (./scripts/test.sh installs it)")
    return found


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def fresh_venv(tmp_path: Path) -> Path:
    """A clean virtual environment with the Python running the tests; its python."""
    run(uv(), "venv", "--quiet", "--python", sys.executable, tmp_path / "venv")
    return tmp_path / "venv" / "bin" / "python"


def constraints(tmp_path: Path) -> Path:
    """The runtime dependencies' versions from ``uv.lock``, so the install resolves as CI did."""
    path = tmp_path / "constraints.txt"
    run(
        uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--quiet",
        "--output-file", path, cwd=ROOT,
    )  # fmt: skip
    return path


def check(python: Path, tmp_path: Path) -> dict[str, str]:
    """What the environment's Airflow knows of the provider; the Airflow home is a new folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), VIRTUAL_ENV=str(python.parent.parent))
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    # Run from the temporary folder: ``python -c`` imports first from the current directory.
    found = json.loads(run(python, "-c", CHECK, env=env, cwd=tmp_path).strip().splitlines()[-1])
    assert found == {
        "version": __version__,
        "provider": __version__,
        "hook": "airflow_provider_ahachat.hooks.ahachat.AhaChatHook",
        "plugins": [
            "airflow_provider_ahachat.inbound.connection_test:AhaChatConnectionTestPlugin",
            "airflow_provider_ahachat.inbound.plugin:AhaChatPlugin",
        ],
        "seed_bot": "Shop Thời Trang Lan Anh",
    }, found
    # The installed code is the one checked, not this checkout's.
    where = run(
        python, "-c", "import airflow_provider_ahachat as p; print(p.__file__)", env=env, cwd=tmp_path
    )
    assert str(ROOT) not in where, where
    return env


def test_the_built_wheel_installs_and_airflow_lists_the_provider(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(uv(), "build", "--wheel", "--quiet", "--out-dir", dist, ROOT)
    (wheel,) = dist.glob("airflow_provider_ahachat-*.whl")
    python = fresh_venv(tmp_path)
    run(uv(), "pip", "install", "--quiet", "--python", python, "-c", constraints(tmp_path), wheel)
    env = check(python, tmp_path)
    # What the README shows: the command line lists the provider.
    listed = run(python.parent / "airflow", "providers", "list", "--output", "json", env=env, cwd=tmp_path)
    (line,) = [line for line in listed.splitlines() if line.startswith("[")]
    assert "airflow-provider-ahachat" in {p["package_name"] for p in json.loads(line)}


def test_a_clone_installs(tmp_path: Path) -> None:
    """The files a clone has (tracked, and new ones not ignored), copied elsewhere and installed."""
    clone = tmp_path / "clone"
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    python = fresh_venv(tmp_path)
    run(uv(), "pip", "install", "--quiet", "--python", python, "-c", constraints(tmp_path), clone)
    check(python, tmp_path)
