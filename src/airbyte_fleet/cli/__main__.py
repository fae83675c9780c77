import sys

from airbyte_fleet.cli import main

sys.exit(main())
