"""The worker's HTTP access log: one structured line per request answered.

A line holds the method, the path as sent (percent-encoded, so no control character reaches the
log, and without the query string), the status, the time taken and the peer; never a header, so
no token. Refused requests (401, 403, 404, ...) are logged like the others: they are the ones an
operator looks for. An event stream is logged when it ends, with its whole duration.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from airbyte_fleet._logging import get_logger

__all__ = ["ACCESS_LOGGER", "AccessLog"]

# What aiohttp is handed as the access logger: it only switches the log on. Lines go to structlog,
# like every other line of the worker (format, level and redaction as configured there).
ACCESS_LOGGER = logging.getLogger("airbyte_fleet.access")
# A path is cut here: a client can send kilobytes of one, and the line is for reading.
MAX_PATH = 256

log = get_logger("airbyte_fleet.access")


class AccessLog(AbstractAccessLogger):
    """aiohttp's ``access_log_class`` for the worker."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        path = request.rel_url.raw_path
        if len(path) > MAX_PATH:
            path = path[:MAX_PATH] + "..."
        log.info(
            "http_request",
            method=request.method,
            path=path,
            status=response.status,
            duration_ms=round(time * 1000, 1),
            peer=request.remote,
        )

    @property
    def enabled(self) -> bool:
        # Whatever the stdlib logger's level: structlog decides what is shown.
        return True
