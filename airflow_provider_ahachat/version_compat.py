"""
Where the supported Airflow 3 releases differ, in one place (as Airflow's own providers do).

Each function imports what it needs when called, so importing this module costs nothing.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any


def mask_secret(secret: str) -> None:
    """
    Register ``secret`` with Airflow's secret masker, wherever this Airflow version keeps it: the task
    SDK's (task processes), and in Airflow's own processes (the API server, whose access log masks
    query values with it) the core's, which is another instance from Airflow 3.2 on.
    """
    try:
        from airflow.sdk.log import mask_secret as mask
    except ImportError:  # older Airflow 3 releases
        from airflow.sdk.execution_time.secrets_masker import mask_secret as mask  # type: ignore[no-redef]
    mask(secret)
    core = _core_masker()
    if core is not None:
        core.add_mask(secret)


def _core_masker() -> Any:
    """The secret masker of Airflow's own processes, when it is not the task SDK's (3.2+)."""
    try:
        from airflow._shared.secrets_masker import _secrets_masker
    except ImportError:
        return None
    return _secrets_masker()


def redact(text: str) -> str:
    """``text`` with every secret Airflow's maskers know replaced by ``***`` (as is, without Airflow)."""
    try:
        from airflow.sdk._shared.secrets_masker import redact as sdk_redact
    except ImportError:
        pass
    else:
        text = str(sdk_redact(text))
    core = _core_masker()
    return text if core is None else str(core.redact(text))


def airflow_at_least(version: str) -> bool:
    """Whether the installed Airflow is ``version`` or later (a pre-release of it counts as it)."""
    from airflow import __version__
    from packaging.version import Version

    return Version(Version(__version__).base_version) >= Version(version)


def hitl_waiting_states() -> tuple[str, ...]:
    """
    The states of a Human-in-the-loop task instance that waits for its answer: ``awaiting_input``
    from Airflow 3.3 (apache/airflow#68028), ``deferred`` (to ``HITLTrigger``) before.
    """
    from airflow.utils.state import TaskInstanceState

    if hasattr(TaskInstanceState, "AWAITING_INPUT"):
        return (TaskInstanceState.AWAITING_INPUT.value,)
    return (TaskInstanceState.DEFERRED.value,)


def conf() -> Any:
    """Airflow's configuration."""
    try:
        from airflow.sdk.configuration import conf as configuration
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf as configuration
    return configuration


def sensor_timeout(message: str) -> Exception:
    """The timeout error that ``BaseSensorOperator`` turns into a skip under ``soft_fail``."""
    try:
        from airflow.sdk.exceptions import AirflowSensorTimeout
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef]
    return AirflowSensorTimeout(message)


def skip(message: str) -> Exception:
    """The exception that skips a task."""
    try:
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowSkipException  # type: ignore[no-redef]
    return AirflowSkipException(message)


def fail_exception() -> type[Exception]:
    """The exception class that fails a task without its retries."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]
    return AirflowFailException


def object_storage_path(url: str) -> Any:
    """An ``ObjectStoragePath`` for ``url`` (``s3://conn_id@bucket/key``)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url)


def airflow_home() -> pathlib.Path:
    """``$AIRFLOW_HOME``, as Airflow reads it (``~/airflow`` when unset)."""
    return pathlib.Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()


def hitl_takes_response_timeout() -> bool:
    """
    Whether the installed ``HITLOperator`` takes ``response_timeout``: from
    apache-airflow-providers-standard 1.13 (Airflow 3.2's); 1.12 and before (Airflow 3.1's) take the
    response's deadline from ``execution_timeout``.
    """
    import inspect

    from airflow.providers.standard.operators.hitl import HITLOperator

    return "response_timeout" in inspect.signature(HITLOperator.__init__).parameters


def hitl_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    ``HITLOperator`` arguments for the installed standard provider: ``response_timeout`` becomes the
    ``execution_timeout`` where only that sets the response's deadline (see
    :func:`hitl_takes_response_timeout`).

    :param kwargs: the operator's keyword arguments.
    :raises ValueError: when both are given there, since they would be one setting.
    """
    if "response_timeout" not in kwargs or hitl_takes_response_timeout():
        return kwargs
    arguments = dict(kwargs)
    response_timeout = arguments.pop("response_timeout")
    if response_timeout is not None and arguments.get("execution_timeout") is not None:
        raise ValueError(
            "response_timeout, execution_timeout: give one; with apache-airflow-providers-standard "
            "before 1.13 the execution_timeout of a Human-in-the-loop task is its response timeout"
        )
    if response_timeout is not None:
        arguments["execution_timeout"] = response_timeout
    return arguments


def hitl_response_timeout(task: Any) -> Any:
    """The response timeout of a Human-in-the-loop task (a ``timedelta``), None when it has none."""
    timeout = getattr(task, "response_timeout", None)
    if timeout is None and not hitl_takes_response_timeout():
        timeout = getattr(task, "execution_timeout", None)
    return timeout
