"""
The scale scenario: Airflow with the CeleryExecutor and two Celery workers sends one broadcast to a
large audience in mapped slices, and a second campaign on the same bot at the same time; one worker
is killed outright part-way; Airflow retries its tasks on the other. Run through ``scripts/scale.sh``.

Everything runs on 127.0.0.1, on free ports, in a private temporary folder: Redis (Debian's
``redis-server``: the Celery broker and the shared rate limit), PostgreSQL (Debian's ``postgresql``,
a throw-away cluster: Airflow's metadata database and Celery's result backend), moto's S3 server
(the audience files and the delivery ledger), the AhaChat sandbox (a bot-wide rate limit answering
429 above it, and a latency), and Airflow's api-server, scheduler, dag-processor and two
``airflow celery worker`` processes. The scenario runs twice, with the bot's limit shared through
Redis and with the same limit per task, and prints one table, read from the sandbox's record of
deliveries. Everything it starts, it stops, by process (and process group), however it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from airflow_processes import free_port, wait_until  # noqa: E402
from postgres_fixtures import bin_dir as postgres_bin_dir  # noqa: E402

DAGS = ROOT / "scripts" / "scale_dags"
BUCKET = "ahachat-scale"
S3_CONN = "scale_s3"
REDIS_CONN = "scale_redis"
TERMINAL = {"success", "failed"}
TIMELINE_STEP = 5  # seconds per bucket of the delivery timeline in the log


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def http(method: str, url: str, body: Any = None, timeout: float = 60) -> Any:
    """A JSON request; the parsed answer, or None if it could not be made or was not 2xx."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
    except (OSError, urllib.error.URLError):
        return None
    return json.loads(raw) if raw else {}


