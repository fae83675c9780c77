"""``airbyte-fleet simulate`` / ``python -m airbyte_fleet.simulator``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, NoReturn, get_args

from ._options import AuthMode, SimulatorOptions, TokenErrors
from ._server import Simulator

__all__ = ["main"]


def _pair(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH, got {text!r}")
    try:
        return float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers, got {text!r}") from None


def _retry_after(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # e.g. an HTTP-date


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0 picks a free one), got {port}")
    return port


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No prefix matching: `--conn 3` must be an error, not quietly `--connections 3`.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # One line a script can show as is, not argparse's usage block.
        self.exit(2, f"{self.prog}: {message}; see '{self.prog} --help'.\n")


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ":".join(f"{part:g}" if isinstance(part, float) else str(part) for part in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parser(prog: str) -> argparse.ArgumentParser:
    # Every SimulatorOptions field has a flag whose dest is the field's name (main() relies on
    # it), and its default is read from the model, never typed here a second time; so is the
    # default that --help shows.
    defaults = SimulatorOptions()

    def text(what: str, name: str) -> str:
        # argparse formats help with %: a literal one must be doubled.
        return f"{what} (default: {_shown(getattr(defaults, name))})".replace("%", "%%")

    p = _Parser(
        prog=prog,
        description="Run a local simulated Airbyte public API (for demos and tests). It prints "
        "'listening on URL' on stdout once it serves, and stops on SIGINT or SIGTERM. "
        "Faults can also be changed while it runs: POST /_simulator/faults.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--port", type=_port, default=8000, help="0 picks a free port (default: %(default)s)"
    )
    p.add_argument(
        "--connections",
        type=int,
        default=defaults.connections,
        metavar="N",
        help=text("connections in the world", "connections"),
    )
    p.add_argument(
        "--workspaces",
        type=int,
        default=defaults.workspaces,
        metavar="N",
        help=text("workspaces the connections are spread over", "workspaces"),
    )
    p.add_argument(
        "--sync-seconds",
        type=_pair,
        default=defaults.sync_seconds,
        metavar="LOW:HIGH",
        help=text("how long a sync runs, drawn between LOW and HIGH seconds", "sync_seconds"),
    )
    p.add_argument(
        "--failure-rate",
        type=float,
        default=defaults.failure_rate,
        metavar="RATE",
        help=text("share of syncs that end failed, 0 to 1", "failure_rate"),
    )
    p.add_argument(
        "--incomplete-rate",
        type=float,
        default=defaults.incomplete_rate,
        metavar="RATE",
        help=text("share of syncs whose first attempt is incomplete, 0 to 1", "incomplete_rate"),
    )
    p.add_argument(
        "--token-ttl",
        type=int,
        default=defaults.token_ttl,
        metavar="SECONDS",
        help=text("lifetime of an access token", "token_ttl"),
    )
    p.add_argument(
        "--client-id",
        default=defaults.client_id,
        metavar="ID",
        help=text("the client id a token request must send", "client_id"),
    )
    # The secret's default is not shown in --help on purpose.
    p.add_argument(
        "--client-secret",
        default=defaults.client_secret,
        metavar="SECRET",
        help="the client secret a token request must send (default: a built-in demo secret, "
        "not shown here)",
    )
    p.add_argument(
        "--username", default=defaults.username, help=text("for --auth basic", "username")
    )
    p.add_argument(
        "--password",
        default=defaults.password,
        help="for --auth basic (default: a built-in demo password, not shown here)",
    )
    p.add_argument(
        "--auth",
        choices=get_args(AuthMode),
        default=defaults.auth,
        help=text("how clients authenticate", "auth"),
    )
    p.add_argument(
        "--token-errors",
        choices=get_args(TokenErrors),
        default=defaults.token_errors,
        help=text("bad credentials answer 401 {errorId} (cloud) or 400 (oss)", "token_errors"),
    )
    p.add_argument(
        "--layouts",
        default=",".join(defaults.layouts),
        help="comma list of public (/api/public/v1) and legacy (/v1) (default: %(default)s)",
    )
    p.add_argument(
        "--inactive",
        dest="inactive_connections",
        type=int,
        default=defaults.inactive_connections,
        metavar="N",
        help=text("last N are inactive", "inactive_connections"),
    )
    p.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help=text("same seed, same world and same faults", "seed"),
    )
    p.add_argument(
        "--rate-429",
        type=float,
        default=defaults.rate_429,
        metavar="RATE",
        help=text("share of requests answered 429, 0 to 1", "rate_429"),
    )
    p.add_argument(
        "--rate-5xx",
        type=float,
        default=defaults.rate_5xx,
        metavar="RATE",
        help=text("share of requests answered --error-status, 0 to 1", "rate_5xx"),
    )
    p.add_argument(
        "--error-status",
        type=int,
        default=defaults.error_status,
        metavar="STATUS",
        help=text("the status --rate-5xx answers", "error_status"),
    )
    p.add_argument(
        "--slow-post-seconds",
        type=float,
        default=defaults.slow_post_seconds,
        metavar="SECONDS",
        help=text("delay before answering POST /jobs", "slow_post_seconds"),
    )
    p.add_argument(
        "--reset-rate",
        type=float,
        default=defaults.reset_rate,
        metavar="RATE",
        help=text("share of requests whose connection is dropped unanswered, 0 to 1", "reset_rate"),
    )
    p.add_argument(
        "--down-window",
        type=_pair,
        default=defaults.down_window,
        metavar="START:END",
        help=text("seconds after start during which every request is dropped", "down_window"),
    )
    p.add_argument(
        "--token-failures",
        type=int,
        default=defaults.token_failures,
        metavar="N",
        help=text("the next N token requests answer 502", "token_failures"),
    )
    p.add_argument(
        "--retry-after",
        type=_retry_after,
        default=defaults.retry_after,
        metavar="S",
        help=text("Retry-After sent with a 429: seconds or an HTTP date", "retry_after"),
    )
    p.add_argument(
        "--malformed-rate",
        type=float,
        default=defaults.malformed_rate,
        metavar="RATE",
        help=text(
            "share of API requests answered 200 with a truncated JSON body", "malformed_rate"
        ),
    )
    p.add_argument(
        "--max-running",
        type=int,
        default=defaults.max_running,
        metavar="N",
        help=text("at most N jobs run at once; later ones are queued", "max_running"),
    )
    return p


async def _serve(simulator: Simulator, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix loops
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    try:
        root_url = await simulator.start(host, port)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        # Parents wait for this exact line on a pipe, so it must not sit in a buffer.
        print(f"listening on {root_url}", flush=True)
        await stop.wait()
    finally:
        await simulator.stop()
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str = "airbyte-fleet simulate") -> int:
    parser = _parser(prog)
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help or a usage error; return instead of exiting the host
        return exc.code if isinstance(exc.code, int) else 2
    layouts = tuple(part.strip() for part in args.layouts.split(",") if part.strip())
    values = {field.name: getattr(args, field.name) for field in fields(SimulatorOptions)}
    values["layouts"] = layouts  # validated by SimulatorOptions
    try:
        options = SimulatorOptions(**values)
    except (TypeError, ValueError) as exc:
        print(f"{prog}: {exc}; see '{prog} --help'.", file=sys.stderr)
        return 2
    try:
        # Nothing in another process can read recorded exchanges; the counts stay in stats.
        simulator = Simulator(options, record_exchanges=False)
        return asyncio.run(_serve(simulator, args.host, args.port))
    except KeyboardInterrupt:  # pragma: no cover - signal arrived before handlers were set
        return 0
