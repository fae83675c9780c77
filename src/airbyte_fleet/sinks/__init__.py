"""Event sinks that show a run to people and machines: log lines, a live view, the final summary."""

from airbyte_fleet.sinks.log import LogSink, level_for
from airbyte_fleet.sinks.progress import ProgressSink, progress_wanted
from airbyte_fleet.sinks.table import render_result_table, result_json

__all__ = [
    "LogSink",
    "ProgressSink",
    "level_for",
    "progress_wanted",
    "render_result_table",
    "result_json",
]
