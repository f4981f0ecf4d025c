"""A stand-in for Mia-Platform's Flow Manager: REST channels, CRUD persistency, the PGM's saga machine."""

from pgm.devstack.flow_manager.app import create_flow_manager_app
from pgm.devstack.flow_manager.config import (
    PACKAGED_CONFIG_PATH,
    FlowManagerConfigError,
    config_warnings,
    load_config,
    packaged_config,
    pgm_saga_config,
    point_channels_at,
    validate_config,
)

__all__ = [
    "PACKAGED_CONFIG_PATH",
    "FlowManagerConfigError",
    "config_warnings",
    "create_flow_manager_app",
    "load_config",
    "packaged_config",
    "pgm_saga_config",
    "point_channels_at",
    "validate_config",
]
