"""Run real Airflow DAGs inside pytest with ``dag.test()`` and collect everything they did.

Typical use (the ``dag_runner`` / ``airflow_db`` fixtures live in ``tests/conftest.py``)::

    def test_send(dag_runner, sandbox_url):
        with DAG("t_send", schedule=None) as dag:
            AhaChatSendMessageOperator(task_id="send", ahachat_conn_id="aha", ...)
        result = dag_runner(dag, {"aha": f"ahachat://:{TOKEN}@{sandbox_url}"})
        assert result.task_states == {"send": "success"}, result.summary()
        assert result.xcoms["send"]["message_id"]
        result.assert_not_in_log(TOKEN)

Facts established against Airflow 3.3.2 (task-sdk 1.3.2), see tests/test_harness_selfcheck.py:

In-process execution
    ``dag.test()`` (with the default ``use_executor=False``) runs every task in the calling
    process *and on the calling thread*: ``_run_task`` -> ``run_task_in_process`` ->
    ``InProcessTestSupervisor.start`` builds a ``RuntimeTaskInstance`` and calls
    ``task_runner.run()`` directly.  No fork, no subprocess.  Consequences:

    * a server started in a background thread of the pytest process (e.g. the AhaChat
      sandbox on ``127.0.0.1:<port>``) is reachable from tasks;
    * monkeypatching / ``unittest.mock`` done by the test is visible inside tasks;
    * the Execution API is an in-process FastAPI app (served on a private event-loop thread
      through an httpx WSGI transport) - building it costs ~3.5 s once per process, so the
      first ``run_dag`` of a session takes ~4 s and later ones ~0.15 s for a 2-task DAG.

DAGs defined in test code
    ``dag.test()`` in 3.3 refuses to create a DagRun for a DAG that is not serialized in the
    metadata DB ("Cannot create DagRun ... because the dag is not serialized"); it only
    re-parses the configured DAG bundles, and our DAGs folder is empty.  ``run_dag`` therefore
    writes the DAG (DagModel + SerializedDagModel + DagVersion) into the ``dags-folder`` bundle
    first, the same way Airflow's own test-suite does (``sync_dag_to_db``).

Failing tasks
    ``dag.test()`` does not raise when a task fails: the task runner catches the exception,
    logs "Task failed with exception" with the full traceback, marks the TI ``failed`` and the
    DagRun ``failed``, and ``dag.test()`` returns the DagRun normally.  The exception object is
    only available on the (discarded) ``TaskRunResult``, so ``run_dag`` wraps
    ``airflow.sdk.execution_time.supervisor.run_task_in_process`` for the duration of the run
    to keep it (``TaskOutcome.error``).  If ``dag.test()`` itself raises (bad DAG, DB problem)
    the exception is stored in ``DagResult.run_error`` and whatever state reached the DB is
    still collected.  Tasks with ``retries > 0`` make ``dag.test()`` wait out ``retry_delay``
    in-process: use ``retries=0`` in tests.

Where the output goes
    Under pytest, Airflow's structlog config is built with ``cache_logger_on_first_use=False``
    (it checks ``PYTEST_VERSION``) and writes to whatever ``sys.stdout`` is *at each call*;
    stdlib ``logging`` goes through a root ``logging.StreamHandler`` whose stream was bound to
    the ``sys.stdout`` of import time (pytest's capture object); ``print()`` in a task writes
    straight to ``sys.stdout`` (dag.test() does not redirect it).  Task log files are NOT
    written (``$AIRFLOW_HOME/logs`` stays empty).  ``run_dag`` therefore captures at every
    level for the duration of the run, into one ordered stream: file descriptors 1 and 2
    (``dup2`` onto a temp file: C extensions, subprocesses), ``sys.stdout``/``sys.stderr``
    (``print``, structlog, warnings) and every plain ``logging.StreamHandler`` (temporarily
    re-pointed).  This is process-wide: output of *other threads* (a sandbox server) during
    the run is included too.  Only what is emitted at the configured level (INFO) exists to be
    captured.  The captured text is echoed to ``sys.stdout`` afterwards (``echo=True``) so
    pytest shows it under "Captured stdout call" when a test fails.

Secret masking
    ``mask_secret`` is importable as ``from airflow.sdk.log import mask_secret`` on Airflow
    3.1+ (3.0 had ``airflow.sdk.execution_time.secrets_masker``; see ``import_mask_secret``).
    In ``dag.test()`` it has NO effect on output: it registers the value with the Task SDK
    masker (``airflow.sdk._shared.secrets_masker``), but in production it is the supervisor
    *process* that applies that masker to the log stream, and ``dag.test()`` has no such
    stage - the in-process structlog chain has no redaction processor, and the core masker
    (``airflow._shared.secrets_masker``, a separate instance) never learns the value.  So a
    secret that is printed or logged (print, stdlib logging, structlog, the traceback of a
    failed task) appears verbatim in ``DagResult.log``.  Connection passwords fetched via
    ``AIRFLOW_CONN_*`` are likewise registered but not redacted.  ``DagResult.masked_log``
    applies the SDK masker afterwards to approximate what a production task log would show.
    For "the token never reaches the logs" tests, assert on ``DagResult.log`` (strict).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import DAG

__all__ = [
    "BUNDLE_NAME",
    "AirflowTestEnv",
    "DagResult",
    "OutputCapture",
    "TaskOutcome",
    "conn_env_var",
    "import_mask_secret",
    "init_airflow_db",
    "patched_env",
    "run_dag",
    "sync_dag_to_db",
]

#: Bundle the test DAGs are registered in.  It is the default bundle Airflow always configures
#: (pointing at our empty DAGs folder), so ``dag.test()``'s own bundle sync leaves them alone.
BUNDLE_NAME = "dags-folder"

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_TASK_START_RE = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_TASK_END_RE = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")


# --------------------------------------------------------------------------------------------
# Metadata DB
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AirflowTestEnv:
    """What ``init_airflow_db`` set up (returned by the ``airflow_db`` fixture)."""

    home: Path
    sql_alchemy_conn: str
    airflow_version: str
    import_seconds: float
    init_db_seconds: float


_ENV: AirflowTestEnv | None = None


def init_airflow_db() -> AirflowTestEnv:
    """Import Airflow and create the metadata DB in the conftest's temp ``AIRFLOW_HOME``.

    Idempotent (does the work once per process).  Uses ``airflow.utils.db.initdb()`` in-process:
    on an empty DB it builds the schema from the ORM and stamps the alembic head, exactly what
    ``airflow db migrate`` does for a fresh DB, but without a second interpreter (~1.6 s vs
    ~5.2 s for the CLI).  Refuses to run unless ``tests/conftest.py`` configured the environment,
    so it can never initialise a developer's real Airflow DB.
    """
    global _ENV
    if _ENV is not None:
        return _ENV

    home = os.environ.get("AHACHAT_TEST_AIRFLOW_HOME")
    if not home or os.environ.get("AIRFLOW_HOME") != home:
        raise RuntimeError(
            "airflow_harness needs the environment prepared by tests/conftest.py "
            "(AIRFLOW_HOME pointing at a temporary directory) before airflow is imported."
        )

    t0 = time.perf_counter()
    import airflow
    from airflow import settings
    from airflow.utils import db

    t1 = time.perf_counter()
    expected_conn = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    actual_conn = str(settings.SQL_ALCHEMY_CONN)
    if actual_conn != expected_conn or home not in actual_conn:
        raise RuntimeError(
            f"Airflow is configured with SQL_ALCHEMY_CONN={actual_conn!r}, expected {expected_conn!r}; "
            "airflow must have been imported before tests/conftest.py set the environment."
        )
    db.initdb()
    t2 = time.perf_counter()

    _ENV = AirflowTestEnv(
        home=Path(home),
        sql_alchemy_conn=actual_conn,
        airflow_version=str(airflow.__version__),
        import_seconds=t1 - t0,
        init_db_seconds=t2 - t1,
    )
    return _ENV


def sync_dag_to_db(dag: DAG, bundle_name: str = BUNDLE_NAME) -> None:
    """Write ``dag`` to the metadata DB (DagModel, SerializedDagModel, DagVersion).

    Required before ``dag.test()`` for DAGs that are not in a file of a configured bundle.
    Re-writing an unchanged DAG is a no-op; a changed one gets a new DagVersion.
    """
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    writer: Any
    try:  # Airflow >= 3.2: the scheduler-side DAG class owns bulk_write_to_db
        writer = importlib.import_module("airflow.serialization.definitions.dag").SerializedDAG
    except (ImportError, AttributeError):  # Airflow 3.1
        writer = importlib.import_module("airflow.serialization.serialized_objects").SerializedDAG

    lazy_dag = LazyDeserializedDAG.from_dag(dag)

    with create_session() as session:
        session.merge(DagBundleModel(name=bundle_name))
        session.flush()
        writer.bulk_write_to_db(bundle_name, None, [dag], session=session)
        SerializedDagModel.write_dag(lazy_dag, bundle_name=bundle_name, session=session)


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def conn_env_var(conn_id: str) -> str:
    """Name of the environment variable Airflow reads connection ``conn_id`` from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@contextlib.contextmanager
