"""The `sitrep` command line: one entry point whose subcommands live in the job packages."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sitrep")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
