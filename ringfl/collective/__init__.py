"""Collectives as sans-I/O state machines: events in, actions out (see `events`)."""
