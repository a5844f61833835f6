"""tunesmith's own code calls no API that transformers, peft or torch mark as deprecated.

A deprecated call shows itself in two ways, so one generation, one SFT step and one DPO step run
inside two nets:

* a DeprecationWarning or FutureWarning attributed to a tunesmith module (the library warned with
  a ``stacklevel`` that points at our line: a deprecated function, property or argument that we
  call directly) is an error, through the two filters that pyproject.toml sets for every test;
* transformers reports a deprecated ``forward`` argument from inside ``nn.Module.__call__``, so
  that warning is attributed to ``torch.nn.modules.module``, and a deprecated output attribute
  only through its logger: no module filter sees either. So every such warning, and every
  "deprecated" record of the transformers logger, raised while tunesmith code is on the stack
  is collected and fails the test, unless a library's own internals raise it (``THIRD_PARTY``,
  each entry naming the library code that makes the call).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch
import yaml

from tests.helpers.preference_data import write_pairs
from tests.helpers.runs import step_losses, train, write_chat_data, write_config
from tunesmith.generation import SamplingParams, generate_ids, sample

TUNESMITH = r"tunesmith(\..*)?\Z"
"""Module regex for tunesmith and its submodules (``warnings`` matches it from the start)."""

THIRD_PARTY: dict[str, str] = {
    # peft 0.21.2: PeftModel.__init__ reads getattr(model, "is_gradient_checkpointing", True)
    r"`is_gradient_checkpointing` is deprecated": r"peft\.peft_model\Z",
    # torch 2.13: its own mkldnn module (imported by torch.compile) uses torch.jit.script_method
    r"`torch\.jit\.script_method` is deprecated": r"torch\.utils\.mkldnn\Z",
}
"""Deprecations that a library's own code raises while ours is on the stack: message regex ->
regex of the module that calls the deprecated API (the frame above the one that warns)."""


def _module(frame: FrameType) -> str:
    return frame.f_globals.get("__name__", "")


def _tunesmith_frame(frame: FrameType | None) -> str | None:
    """``module:function:line`` of the innermost tunesmith frame at or above ``frame``."""
    while frame is not None:
        if re.match(TUNESMITH, _module(frame)):
            return f"{_module(frame)}:{frame.f_code.co_name}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _deprecated_api_caller(frame: FrameType | None) -> str:
    """The module that called the function that warned: the frame above the first one outside
    ``warnings`` and this file, walking out from the warning hook."""
    while frame is not None and _module(frame) in ("warnings", __name__):
        frame = frame.f_back
    caller = frame.f_back if frame is not None else None
    return _module(caller) if caller is not None else ""


class _Collector(logging.Handler):
    """Collects the deprecations raised under tunesmith code (warnings and log records)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def note(self, kind: str, text: str, api_caller: str = "") -> None:
        for message, caller in THIRD_PARTY.items():
            if re.search(message, text) and re.match(caller, api_caller):
                return
        where = _tunesmith_frame(inspect.currentframe())
        if where is not None:
            self.found.append(f"{kind} under {where}: {text}")

    def showwarning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, DeprecationWarning | FutureWarning):
            caller = _deprecated_api_caller(inspect.currentframe())
            self.note(f"{category.__name__} ({filename}:{lineno})", str(message), caller)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "deprecated" in text.lower():
            self.note(f"log {record.name}", text)


@contextmanager
def no_deprecations() -> Iterator[None]:
    """Fail the test if tunesmith code triggers a deprecated transformers / peft / torch API."""
    collector = _Collector()
    library_logger = logging.getLogger("transformers")
    warning_once = getattr(logging.Logger, "warning_once", None)
    if hasattr(warning_once, "cache_clear"):  # transformers logs each deprecation once a process
        warning_once.cache_clear()
    library_logger.addHandler(collector)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DeprecationWarning)
            warnings.simplefilter("always", FutureWarning)
            warnings.filterwarnings("error", category=DeprecationWarning, module=TUNESMITH)
            warnings.filterwarnings("error", category=FutureWarning, module=TUNESMITH)
            warnings.showwarning = collector.showwarning
            yield
    finally:
        library_logger.removeHandler(collector)
    found = list(dict.fromkeys(collector.found))  # a decode loop repeats each one per token
    assert not found, "deprecated API used:\n" + "\n".join(found)


