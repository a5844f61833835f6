"""Per-sequence response log-probabilities, the quantity every preference loss works on.

A preference micro-batch of B pairs gives 2B sequence log-probabilities, chosen first: outputs
``0..B-1`` are ``log pi(chosen_i | prompt_i)`` and ``B..2B-1`` are ``log pi(rejected_i |
prompt_i)``, each summed over the response tokens (content and end-of-turn). Both sides go
through the model in a single forward pass, in one of two layouts:

* **padded** (:func:`collate_pairs`): 2B right-padded rows ``prompt + chosen`` then ``prompt +
  rejected``, labels on the response tokens and :data:`IGNORE_INDEX` elsewhere. The prompt is
  run twice.
* **shared prompt** (:func:`collate_shared_prompt`): one segment per pair, ``prompt + chosen +
  rejected``, with the rejected reply's position ids restarting where the prompt ends and a
  mask that lets each reply see the prompt and itself but not the other reply
  (:func:`tunesmith.data.packing.block_causal_mask` with branches); one segment per row, or
  several packed into a row first-fit decreasing. Every hidden state is then exactly what it is
  in the padded layout, so the log-probs are the same (up to float rounding), while the prompt
  is run once: for pairs whose prompt is longer than their replies this is close to half the
  tokens (Wang et al. 2024, "Accelerating Direct Preference Optimization with Prefix Sharing").
  A token is predicted from its predecessor *in its own sequence*: the first rejected token
  from the last prompt token, not from the last chosen token before it, so the batch names for
  every predicted token the flat index of the hidden state that predicts it (``src``), the token
  (``tgt``) and the output it adds to (``owner``).

Rounding: in fp32 the layouts agree to ~1e-5. Under bf16 a sequence's log-prob also depends on
what else is in its batch, by up to ~0.1 nats (measured on SmolLM2-135M, CPU): in both layouts
through the padded row width (kernels split their sums by tensor shape), and with packed
rows through the pair's offset and row-mates. So a reference precomputed in other batches than
the training step's is not bit-equal to the step-0 policy in bf16 (first-step DPO loss 0.69323
instead of log 2 = 0.69315 in ``benchmarks/compare_trl_dpo.py``). One pair per row is the
default: packing (``dpo.pack_pairs``) pays only when pair lengths in a micro-batch vary widely.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tunesmith.data.packing import PackedRow, block_causal_mask, pack_first_fit_decreasing
from tunesmith.data.preference import EncodedPair
from tunesmith.engine.forward import _parts, forward_logits, model_inputs
from tunesmith.engine.token_logps import head_logps, token_logps
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


def sequence_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps [2B] float32, lengths [2B])``: each sequence's log-probability summed over its
    response tokens, for a batch in either layout.

    Only the predicted positions go through the output head, in recomputed chunks, in float32
    (:func:`tunesmith.engine.token_logps.head_logps`).
    """
    if "owner" not in batch:
        logps, mask = token_logps(model, batch, chunk_size)  # [2B, T-1] each
        return logps.sum(dim=1), mask.sum(dim=1)
    src, tgt, owner, lengths = batch["src"], batch["tgt"], batch["owner"], batch["lengths"]
    parts = _parts(model)
    if parts is None:
        logits = forward_logits(model, batch).flatten(0, 1)[src].float()  # [N, V]
        flat = torch.log_softmax(logits, dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    else:
        decoder, head, softcap = parts
        hidden = decoder(**model_inputs(model, batch)).last_hidden_state  # [R, T, H]
        flat = head_logps(head, softcap, hidden.flatten(0, 1)[src], tgt, chunk_size)
    sums = torch.zeros(lengths.shape, dtype=torch.float32, device=flat.device)
    return sums.index_add(0, owner, flat), lengths