def patched_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore the old values."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def import_mask_secret() -> Callable[..., None]:
    """Return Airflow's ``mask_secret`` for the installed version.

    ``airflow.sdk.log.mask_secret`` is the public location from Airflow 3.1 on (it also tells
    the supervisor process).  Airflow 3.0 had it in ``airflow.sdk.execution_time.secrets_masker``
    (which in 3.2+ is a deprecated shim that forwards to ``airflow.sdk.log``).
    """
    module = _first_module("airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker")
    mask_secret: Callable[..., None] = module.mask_secret
    return mask_secret


def _redact(text: str) -> str:
    module = _first_module("airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker")
    return str(module.redact(text))


def _first_module(*names: str) -> Any:
    """Import the first of ``names`` that exists (version-dependent locations)."""
    for name in names[:-1]:
        with contextlib.suppress(ImportError):
            return importlib.import_module(name)
    return importlib.import_module(names[-1])


# --------------------------------------------------------------------------------------------
# Output capture
# --------------------------------------------------------------------------------------------


def _iter_stream_handlers() -> Iterator[logging.StreamHandler[Any]]:
    """All plain console handlers attached to any logger (not pytest's caplog subclasses)."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    seen: set[int] = set()
    for lg in loggers:
        for handler in lg.handlers:
            if type(handler) is logging.StreamHandler and id(handler) not in seen:
                seen.add(id(handler))
                yield handler


def _flush_all(*streams: IO[str] | None) -> None:
    for stream in streams:
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


class OutputCapture:
    """Capture everything written to stdout/stderr/logging in this process, in order.

    Levels covered: file descriptors 1 and 2 (redirected to a temp file with ``dup2``),
    ``sys.stdout``/``sys.stderr`` (replaced by a line-buffered writer on the same file) and
    every plain ``logging.StreamHandler`` (re-pointed at that writer).  All three share one
    file offset, so the text comes out in write order.  ``text`` is available after exit.
    """

    def __init__(self) -> None:
        self.text = ""
        self._tmp: IO[bytes] | None = None
        self._sink: IO[str] | None = None
        self._saved_fds: dict[int, int] = {}
        self._saved_std: tuple[Any, Any] = (None, None)
        self._swapped: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> OutputCapture:
        _flush_all(sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        self._tmp = tempfile.TemporaryFile()
        fd = self._tmp.fileno()
        for target in (1, 2):
            try:
                saved = os.dup(target)
            except OSError:  # fd not open (e.g. daemonised CI runner): skip that level
                continue
            os.dup2(fd, target)
            self._saved_fds[target] = saved
        self._sink = open(  # closed in __exit__
            fd, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
        )
        self._saved_std = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = self._sink
        for handler in _iter_stream_handlers():
            self._swapped.append((handler, handler.stream))
            handler.setStream(self._sink)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tmp is None or self._sink is None:
            raise RuntimeError("OutputCapture.__exit__ without __enter__")
        for handler, old_stream in reversed(self._swapped):
            handler.setStream(old_stream)
        self._swapped.clear()
        sys.stdout, sys.stderr = self._saved_std
        _flush_all(self._sink)
        self._sink.close()
        for target, saved in self._saved_fds.items():
            os.dup2(saved, target)
            os.close(saved)
        self._saved_fds.clear()
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", errors="replace")
        self._tmp.close()


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class TaskOutcome:
    """Final state of one task instance after the run."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    #: Deserialized ``return_value`` XCom read back from the metadata DB (None if absent).
    xcom: Any = None
    has_xcom: bool = False
    #: The exception the task raised on its last try (None if it did not raise / unknown).
    error: BaseException | None = None
    #: ``"ValueError: message"`` for ``error``.
    error_text: str | None = None
    #: Traceback text of ``error``.
    error_traceback: str | None = None
    #: Part of the captured output between the "[DAG TEST] starting/end task" markers
    #: (best effort; includes output of other threads during that time).
    log: str = field(default="", repr=False)

    @property
    def key(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@dataclass
class DagResult:
    """Everything ``run_dag`` observed.  Task dicts are keyed by task_id (``"id[i]"`` if mapped)."""

    dag_id: str
    run_id: str | None
    #: DagRun state: "success" / "failed" (None if no DagRun was created).
    state: str | None
    tasks: dict[str, TaskOutcome]
    #: Everything written to stdout/stderr/logging during the run, ANSI codes stripped.
    log: str = field(repr=False)
    duration: float = 0.0
    #: Exception raised out of ``dag.test()`` itself (not by a task), if any.
    run_error: BaseException | None = None

    @property
    def task_states(self) -> dict[str, str | None]:
        return {key: t.state for key, t in self.tasks.items()}

    @property
    def xcoms(self) -> dict[str, Any]:
        """``return_value`` XCom of every task that pushed one."""
        return {key: t.xcom for key, t in self.tasks.items() if t.has_xcom}

    @property
    def errors(self) -> dict[str, BaseException]:
        return {key: t.error for key, t in self.tasks.items() if t.error is not None}

    @property
    def failed_tasks(self) -> list[str]:
        return [key for key, t in self.tasks.items() if t.state in ("failed", "upstream_failed")]

    @property
    def succeeded(self) -> bool:
        return self.run_error is None and self.state == "success"

    @property
    def masked_log(self) -> str:
        """``log`` after the Task SDK secrets masker: roughly what a production task log shows."""
        return _redact(self.log)

    def summary(self) -> str:
        """Short human-readable description, handy as an assertion message."""
        lines = [f"dag_id={self.dag_id} run_id={self.run_id} state={self.state} ({self.duration:.2f}s)"]
        if self.run_error is not None:
            lines.append(f"dag.test() raised: {type(self.run_error).__name__}: {self.run_error}")
        for key, t in self.tasks.items():
            extra = f" error={t.error_text}" if t.error_text else ""
            lines.append(f"  {key}: {t.state}{extra}")
        return "\n".join(lines)

    def assert_in_log(self, *needles: str) -> None:
        missing = [n for n in needles if n not in self.log]
        if missing:
            raise AssertionError(f"{missing!r} not found in the captured output:\n{self.summary()}")

    def assert_not_in_log(self, *needles: str) -> None:
        """Fail if any needle occurs in the captured output, showing where (needle masked)."""
        problems: list[str] = []
        for i, needle in enumerate(needles):
            if not needle:
                raise ValueError("empty needle")
            hits = [line for line in self.log.splitlines() if needle in line]
            for line in hits[:5]:
                problems.append(f"  needle#{i}: {line.replace(needle, f'<NEEDLE#{i}>')[:500]}")
        if problems:
            raise AssertionError("secret(s) found in the captured output:\n" + "\n".join(problems))


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _state_str(state: Any) -> str | None:
    if state is None:
        return None
    return str(getattr(state, "value", state))


def _conn_value(value: str | Mapping[str, Any]) -> str:
    return value if isinstance(value, str) else json.dumps(dict(value))


def _decode_xcom(value: Any) -> Any:
    """Decode a stored XCom value the way the Task SDK does (serde), falling back to raw JSON.

    (``XComModel.deserialize_value`` is wrong for SDK-pushed values: it would ``json.loads``
    a returned *string* such as ``"123"`` into an int.)
    """
    try:
        serde = _first_module("airflow.sdk.serde", "airflow.serialization.serde")
        return serde.deserialize(value)
    except Exception:
        return value


@contextlib.contextmanager
def _record_task_errors(sink: dict[tuple[str, int], BaseException | None]) -> Iterator[None]:
    """Keep the exception of every task run in-process (dag.test() discards it)."""
    try:
        from airflow.sdk.execution_time import supervisor
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(supervisor, "run_task_in_process", None)
    if original is None:  # pragma: no cover - layout changed; error objects unavailable
        yield
        return

    def recording(ti: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(ti, task, *args, **kwargs)
        sink[(str(ti.task_id), int(ti.map_index if ti.map_index is not None else -1))] = getattr(
            result, "error", None
        )
        return result

    supervisor.run_task_in_process = recording
    try:
        yield
    finally:
        supervisor.run_task_in_process = original


def _split_task_logs(text: str) -> dict[tuple[str, int], str]:
    chunks: dict[tuple[str, int], list[str]] = {}
    current: tuple[str, int] | None = None
    for line in text.splitlines(keepends=True):
        start = _TASK_START_RE.search(line)
        if start:
            current = (start.group(1), int(start.group(2)))
        if current is not None:
            chunks.setdefault(current, []).append(line)
        end = _TASK_END_RE.search(line)
        if end and current == (end.group(1), int(end.group(2))):
            current = None
    return {key: "".join(lines) for key, lines in chunks.items()}


def _max_dagrun_id(dag_id: str) -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return int(session.scalar(select(func.max(DagRun.id)).where(DagRun.dag_id == dag_id)) or 0)


def _collect(
    dag_id: str,
    run_id: str | None,
    newer_than_id: int,
    errors: dict[tuple[str, int], BaseException | None],
    task_logs: dict[tuple[str, int], str],
) -> tuple[str | None, str | None, dict[str, TaskOutcome]]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun).where(DagRun.dag_id == dag_id)
        if run_id is not None:
            query = query.where(DagRun.run_id == run_id)
        else:
            query = query.where(DagRun.id > newer_than_id)
        dag_run = session.scalars(query.order_by(DagRun.id.desc()).limit(1)).first()
        if dag_run is None:
            return run_id, None, {}
        run_id, run_state = dag_run.run_id, _state_str(dag_run.state)

        tis = session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
        ).all()
        xcom_rows = session.execute(
            select(XComModel.task_id, XComModel.map_index, XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.key == "return_value",
            )
        ).all()
        xcoms = {(row.task_id, row.map_index): row.value for row in xcom_rows}

        tasks: dict[str, TaskOutcome] = {}
        for ti in tis:
            ident = (ti.task_id, ti.map_index)
            error = errors.get(ident)
            outcome = TaskOutcome(
                task_id=ti.task_id,
                map_index=ti.map_index,
                state=_state_str(ti.state),
                try_number=ti.try_number,
                has_xcom=ident in xcoms,
                xcom=_decode_xcom(xcoms[ident]) if ident in xcoms else None,
                error=error,
                error_text=f"{type(error).__name__}: {error}" if error is not None else None,
                error_traceback="".join(traceback.format_exception(error)) if error is not None else None,
                log=task_logs.get(ident, ""),
            )
            tasks[outcome.key] = outcome
    return run_id, run_state, tasks


