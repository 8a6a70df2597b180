"""Sphinx configuration of the docs site (``./scripts/docs.sh`` builds it into ``docs/_build/html``)."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]

# autodoc imports the provider, and so Airflow: give it a throw-away home, never the reader's
# ~/airflow or their settings.
_home = tempfile.mkdtemp(prefix="ahachat-docs-airflow-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
for _name in [n for n in os.environ if n.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))] + ["AIRFLOW_CONFIG"]:
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AIRFLOW_HOME": _home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home}/airflow.db",
    }
)

# Airflow's configuration and settings say at INFO where they read from, before its own logging
# is set up: not news in a docs build.
for _logger in ("airflow.configuration", "airflow.settings"):
    logging.getLogger(_logger).setLevel(logging.WARNING)

from airflow_provider_ahachat import __version__  # noqa: E402

project = "airflow-provider-ahachat"
author = "airflow-provider-ahachat contributors"
copyright = "airflow-provider-ahachat contributors"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "ahachat_docs",
]
source_suffix = {".md": "markdown"}
suppress_warnings: list[str] = []
root_doc = "index"
exclude_patterns = ["_build", "examples", "_ext"]
# Links between pages are Markdown links to the .md files, so that the pages read on a code host
# too; headings get anchors for links such as messenger-rules.md#what-the-provider-does.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"show-inheritance": True}
# The class docstring holds the :param: fields, as in Airflow's providers; an inherited __init__
# docstring of Airflow's would repeat them in its own words.
autoclass_content = "class"

html_theme = "furo"
html_title = f"airflow-provider-ahachat {__version__}"
html_static_path: list[str] = []
html_show_sourcelink = False
# The build is a check: every warning is an error (scripts/docs.sh passes -W).
nitpicky = False
