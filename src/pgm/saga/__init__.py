"""The Flow Manager integration (spec 01): saga commands in, events out."""
