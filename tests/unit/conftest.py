"""Shared fixtures for unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

# Make ``tests.helpers`` importable however pytest is launched (``pytest`` or ``python -m pytest``).
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """SmolLM2-like tiny tokenizer that prepends ``<s>`` by default. Do not mutate it."""
    from tests.helpers.tiny_tokenizer import make_tiny_tokenizer

    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer_no_bos() -> PreTrainedTokenizerFast:
    """The same tokenizer without a default BOS (like SmolLM2's). Do not mutate it."""
    from tests.helpers.tiny_tokenizer import make_tiny_tokenizer

    return make_tiny_tokenizer(add_bos=False)
