"""Sentence encoders: a transformer, a pooling of its token states, optional L2 normalisation.

The layout is sentence-transformers' (``modules.json``: Transformer -> Pooling -> Normalize,
``1_Pooling/config.json``): a sentence-transformers model directory (or the packaged MiniLM
alias) loads here with its own pooling, a plain HF encoder directory gets mean pooling +
normalisation, and :func:`write_sentence_transformers_files` makes a saved directory load in
``sentence_transformers.SentenceTransformer`` giving the same embeddings as :func:`embed_texts`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

POOLING_MODES = ("mean", "cls", "max")
ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}
ST_POOLING["max"] = "pooling_mode_max_tokens"


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"
    normalize: bool = True


def read_pooling(path: Path) -> Pooling:
    """The pooling a sentence-transformers directory declares; mean + normalise otherwise."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return Pooling()
    modules = json.loads(modules_file.read_text())
    mode = "mean"
    for m in modules:
        if m["type"].endswith(".Pooling"):
            cfg = json.loads((path / m["path"] / "config.json").read_text())
            on = [name for name, key in ST_POOLING.items() if cfg.get(key)]
            if len(on) != 1:
                raise ValueError(f"{path}: pooling {cfg} is not one of {POOLING_MODES}")
            mode = on[0]
    normalize = any(m["type"].endswith(".Normalize") for m in modules)
    return Pooling(mode, normalize)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Token states ``hidden`` [N, T, H], ``mask`` [N, T] -> sentence vectors [N, H] (float32).

    mean: sum of the masked states over the count of real tokens; cls: the first token; max:
    the element-wise maximum over real tokens. Then L2-normalised when ``pooling.normalize``."""
    h = hidden.float()
    m = mask.to(h.dtype).unsqueeze(-1)  # [N, T, 1]
    if pooling.mode == "mean":
        out = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    elif pooling.mode == "cls":
        out = h[:, 0]
    else:
        out = h.masked_fill(m == 0, float("-inf")).max(1).values
    return torch.nn.functional.normalize(out, dim=-1) if pooling.normalize else out


class EncoderStep(torch.nn.Module):
    """``batch -> sentence vectors [N, H]`` as a module, so DDP / FSDP2 see the forward."""

    def __init__(self, model: Any, pooling: Pooling):
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        hidden = self.model(**inputs).last_hidden_state  # [N, T, H]
        return pool(hidden, batch["attention_mask"], self.pooling)


@torch.no_grad()
def embed_texts(
    step: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64
) -> torch.Tensor:
    """Sentence vectors [N, H] (float32, on CPU) of ``texts`` in eval mode."""
    was_training = step.training
    step.eval()
    device = next(step.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        out.append(step({k: v.to(device) for k, v in enc.items()}).float().cpu())
    step.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def load_sentence_encoder(path: str | Path, device: str = "cpu") -> tuple[EncoderStep, Any]:
    """A saved encoder directory (``final/``, a run dir, or any sentence-transformers model
    directory) as (:class:`EncoderStep`, tokenizer), in eval mode."""
    from transformers import AutoModel

    from tunesmith.models.load import load_tokenizer, pick_device
    from tunesmith.models.safe_weights import use_safetensors

    weights = Path(path)
    weights = weights / "final" if (weights / "final").is_dir() else weights
    model = AutoModel.from_pretrained(str(weights), use_safetensors=use_safetensors(weights))
    step = EncoderStep(model, read_pooling(weights)).to(pick_device(device)).eval()
    return step, load_tokenizer(weights)


def write_sentence_transformers_files(out: Path, pooling: Pooling, dim: int, max_len: int) -> None:
    """``modules.json``, ``1_Pooling/config.json`` and ``sentence_bert_config.json`` beside a
    saved HF encoder, so ``SentenceTransformer(out)`` rebuilds the same pipeline."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if pooling.normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    pool_cfg: dict[str, Any] = {"word_embedding_dimension": dim}
    pool_cfg.update({key: name == pooling.mode for name, key in ST_POOLING.items()})
    pool_cfg["pooling_mode_mean_sqrt_len_tokens"] = False
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_len, "do_lower_case": False}, indent=2)
    )
