"""tunesmith: turn a pre-trained language model and a dataset into a better model for one job."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (optional, for NF4/int8 bases) logs a warning on import on CPUs without its
# optional gemm kernels; the pure-torch fallback it then uses is correct.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
