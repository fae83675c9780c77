"""The package's version, in a module of its own so that any part can name it without importing the
package root (whose ``__init__`` names the engine and the configuration).

pyproject.toml repeats it statically rather than reading it with ``attr:``: the container build
installs the dependencies from pyproject alone, before the source exists. A test keeps the two equal.
"""

__version__ = "0.1.0"
