"""`python -m tunesmith` (and `torchrun ... -m tunesmith`) runs the CLI."""

import sys

from tunesmith.cli import main

sys.exit(main())
