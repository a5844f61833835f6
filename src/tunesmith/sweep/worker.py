"""``python -m tunesmith.sweep.worker OUT/sweep.json INDEX``: one ``--jobs`` worker process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tunesmith.sweep.study import SweepSpec, work


def main(argv: list[str]) -> int:
    spec = SweepSpec(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    threads = os.environ.get("TUNESMITH_SWEEP_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    work(spec, worker=int(argv[1]) if len(argv) > 1 else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
