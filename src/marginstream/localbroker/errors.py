"""The one error the local broker tooling raises: its message is shown to the user as is."""


class BrokerError(RuntimeError):
    """A local broker could not be fetched, started, stopped or reached."""
