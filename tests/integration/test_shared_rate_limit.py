"""
The bot's rate limit shared through a real Redis by every run that sends for the bot, against the
sandbox, whose own limit answers 429 to whoever goes faster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.redis_server import RedisServer

from airflow_provider_ahachat.bulk import AhaChatBulkError, BulkRunner, Ledger
from airflow_provider_ahachat.bulk.pacing import RedisRateLimiter
from airflow_provider_ahachat.client import AhaChatClient, RetryPolicy
from airflow_provider_ahachat.sandbox import SandboxServer

BOT_LIMIT = 40  # requests per second the sandbox's bot allows
FAST = RetryPolicy(max_retries=8, backoff_base=0.01, backoff_max=0.05, max_retry_time=60)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def shared_limiter(server: RedisServer, key: str = "ahachat:rate:test:12404829") -> RedisRateLimiter:
    import redis

    return RedisRateLimiter(redis.Redis.from_url(server.url), key, BOT_LIMIT)


def run_in_parallel(sandbox: SandboxServer, audiences: list[list[str]], limiters: list[Any]) -> list[Any]:
    """One runner per audience, each with its own client, at once (as separate tasks would)."""
    results: list[Any] = [None] * len(audiences)

    def one(index: int) -> None:
        with AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=FAST, pool_size=8) as client:
            runner = BulkRunner(
                client,
                client.bind("broadcast_block", block_name="shipping_update"),
                concurrency=8,
                rate_limit=BOT_LIMIT,
                limiter=limiters[index],
                progress_interval=60,
            )
            try:
                results[index] = runner.run(audiences[index])
            except AhaChatBulkError as err:
                results[index] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(audiences))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def test_runs_sharing_the_limit_stay_under_the_bot_limit_where_separate_limits_do_not(
    sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    ids = sandbox.generate_users(240)
    audiences = [ids[:120], ids[120:]]

    # Each run alone keeps to the bot's limit, but two at once go twice as fast: 429s.
    sandbox.configure(rate_limit=BOT_LIMIT, retry_after=1)
    separate = run_in_parallel(sandbox, audiences, [None, None])
    assert [r["outcomes"] for r in separate] == [{"delivered": 120}] * 2
    assert sandbox.stats()["by_status"].get("429", 0) > 0
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)

    # The same two runs through one Redis schedule: the bot never answers 429.
    sandbox.reset()
    ids = sandbox.generate_users(240)
    audiences = [ids[:120], ids[120:]]
    sandbox.configure(rate_limit=BOT_LIMIT, retry_after=1)
    shared = run_in_parallel(sandbox, audiences, [shared_limiter(redis_server), shared_limiter(redis_server)])
    assert [r["outcomes"] for r in shared] == [{"delivered": 120}] * 2
    assert sandbox.stats()["by_status"] == {"200": 240}
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)
    # ...and together they still used most of it: the two runs overlapped rather than took turns.
    assert max(r["seconds"] for r in shared) < 240 / BOT_LIMIT * 1.5 + 5


def test_a_429_seen_by_one_run_pauses_the_others(sandbox: SandboxServer, redis_server: RedisServer) -> None:
    first, second = shared_limiter(redis_server), shared_limiter(redis_server)
    first.acquire()
    first.slow_down(0.5)
    started = time.monotonic()
    second.acquire()  # another worker's next slot comes only after the pause
    assert time.monotonic() - started >= 0.45
    assert second.rate == pytest.approx(BOT_LIMIT * 0.8)


def test_redis_lost_mid_run_stops_the_run_and_a_retry_finishes_it_once(
    sandbox: SandboxServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    ids = sandbox.generate_users(150)
    ledger = tmp_path / "ledger"
    client = AhaChatClient(sandbox.bot_id, sandbox.token, sandbox.url, retry=FAST)

    def broadcast(limiter: RedisRateLimiter) -> BulkRunner:
        """The same run both times: only the limiter (a new Redis) is new."""
        return BulkRunner(
            client,
            client.bind("broadcast_block", block_name="shipping_update"),
            ledger=Ledger(ledger),
            concurrency=8,
            rate_limit=BOT_LIMIT,
            limiter=limiter,
            progress_interval=60,
        )

    runner = broadcast(shared_limiter(redis_server))

    def lose_redis() -> None:  # once a few dozen customers were reached
        _wait_for(lambda: len(sandbox.outbox_counts()) >= 30)
        redis_server.stop()

    watcher = threading.Thread(target=lose_redis)
    watcher.start()
    with pytest.raises(AhaChatBulkError, match="shared rate limit in Redis cannot be reached") as info:
        runner.run(ids)
    watcher.join()
    outcomes = info.value.summary["outcomes"]
    assert set(outcomes) <= {"delivered", "not_sent"} and outcomes["not_sent"] > 0
    reached = sandbox.outbox_counts()
    assert len(reached) == outcomes["delivered"] and set(reached.values()) == {1}

    # Redis back (a new, empty one): the retried run sends only to who was not reached.
    with RedisServer(port=redis_server.port):
        again = broadcast(shared_limiter(redis_server)).run(ids)
    assert again["outcomes"] == {"delivered": 150}
    assert again["delivered_in_earlier_tries"] == outcomes["delivered"]
    assert sandbox.outbox_counts() == dict.fromkeys(ids, 1)
    client.close()


def _wait_for(condition: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.usefixtures("airflow_db")
def test_the_connection_names_the_redis_connection_and_the_operators_share_it(
    dag_runner: Any, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    import redis
    from airflow.sdk import DAG

    from airflow_provider_ahachat.operators.ahachat import AddTagsOperator

    ids = sandbox.generate_users(30)
    conn = {
        "conn_type": "ahachat",
        "login": sandbox.bot_id,
        "password": sandbox.token,
        "host": sandbox.url,
        "extra": {"rate_limit": BOT_LIMIT, "rate_limit_redis_conn_id": "shared_redis"},
    }
    with DAG("shared_limit", schedule=None, default_args={"retries": 0}) as dag:
        AddTagsOperator(task_id="tag", ahachat_conn_id="aha_shared", recipients=ids, tags=["vip"])
    result = dag_runner(
        dag,
        {
            "aha_shared": conn,
            "shared_redis": {"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port},
        },
    )
    assert result.task_states == {"tag": "success"}, result.summary()
    assert result.xcoms["tag"]["outcomes"] == {"delivered": 30}
    host = sandbox.url.split("://", 1)[1]
    schedule = redis.Redis.from_url(redis_server.url).hgetall(f"ahachat:rate:{host}:{sandbox.bot_id}")
    assert set(schedule) >= {b"tat", b"rate"}  # the run took its slots from the shared schedule
    assert sandbox.token not in result.log
