"""User-facing command failures."""


class CommandError(Exception):
    """Printed as `marginstream: error: <message>`; the command exits 1."""
