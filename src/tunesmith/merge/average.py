"""Average the weights of a run's last K checkpoints (uniform or exponential moving average).

Works on what ``checkpoints/step-N/`` holds, adapter or full model: every ``*.safetensors``
file is averaged tensor by tensor (in float32, cast back to the stored dtype). Keys and shapes
must match across checkpoints. There is no reference model to compare with, so verification
checks that the averaged weights load and give finite logits, and reports their distance from
the last checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tunesmith.engine.checkpoint import list_checkpoints
from tunesmith.engine.lineage import record_merge
from tunesmith.engine.rundir import saved_setting
from tunesmith.merge.common import MergeError, publish, staged
from tunesmith.merge.verify import verification_prompts

SKIP = {"state.pt"}  # optimizer/RNG state of the last step: meaningless for an average


def average_weights(k: int, ema: float | None = None) -> list[float]:
    """Weights of the last ``k`` checkpoints, oldest first, summing to 1.

    Uniform: 1/k each. EMA with decay d (ema_1 = x_1, ema_i = d ema_{i-1} + (1-d) x_i):
    w_1 = d^(k-1), w_i = (1-d) d^(k-i) for i >= 2.
    """
    if k < 1:
        raise MergeError(f"--last must be at least 1, got {k}")
    if ema is None:
        return [1.0 / k] * k
    if not 0.0 <= ema < 1.0:
        raise MergeError(f"--ema decay must be in [0, 1), got {ema}")
    return [ema ** (k - 1)] + [(1 - ema) * ema ** (k - i) for i in range(2, k + 1)]


def _load(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(file), framework="pt") as fh:
        keys = list(fh.keys())  # a safe_open handle is not iterable like a dict
        return {k: fh.get_tensor(k) for k in keys}, dict(fh.metadata() or {})


def _check_same(
    first: Path, tensors0: dict[str, torch.Tensor], other: Path, tensors: dict[str, torch.Tensor]
) -> None:
    missing = sorted(set(tensors0) ^ set(tensors))
    if missing:
        raise MergeError(
            f"cannot average {first} and {other}: tensor {missing[0]} is in only one of them"
        )
    for key, value in tensors0.items():
        if value.shape != tensors[key].shape:
            raise MergeError(
                f"cannot average {first} and {other}: tensor {key} has shape "
                f"{tuple(value.shape)} in the first and {tuple(tensors[key].shape)} in the second"
            )


def average_files(files: list[Path], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted average of the tensors in ``files`` (same keys and shapes required)."""
    first, _ = _load(files[0])
    acc = {k: v.float() * weights[0] for k, v in first.items()}
    for file, w in zip(files[1:], weights[1:], strict=True):
        tensors, _ = _load(file)
        _check_same(files[0], first, file, tensors)
        for key, value in tensors.items():
            acc[key] += value.float() * w
    return {k: acc[k].to(first[k].dtype).contiguous() for k in acc}


def _distance(avg: dict[str, torch.Tensor], last: dict[str, torch.Tensor]) -> dict[str, float]:
    diff = sum(float((avg[k].float() - last[k].float()).pow(2).sum()) for k in avg)
    norm = sum(float(last[k].float().pow(2).sum()) for k in avg)
    max_abs = max(float((avg[k].float() - last[k].float()).abs().max()) for k in avg)
    return {
        "l2": diff**0.5,
        "relative_l2": (diff / norm) ** 0.5 if norm else 0.0,
        "max_abs": max_abs,
    }


def _pick(run: Path, last: int) -> list[Path]:
    ckpts = [p for _, p in list_checkpoints(run)]
    if not ckpts:
        raise MergeError(f"{run}: no checkpoints/step-N directories to average")
    if len(ckpts) < last:
        raise MergeError(
            f"{run}: --last {last} but only {len(ckpts)} checkpoints are kept "
            f"({', '.join(p.name for p in ckpts)}); raise train.keep_last to keep more"
        )
    return ckpts[-last:]


def _write_average(ckpts: list[Path], weights: list[float], tmp: Path) -> dict[str, float]:
    """Copy the last checkpoint's small files into ``tmp`` and write the averaged tensors."""
    last = ckpts[-1]
    names = sorted(f.name for f in last.glob("*.safetensors"))
    for ckpt in ckpts[:-1]:
        theirs = sorted(f.name for f in ckpt.glob("*.safetensors"))
        if theirs != names:
            raise MergeError(f"cannot average {ckpt} ({theirs}) and {last} ({names}): files differ")
    for item in last.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and item.name not in SKIP:
            shutil.copy(item, tmp / item.name)
    if (tmp / "config.yaml").is_file():  # so the base model resolves like a final/ export
        shutil.copy(tmp / "config.yaml", tmp / "tunesmith_config.yaml")
    stats: list[dict[str, float]] = []
    for name in names:
        avg = average_files([c / name for c in ckpts], weights)
        last_tensors, meta = _load(last / name)
        save_file(avg, str(tmp / name), metadata=meta or {"format": "pt"})
        stats.append(_distance(avg, last_tensors))
    l2 = sum(s["l2"] ** 2 for s in stats) ** 0.5
    return {
        "l2": l2,
        "relative_l2": max(s["relative_l2"] for s in stats),
        "max_abs": max(s["max_abs"] for s in stats),
    }


def _copy_tokenizer(run: Path, tmp: Path) -> None:
    """The run's exported tokenizer (chat template included), else its base model's."""
    from transformers import AutoTokenizer

    sources = [run / "final", run / "best"]
    name = saved_setting(run, "model.name_or_path")
    if name is not None:  # no export yet: the base model's tokenizer
        from tunesmith.models.load import resolve_model

        sources.append(resolve_model(str(name)))
    for source in sources:
        if (source / "tokenizer_config.json").is_file():
            AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(tmp))
            return


@torch.no_grad()
def _check_loads(tmp: Path, run: Path) -> dict[str, Any]:
    from tunesmith.models.load import load_for_inference

    model, tokenizer = load_for_inference(str(tmp), device="cpu", dtype="float32")
    prompts = verification_prompts(tokenizer, run, n=2)
    finite = all(
        bool(torch.isfinite(model(input_ids=torch.tensor([p])).logits).all()) for p in prompts
    )
    return {"loads": True, "finite_logits": finite}


def average_run(
    run: str | Path, last: int, ema: float | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Average the run's last ``last`` checkpoints into ``RUN/averaged`` (or ``out``)."""
    run = Path(run)
    ckpts = _pick(run, last)
    weights = average_weights(len(ckpts), ema)
    target = Path(out) if out is not None else run / "averaged"
    tmp = staged(target)
    try:
        distance = _write_average(ckpts, weights, tmp)
        _copy_tokenizer(run, tmp)
        check = _check_loads(tmp, run)
        record_merge(tmp, target, "average", {"checkpoint": list(ckpts)}, run=run)
        report = {
            "kind": "average",
            "output": str(target),
            "checkpoints": [str(c) for c in ckpts],
            "weights": weights,
            "mode": "uniform" if ema is None else f"ema({ema})",
            "distance_from_last": distance,
            **check,
            "ok": check["finite_logits"],
            "reason": "" if check["finite_logits"] else "non-finite logits",
        }
        publish(tmp, target, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
