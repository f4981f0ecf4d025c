"""The `pgm` command."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from pgm.config import ConfigurationError, load_settings
from pgm.operator_cli import OPERATOR_COMMANDS
from pgm.operator_cli import add_commands as add_operator_commands

# How long `pgm serve` keeps an idle client connection open (uvicorn's default, made explicit): longer
# than the PGM's own client keeps one idle (pgm.outbound.IDLE_CONNECTION_SECONDS).
SERVER_KEEP_ALIVE_SECONDS = 5
# Allocations between two passes of the cyclic collector over its youngest generation (serve, below).
GC_YOUNG_THRESHOLD = 2500

# The other commands' modules are imported when their command runs: an operator's `pgm payments show`
# then starts without loading the web server, every provider and the dev stack (seconds on a busy pod).


def serve(_arguments: argparse.Namespace) -> int:
    """Run the PGM with its configuration from the environment."""
    import uvicorn

    from pgm import startup
    from pgm.observability import logging as pgm_logging
    from pgm.providers import registry as providers

    try:
        settings = load_settings(os.environ)
        providers.check_values(settings)
        startup.check_database(settings)
        listener = startup.listen(os.environ.get("HTTP_HOST") or "0.0.0.0", settings.http_port)  # noqa: S104
    except ConfigurationError as exc:
        sys.stderr.write(f"pgm: configuration error: {exc}\n")
        return 2
    pgm_logging.configure(settings.log_level, settings.http_log_level)
    for warning in settings.warnings:
        logging.getLogger("pgm.configuration").warning(warning)
    from pgm.http.app import create_app
    from pgm.http.server import protocol_with_header_timeout
    from pgm.wiring import Wiring

    app = create_app(Wiring(settings))
    config = uvicorn.Config(
        app,
        log_config=None,
        # uvicorn has no time-out for a request's headers of its own (slowloris): src/pgm/http/server.py.
        http=protocol_with_header_timeout(settings.header_timeout_seconds),
        # Longer than our own client keeps an idle connection (pgm.outbound.IDLE_CONNECTION_SECONDS): the
        # in-process sandbox is called over this server, and a request on a connection the server closed
        # meanwhile is reset.
        timeout_keep_alive=SERVER_KEEP_ALIVE_SECONDS,
    )
    # Everything built so far (modules, the app, its routes and models: about 120,000 objects) lives as long
    # as the process: frozen, the collector's full passes stop walking it. A full pass walked them all, with
    # the event loop stopped for 40-90 ms of CPU each time (measured on the development machine): a latency
    # spike for every request in flight, several times a minute under load (docs/performance.md).
    gc.freeze()
    # The collector's youngest generation is examined after GC_YOUNG_THRESHOLD allocations, not Python's 700:
    # a saga allocates thousands of short-lived objects that reference counting frees (none of the store's
    # objects forms a cycle), so most passes found nothing. Measured at 150 sagas/s: ≈ 4 times fewer
    # passes, a third less of the collector's CPU, no full pass during the run, the longest pause unchanged
    # (≈ 13 ms, a middle-generation pass); at 4,000 that pause grew to 19 ms (docs/performance.md).
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per way of running."""
    from pgm.devstack.cli import add_commands as add_devstack_commands
    from pgm.devstack.demo import add_demo_arguments, run_demo_command
    from pgm.devstack.dev import add_dev_arguments, run_dev

    parser = argparse.ArgumentParser(prog="pgm", description="Payment Gateway Manager")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the service (configured by environment variables)").set_defaults(func=serve)
    dev = commands.add_parser(
        "dev",
        help="run the local stack: PGM, Flow Manager and CRUD stand-ins, saga inspector",
        description="Run the PGM wired to a local Flow Manager and CRUD (stand-ins) and the saga inspector.",
    )
    add_dev_arguments(dev)
    dev.set_defaults(func=run_dev)
    demo = commands.add_parser(
        "demo",
        help="walk a saga through payment and refunds on the local stack",
        description="Pay on the hosted sandbox page, refund partially, then totally, printing each transition.",
    )
    add_demo_arguments(demo)
    demo.set_defaults(func=run_demo_command)
    add_devstack_commands(commands)
    add_operator_commands(commands)
    return parser


def operator_parser() -> argparse.ArgumentParser:
    """The operator's commands alone (the same as in the full command line)."""
    parser = argparse.ArgumentParser(prog="pgm", description="Payment Gateway Manager")
    add_operator_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `pgm` command."""
    words = sys.argv[1:] if argv is None else argv
    parser = operator_parser() if words and words[0] in OPERATOR_COMMANDS else build_parser()
    arguments = parser.parse_args(words)
    sys.exit(arguments.func(arguments))
