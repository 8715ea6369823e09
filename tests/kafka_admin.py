"""Questions the tests ask the broker directly, outside any code under test."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient


def topic_names(bootstrap: str) -> set[str]:
    """Every topic the broker has."""

    async def listing() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listing())
