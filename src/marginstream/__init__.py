"""marginstream: a real-time margin and liquidation engine for crypto derivatives venues."""

__version__ = "0.1.0"
