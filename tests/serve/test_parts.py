"""The server's pieces on their own: stop strings, sampling, path checks, the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.serve.adapters import under_root
from tunesmith.serve.errors import APIError
from tunesmith.serve.sampling import RowSampler, TextStream


def _stream(tokens: list[str], stop: list[str]) -> tuple[list[str], TextStream]:
    """Feed one character per 'token' (ids index into ``tokens``)."""
    ts = TextStream(lambda ids: "".join(tokens[i] for i in ids), stop)
    out = []
    for i in range(len(tokens)):
        out.append(ts.push(i))
        if ts.stopped:
            break
    out.append(ts.flush())
    return out, ts


def test_stop_string_cuts_text_and_holds_back_possible_starts() -> None:
    deltas, ts = _stream(["Hel", "lo", " EN", "D", " more"], stop=["END"])
    # " EN" might begin "END": held back until "D" completes the stop, which is cut away.
    assert deltas == ["Hel", "lo", " ", "", ""] and ts.text == "Hello " and ts.stopped
    deltas, ts = _stream(["a", "E", "N", "x"], stop=["END"])
    assert "".join(deltas) == "aENx" and not ts.stopped  # "EN" released once it cannot stop
    assert deltas[1:3] == ["", ""]


def test_stop_across_tokens_and_incomplete_characters() -> None:
    deltas, ts = _stream(["ab", "c\n", "\nd"], stop=["\n\n"])
    assert "".join(deltas) == "abc" and ts.stopped
    deltas, _ = _stream(["x", "\ufffd", "é"], stop=[])  # decode not yet a full character
    assert deltas == ["x", "", "\ufffdé", ""]


def test_sampler_greedy_top_k_top_p_and_seed() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -5.0])
    assert RowSampler(0.0)(logits) == 1
    # top_k=1 is greedy whatever the temperature.
    assert {RowSampler(1.5, top_k=1, seed=s)(logits) for s in range(20)} == {1}
    # probs at T=1: [0.026, 0.509, 0.461, 0.0000]; top_p=0.5 keeps only token 1 (0.509 >= 0.5),
    # top_p=0.9 keeps tokens 1 and 2 (0.509 + 0.461 = 0.970 >= 0.9) and never 0 or 3.
    assert {RowSampler(1.0, top_p=0.5, seed=s)(logits) for s in range(20)} == {1}
    assert {RowSampler(1.0, top_p=0.9, seed=s)(logits) for s in range(60)} == {1, 2}
    draws = [RowSampler(1.0, seed=7)(logits) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same draw


def test_paths_under_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "in").symlink_to(root / "a")
    assert under_root(root, "a/b") == (root / "a" / "b").resolve()
    assert under_root(root, str(root / "a")) == (root / "a").resolve()
    assert under_root(root, "in/b") == (root / "a" / "b").resolve()
    for bad in ["../secret", "out", "a/../../secret", str(tmp_path / "secret"), "/etc"]:
        with pytest.raises(APIError) as e:
            under_root(root, bad)
        assert e.value.status == 403, bad


def test_cli_rejects_bad_arguments(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    from tunesmith.cli import main

    base = ["serve", "--base", str(tiny_llama)]
    assert main([*base, "--adapter", "noequals"]) == 2
    assert "NAME=RUN_OR_ADAPTER_DIR" in capsys.readouterr().err
    assert main([*base, "--api-key-env", "TUNESMITH_SURELY_UNSET_VAR"]) == 2
    assert main([*base, "--adapter-root", str(tmp_path / "missing")]) == 2
    assert main([*base, "--adapter", f"x={tmp_path}"]) == 2  # not an adapter dir
    assert "neither a run directory" in capsys.readouterr().err


def test_rows_leaving_a_batch_early_do_not_change_the_others(
    tiny_llama: Path, adapter_root: Path
) -> None:
    """Rows of different lengths, adapters and budgets in one batch reply exactly as alone."""
    import asyncio

    from tunesmith.data.records import Message
    from tunesmith.serve.decoding import decode_batch
    from tunesmith.serve.host import ModelHost
    from tunesmith.serve.jobs import Delta, Done, Job
    from tunesmith.serve.sampling import eos_ids
    from tunesmith.serve.settings import ServeSettings

    host = ModelHost(
        ServeSettings(
            base=str(tiny_llama),
            base_name="tiny",
            adapters={"alpha": adapter_root / "alpha", "beta": adapter_root / "beta"},
            device="cpu",
        )
    )
    loop = asyncio.new_event_loop()
    specs = [("alpha", "Hi", 3), ("tiny", "The quick brown fox jumps", 9), ("beta", "Hello", 6)]

    def run(batch: list[tuple[str, str, int]]) -> list[tuple[str, int]]:
        jobs = [
            Job(
                m,
                host.encode(m, [Message(role="user", content=p)], None),
                n,
                RowSampler(0),
                [],
                loop,
            )
            for m, p, n in batch
        ]
        decode_batch(host, jobs, eos_ids(host.tokenizer))
        loop.run_until_complete(asyncio.sleep(0))  # deliver the queued events
        out = []
        for job in jobs:
            events = [job.events.get_nowait() for _ in range(job.events.qsize())]
            done = events[-1]
            assert isinstance(done, Done)
            text = "".join(e.text for e in events if isinstance(e, Delta))
            out.append((text, done.completion_tokens))
        return out

    together = run(specs)
    alone = [run([spec])[0] for spec in specs]
    assert together == alone
    # Each row ran to its own budget, so rows left the batch (and the cache) at steps 3 and 6.
    assert [n for _, n in together] == [3, 9, 6]
    loop.close()
