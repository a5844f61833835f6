"""tunesmith from Python: the functions the CLI commands call, with typed dataclass results.

    import tunesmith as ts
    run = ts.train("configs/smollm2-135m-instruct/sft_lora_demo.yaml", ["train.max_steps=30"])
    print(run.generate("Extract: Ada, 36, London")[0].reply)

See ``docs/api.md``. :class:`Run` is a run *directory*; the training lifecycle object is
:class:`tunesmith.engine.run.Run` (internal).
"""

from tunesmith.api.config import PrepResult, load_config, prep
from tunesmith.api.planning import AdviceFacts, PlanResult, PlanSetup, plan
from tunesmith.api.runs import (
    EvalResult,
    Generation,
    ModelReport,
    Run,
    evaluate,
    export,
    generate,
    merge,
    open_run,
    train,
)

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
    "merge",
    "open_run",
    "plan",
    "prep",
    "train",
]
