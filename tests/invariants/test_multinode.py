"""Multi-node is plain ``torchrun --nnodes``: two launches on localhost meeting at a c10d
rendezvous train exactly like two processes on one node (and so like one process)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers.runs import (
    step_losses,
    train_subprocess,
    train_two_nodes,
    write_chat_data,
    write_config,
)
from tests.methods.test_dpo import metrics, write_dpo_config, write_pref_data


def test_sft_on_two_nodes_matches_one_process(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_chat_data(tmp_path / "d.jsonl", n=32)
    cfg = write_config(
        tmp_path, tiny_llama, data, train={"max_steps": 3, "eval_every": 3}, optim={"lr": 1e-2}
    )
    one = train_subprocess(cfg, "train.micro_batch_size=4", "train.run_name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    nodes = train_two_nodes(cfg, "train.micro_batch_size=2", "train.run_name=nodes")
    for node in nodes:
        assert node.returncode == 0, node.stderr[-3000:]
    runs = tmp_path / "runs"
    a, b = step_losses(runs / "one"), step_losses(runs / "nodes")
    assert len(a) == len(b) == 3
    for la, lb in zip(a, b, strict=True):
        assert abs(la - lb) < 1e-4
    wa = load_file(str(runs / "one/final/adapter_model.safetensors"))
    wb = load_file(str(runs / "nodes/final/adapter_model.safetensors"))
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4), key
    env = (runs / "nodes" / "env.json").read_text()
    assert '"world_size": 2' in env


def test_dpo_on_two_nodes_matches_one_process(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_pref_data(tmp_path / "p.jsonl", n=16)  # 12 train, 4 held-out pairs
    cfg = write_dpo_config(tmp_path, tiny_llama, data, train={"max_steps": 3, "eval_every": 3})
    one = train_subprocess(cfg, "train.micro_batch_size=4", "train.run_name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    nodes = train_two_nodes(cfg, "train.micro_batch_size=2", "train.run_name=nodes")
    for node in nodes:
        assert node.returncode == 0, node.stderr[-3000:]
    runs = tmp_path / "runs"
    for split, keys in (("train", ("loss", "grad_norm", "margin")), ("val", ("loss", "margin"))):
        a, b = metrics(runs / "one", split), metrics(runs / "nodes", split)
        assert len(a) == len(b) == (3 if split == "train" else 2)  # val: steps 0 and 3
        for ma, mb in zip(a, b, strict=True):
            for key in keys:
                assert abs(ma[key] - mb[key]) < 1e-4, (split, ma["step"], key)
    assert [m["pairs"] for m in metrics(runs / "nodes", "train")] == [4.0] * 3
    wa = load_file(str(runs / "one/final/adapter_model.safetensors"))
    wb = load_file(str(runs / "nodes/final/adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4, rtol=0), key
    env = (runs / "nodes" / "env.json").read_text()
    assert '"world_size": 2' in env
