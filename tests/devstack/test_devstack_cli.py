"""`pgm flow-manager` and `pgm crud`: the stand-ins' command-line options and their refusals."""

from __future__ import annotations

import argparse
from pathlib import Path

from pgm.devstack.cli import add_commands
from pgm.devstack.flow_manager import PACKAGED_CONFIG_PATH


def test_cli_registers_both_stand_ins_with_their_defaults() -> None:
    parser = argparse.ArgumentParser(prog="pgm")
    add_commands(parser.add_subparsers(dest="command", required=True))
    flow_manager = parser.parse_args(["flow-manager"])
    assert (flow_manager.port, flow_manager.crud_url, flow_manager.pgm_url) == (3100, "http://127.0.0.1:3200", None)
    assert flow_manager.config == str(PACKAGED_CONFIG_PATH)
    assert callable(flow_manager.func)
    crud = parser.parse_args(["crud", "--port", "4000"])
    assert (crud.port, crud.database) == (4000, "crud.sqlite3")


def test_cli_refuses_an_invalid_configuration_with_exit_status_2(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="pgm")
    add_commands(parser.add_subparsers(dest="command", required=True))
    broken = tmp_path / "saga.json"
    broken.write_text('{"communicationProtocols": []}', encoding="utf-8")
    args = parser.parse_args(["flow-manager", "--config", str(broken)])
    assert args.func(args) == 2
