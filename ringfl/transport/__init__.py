"""Drivers that run protocol machines: in memory (virtual clock) or over ZeroMQ."""