def test_the_module_pattern_matches_tunesmith_and_its_submodules_only() -> None:
    names = ("tunesmith", "tunesmith.serve.host", "tunesmithx", "x.tunesmith")
    assert [bool(re.match(TUNESMITH, m)) for m in names] == [True, True, False, False]


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_the_suite_makes_a_deprecation_warned_at_tunesmith_code_an_error(
    category: type[Warning], request: pytest.FixtureRequest
) -> None:
    """pyproject.toml's filterwarnings, as every test runs under them."""
    if request.config.getoption("pythonwarnings"):
        pytest.skip("-W on the command line comes before pyproject.toml's filterwarnings")
    call = compile("warnings.warn('old', category)", "<example>", "exec")
    with pytest.raises(category):
        exec(call, {"__name__": "tunesmith.example", "warnings": warnings, "category": category})
    with pytest.warns(category):  # another package's module: only recorded
        exec(call, {"__name__": "tunesmithx", "warnings": warnings, "category": category})


def _tiny_lm(path: Path, lora: bool = False) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if lora:  # peft passes the cache argument through its own forward
        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    return model.eval()


def test_the_nets_catch_deprecated_calls(tiny_llama: Path) -> None:
    """The check itself, from code whose module is ``tunesmith.example``: a deprecated property
    called directly (transformers warns at its own line), and ``past_key_values`` passed to
    forward (transformers warns at torch's ``nn.Module`` call) are both caught."""
    model = _tiny_lm(tiny_llama)
    ours = {"__name__": "tunesmith.example", "model": model, "ids": torch.tensor([[1, 2, 3]])}
    calls = {
        "model.is_gradient_checkpointing": "is_gradient_checkpointing",
        "model(input_ids=ids, past_key_values=None)": "past_key_values",
    }
    for code, deprecated in calls.items():
        with pytest.raises(AssertionError, match=deprecated), no_deprecations():
            eval(compile(code, "<tunesmith.example>", "eval"), ours)


@pytest.mark.parametrize("arch", ["llama", "gemma", "llama-lora"])
def test_generation(arch: str, request: pytest.FixtureRequest) -> None:
    from tunesmith.models.load import load_tokenizer

    path = request.getfixturevalue(f"tiny_{arch.split('-')[0]}")
    model, tokenizer = _tiny_lm(path, lora=arch.endswith("lora")), load_tokenizer(path)
    prompts = [tokenizer.encode("Hello there"), tokenizer.encode("Hi")]
    params = SamplingParams(max_new_tokens=4)
    with no_deprecations():
        sampled = sample(model, tokenizer, prompts, params, num_samples=2)
        generated = generate_ids(model, tokenizer, prompts, params)
    assert len(sampled) == 4 and len(generated) == 2


def test_serve_decoding(tiny_llama: Path) -> None:
    from tunesmith.data.records import Message
    from tunesmith.serve.decoding import decode_batch
    from tunesmith.serve.host import ModelHost
    from tunesmith.serve.jobs import Job
    from tunesmith.serve.sampling import RowSampler, eos_ids
    from tunesmith.serve.settings import ServeSettings

    host = ModelHost(ServeSettings(base=str(tiny_llama), base_name="tiny", device="cpu"))
    loop = asyncio.new_event_loop()
    try:
        jobs = [  # different budgets: a row leaves the batch and the cache early
            Job(
                "tiny",
                host.encode("tiny", [Message(role="user", content=text)], None),
                n,
                RowSampler(0),
                [],
                loop,
            )
            for text, n in (("Hi", 2), ("The quick brown fox", 5))
        ]
        with no_deprecations():
            steps = decode_batch(host, jobs, eos_ids(host.tokenizer))
    finally:
        loop.close()
    assert steps >= 1


def test_sft_step(tmp_path: Path, tiny_llama: Path) -> None:
    cfg = write_config(
        tmp_path, tiny_llama, write_chat_data(tmp_path / "d.jsonl", n=16), train={"max_steps": 1}
    )
    with no_deprecations():
        run = train(cfg)
    assert len(step_losses(run)) == 1


def test_sft_step_with_activation_checkpointing(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=16)
    cfg = write_config(
        tmp_path, tiny_llama, data, train={"max_steps": 1, "gradient_checkpointing": True}
    )
    with no_deprecations():
        train(cfg)


def test_dpo_step(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", n=16, seed=0)
    cfg = {
        "method": "dpo",
        "model": {"name_or_path": str(tiny_llama)},
        "data": {"train": str(data), "max_length": 64, "val_fraction": 0.25},
        "train": {
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
            "max_steps": 1,
            "micro_batch_size": 4,
            "seed": 3,
            "precision": "fp32",
        },
        "lora": {"dropout": 0.0},
    }
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with no_deprecations():
        run = train(path)
    assert len(step_losses(run)) == 1
