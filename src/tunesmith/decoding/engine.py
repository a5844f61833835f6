"""The decoding engine: a fixed number of slots, a shared KV cache, continuous batching.

Every caller that generates text (GRPO and PPO rollouts, ``eval``, ``generate``/``chat``,
``serve``) hands :class:`Request` s to one :class:`Engine` and calls :meth:`Engine.step`:

1. **Admit.** While a slot is free and a request waits, it takes the slot. The prompts that
   take slots in one step are prefilled together (one left-padded forward), each prompt once:
   its G samples (a GRPO group) share that prefill, their cache rows repeated from the
   prompt's, never recomputed, also for samples admitted steps later.
   Each new row takes its first token from the prompt's last logits and joins the running
   batch (:mod:`tunesmith.decoding.cache`: left-padded, its own position ids).
2. **Decode.** One forward of every running row's last token, each row through its own
   adapter; each row picks its next token with its own generator (:mod:`.sampling`).
3. **Retire.** A row ends on an end-of-turn token, a stop string (:class:`TextStream`) or its
   token budget; it leaves the batch and the cache at once, and its slot takes the next
   waiting request at the next step.

A row's tokens depend only on its prompt, adapter, settings and seed (not on its batchmates:
padding is masked, draws are per row), so the scheduling may change without changing outputs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from tunesmith.decoding import cache as kv
from tunesmith.decoding.sampling import SamplingParams, pick_tokens_per_row, row_generator
from tunesmith.decoding.text import TextStream


class Forward(Protocol):
    """One forward: ``adapters`` names each row's adapter (``None``: the base); returns the
    last-position logits [B, V] (float) and the updated cache."""

    def __call__(self, adapters: list[str | None], **inputs: Any) -> tuple[torch.Tensor, Any]: ...


@dataclass
class Request:
    """``num_samples`` continuations of ``prompt_ids``; sample j draws from
    ``derive_seed(seed, j)`` (``seed`` None: one drawn from torch's global generator when
    sampling)."""

    prompt_ids: Sequence[int]
    params: SamplingParams
    seed: int | None = None
    num_samples: int = 1
    adapter: str | None = None
    stream: bool = False  # report each row's new text in the step's updates
    cancelled: Callable[[], bool] = lambda: False
    tag: Any = None  # the caller's handle, carried to the rows


@dataclass
class Row:
    """One sample being decoded: ``tokens`` are exactly the sampled ids (the end-of-turn one
    included); ``text`` is cut before the first stop string once the row is done."""

    request: Request
    index: int
    generator: torch.Generator
    text_stream: TextStream | None
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    finish_reason: str = "length"
    text: str = ""


@dataclass
class Update:
    """What one step did to a row: its new streamed text, and whether it ended."""

    row: Row
    delta: str
    done: bool
    first: bool = False  # the row's first token (or it ended with none)


@dataclass
class _Prefix:
    """A prefilled prompt: its last logits [1, V], the prefill's cache (``batch`` rows) and
    its ``row`` there, its row of the prefill's mask [1, W], its token count."""

    logits: torch.Tensor
    cache: Any
    row: int
    batch: int
    mask: torch.Tensor
    length: int


@dataclass
class _Waiting:
    request: Request
    admitted: int = 0  # samples given a slot so far
    prefix: _Prefix | None = None  # kept while later samples may still share it


@dataclass
class _Admission:
    """Samples ``first`` .. ``first + count - 1`` of a waiting request, taking slots now."""

    waiting: _Waiting
    first: int
    count: int
    last: bool
    prefix: _Prefix | None


