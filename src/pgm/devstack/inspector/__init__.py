"""The saga inspector of the local stack: sagas, their timelines, commands, deliveries and the machine."""

from pgm.devstack.inspector.app import create_inspector_app

__all__ = ["create_inspector_app"]
