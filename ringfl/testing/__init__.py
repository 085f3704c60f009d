"""Fault injection for tests and experiments: wrappers that make a real process fail the
way a fault schedule says (`ringfl.engine.faults`). Never used unless a schedule or a
`--fault` test hook asks for it."""

from ringfl.testing.faults import KillAfter, parse_fault_hooks

__all__ = ["KillAfter", "parse_fault_hooks"]
