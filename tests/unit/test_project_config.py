"""The project's own configuration stays true to its files: mypy's per-module list names modules."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    """The module name mypy gives a file: its packages (folders with ``__init__.py``), then its stem."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def test_every_module_of_mypys_overrides_is_a_file_mypy_reads() -> None:
    """A module moved or renamed must leave the list (else its strictness silently changes)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    read = {module_name(path) for folder in config["files"] for path in (ROOT / folder).rglob("*.py")}
    listed = [name for override in config["overrides"] for name in override["module"]]
    assert sorted(set(listed) - read) == []
    assert len(listed) == len(set(listed)), "a module is listed twice"
