"""`python -m tunesmith` (and `torchrun ... -m tunesmith`) runs the CLI."""

from tunesmith.cli import run

run()
