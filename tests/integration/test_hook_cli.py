"""
The provider through Airflow's own command line, in a child interpreter: Airflow discovers it, and
``airflow connections test`` uses the hook's test. The hook in the test process:
``tests/unit/test_hook.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.airflow_cli import json_output, run_airflow_commands


@pytest.mark.slow
def test_airflow_discovers_the_provider(airflow_db: Any) -> None:
    (listed, hooked), _ = run_airflow_commands(
        (["providers", "list", "--output", "json"], {}), (["providers", "hooks", "--output", "json"], {})
    )
    providers = json_output(*listed)
    from airflow_provider_ahachat import __version__

    assert {"package_name": "airflow-provider-ahachat", "version": __version__}.items() <= {
        k: v for p in providers if p["package_name"] == "airflow-provider-ahachat" for k, v in p.items()
    }.items()
    hooks = json_output(*hooked)
    ahachat = [h for h in hooks if h["connection_type"] == "ahachat"]
    assert ahachat, hooks
    assert ahachat[0]["class"] == "airflow_provider_ahachat.hooks.ahachat.AhaChatHook"


@pytest.mark.slow
def test_airflow_connections_test_uses_it(airflow_db: Any, sandbox: Any) -> None:
    from airflow_provider_ahachat.sandbox.server import connection_uri

    def connections_test(uri: str) -> tuple[list[str], dict[str, str]]:
        return ["connections", "test", "ahachat_default"], {"AIRFLOW_CONN_AHACHAT_DEFAULT": uri}

    ((good_code, good), (bad_code, bad)), everything = run_airflow_commands(
        connections_test(sandbox.connection_uri),
        connections_test(connection_uri(sandbox.url, sandbox.bot_id, "e" * 64)),
        env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"},
    )
    assert "Connection success!" in good and good_code == 0, good
    assert "Connection failed!" in bad and bad_code == 1, bad
    assert "AhaChat refused the Bot Token for this Bot ID" in bad
    assert sandbox.token not in everything
