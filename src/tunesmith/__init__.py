"""tunesmith: turn a pre-trained language model and a dataset into a better model for one job."""

from __future__ import annotations

import importlib as _importlib
import logging as _logging
import sys as _sys
import types as _types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tunesmith.api import (
        AdviceFacts,
        EvalResult,
        Generation,
        ModelReport,
        PlanResult,
        PlanSetup,
        PrepResult,
        Run,
        evaluate,
        export,
        generate,
        load_config,
        open_run,
        plan,
        prep,
        train,
    )

# The public API (tunesmith.api), loaded on first use so `import tunesmith` and `tunesmith
# --help` stay fast (no torch until a function that needs it runs). Merging several runs'
# adapters is tunesmith.api.merge (tunesmith.merge is the merge package; one run: Run.merge).
__all__ = [
    "AdviceFacts",
    "EvalResult",
    "Generation",
    "ModelReport",
    "PlanResult",
    "PlanSetup",
    "PrepResult",
    "Run",
    "evaluate",
    "export",
    "generate",
    "load_config",
    "open_run",
    "plan",
    "prep",
    "train",
]


# API functions that share their name with a subpackage (tunesmith.plan, tunesmith.prep). Once
# a subpackage is imported, Python binds it as this package's attribute, so the subpackage is
# made callable instead: `tunesmith.plan(...)` calls the API function and `tunesmith.plan.memory`
# is still the module, whichever was imported first.
_SUBPACKAGE_FUNCTIONS = ("plan", "prep")


class _CallableModule(_types.ModuleType):
    """A subpackage that, called, runs the API function of the same name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tunesmith import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SUBPACKAGE_FUNCTIONS and isinstance(value, _types.ModuleType):
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGE_FUNCTIONS:
        return _importlib.import_module(f"tunesmith.{name}")  # bound (callable) by _Package
    if name in __all__:
        from tunesmith import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")


# bitsandbytes (optional, for NF4/int8 bases) logs a warning on import on CPUs without its
# optional gemm kernels; the pure-torch fallback it then uses is correct.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
# torchao (optional, for train.qat), which transformers imports whenever it is installed, warns
# that its CUDA-only kernels do not load on CPU, and registers enums with torch's pytree in a way
# torch 2.13 calls deprecated; neither matters to us.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
