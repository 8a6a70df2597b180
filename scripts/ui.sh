#!/usr/bin/env bash
# The example DAGs in Airflow's UI, on the local sandbox: starts the AhaChat sandbox and
# `airflow standalone` on 127.0.0.1, with the connections `ahachat_sandbox` (the sandbox) and
# `shop_db` (a SQLite shop database of orders shipped yesterday) already set. Ctrl-C stops both.
#
# Settings (environment): AHACHAT_UI_PORT (Airflow, default 8080), AHACHAT_SANDBOX_PORT (default
# 8790), AHACHAT_UI_HOME (Airflow's home, kept between runs; default .airflow-ui/ in the clone).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ROOT="$PWD"
# `airflow standalone` starts its components as `airflow ...`: the venv's airflow must come first.
export PATH="$ROOT/.venv/bin:$PATH"

PORT="${AHACHAT_UI_PORT:-8080}"
SANDBOX_PORT="${AHACHAT_SANDBOX_PORT:-8790}"
export AIRFLOW_HOME="${AHACHAT_UI_HOME:-$ROOT/.airflow-ui}"
URL="http://127.0.0.1:$PORT"
SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT"
# Numbered customers added to the sandbox's bot, who all ordered yesterday. The shop database also
# holds two orders of people the bot does not know (AhaChat answers 404): the bulk example's report
# shows them, and with 1,000 customers they stay under its 1% failure allowance.
CUSTOMERS=1000

for port in "$PORT" "$SANDBOX_PORT"; do
  if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)"; then
    echo "Port $port on 127.0.0.1 is taken. Stop what uses it, or set AHACHAT_UI_PORT / AHACHAT_SANDBOX_PORT." >&2
    exit 1
  fi
done

# Nothing of the caller's Airflow settings: this is a private Airflow for the examples.
while IFS= read -r name; do unset "$name"; done < <(env | grep -oE '^AIRFLOW(__|_CONN_|_VAR_)[A-Za-z0-9_]*' || true)
unset AIRFLOW_CONFIG
mkdir -p "$AIRFLOW_HOME"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__TEST_CONNECTION=Enabled
# Workers wait this long for Airflow's API: the default (5 s) is short for a busy laptop on SQLite.
export AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT=30
export AIRFLOW__API__WORKERS=1
# The scheduler and the triggerer serve task logs on ports of their own (8793 and 8794 by default):
# free ones, so that another Airflow on this machine does not stop this one.
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$(free_port)"
AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$(free_port)"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT
# SQLite lets one writer in at a time; the others wait up to `timeout` seconds (5 by default), then
# fail. A scheduler that fails so stops for good, and the first runs write a lot at once: wait longer.
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db?timeout=60"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$PORT"
export AIRFLOW__API__BASE_URL="$URL"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$URL/execution/"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/passwords.json"
echo '{"admin": "admin"}' > "$AIRFLOW_HOME/passwords.json"  # listens on 127.0.0.1 only
export AHACHAT_CONN_ID=ahachat_sandbox
# example_ahachat_confirm_delivery checks every 10 seconds whether the customer answered (5 minutes
# in the example's own default), so that an answer given through the sandbox shows at once.
export AHACHAT_POKE_INTERVAL=10

PIDS=()
stop() {
  trap - INT TERM EXIT
  echo; echo "Stopping Airflow and the sandbox..."
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap stop EXIT
trap 'stop; exit 130' INT TERM

# `in_own_group CMD...` runs CMD in a process group (and session) of its own, whose ID is its
# process ID, so that stopping the group stops everything it started. Python's os.setsid, not the
# setsid command, which macOS does not have.
# Started with `&`, the function runs in a subshell, which exec makes the command itself: `$!` is
# then the group's ID.
in_own_group() {
  exec python -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}

echo "Starting the AhaChat sandbox on $SANDBOX_URL (log: $AIRFLOW_HOME/sandbox.log)..."
in_own_group python -m airflow_provider_ahachat.sandbox --port "$SANDBOX_PORT" --customers "$CUSTOMERS" \
  > "$AIRFLOW_HOME/sandbox.log" 2>&1 &
PIDS+=($!)

say_while "Preparing Airflow's database in $AIRFLOW_HOME (the first time takes a minute)" \
  bash -c 'airflow db migrate > "$1" 2>&1' migrate "$AIRFLOW_HOME/migrate.log" \
  || { cat "$AIRFLOW_HOME/migrate.log"; exit 1; }
python - "$AIRFLOW_HOME" "$SANDBOX_URL" "$CUSTOMERS" <<'PY'
"""The shop database and the two connections, written for `airflow connections import`."""
import datetime, json, sqlite3, sys
from pathlib import Path

from airflow_provider_ahachat.sandbox.state import SandboxState

home, sandbox_url, customers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
bot = SandboxState().default_bot  # the seed's bot: its ID and token, as the sandbox serves them
yesterday = (datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)).isoformat()
audience = [f"9{n:015d}" for n in range(customers)] + ["8000000000000001", "8000000000000002"]
database = home / "shop.db"
database.unlink(missing_ok=True)
with sqlite3.connect(database) as db:
    db.execute(
        "CREATE TABLE orders (customer_id INTEGER PRIMARY KEY, messenger_user_id TEXT,"
        " order_id TEXT, tracking_number TEXT, shipped_on TEXT)"
    )
    db.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
        [(n, uid, f"DH{n:06d}", f"GHN{n:08d}VN", yesterday) for n, uid in enumerate(audience)],
    )
