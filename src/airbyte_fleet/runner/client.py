"""Opening the Airbyte client: one way for the CLI, the worker and the Python API."""

from __future__ import annotations

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.config import AirbyteSettings

__all__ = ["open_client"]

log = get_logger("airbyte_fleet.runner")


async def open_client(settings: AirbyteSettings, *, check: bool = True) -> AirbyteClient:
    """Resolve the URL and build the auth flow; with *check*, prove both work (a token, one read)
    before anything else happens, so a bad credential stops a run before it triggers anything.

    The worker opens without the check: it must start (and say so on ``/readyz``) while Airbyte is
    down, and every run it takes checks Airbyte by planning.
    """
    settings.validate_offline()
    client = await AirbyteClient.open(
        settings.url_plan(), settings.make_auth, **settings.client_options()
    )
    log.info("airbyte_url", base_url=client.api.base, understood=client.api.explanation)
    if check:
        try:
            await client.check()
        except BaseException:
            await client.close()
            raise
    return client