# --------------------------------------------------------------------------- processes


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Every process the scenario starts, each in its own session; :meth:`stop_all` ends them all."""

    folder: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Started:
        log_path = self.folder / f"{name}.log"
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.folder,
            )  # fmt: skip
        started = Started(name, process, log_path)
        self.started.append(started)
        # For the shell's trap, should this process itself be killed outright.
        with (self.folder / "pids").open("a") as pids:
            pids.write(f"{process.pid}\n")
        return started

    def alive(self, started: Started) -> None:
        if started.process.poll() is not None:
            tail = started.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{started.name} exited with {started.process.returncode}:\n{tail}")

    def kill_tree(self, started: Started, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the process, everything under it and their process groups; how many."""
        import psutil

        try:
            top = psutil.Process(started.process.pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        groups = {started.process.pid}
        for proc in tree:
            with contextlib.suppress(psutil.Error, OSError):
                groups.add(os.getpgid(proc.pid))
        for proc in tree:
            with contextlib.suppress(psutil.Error, OSError):
                proc.send_signal(sig)
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, sig)
        return len(tree)

    def stop(self, started: Started, grace: float = 10.0) -> None:
        if started.process.poll() is None:
            self.kill_tree(started, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.process.wait(timeout=grace)
        self.kill_tree(started, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            started.process.wait(timeout=10)

    def stop_all(self) -> None:
        for started in reversed(self.started):
            with contextlib.suppress(Exception):
                self.stop(started, grace=5.0)
        self.started.clear()


def stop_leftovers(folder: Path) -> int:
    """
    Kill whatever a scenario in ``folder`` started and left running (it was itself killed outright):
    each process named in ``folder/pids`` with everything under it, and the PostgreSQL server.
    """
    import psutil

    killed = 0
    pids = folder / "pids"
    for line in pids.read_text().split() if pids.exists() else []:
        with contextlib.suppress(psutil.Error, ValueError):
            top = psutil.Process(int(line))
            for proc in [top, *top.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    killed += 1
    where = folder / "postgres.path"
    home = Path(where.read_text().strip()) if where.exists() else None
    postmaster = home / "data" / "postmaster.pid" if home is not None else None
    if postmaster is not None and postmaster.exists():
        with contextlib.suppress(ValueError, OSError, IndexError):
            os.kill(int(postmaster.read_text().split()[0]), signal.SIGKILL)
            killed += 1
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)
    return killed


# --------------------------------------------------------------------------- servers


def postgres_bin() -> Path:
    folder = postgres_bin_dir()
    if folder is None:
        raise RuntimeError("PostgreSQL is not installed (scripts/scale.sh installs Debian's postgresql)")
    return folder


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[int]:
    """A throw-away cluster on 127.0.0.1 (as the postgres user when run as root); its port."""
    binaries = postgres_bin()
    # Its own folder in the system's temporary folder: as root the server runs as the postgres user,
    # who may not be able to reach ``folder`` (a test's tmp_path is private to root).
    home = Path(tempfile.mkdtemp(prefix="ahachat-scale-pg-"))
    (folder / "postgres.path").write_text(str(home))
    data = home / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(home, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off -c max_connections=200"
    pg_ctl = [*as_user, str(binaries / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [*pg_ctl, "-l", str(home / "log"), "-o", options, "-w", "-t", "120", "start"],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        yield port
    finally:
        stopped = subprocess.run([*pg_ctl, "-m", "immediate", "-w", "-t", "30", "stop"], capture_output=True)
        pid_file = data / "postmaster.pid"
        if stopped.returncode != 0 and pid_file.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def start_redis(processes: Processes) -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/scale.sh installs Debian's redis-server)")
    port = free_port()
    started = processes.start(
        "redis", [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    )

    def ready() -> bool:
        processes.alive(started)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(ready, 60, "redis-server", 0.1)
    return port


def start_moto(processes: Processes) -> str:
    port = free_port()
    started = processes.start(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    )
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        processes.alive(started)
        return http("GET", f"{endpoint}/moto-api/data.json", timeout=2) is not None

    wait_until(ready, 120, "moto's S3 server", 0.2)
    request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
    urllib.request.urlopen(request, timeout=30).close()
    return endpoint


@dataclass
class Sandbox:
    url: str
    bot_id: str
    token: str

    def api(self, method: str, path: str, body: Any = None) -> Any:
        answer = http(method, f"{self.url}/_sandbox{path}", body, timeout=120)
        if answer is None:
            raise RuntimeError(f"the sandbox did not answer {method} /_sandbox{path}")
        return answer.get("data", answer)


def start_sandbox(processes: Processes, rate: float, latency_ms: float) -> Sandbox:
    from airflow_provider_ahachat.sandbox.state import SandboxState

    port = free_port()
    started = processes.start(
        "sandbox",
        [sys.executable, "-m", "airflow_provider_ahachat.sandbox", "--port", str(port),
         "--rate-limit", f"{rate:g}", "--latency-ms", f"{latency_ms:g}", "--retry-after", "1"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        processes.alive(started)
        return http("GET", f"{url}/_sandbox/config", timeout=2) is not None

    wait_until(ready, 120, "the AhaChat sandbox", 0.2)
    bot = SandboxState().default_bot  # the seed's bot, as the sandbox serves it
    return Sandbox(url, bot.id, bot.token)


# --------------------------------------------------------------------------- Airflow


@dataclass
class Airflow:
    processes: Processes
    env: dict[str, str]
    url: str
    components: dict[str, Started] = field(default_factory=dict)
    workers: dict[str, Started] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def start(self, name: str, *args: str) -> Started:
        started = self.processes.start(name, [sys.executable, "-m", "airflow", *args], self.env)
        self.components[name] = started
        return started

    def start_worker(self, name: str, concurrency: int) -> Started:
        """Start ``airflow celery worker`` named ``name``; :meth:`wait_for_workers` waits for it."""
        started = self.processes.start(
            name,
            [sys.executable, "-m", "airflow", "celery", "worker", "--concurrency", str(concurrency),
             "--celery-hostname", f"{name}@%h", "--skip-serve-logs"],
            self.env,
        )  # fmt: skip
        self.workers[name] = started
        return started

    def wait_for_workers(self) -> None:
        """Wait until every Celery worker says it is ready."""

        def ready() -> bool:
            self.alive()
            return all(" ready." in w.log.read_text(errors="replace") for w in self.workers.values())

        wait_until(ready, 600, "the Celery workers", 0.5)

    def alive(self) -> None:
        for started in [*self.components.values(), *self.workers.values()]:
            self.processes.alive(started)

    def get(self, path: str) -> Any:
        return http("GET", f"{self.url}{path}", timeout=30)

    def trigger(self, dag_id: str) -> str:
        answer = http("POST", f"{self.url}/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
        if not answer or "dag_run_id" not in answer:
            raise RuntimeError(f"could not trigger {dag_id}: {answer}")
        return str(answer["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        answer = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")
        return answer.get("state") if answer else None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances?limit=100"
        )
        return list(answer["task_instances"]) if answer else []

    def summary(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any] | None:
        answer = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}"
            f"/xcomEntries/summary?map_index={map_index}&deserialize=true"
        )
        value = (answer or {}).get("value")
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        return value if isinstance(value, dict) else None


def airflow_env(
    home: Path,
    *,
    port: int,
    pg_port: int,
    redis_port: int,
    s3: str,
    sandbox: Sandbox,
    args: argparse.Namespace,
) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_CONFIG"
    }
    database = f"postgres@127.0.0.1:{pg_port}/airflow"
    ahachat = {"conn_type": "ahachat", "login": sandbox.bot_id, "password": sandbox.token}
    extra = {"base_url": sandbox.url, "rate_limit": args.rate, "concurrency": args.concurrency}
    return {
        **base,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "64",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{database}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{database}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "120",
        # A lost worker's tasks stop heartbeating: after this many seconds the scheduler fails them
        # and, with retries left, queues them again, for the other worker.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(args.heartbeat_timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        # The ledger's lease on S3 outlives a lost worker by at most this long.
        "AIRFLOW__AHACHAT__LEDGER_LEASE_SECONDS": f"{args.lease:g}",
        "AIRFLOW_VAR_AHACHAT_SCALE_AUDIENCE": f"s3://{S3_CONN}@{BUCKET}/audience",
        "AIRFLOW_VAR_AHACHAT_SCALE_LEDGER": f"s3://{S3_CONN}@{BUCKET}/ledger",
        "AHACHAT_SCALE_SLICES": str(args.slices),
        f"AIRFLOW_CONN_{S3_CONN.upper()}": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3, "region_name": "us-east-1"},
            }
        ),
        f"AIRFLOW_CONN_{REDIS_CONN.upper()}": f"redis://127.0.0.1:{redis_port}/1",
        "AIRFLOW_CONN_AHACHAT_SCALE_SHARED": json.dumps(
            {**ahachat, "extra": {**extra, "rate_limit_redis_conn_id": REDIS_CONN}}
        ),
        "AIRFLOW_CONN_AHACHAT_SCALE_PER_TASK": json.dumps({**ahachat, "extra": extra}),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def start_airflow(processes: Processes, folder: Path, args: argparse.Namespace, **settings: Any) -> Airflow:
    home = folder / "airflow"
    home.mkdir()
    port = free_port()
    env = airflow_env(home, port=port, args=args, **settings)
    airflow = Airflow(processes, env, f"http://127.0.0.1:{port}")
    log("Airflow: creating the metadata database in PostgreSQL...")
    airflow.cli("db", "migrate")
    airflow.start("api-server", "api-server")
    airflow.start("scheduler", "scheduler")
    airflow.start("dag-processor", "dag-processor")
    for name in ("worker1", "worker2"):
        airflow.start_worker(name, args.worker_concurrency)

    def ready() -> bool:
        airflow.alive()
        health = airflow.get("/api/v2/monitor/health")
        if not health or airflow.get("/execution/health") is None:
            return False
        return all((health.get(p) or {}).get("status") == "healthy" for p in ("scheduler", "dag_processor"))

    wait_until(ready, 900, "Airflow's api-server, scheduler and dag-processor", 1.0)
    airflow.wait_for_workers()
    return airflow


# --------------------------------------------------------------------------- the audience


def user_id(number: int) -> str:
    from airflow_provider_ahachat.sandbox.world import synthetic_user_id

    return str(synthetic_user_id(number))


def write_audience(s3: str, recipients: int, second: int, slices: int) -> None:
    """The slice files of the big broadcast and the second campaign's file, uploaded to the bucket."""
    import boto3

    client = boto3.client(
        "s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # fmt: skip

    def upload(name: str, rows: list[list[str]], header: list[str]) -> None:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        client.put_object(Bucket=BUCKET, Key=f"audience/{name}", Body=text.getvalue().encode())

    for part in range(slices):
        rows = [[user_id(n), f"DH{n:06d}", f"GHN{n:08d}VN"] for n in range(part, recipients, slices)]
        upload(f"shipping-{part}.csv", rows, ["user_id", "order_id", "tracking_number"])
    upload(
        "second.csv",
        [[user_id(n), f"HD{n:06d}"] for n in range(recipients, recipients + second)],
        ["user_id", "invoice_id"],
    )


# --------------------------------------------------------------------------- one run


@dataclass
class Result:
    mode: str
    recipients: int
    once: int
    lost: int
    doubled: int
    rate_limited: int
    rate: float
    limit: float
    seconds: float
    killed: str
    arrived: int
    resent: int
    unknown: int
    failed: int
    timeline: list[int]
    states: dict[str, str]
    retried: int

    @property
    def share(self) -> float:
        return self.rate / self.limit if self.limit else 0.0


def flush_rate_limit(redis_port: int) -> None:
    with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as sock:
        sock.sendall(b"SELECT 1\r\nFLUSHDB\r\n")
        time.sleep(0.1)
        sock.recv(64)


def pick_worker(airflow: Airflow, dag_id: str, run_id: str) -> tuple[str, int]:
    """The worker running the most of the run's tasks now, and how many it runs."""
    import psutil

    pids = {ti.get("pid") for ti in airflow.task_instances(dag_id, run_id) if ti.get("state") == "running"}
    counts: Counter[str] = Counter()
    for name, started in airflow.workers.items():
        try:
            tree = {p.pid for p in psutil.Process(started.process.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            continue
        counts[name] = len(pids & tree)
    name, count = max(counts.items(), key=lambda item: item[1])
    return name, count


def run_mode(
    mode: str, airflow: Airflow, sandbox: Sandbox, redis_port: int, args: argparse.Namespace
) -> Result:
    total = args.recipients + args.second
    sandbox.api("POST", "/reset")
    # Customers who wrote in the last 24 hours: the broadcasts carry no tag (Meta retired them), so
    # Messenger would refuse the others, and the scenario measures deliveries.
    sandbox.api("POST", "/users/generate", {"count": total, "in_window": True})
    flush_rate_limit(redis_port)
    big, second = f"ahachat_scale_broadcast_{mode}", f"ahachat_scale_second_{mode}"
    for dag_id in (big, second):
        path = f"/api/v2/dags/{dag_id}"
        wait_until(partial(airflow.get, path), 600, f"the DAG {dag_id} to be parsed")
    log(f"{mode}: triggering {big} ({args.recipients:,} recipients, {args.slices} slices)"
        f" and {second} ({args.second:,})")  # fmt: skip
    started = time.monotonic()
    runs = {big: airflow.trigger(big), second: airflow.trigger(second)}
    killed = ""
    states: dict[str, str] = {}
    last_note = 0.0
    while True:
        airflow.alive()
        stats = sandbox.api("GET", "/stats")
        delivered = int(stats["outbox"])
        if not killed and delivered >= args.kill_at * total:
            name, running = pick_worker(airflow, big, runs[big])
            if running:
                count = airflow.processes.kill_tree(airflow.workers.pop(name))
                killed = f"{name} ({running} tasks) at {delivered:,}"
                log(f"{mode}: SIGKILL to {name} and its {count - 1} processes, which ran {running} of the"
                    f" broadcast's tasks, at {delivered:,} delivered")  # fmt: skip
        states = {dag_id: airflow.run_state(dag_id, run_id) or "?" for dag_id, run_id in runs.items()}
        if all(state in TERMINAL for state in states.values()):
            break
        if time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            limited = stats["by_status"].get("429", 0)
            log(f"{mode}: {delivered:,} of {total:,} delivered, 429s: {limited}, runs {states}")
        if time.monotonic() - started > args.run_timeout:
            raise TimeoutError(f"{mode}: the runs did not end within {args.run_timeout:.0f}s: {states}")
        time.sleep(1)
    seconds = time.monotonic() - started
    outbox = sandbox.api("GET", "/outbox")
    stats = sandbox.api("GET", "/stats")
    counts = Counter(entry["messenger_user_id"] for entry in outbox)
    audience = {user_id(n) for n in range(total)}
    times = sorted(datetime.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")) for entry in outbox)
    window = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    timeline = Counter(int((t - times[0]).total_seconds() // TIMELINE_STEP) for t in times)
    unknown = arrived = resent = failed = retried = 0
    for dag_id, run_id in runs.items():
        for ti in airflow.task_instances(dag_id, run_id):
            retried += int((ti.get("try_number") or 1) > 1)
            summary = airflow.summary(dag_id, run_id, ti["task_id"], ti.get("map_index", -1))
            if summary:
                unknown += int(summary.get("outcomes", {}).get("unknown", 0))
                # AhaChat refused them to the end (429s past max_retries, say): reported, not lost silently.
                failed += sum(int(summary.get("outcomes", {}).get(o, 0)) for o in ("failed", "not_sent"))
                arrived += int(summary.get("unknown_checked", {}).get("arrived", 0))
                resent += int(summary.get("unknown_checked", {}).get("not_arrived", 0))
    return Result(
        mode=mode,
        recipients=total,
        once=sum(1 for uid in audience if counts.get(uid) == 1),
        lost=sum(1 for uid in audience if uid not in counts),
        doubled=sum(1 for uid in audience if counts.get(uid, 0) > 1),
        rate_limited=int(stats["by_status"].get("429", 0)),
        rate=len(outbox) / window if window else 0.0,
        limit=args.rate,
        seconds=seconds,
        killed=killed or "none",
        arrived=arrived,
        resent=resent,
        unknown=unknown,
        failed=failed,
        timeline=[timeline.get(step, 0) for step in range(max(timeline, default=-1) + 1)],
        states=states,
        retried=retried,
    )


def table(results: list[Result]) -> str:
    header = (
        "| Rate limit | Recipients | Delivered exactly once | Lost | Doubled | 429s | Messages/s "
        "| Of the bot's limit | Wall time | Unknown after the kill: arrived / sent again / still unknown "
        "| Failed (reported) | Tasks retried | Worker killed |"
    )
    lines = [
        header,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    names = {"shared": "shared (Redis)", "per_task": "per task"}
    for r in results:
        lines.append(
            f"| {names.get(r.mode, r.mode)} | {r.recipients:,} | {r.once:,} | {r.lost:,} | {r.doubled:,} "
            f"| {r.rate_limited:,} | {r.rate:.1f} | {r.share:.1%} | {r.seconds:.0f} s "
            f"| {r.arrived:,} / {r.resent:,} / {r.unknown:,} | {r.failed:,} "
            f"| {r.retried} | {r.killed} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="scripts/scale.sh")
    parser.add_argument("--recipients", type=int, default=10_000, help="the big broadcast's audience")
    parser.add_argument(
        "--second", type=int, default=2_000, help="the second DAG's audience, on the same bot"
    )
    parser.add_argument("--slices", type=int, default=8, help="mapped slices of the big broadcast")
    parser.add_argument("--rate", type=float, default=100.0, help="the bot's limit, requests per second")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the sandbox's latency")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per task")
    parser.add_argument("--worker-concurrency", type=int, default=10, help="task slots per Celery worker")
    parser.add_argument("--kill-at", type=float, default=0.1, help="share delivered when a worker is killed")
    parser.add_argument("--lease", type=float, default=10.0, help="the ledger lease on S3, seconds")
    parser.add_argument(
        "--heartbeat-timeout", type=int, default=20, help="seconds until a lost task is retried"
    )
    parser.add_argument("--modes", default="shared,per_task", help="which runs, in order")
    parser.add_argument("--run-timeout", type=float, default=900.0, help="seconds allowed for each run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) at the end")
    parser.add_argument("--stop-leftovers", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.stop_leftovers:
        stop_leftovers(args.stop_leftovers)
        return 0
    began = time.monotonic()
    folder = Path(os.environ.get("AHACHAT_SCALE_DIR") or tempfile.mkdtemp(prefix="ahachat-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    processes = Processes(folder)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    results: list[Result] = []
    ok = False
    try:
        log(f"Working folder (logs): {folder}")
        with postgres(folder) as pg_port:
            import psycopg2

            conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="postgres")
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("CREATE DATABASE airflow")
            conn.close()
            redis_port = start_redis(processes)
            s3 = start_moto(processes)
            sandbox = start_sandbox(processes, args.rate, args.latency_ms)
            write_audience(s3, args.recipients, args.second, args.slices)
            log(f"PostgreSQL :{pg_port}, Redis :{redis_port}, S3 {s3}, sandbox {sandbox.url}"
                f" ({args.rate:g} requests/s for the bot, {args.latency_ms:g} ms)")  # fmt: skip
            airflow = start_airflow(
                processes, folder, pg_port=pg_port, redis_port=redis_port, s3=s3, sandbox=sandbox, args=args
            )
            log("Airflow is up, with two Celery workers")
            for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
                if len(airflow.workers) < 2:  # a new worker for the one killed in the run before
                    airflow.start_worker(f"worker{len(processes.started)}", args.worker_concurrency)
                    airflow.wait_for_workers()
                result = run_mode(mode, airflow, sandbox, redis_port, args)
                log(f"{mode}: {result.once:,} of {result.recipients:,} once, {result.lost} lost,"
                    f" {result.doubled} doubled, {result.rate_limited} 429s, {result.rate:.1f}/s;"
                    f" runs {result.states}")  # fmt: skip
                log(f"{mode}: messages per {TIMELINE_STEP} s from the first: {result.timeline}")
                results.append(result)
            processes.stop_all()
        print()
        print(
            f"Bot limit {args.rate:g} requests/s, sandbox latency {args.latency_ms:g} ms,"
            f" {args.slices} slices, 2 Celery workers, one SIGKILLed at {args.kill_at:.0%} delivered"
        )
        print(table(results))
        print(f"Whole scenario: {time.monotonic() - began:.0f} s")
        if args.json:
            args.json.write_text(json.dumps([{**r.__dict__, "share": r.share} for r in results], indent=2))
        ok = True
        return 0
    finally:
        processes.stop_all()
        if not ok:
            print(f"The scenario failed; logs in {folder}", file=sys.stderr)
        elif not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
