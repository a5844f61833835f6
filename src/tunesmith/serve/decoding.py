"""One batch of jobs decoded together, token by token, with a shared KV cache.

Prompts are left-padded (:func:`tunesmith.data.completion_batches.left_pad`) so that every
row's next token sits in the last column; position ids count only real tokens. Each step samples
every live row, streams its new text, and drops finished rows from the batch and the cache.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.data.completion_batches import left_pad
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Delta, Done, Job
from tunesmith.serve.sampling import TextStream


class _Row:
    def __init__(self, job: Job, host: ModelHost) -> None:
        self.job = job
        self.stream = TextStream(host.decode, job.stop)
        self.count = 0

    def finish(self, reason: str) -> None:
        tail = self.stream.flush()
        if tail:
            self.job.emit(Delta(tail))
        self.job.emit(Done(reason, len(self.job.prompt_ids), self.count))

    def step(self, token: int, eos: set[int]) -> bool:
        """Take the sampled token; True while the row goes on."""
        self.count += 1
        if token in eos:
            self.finish("stop")
            return False
        delta = self.stream.push(token)
        if delta:
            self.job.emit(Delta(delta))
        if self.stream.stopped:
            self.finish("stop")
            return False
        if self.count >= self.job.max_tokens:
            self.finish("length")
            return False
        return True


def _select(cache: Any, keep: list[int]) -> Any:
    index = torch.tensor(keep, dtype=torch.long)
    cache.batch_select_indices(index)
    return cache


@torch.no_grad()
def decode_batch(host: ModelHost, jobs: list[Job], eos: set[int]) -> int:
    """Generate for every job until each stops; returns the decoding steps run."""
    rows = [_Row(j, host) for j in jobs]
    enc = left_pad([j.prompt_ids for j in jobs], host.tokenizer.pad_token_id)
    mask = enc["attention_mask"].to(host.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, cache = host.forward(
        [j.model for j in jobs],
        input_ids=enc["input_ids"].to(host.device),
        attention_mask=mask,
        position_ids=pos,
    )
    steps = 0
    while rows:
        logits = logits.cpu()
        keep, tokens = [], []
        for b, row in enumerate(rows):
            if row.job.cancelled.is_set():
                continue
            token = row.job.sampler(logits[b])
            if row.step(token, eos):
                keep.append(b)
                tokens.append(token)
        if not keep:
            break
        if len(keep) < len(rows):
            cache = _select(cache, keep)
            mask, pos = mask[keep], pos[keep]
            rows = [rows[b] for b in keep]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        pos = pos[:, -1:] + 1
        logits, cache = host.forward(
            [r.job.model for r in rows],
            input_ids=torch.tensor(tokens, device=host.device)[:, None],
            attention_mask=mask,
            position_ids=pos,
            cache=cache,
        )
        steps += 1
    return steps
