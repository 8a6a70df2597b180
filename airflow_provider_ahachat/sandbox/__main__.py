"""
``python -m airflow_provider_ahachat.sandbox``: run the AhaChat sandbox until interrupted.

Once it accepts requests it prints, and flushes::

    AhaChat sandbox listening on http://127.0.0.1:8790
    Bot 12404829 (Shop Thời Trang Lan Anh): 12 users, 12 blocks
    Messenger's rules: as of December 2026 (no retired tag; 24-hour window; HUMAN_AGENT within 7 days)
    The example DAGs use the connection ahachat_sandbox:
    AIRFLOW_CONN_AHACHAT_SANDBOX='ahachat://12404829:<token>@127.0.0.1:8790/http'
    Control API: http://127.0.0.1:8790/_sandbox/docs

The first line is stable, for programs that start the sandbox and read its URL. SIGINT or SIGTERM
stop it cleanly, with exit code 0.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from airflow_provider_ahachat.sandbox.app import create_app
from airflow_provider_ahachat.sandbox.knobs import SandboxConfig
from airflow_provider_ahachat.sandbox.messenger import MESSENGER_RULES, RULES_2026, RULES_ENV
from airflow_provider_ahachat.sandbox.routes.control import generate_users
from airflow_provider_ahachat.sandbox.seed import SeedError, read_seed
from airflow_provider_ahachat.sandbox.server import (
    READY_PREFIX,
    bind_socket,
    connection_env_var,
    connection_uri,
    socket_url,
    uvicorn_config,
)
from airflow_provider_ahachat.sandbox.state import SandboxState
from airflow_provider_ahachat.sandbox.world import ApiError

#: The connection the example DAGs use, and so the one the banner gives a URI for.
EXAMPLES_CONN_ID = "ahachat_sandbox"


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_ahachat.sandbox",
        description="Run a local, in-memory AhaChat for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8790, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--seed", default=None, help="seed JSON file (default: the packaged seed.json)")
    # The knobs are checked by SandboxConfig's own rules, as POST /_sandbox/config checks them.
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every API request")
    parser.add_argument(
        "--rate-limit", type=float, default=0.0, help="API requests per second before 429s; 0 is off"
    )
    parser.add_argument("--retry-after", type=int, default=1, help="least Retry-After of a 429, in seconds")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of API requests answered with --error-status"
    )
    parser.add_argument("--error-status", type=int, default=503, help="status of injected errors")
    parser.add_argument(
        "--deliver-before-fail",
        action="store_true",
        help="process a request before answering it with an injected error",
    )
    parser.add_argument(
        "--messenger-rules",
        choices=MESSENGER_RULES,
        default=os.environ.get(RULES_ENV) or RULES_2026,
        help=f"Messenger's rules to enforce: {RULES_2026}, Meta's as of December 2026 (no retired tag, "
        "24-hour window, HUMAN_AGENT within 7 days), or 2025, those before 27 April 2026 (tagged "
        f"broadcasts reach anyone), for comparison (default: ${RULES_ENV}, else %(default)s)",
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=0,
        help="also add this many numbered customers to the bot, to try sending to many "
        "(user IDs 9000000000000000 and up, phones +84900000000 and up)",
    )
    parser.add_argument(
        "--conn-id",
        default=EXAMPLES_CONN_ID,
        help="Airflow connection ID to print a URI for (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level (default: %(default)s)",
    )
    return parser


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints the ready lines once it accepts requests."""

    def __init__(self, config: uvicorn.Config, lines: Sequence[str]) -> None:
        super().__init__(config)
        self.lines = lines

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets=sockets)  # type: ignore[arg-type]
        if self.started:
            print("\n".join(self.lines), flush=True)


def exposure_warning(address: str) -> str | None:
    """A loud warning when the sandbox listens on ``address`` and that is not a loopback address."""
    try:
        loopback = ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    line = "!" * 78
    return (
        f"{line}\nWARNING: the AhaChat sandbox listens on {address}, not on a loopback address: anyone who\n"
        "can reach this machine can use its control API, which has NO authentication (it resets state,\n"
        "reads every message and the bot token). Use --host 127.0.0.1 unless you mean it.\n"
        f"{line}"
    )


def _rules_line(rules: str) -> str:
    if rules == RULES_2026:
        return "as of December 2026 (no retired tag; 24-hour window; HUMAN_AGENT within 7 days)"
    return "before 27 April 2026 (tagged broadcasts reach anyone), for comparison"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox; return the exit code."""
    args = build_parser().parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        seed = read_seed(args.seed)
        config = SandboxConfig().updated(
            {
                "latency_ms": args.latency_ms,
                "rate_limit": args.rate_limit,
                "retry_after": max(1, args.retry_after),
                "error_rate": args.error_rate,
                "error_status": args.error_status,
                "deliver_before_fail": args.deliver_before_fail,
                "messenger_rules": args.messenger_rules,
            }
        )
        state = SandboxState(seed, config)
        if args.customers:
            generate_users(state.default_bot, {"count": args.customers})
    except (SeedError, ApiError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    url = socket_url(sock, args.host)
    warning = exposure_warning(sock.getsockname()[0])
    if warning:
        print(warning, file=sys.stderr, flush=True)
    bot = state.default_bot
    lines = [
        f"{READY_PREFIX}{url}",
        f"Bot {bot.id} ({bot.name}): {len(bot.users)} users, {len(bot.blocks)} blocks",
        f"Messenger's rules: {_rules_line(args.messenger_rules)}",
        f"The example DAGs use the connection {EXAMPLES_CONN_ID}:"
        if args.conn_id == EXAMPLES_CONN_ID
        else f"The connection {args.conn_id}:",
        f"{connection_env_var(args.conn_id)}='{connection_uri(url, bot.id, bot.token)}'",
        f"Control API: {url}/_sandbox/docs",
    ]
    server = _AnnouncingServer(uvicorn_config(create_app(state), args.log_level), lines)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # Uvicorn takes over these signals while it serves and hands them back afterwards; until then,
    # and when it hands them back, they only ask for a clean stop.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
