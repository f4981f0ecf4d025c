"""The Flow Manager integration (docs/flow-manager.md): saga commands in, events out."""
