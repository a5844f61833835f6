"""`python -m tunesmith` (and `torchrun ... -m tunesmith`) runs the CLI."""

import os
import sys

from tunesmith.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # Under torchrun, end the process without interpreter finalization: the process group is
    # already destroyed, but gloo work objects still referenced by FSDP/DDP state can be freed
    # during finalization after the C++ side is gone, which intermittently aborts a rank
    # ("terminate called without an active exception") after a run that had succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
