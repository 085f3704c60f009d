"""Sub-commands of the `ringfl` CLI, one module each (see `ringfl.cli`)."""