class Engine:
    """Continuous batching over ``slots`` rows; see the module docstring."""

    def __init__(
        self,
        forward: Forward,
        decode: Callable[[list[int]], str],
        eos: set[int],
        slots: int,
        device: torch.device | str = "cpu",
        share_prefix: bool = True,
    ) -> None:
        if slots < 1:
            raise ValueError(f"Engine: slots must be at least 1, got {slots}")
        self.forward, self.decode, self.eos, self.slots = forward, decode, eos, slots
        self.device = torch.device(device)
        self.share_prefix = share_prefix  # False: every sample prefills its own prompt copy
        self.waiting: deque[_Waiting] = deque()
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # [B, T]
        self._next_pos = torch.zeros(0, 1, dtype=torch.long, device=self.device)  # [B, 1]
        self._pending: list[int] = []  # each running row's last token, not yet fed
        self.forwards = 0  # decode forwards run (prefills not counted)
        self.last_batch = 0  # rows in the latest decode forward

    @property
    def idle(self) -> bool:
        return not self.rows and not self.waiting

    def add(self, request: Request) -> None:
        if not request.prompt_ids:
            raise ValueError("Engine: every prompt needs at least one token")
        if request.seed is None:  # greedy draws nothing: leave torch's generator untouched
            sampled = request.params.temperature > 0
            request.seed = int(torch.randint(0, 2**62, ()).item()) if sampled else 0
        self.waiting.append(_Waiting(request))

    def step(self) -> list[Update]:
        """Admit into free slots, decode one token for every running row, retire the ended."""
        updates: list[Update] = []
        self._retire([r for r in self.rows if r.request.cancelled()])
        self._admit(updates)
        if self.rows:
            logits = self._decode_step()
            self._choose(self.rows, logits, updates)
            self._pending = [r.tokens[-1] for r in self.rows]
            self._retire([r for r in self.rows if r.done])
        return updates

    def run(self, requests: Sequence[Request]) -> list[Row]:
        """Decode ``requests`` to the end; their rows, request-major (sample order within)."""
        for request in requests:
            self.add(request)
        finished: list[Row] = []
        while not self.idle:
            finished += [u.row for u in self.step() if u.done]
        order = {id(r): i for i, r in enumerate(requests)}
        return sorted(finished, key=lambda row: (order[id(row.request)], row.index))

    def abort(self) -> list[Request]:
        """Drop every running and waiting request (after a failed forward); return them."""
        requests = {id(r.request): r.request for r in self.rows}
        requests.update({id(w.request): w.request for w in self.waiting})
        self.waiting.clear()
        self._retire(list(self.rows))
        return list(requests.values())

    # ------------------------------------------------------------------ admission
    def _admit(self, updates: list[Update]) -> None:
        """Fill the free slots from the queue; the prompts that need it are prefilled together
        in one left-padded forward, each once for all its samples."""
        plan = self._plan(updates)
        self._prefill([entry for entry in plan if entry.prefix is None])
        for entry in plan:
            request, prefix = entry.waiting.request, entry.prefix
            assert prefix is not None
            if self.share_prefix:
                entry.waiting.prefix = prefix
            new = [self._new_row(request, entry.first + j) for j in range(entry.count)]
            self._choose(new, prefix.logits.expand(entry.count, -1), updates)
            live = [r for r in new if not r.done]
            if live:
                self._join(live, prefix, entry.last)

    def _plan(self, updates: list[Update]) -> list[_Admission]:
        """Which waiting samples take the free slots now (cancelled requests leave the queue;
        a request with no tokens to generate ends at once)."""
        plan: list[_Admission] = []
        free = self.slots - len(self.rows)
        while self.waiting and free > 0:
            head = self.waiting[0]
            request = head.request
            if request.cancelled():
                self.waiting.popleft()
                continue
            count = min(free, request.num_samples - head.admitted)
            if not self.share_prefix:
                count = 1
            first, head.admitted = head.admitted, head.admitted + count
            last = head.admitted == request.num_samples  # nobody needs the prefix after
            if last:
                self.waiting.popleft()
            if request.params.max_new_tokens <= 0:  # nothing to generate: done, empty
                for j in range(count):
                    row = self._new_row(request, first + j)
                    row.done = True
                    updates.append(Update(row, "", True, True))
                continue
            prefix = head.prefix if self.share_prefix else None
            plan.append(_Admission(head, first, count, last, prefix))
            free -= count
        return plan

    def _new_row(self, request: Request, index: int) -> Row:
        p = request.params
        stream = None
        if request.stream or p.stop:
            stream = TextStream(self.decode, p.stop)
        assert request.seed is not None
        return Row(request, index, row_generator(request.seed, index), stream)

    def _prefill(self, entries: list[_Admission]) -> None:
        """One forward over the prompts of ``entries`` (left-padded, position ids counting
        real tokens only); each entry gets its row of the logits, the cache and the mask."""
        if not entries:
            return
        prompts = [list(e.waiting.request.prompt_ids) for e in entries]
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[b, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits, cache = self.forward(
            [e.waiting.request.adapter for e in entries],
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        )
        for b, (entry, p) in enumerate(zip(entries, prompts, strict=True)):
            entry.prefix = _Prefix(
                logits[b : b + 1], cache, b, len(prompts), mask[b : b + 1], len(p)
            )

    def _join(self, rows: list[Row], prefix: _Prefix, last: bool) -> None:
        """Add ``rows`` (samples of one prompt) to the running batch; ``last``: the prompt's
        cache may be taken as it is when it holds this one row (no later sample shares it)."""
        if last and len(rows) == 1 and prefix.batch == 1:
            cache = prefix.cache
        else:
            cache = kv.repeat_rows(prefix.cache, [prefix.row] * len(rows))
        mask = prefix.mask.expand(len(rows), -1)
        pos = torch.full((len(rows), 1), prefix.length, dtype=torch.long, device=self.device)
        if self._cache is None:
            self._cache, self._mask, self._next_pos = cache, mask.clone(), pos
        else:
            kv.join(self._cache, cache)
            width = max(self._mask.size(1), mask.size(1))
            pad = torch.nn.functional.pad
            self._mask = torch.cat(
                [
                    pad(self._mask, (width - self._mask.size(1), 0)),
                    pad(mask, (width - mask.size(1), 0)),
                ]
            )
            self._next_pos = torch.cat([self._next_pos, pos])
        self.rows += rows
        self._pending += [r.tokens[-1] for r in rows]
        self._compact()

    # ------------------------------------------------------------------ decoding
    def _decode_step(self) -> torch.Tensor:
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self.rows), 1)], dim=1)
        logits, self._cache = self.forward(
            [r.request.adapter for r in self.rows],
            input_ids=torch.tensor(self._pending, device=self.device)[:, None],
            attention_mask=self._mask,
            position_ids=self._next_pos,
            cache=self._cache,
        )
        self._next_pos = self._next_pos + 1
        self.forwards += 1
        self.last_batch = len(self.rows)
        return logits

    def _choose(self, rows: list[Row], logits: torch.Tensor, updates: list[Update]) -> None:
        """Each row's next token from its logits row, rows with equal settings together."""
        groups: dict[tuple[float, int, float], list[int]] = {}
        for b, row in enumerate(rows):
            p = row.request.params
            key = (p.temperature, p.top_k, p.top_p) if p.temperature > 0 else (0.0, 0, 1.0)
            groups.setdefault(key, []).append(b)
        chosen = [0] * len(rows)
        for (temperature, top_k, top_p), members in groups.items():
            params = SamplingParams(1, temperature, top_p, top_k)
            gens = [rows[b].generator for b in members]
            picked = pick_tokens_per_row(logits[members], params, gens).tolist()
            for b, tok in zip(members, picked, strict=True):
                chosen[b] = tok
        for b, row in enumerate(rows):
            updates.append(self._push(row, chosen[b]))

    def _push(self, row: Row, token: int) -> Update:
        row.tokens.append(token)
        stream, delta = row.text_stream, ""
        if token in self.eos:
            row.done, row.finish_reason = True, "stop"
        elif stream is not None:
            delta = stream.push(token)
            if stream.stopped:
                row.done, row.finish_reason = True, "stop"
        if not row.done and len(row.tokens) >= row.request.params.max_new_tokens:
            row.done = True
        if row.done:
            if stream is not None:
                delta += stream.flush()
                row.text = stream.text
            else:
                row.text = self.decode(row.tokens)
        return Update(row, delta, row.done, len(row.tokens) == 1)

    def _retire(self, leaving: list[Row]) -> None:
        """Drop ``leaving`` from the batch and the cache; cut columns no row needs any more."""
        if not leaving:
            return
        gone = {id(r) for r in leaving}
        keep = [b for b, r in enumerate(self.rows) if id(r) not in gone]
        self.rows = [self.rows[b] for b in keep]
        self._pending = [self._pending[b] for b in keep]
        if not keep:
            self._cache = None
            self._mask = self._mask[:0, :0]
            self._next_pos = self._next_pos[:0]
            return
        kv.keep_rows(self._cache, keep)
        self._mask, self._next_pos = self._mask[keep], self._next_pos[keep]
        self._compact()

    def _compact(self) -> None:
        """Cut the leading columns that every running row masks (padding no row needs)."""
        unused = int((self._mask.sum(0) == 0).long().cumprod(0).sum())
        kv.cut_left(self._cache, unused)
        self._mask = self._mask[:, unused:]
