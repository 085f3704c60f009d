"""The error raised for unreadable or malformed data."""

from __future__ import annotations

from ringfl.errors import RingflError


class DataError(RingflError):
    """A data file is missing, corrupt or malformed. The message names the file."""
