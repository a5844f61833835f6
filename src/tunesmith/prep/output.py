"""The second pass: route every spooled record to its split file or to the rejects file.

Spool lines are already the canonical JSON of scrubbed records, so kept records are copied as
they are and rejected ones are wrapped with their rule without being parsed again.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from tunesmith.prep.ledger import KEPT, Records, rule_name
from tunesmith.prep.split import SPLITS


def reject_head(records: Records, rid: int) -> dict[str, Any]:
    """The fields of a reject line decided after the first pass (duplicates, caps)."""
    rule = rule_name(int(records.status[rid]))
    head: dict[str, Any] = {"rule": rule, **records.where(rid)}
    of = int(records.of[rid])
    if of >= 0:
        head["reason"] = f"{rule.replace('_', ' ')} of {records.sources[int(records.file[of])]}"
        head["reason"] += f":{int(records.line[of])}"
        head["of"] = records.where(of)
        head["similarity"] = round(float(records.similarity[rid]), 4)
    else:
        head["reason"] = "over the per-tag cap" if rule == "cap" else rule
    return head


def route(
    spool: Path,
    survivors: np.ndarray,
    records: Records,
    outputs: dict[str, TextIO],
    rejects: TextIO,
    progress: bool,
) -> None:
    """Write spool line ``k`` (record ``survivors[k]``) to its split or, wrapped, to rejects."""
    bar = tqdm(
        total=len(survivors), desc="prep: write", unit=" rec", disable=not progress, file=sys.stderr
    )
    with spool.open(encoding="utf-8") as lines, bar:
        for rid, line in zip(survivors.tolist(), lines, strict=True):
            if records.status[rid] == KEPT:
                outputs[SPLITS[records.split[rid] - 1]].write(line)
            else:
                head = json.dumps(reject_head(records, rid), ensure_ascii=False)
                rejects.write(f'{head[:-1]}, "record": {line.rstrip()}}}\n')
            bar.update()


def write_outputs(
    work: Path, survivors: np.ndarray, records: Records, splits: tuple[str, ...], progress: bool
) -> list[str]:
    """Write ``<split>.jsonl`` for each of ``splits`` and finish ``rejects.jsonl`` in ``work``."""
    with ExitStack() as stack:
        outputs = {
            name: stack.enter_context((work / f"{name}.jsonl").open("w", encoding="utf-8"))
            for name in splits
        }
        rejects = stack.enter_context((work / "rejects.jsonl").open("a", encoding="utf-8"))
        route(work / "spool.jsonl", survivors, records, outputs, rejects, progress)
    return [f"{name}.jsonl" for name in splits] + ["rejects.jsonl"]


def publish(work: Path, out: Path, files: list[str]) -> None:
    """Move the finished files from the work directory into the output directory."""
    for name in files:
        os.replace(work / name, out / name)
