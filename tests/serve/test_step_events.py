"""The worker hands a step's events over in one go, and a reply that is not streamed is decoded
once at its end: the same text as streamed, with none of the per-token work."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tunesmith.data.records import Message
from tunesmith.serve.decoding import decode_batch
from tunesmith.serve.host import ModelHost
from tunesmith.serve.jobs import Delta, Done, Job, Started, emit_all
from tunesmith.serve.sampling import RowSampler
from tunesmith.serve.settings import ServeSettings


def _events(job: Job) -> list[Any]:
    return [job.events.get_nowait() for _ in range(job.events.qsize())]


@pytest.mark.parametrize("stop", [[], ["e"]], ids=["no-stop", "stop-string"])
def test_unstreamed_reply_is_one_delta_with_the_streamed_text(
    tiny_llama: Path, stop: list[str]
) -> None:
    host = ModelHost(ServeSettings(base=str(tiny_llama), device="cpu"))
    loop = asyncio.new_event_loop()
    prompt = host.encode(host.base_name, [Message(role="user", content="Tell me a story")], None)
    jobs = [
        Job(host.base_name, prompt, 12, RowSampler(0), stop, loop, stream=streamed)
        for streamed in (True, False)
    ]
    decode_batch(host, jobs, set())  # no end-of-turn id: every reply runs its 12 tokens
    loop.run_until_complete(asyncio.sleep(0))
    streamed, whole = (_events(job) for job in jobs)
    loop.close()
    assert isinstance(whole[0], Started) and isinstance(whole[-1], Done)
    deltas = [e for e in whole if isinstance(e, Delta)]
    assert len(deltas) <= 1  # the whole text once (none when it is empty)
    text = "".join(e.text for e in streamed if isinstance(e, Delta))
    assert "".join(d.text for d in deltas) == text
    assert whole[-1] == streamed[-1]  # same finish reason and token counts
    if not stop:
        assert len([e for e in streamed if isinstance(e, Delta)]) > 1  # streamed piece by piece


def test_one_wake_up_per_loop_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    calls = {id(loop): 0 for loop in loops}
    for loop in loops:
        original = loop.call_soon_threadsafe

        def counted(*args: Any, _loop: Any = loop, _orig: Any = original) -> Any:
            calls[id(_loop)] += 1
            return _orig(*args)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    jobs = [Job("m", [1], 4, RowSampler(0), [], loops[k % 2]) for k in range(6)]
    emit_all([(job, event) for job in jobs for event in (Started(), Delta(f"{id(job)}"))])
    assert calls == {id(loop): 1 for loop in loops}
    for loop in loops:
        loop.run_until_complete(asyncio.sleep(0))
    for job in jobs:  # every event arrived, in order
        got = _events(job)
        assert isinstance(got[0], Started) and got[1] == Delta(f"{id(job)}")
    for loop in loops:
        loop.close()
