"""The forgetting probe: how well the model still does on general text and general questions.

Two measurements, either or both:

* **text perplexity** -- general-domain prose cut into ``chunk_tokens`` chunks, every token
  trained: ``loss = (1/N) sum_t -log p(x_t | x_<t)``, ``ppl = exp(loss)`` (token-weighted);
* **task accuracy** -- a small JSONL of questions. ``{prompt, answer}``: right when greedy
  decoding would produce the answer's tokens, i.e. every answer token is the arg-max of the
  model's next-token distribution given the (chat-rendered) prompt and the answer tokens before
  it (one teacher-forced forward instead of generation). ``{prompt, choices, answer}``: right
  when the answer has the highest total log-likelihood among the choices.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.dataset import collate
from tunesmith.data.records import DataError, Message
from tunesmith.data.templates import Encoded, encode_prompt
from tunesmith.errors import UserError
from tunesmith.losses.sft import IGNORE_INDEX


class ProbeError(UserError):
    """A forgetting probe file is missing or unusable."""


@dataclass
class TaskItem:
    """One general question, encoded: one row per choice (a single row for exact match)."""

    prompt: str
    answer: str
    choices: list[str] | None
    rows: list[Encoded] = field(default_factory=list)


def text_chunks(path: str, tokenizer: Any, chunk_tokens: int) -> list[Encoded]:
    """The whole text file tokenized (no special tokens) and cut into ``chunk_tokens`` chunks
    (the last, shorter one kept if it has at least 2 tokens); every token is trained."""
    file = Path(path)
    if not file.is_file():
        raise ProbeError(f"forgetting probe text {path}: file not found")
    ids = list(tokenizer(file.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
    if len(ids) < 2:
        raise ProbeError(f"forgetting probe text {path}: fewer than 2 tokens")
    pieces = [ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)]
    return [
        Encoded(input_ids=p, labels=list(p), n_trained=len(p) - 1, truncated=False)
        for p in pieces
        if len(p) >= 2
    ]


def _parse_task(source: str, line: int, raw: str) -> tuple[str, str, list[str] | None]:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(source, line, None, f"not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise DataError(source, line, None, "expected a JSON object")
    for key in ("prompt", "answer"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise DataError(source, line, key, "missing or not a non-empty string")
    choices = row.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise DataError(source, line, "choices", "expected a list of strings")
        if row["answer"] not in choices:
            raise DataError(source, line, "answer", "must be one of the choices")
    return row["prompt"], row["answer"], choices


def _answer_row(prompt_ids: list[int], answer: str, tokenizer: Any) -> Encoded:
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    return Encoded(
        input_ids=prompt_ids + answer_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        n_trained=len(answer_ids),
        truncated=False,
    )


def load_tasks(path: str, tokenizer: Any, template: str = "tokenizer") -> list[TaskItem]:
    """The task JSONL, each prompt rendered as a user turn with the run's chat template."""
    file = Path(path)
    if not file.is_file():
        raise ProbeError(f"forgetting probe tasks {path}: file not found")
    items = []
    for line, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        prompt, answer, choices = _parse_task(path, line, raw)
        prompt_ids = encode_prompt([Message("user", prompt)], tokenizer, template)
        options = choices if choices is not None else [answer]
        rows = [_answer_row(prompt_ids, " " + c if choices else c, tokenizer) for c in options]
        items.append(TaskItem(prompt, answer, choices, rows))
    if not items:
        raise ProbeError(f"forgetting probe tasks {path}: no items")
    return items


def answer_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a batch: (every labelled token is the arg-max [B] bool, summed log-likelihood
    of the labelled tokens [B] float). ``logits`` [B, T, V] predict position t + 1 from t;
    ``labels`` [B, T] with :data:`IGNORE_INDEX` where nothing is scored."""
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX  # [B, T-1]
    pred = logits[:, :-1][keep].float()  # [N, V]: only the scored positions
    goal = target[keep]  # [N]
    logp = torch.log_softmax(pred, dim=-1).gather(-1, goal.unsqueeze(-1)).squeeze(-1)
    row = keep.nonzero()[:, 0]  # the batch row of each scored position
    wrong = torch.zeros(labels.size(0), device=labels.device).index_add_(
        0, row, (pred.argmax(-1) != goal).float()
    )
    total = torch.zeros(labels.size(0), device=labels.device).index_add_(0, row, logp)
    return wrong == 0, total


Logits = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@torch.no_grad()
def task_correct(
    items: list[TaskItem], logits_fn: Logits, pad_id: int, device: torch.device, batch_size: int
) -> list[bool]:
    """Whether the model gets each item right (see the module docstring)."""
    rows = [(i, r) for i, item in enumerate(items) for r in item.rows]
    exact: list[bool] = []
    score: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = collate([r for _, r in rows[start : start + batch_size]], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        hit, logp = answer_stats(logits_fn(batch), batch["labels"])
        exact += hit.tolist()
        score += logp.tolist()
    out, k = [], 0
    for item in items:
        n = len(item.rows)
        if item.choices is None:
            out.append(bool(exact[k]))
        else:
            best = max(range(n), key=lambda j: score[k + j])
            out.append(item.choices[best] == item.answer)
        k += n
    return out
