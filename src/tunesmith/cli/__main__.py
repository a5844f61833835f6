"""``python -m tunesmith.cli <command>`` (the benchmarks launch it this way)."""

from tunesmith.cli import run

run()
