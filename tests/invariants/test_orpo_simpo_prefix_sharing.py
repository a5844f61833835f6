"""ORPO and SimPO use DPO's shared-prompt layout (each pair's prompt run once for both replies):
their per-sequence log-probs, losses and gradients equal the padded layout's, on Llama and on
Gemma 3's sliding-window layers, and a whole run takes the shared layout by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.methods.test_dpo import metrics, write_dpo_config, write_pref_data
from tunesmith.cli import main
from tunesmith.data.pair_batches import collate_pairs, collate_shared_prompt
from tunesmith.data.preference import EncodedPair
from tunesmith.engine.logps import sequence_logps
from tunesmith.losses.dpo import PairLogps, preference_loss

# (prompt, chosen, rejected) lengths: replies of different lengths (the losses normalise by
# length), a one-token reply, and a segment longer than the shortened sliding window below.
SHAPES = [(12, 5, 9), (3, 14, 2), (20, 6, 11), (7, 1, 4)]
LOSS_KNOBS = {"orpo": {"orpo_lambda": 0.3}, "simpo": {"simpo_gamma": 0.7}}


def _pairs(vocab: int) -> list[EncodedPair]:
    g = torch.Generator().manual_seed(7)

    def ids(n: int) -> list[int]:
        return torch.randint(5, vocab, (n,), generator=g).tolist()

    return [EncodedPair(ids(p), ids(c), ids(r)) for p, c, r in SHAPES]


def _model(model_dir: Path, arch: str) -> Any:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa"
    )
    if arch == "gemma3_text":  # a window shorter than the segments, so the sliding mask matters
        for layer in model.model.layers:
            if getattr(layer.self_attn, "sliding_window", None):
                layer.self_attn.sliding_window = 8
        model.config.sliding_window = 8
    return model


def _loss_logps_grads(
    model: Any, batch: dict[str, torch.Tensor], loss: str
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(per-pair loss [B], logps + lengths [4B], grads)`` of ``loss`` on one batch."""
    model.zero_grad()
    logps, lengths = sequence_logps(model, batch)
    chosen, rejected = logps.chunk(2)
    len_c, len_r = lengths.float().chunk(2)
    lp = PairLogps(chosen, rejected, len_c, len_r, None, None)
    knobs = {"simpo_gamma": 0.5, "orpo_lambda": 0.1, **LOSS_KNOBS[loss]}
    pair_loss = preference_loss(loss, lp, 2.0, 0.0, knobs["simpo_gamma"], knobs["orpo_lambda"])
    pair_loss.sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return pair_loss.detach(), torch.cat([logps.detach(), lengths.float()]), grads


@pytest.mark.parametrize("loss", ["orpo", "simpo"])
@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_shared_prompt_loss_equals_padded(
    request: pytest.FixtureRequest, arch: str, loss: str
) -> None:
    model = _model(request.getfixturevalue("tiny_llama" if arch == "llama" else "tiny_gemma"), arch)
    pairs = _pairs(model.config.vocab_size)
    shared = collate_shared_prompt(pairs, 0)
    padded = collate_pairs(pairs, 0)
    assert shared["input_ids"].numel() < padded["input_ids"].numel()  # the prompt runs once
    loss_s, out_s, grads_s = _loss_logps_grads(model, shared, loss)
    loss_p, out_p, grads_p = _loss_logps_grads(model, padded, loss)
    torch.testing.assert_close(out_s, out_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_s, loss_p, rtol=1e-5, atol=1e-5)
    assert grads_s.keys() == grads_p.keys()
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_s[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("loss", ["orpo", "simpo"])
def test_a_reference_free_run_shares_the_prompt(
    tmp_path: Path, tiny_llama: Path, loss: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_pref_data(tmp_path / "pref.jsonl", n=16)
    losses, positions = {}, {}
    for layout in ("auto", "padded"):
        cfg = write_dpo_config(
            tmp_path,
            tiny_llama,
            data,
            train={"max_steps": 2, "run_name": layout, "eval_every": None},
            dpo={"loss": loss, "layout": layout, **LOSS_KNOBS[loss]},
        )
        assert main(["train", str(cfg)]) == 0
        if layout == "auto":
            assert "layout=shared_prompt (auto)" in capsys.readouterr().out
        rows = metrics(tmp_path / "runs" / layout, "train")
        losses[layout] = [r["loss"] for r in rows]
        positions[layout] = sum(r["input_positions"] for r in rows)
    assert losses["auto"] == pytest.approx(losses["padded"], abs=1e-5)
    assert positions["auto"] < positions["padded"]
