"""Fault injection for tests and experiments: hooks that make a real process fail the way
a fault schedule says (`ringfl.engine.faults`). Never used unless a schedule or a
`--fault` test hook asks for it."""

from ringfl.testing.faults import crash_after_flush, parse_fault_hooks

__all__ = ["crash_after_flush", "parse_fault_hooks"]
