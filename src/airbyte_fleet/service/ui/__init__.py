"""The worker's web page, ``/ui``: runs, one run live (table and timeline), schedules, login.

Plain HTML, CSS and JavaScript written for this project (``static/``, shipped in the package):
no framework, no bundle, nothing fetched from another origin, so a worker with no internet serves
it whole. ``pages.py`` serves the pages and their files with a strict Content-Security-Policy;
``api.py`` is what the page asks of the API besides runs (login, logout, schedules, groups).
"""

from __future__ import annotations

from airbyte_fleet.service.ui.api import API_ROUTES, UI, UiContext
from airbyte_fleet.service.ui.pages import PAGE_ROUTES, STATIC_DIR, security_headers

__all__ = ["API_ROUTES", "PAGE_ROUTES", "STATIC_DIR", "UI", "UiContext", "security_headers"]
