"""A local Apache Kafka broker from Maven Central, for development, tests and the demo.

Not part of the engine: production runs against the venue's own Kafka cluster.
"""

from marginstream.localbroker.errors import BrokerError
from marginstream.localbroker.jars import KAFKA_VERSION, cached_jars, ensure_jars
from marginstream.localbroker.server import (
    BrokerStatus,
    LocalBroker,
    ephemeral_warning,
    free_port,
    metadata_ok,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStatus",
    "LocalBroker",
    "cached_jars",
    "ensure_jars",
    "ephemeral_warning",
    "free_port",
    "metadata_ok",
]
