"""Micro-batches of preference pairs for a causal LM: both replies of every pair in one forward.

A micro-batch of B pairs gives 2B sequences, chosen first: sequence ``i`` is ``prompt_i +
chosen_i`` and sequence ``B + i`` is ``prompt_i + rejected_i``; the model scores each reply's
tokens given its prompt (:func:`tunesmith.engine.logps.sequence_logps`). Two layouts:

* **padded** (:func:`collate_pairs`): 2B right-padded rows ``prompt + chosen`` then ``prompt +
  rejected``, labels on the response tokens and :data:`IGNORE_INDEX` elsewhere. The prompt is
  run twice.
* **shared prompt** (:func:`collate_shared_prompt`): one segment per pair, ``prompt + chosen +
  rejected``, with the rejected reply's position ids restarting where the prompt ends and a
  mask that lets each reply see the prompt and itself but not the other reply
  (:func:`tunesmith.data.packing.block_causal_mask` with branches); one segment per row, or
  several packed into a row first-fit decreasing. Every hidden state is then exactly what it is
  in the padded layout, while the prompt is run once (Wang et al. 2024, "Accelerating Direct
  Preference Optimization with Prefix Sharing"). A token is predicted from its predecessor *in
  its own sequence*: the first rejected token from the last prompt token, not from the last
  chosen token before it, so the batch names for every predicted token the flat index of the
  hidden state that predicts it (``src``), the token (``tgt``) and the output it adds to
  (``owner``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from tunesmith.data.packing import PackedRow, block_causal_mask, pack_first_fit_decreasing
from tunesmith.data.preference import EncodedPair
from tunesmith.losses.sft import IGNORE_INDEX


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded layout: ``input_ids``, ``attention_mask`` and ``labels``, each ``[2B, T_max]``."""
    sides = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    sides += [(p.prompt_ids, p.rejected_ids) for p in pairs]
    width = max(len(prompt) + len(reply) for prompt, reply in sides)
    ids = torch.full((len(sides), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sides), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sides), width), dtype=torch.long)
    for row, (prompt, reply) in enumerate(sides):
        n = len(prompt) + len(reply)
        ids[row, :n] = torch.tensor(prompt + reply)
        labels[row, len(prompt) : n] = torch.tensor(reply)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_shared_prompt(
    pairs: Sequence[EncodedPair], pad_id: int, capacity: int | None = None
) -> dict[str, torch.Tensor]:
    """Shared-prompt layout (module docstring): one pair per row, or with a ``capacity``
    several pairs per row, packed first-fit decreasing into at most ``max(capacity, longest
    segment)`` tokens.

    Returns ``input_ids``, ``position_ids``, ``seq_ids``, ``branch_ids`` [R, T], the boolean
    ``attention_mask`` [R, 1, T, T], and per predicted token ``src`` (flat index into the
    [R * T] hidden states), ``tgt`` and ``owner`` [N], plus ``lengths`` [2B] (predicted tokens
    per output sequence).
    """
    segments = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    if capacity is None:
        rows = [PackedRow((i,), n) for i, n in enumerate(segments)]
    else:
        rows = pack_first_fit_decreasing(segments, max(capacity, *segments))
    width = max(row.length for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    seq = torch.full(shape, -1, dtype=torch.long)
    branch = torch.zeros(shape, dtype=torch.long)
    src: list[int] = []
    tgt: list[int] = []
    owner: list[int] = []
    lengths = [0] * (2 * len(pairs))
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row.items):
            pair = pairs[i]
            n_p, n_c = len(pair.prompt_ids), len(pair.chosen_ids)
            end = at + segments[i]
            ids[r, at:end] = torch.tensor(pair.prompt_ids + pair.chosen_ids + pair.rejected_ids)
            pos[r, at : at + n_p + n_c] = torch.arange(n_p + n_c)
            pos[r, at + n_p + n_c : end] = torch.arange(n_p, n_p + len(pair.rejected_ids))
            seq[r, at:end] = k
            branch[r, at + n_p : at + n_p + n_c] = 1
            branch[r, at + n_p + n_c : end] = 2
            base = r * width + at
            for out, reply, start in (
                (i, pair.chosen_ids, n_p),
                (len(pairs) + i, pair.rejected_ids, n_p + n_c),
            ):
                # token j of the reply sits at start + j; its predecessor is the last prompt token
                # for j = 0 and the reply's own token j - 1 after that
                for j, token in enumerate(reply):
                    before = start + j - 1 if j > 0 else n_p - 1
                    if before < 0:
                        continue  # no prompt: the first token has no predecessor (as padded)
                    src.append(base + before)
                    tgt.append(token)
                    owner.append(out)
                    lengths[out] += 1
            at = end
    return {
        "input_ids": ids,
        "position_ids": pos,
        "seq_ids": seq,
        "branch_ids": branch,
        "attention_mask": block_causal_mask(seq, branch_ids=branch),
        "src": torch.tensor(src, dtype=torch.long),
        "tgt": torch.tensor(tgt, dtype=torch.long),
        "owner": torch.tensor(owner, dtype=torch.long),
        "lengths": torch.tensor(lengths, dtype=torch.long),
    }


def held_out_shares(n: int, size: int, rank: int, world: int) -> Iterator[tuple[list[int], int]]:
    """One rank's micro-batches of held-out pair indices and how many of each count: rounds of
    ``size x world`` pairs, a contiguous ``size`` to each rank. Every rank gets a batch in every
    round (under FSDP every forward gathers weights from all ranks): one left without pairs
    runs pair 0 and counts none of it."""
    for start in range(0, n, size * world):
        share = list(range(start + rank * size, min(start + (rank + 1) * size, n)))
        yield (share, len(share)) if share else ([0], 0)


def shared_prompt_ends(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """For a shared-prompt batch with one pair per row (:func:`collate_shared_prompt` without a
    ``capacity``): the index [R] of each row's last ``prompt + chosen`` token and of its last
    ``prompt + rejected`` token, the positions a sequence-level score reads (the padded
    layout's last real token of each side). An empty reply reads the last prompt token, as its
    padded row would."""
    seq, branch = batch["seq_ids"], batch["branch_ids"]  # [R, T]
    idx = torch.arange(seq.size(1), device=seq.device).expand_as(seq)
    real = seq >= 0
    chosen = torch.where(real & (branch <= 1), idx, -1).amax(dim=1)
    rejected = torch.where(real & ((branch == 0) | (branch == 2)), idx, -1).amax(dim=1)
    return chosen, rejected
