"""A run as a picture: its timeline (one bar per sync, from its events) and a self-contained
HTML report of it, for ``runs show --html``, ``run --report-html`` and the worker's
``/runs/{id}/report.html``."""

from airbyte_fleet.report.html import CONTENT_SECURITY_POLICY, render_report
from airbyte_fleet.report.stored import stored_report
from airbyte_fleet.report.timeline import (
    Bar,
    Timeline,
    TimelineBuilder,
    timeline,
    timeline_from_store,
)

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "Bar",
    "Timeline",
    "TimelineBuilder",
    "render_report",
    "stored_report",
    "timeline",
    "timeline_from_store",
]