def run_dag(
    dag: DAG,
    conn_uris: Mapping[str, str | Mapping[str, Any]] | None = None,
    *,
    variables: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    echo: bool = True,
    **test_kwargs: Any,
) -> DagResult:
    """Run ``dag`` once with ``dag.test()`` and return what happened.  Never raises for task failures.

    :param conn_uris: ``{conn_id: value}``; each value is exported as ``AIRFLOW_CONN_<CONN_ID>``
        for the duration of the run (restored afterwards).  A value is either a connection URI
        or the JSON form (a mapping is ``json.dumps``-ed), exactly as users write the variable.
    :param variables: ``{key: value}`` exported as ``AIRFLOW_VAR_<KEY>``.
    :param env: extra environment variables for the run.
    :param echo: write the captured output to ``sys.stdout`` afterwards, so pytest shows it
        when the test fails.
    :param test_kwargs: passed to ``dag.test()`` (``run_conf``, ``logical_date``, ...).
    """
    init_airflow_db()

    values: dict[str, str] = {}
    for conn_id, value in (conn_uris or {}).items():
        values[conn_env_var(conn_id)] = _conn_value(value)
    for key, val in (variables or {}).items():
        values[f"AIRFLOW_VAR_{key.upper()}"] = val
    values.update(env or {})

    errors: dict[tuple[str, int], BaseException | None] = {}
    run_error: BaseException | None = None
    run_id: str | None = None
    sync_dag_to_db(dag)
    previous_max_id = _max_dagrun_id(dag.dag_id)

    capture = OutputCapture()
    t0 = time.perf_counter()
    with patched_env(values), _record_task_errors(errors), capture:
        try:
            dag_run = dag.test(**test_kwargs)
            run_id = getattr(dag_run, "run_id", None)
        except Exception as exc:
            run_error = exc
            traceback.print_exc()  # into the capture, so it is part of the log
    duration = time.perf_counter() - t0

    text = _ANSI_RE.sub("", capture.text)
    if echo and text:
        sys.stdout.write(text)
        _flush_all(sys.stdout)

    run_id, state, tasks = _collect(dag.dag_id, run_id, previous_max_id, errors, _split_task_logs(text))
    return DagResult(
        dag_id=dag.dag_id,
        run_id=run_id,
        state=state,
        tasks=tasks,
        log=text,
        duration=duration,
        run_error=run_error,
    )
