"""The ``sa3`` command line: ``main`` dispatches to one module per command."""

from sa3_engine.cli.main import main

__all__ = ["main"]
