#!/usr/bin/env bash
# The scale scenario: Airflow with the CeleryExecutor (Redis broker, PostgreSQL metadata database and
# result backend) and two Celery workers broadcasts to 10,000 recipients in 8 mapped slices, with the
# ledger on S3 (moto's server), while a second DAG sends on the same bot; one worker is killed with
# SIGKILL part-way and Airflow retries its tasks on the other. Twice: with the bot's limit shared
# through Redis, then per task. Prints a table read from the sandbox's record of deliveries.
#
#   ./scripts/scale.sh                      # the full scenario (about 8 minutes on 2 cores)
#   ./scripts/scale.sh --recipients 2000    # smaller; --help lists every knob
#
# Everything runs on 127.0.0.1 on free ports, in a private temporary folder; everything it starts it
# stops, even when it fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
source scripts/_apt.sh
need_apt "the scale scenario's broker and database" redis-server postgresql || { echo "scale.sh needs Debian's redis-server and postgresql" >&2; exit 1; }

DIR="$(mktemp -d "${TMPDIR:-/tmp}/ahachat-scale-XXXXXX")"
for arg in "$@"; do [[ "$arg" == --keep ]] && AHACHAT_SCALE_KEEP=1; done  # scale.py's --keep: logs stay
export AHACHAT_SCALE_DIR="$DIR"
cleanup() {
  # scale.py stops everything itself; this is for when it could not (it was killed outright).
  .venv/bin/python scripts/scale.py --stop-leftovers "$DIR" || true
  if [[ "${AHACHAT_SCALE_KEEP:-}" != 1 && "$status" == 0 ]]; then rm -rf "$DIR"; fi
}
status=0
trap cleanup EXIT
uv run --frozen python scripts/scale.py "$@" || status=$?
exit "$status"