connections = {
    "ahachat_sandbox": {
        "conn_type": "ahachat",
        "description": "The local AhaChat sandbox (scripts/ui.sh)",
        "login": bot.id,
        "password": bot.token,
        "extra": json.dumps({"base_url": sandbox_url}),
    },
    "shop_db": {"conn_type": "sqlite", "description": "Orders shipped yesterday", "host": str(database)},
}
(home / "connections.json").write_text(json.dumps(connections))
PY
say_while "Writing the connections ahachat_sandbox and shop_db (a shop database of $CUSTOMERS orders)" \
  bash -c 'airflow connections import --overwrite "$1/connections.json" > "$1/connections.log" 2>&1' \
  import "$AIRFLOW_HOME" || { cat "$AIRFLOW_HOME/connections.log"; exit 1; }

# Switches the example DAGs on through Airflow's REST API, as the admin user, and prints how many
# of them Airflow knows and has switched on, as "ON KNOWN".
examples_on() {
  python - "$URL" 2>>"$AIRFLOW_HOME/unpause.log" <<'PY'
import json, sys, urllib.request

url = sys.argv[1]


def call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


token = call("POST", "/auth/token", {"username": "admin", "password": "admin"})["access_token"]
pattern = "dag_id_pattern=example_ahachat_%25"
call("PATCH", f"/api/v2/dags?{pattern}", {"is_paused": False}, token)
dags = call("GET", f"/api/v2/dags?{pattern}&limit=100", token=token)["dags"]
print(sum(not dag["is_paused"] for dag in dags), len(dags))
PY
}
EXAMPLES=$(find "$ROOT/example_dags" -maxdepth 1 -name 'example_ahachat_*.py' | wc -l | tr -d ' ')

# Switched on only once Airflow answers, so that the two scheduled examples run once at once; tries
# for two minutes while the DAG processor parses them, then stops if they are still not all on.
switch_examples_on() {
  local on=0 known=0 started=$SECONDS said=$SECONDS
  while (( SECONDS - started < 120 )); do
    read -r on known < <(examples_on || echo "0 0")
    [[ "$on" == "$EXAMPLES" ]] && { echo "Switched the $EXAMPLES example DAGs on."; return 0; }
    if (( SECONDS - said >= 8 )); then
      said=$SECONDS
      echo "  ...$known of $EXAMPLES example DAGs parsed, $on switched on ($((SECONDS - started))s); trying again"
    fi
    sleep 2
  done
  echo "Could not switch the example DAGs on: $on of $EXAMPLES are on ($known parsed) after two minutes." >&2
  echo "See $AIRFLOW_HOME/unpause.log, and the DAG processor's errors in $AIRFLOW_HOME/standalone.log." >&2
  return 1
}

echo "Starting Airflow on $URL (airflow standalone; log: $AIRFLOW_HOME/standalone.log)..."
in_own_group airflow standalone > "$AIRFLOW_HOME/standalone.log" 2>&1 &
PIDS+=($!)
started=$SECONDS
said=$SECONDS
while (( SECONDS - started < 600 )); do
  if python3 -c "import urllib.request; urllib.request.urlopen('$URL/api/v2/monitor/health', timeout=2)" 2>/dev/null; then
    echo "Airflow answers after $((SECONDS - started))s; switching the example DAGs on..."
    switch_examples_on || exit 1
    cat <<MSG

  Airflow:  $URL   (log in as admin, password admin)
  Sandbox:  $SANDBOX_URL   (control API: $SANDBOX_URL/_sandbox/docs)

  Admin > Connections: press Test on ahachat_sandbox.
  Dags: example_ahachat_shipping_update and example_ahachat_bulk_shipping run once now;
  trigger them, or example_ahachat_confirm_delivery, with the Trigger button.
  What the customers received: $SANDBOX_URL/_sandbox/outbox

  Ctrl-C stops Airflow and the sandbox.
MSG
    wait
    exit 0
  fi
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill -0 "$pid" 2>/dev/null || { echo "A process exited early; see $AIRFLOW_HOME/*.log" >&2; tail -20 "$AIRFLOW_HOME/standalone.log" >&2; exit 1; }
  done
  if (( SECONDS - said >= 8 )); then said=$SECONDS; echo "  ...Airflow is starting ($((SECONDS - started))s)"; fi
  sleep 1
done
echo "Airflow did not answer at $URL within 10 minutes; see $AIRFLOW_HOME/standalone.log" >&2
exit 1
