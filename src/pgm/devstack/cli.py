"""`pgm flow-manager` and `pgm crud`: run the local stand-ins with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from pgm.devstack.crud import create_crud_app
from pgm.devstack.flow_manager import (
    PACKAGED_CONFIG_PATH,
    FlowManagerConfigError,
    create_flow_manager_app,
    load_config,
    point_channels_at,
)

DEFAULT_FLOW_MANAGER_PORT = 3100
DEFAULT_CRUD_PORT = 3200
DEFAULT_CRUD_URL = f"http://127.0.0.1:{DEFAULT_CRUD_PORT}"


def _log_to_stderr() -> None:
    # The stand-ins log every saga move and failed command; show them unless the caller set logging up.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run_flow_manager(args: argparse.Namespace) -> int:
    """Start the Flow Manager stand-in; exit status 2 when the configuration is invalid."""
    _log_to_stderr()
    try:
        config = load_config(args.config)
        if args.pgm_url:
            config = point_channels_at(config, args.pgm_url)
        app = create_flow_manager_app(config, args.crud_url or None)
    except (FlowManagerConfigError, ValueError) as error:
        logging.getLogger("pgm.devstack").error("%s", error)
        return 2
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def _run_crud(args: argparse.Namespace) -> int:
    """Start the CRUD stand-in on a SQLite file."""
    _log_to_stderr()
    uvicorn.run(create_crud_app(args.database), host=args.host, port=args.port)
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `flow-manager` and `crud`; each sets `func(args) -> int` on the parsed namespace."""
    flow_manager = subparsers.add_parser(
        "flow-manager",
        help="run the Flow Manager stand-in",
        description="Run a local Flow Manager that drives sagas from a saga.json, storing them in a CRUD.",
    )
    flow_manager.add_argument(
        "--config",
        default=str(PACKAGED_CONFIG_PATH),
        help="Flow Manager saga.json (default: the packaged PGM machine)",
    )
    flow_manager.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    flow_manager.add_argument("--port", type=int, default=DEFAULT_FLOW_MANAGER_PORT, help="default: %(default)s")
    flow_manager.add_argument(
        "--crud-url",
        default=DEFAULT_CRUD_URL,
        help="CRUD base URL for sagas; an empty value keeps them in memory (default: %(default)s)",
    )
    flow_manager.add_argument(
        "--pgm-url",
        default=None,
        help="send every REST channel's commands to this PGM base URL, e.g. http://127.0.0.1:3000",
    )
    flow_manager.set_defaults(func=_run_flow_manager)

    crud = subparsers.add_parser(
        "crud",
        help="run the CRUD Service stand-in",
        description="Run a local CRUD Service (Mia-Platform conventions) over a SQLite file.",
    )
    crud.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    crud.add_argument("--port", type=int, default=DEFAULT_CRUD_PORT, help="default: %(default)s")
    crud.add_argument("--database", default="crud.sqlite3", help="SQLite file (default: %(default)s)")
    crud.set_defaults(func=_run_crud)
