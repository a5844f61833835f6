"""K-quants (``q4_k_m``) through llama.cpp's own quantizer, when llama-cpp-python is installed.

The ``gguf`` package can read Q4_K but not write it, so ``--quant q4_k_m`` writes the f16 file
first and hands it to ``llama_model_quantize`` (llama.cpp's C API, reached through
llama-cpp-python's bindings; ``make llama-cpp`` builds them). llama.cpp chooses each tensor's
type the way its ``llama-quantize`` tool does (Q4_K for most matrices, Q6_K for some, a fallback
type for rows that do not split into 256-value super-blocks).
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

FTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def available() -> bool:
    """Whether llama-cpp-python (and so llama.cpp's quantizer) is importable."""
    return importlib.util.find_spec("llama_cpp") is not None


def quantize(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    """Quantize the GGUF file ``src`` (f16) into ``dst`` at ``quant`` with llama.cpp."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[quant])
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise RuntimeError(f"llama.cpp could not quantize {src.name} to {quant} (return code {rc})")
