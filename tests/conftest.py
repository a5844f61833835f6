"""Shared fixtures: tiny random models written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.tiny_model import make_tiny_model_dir

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_llama(tiny_models: Path) -> Path:
    return make_tiny_model_dir(tiny_models, "llama")


@pytest.fixture(scope="session")
def tiny_gemma(tiny_models: Path) -> Path:
    return make_tiny_model_dir(tiny_models, "gemma3_text")
