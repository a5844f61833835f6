"""A real server on a loopback port: the tiny llama base and two LoRA adapters that differ."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.serve.lora_util import KEY, MAX_NEW, MAX_PROMPT, Served, make_lora  # noqa: E402


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    make_lora(tiny_llama, root / "alpha", seed=1)
    make_lora(tiny_llama, root / "beta", seed=2)
    return root


@pytest.fixture(scope="session")
def served(
    adapter_root: Path, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    from tunesmith.serve.server import ServerThread, build
    from tunesmith.serve.settings import Batching, Limits, ServeSettings

    settings = ServeSettings(
        base=str(tiny_llama),
        base_name="tiny",
        adapters={"alpha": adapter_root / "alpha", "beta": adapter_root / "beta"},
        adapter_root=adapter_root,
        api_key=KEY,
        device="cpu",
        limits=Limits(max_prompt_tokens=MAX_PROMPT, max_new_tokens=MAX_NEW, max_body_bytes=20_000),
        batching=Batching(window_ms=20, max_batch_size=16),
    )
    server = build(settings)
    with ServerThread(server) as thread:
        yield Served(thread.url, adapter_root, tmp_path_factory.mktemp("outside"), server)


@pytest.fixture()
def client(served: Served) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0, timeout=60)
