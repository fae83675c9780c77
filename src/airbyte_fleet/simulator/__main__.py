import sys

from ._cli import main

sys.exit(main(prog="python -m airbyte_fleet.simulator"))
