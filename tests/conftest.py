"""Shared fixtures: tiny random models written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.tiny_model import make_tiny_model_dir

# One thread: the tiny test models are dominated by per-op overhead, and a second OpenMP thread
# only adds barrier waits (10-80x slower decoding tests on a busy machine).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_llama(tiny_models: Path) -> Path:
    return make_tiny_model_dir(tiny_models, "llama")


@pytest.fixture(scope="session")
def tiny_gemma(tiny_models: Path) -> Path:
    return make_tiny_model_dir(tiny_models, "gemma3_text")
