import sys

from airbyte_fleet.cli import entry

sys.exit(entry())
