"""``plan``: a memory estimate, the cheapest fitting configuration, and whether to fine-tune."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tunesmith.errors import UserError


@dataclass
class PlanResult:
    """What ``plan`` found: data facts, the estimate for the setup asked for, the cheapest
    configuration that fits ``device_gib`` (None: nothing fits), and the advice."""

    data: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    advice: dict[str, Any] | None = None
    text: str = field(default="", repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The parts computed (``best`` is kept, as None, when nothing fits)."""
        out = {"data": self.data} if self.data is not None else {}
        if self.estimate is not None:
            out |= {"estimate": self.estimate, "best": self.best}
        return out | ({"advice": self.advice} if self.advice is not None else {})


@dataclass
class PlanSetup:
    """The training setup to estimate (the ``tunesmith plan`` options of the same names)."""

    method: str = "lora"
    checkpointing: bool = False
    seq_len: int | None = None
    micro_batch: int = 1
    grad_accum: int = 1
    optimizer: str = "adamw"
    optim_impl: str = "auto"
    precision: str = "bf16"
    lora_rank: int = 16
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    devices: int = 1
    device_gib: float = 24.0
    attention: str = "sdpa"
    cpu: bool = False


@dataclass
class AdviceFacts:
    """What the advisor is told beyond the data (the ``--advise`` options)."""

    examples: int | None = None
    knowledge_changes_often: bool = False
    format_only: bool = False
    eval_set: bool | None = None
    low_latency: bool = False
    low_cost: bool = False


def _targets(spec: str) -> tuple[str, ...]:
    from tunesmith.plan.memory import LORA_PRESETS

    if spec in LORA_PRESETS:
        return LORA_PRESETS[spec]
    return tuple(t.strip() for t in spec.split(",") if t.strip())


def _train_setup(s: PlanSetup, seq_len: int) -> Any:
    from tunesmith.plan.memory import TrainSetup

    return TrainSetup(
        method=s.method, checkpointing=s.checkpointing, seq_len=seq_len,
        micro_batch=s.micro_batch, optimizer=s.optimizer, optimizer_impl=s.optim_impl,
        precision=s.precision, lora_rank=s.lora_rank, lora_dropout=s.lora_dropout,
        lora_targets=_targets(s.lora_targets), devices=s.devices, attention=s.attention,
        device_type="cpu" if s.cpu else "cuda",
    )  # fmt: skip


def _data_facts(model: str | None, data: str) -> Any:
    from tunesmith.plan.datafacts import data_facts
    from tunesmith.plan.shapes import NAMED_SHAPES

    tokenizer = None
    if model and model.upper() not in set(NAMED_SHAPES):
        from tunesmith.models.load import load_tokenizer
        from tunesmith.plan.shapes import _model_dir

        tokenizer = load_tokenizer(_model_dir(model))
    return data_facts(data, tokenizer)


def _advice(given: AdviceFacts, facts: Any) -> Any:
    from tunesmith.plan.advisor import Facts, advise

    examples = given.examples if given.examples is not None else getattr(facts, "examples", None)
    return advise(
        Facts(
            examples=examples,
            knowledge_changes_often=given.knowledge_changes_often,
            format_only=given.format_only or bool(getattr(facts, "format_only", False)),
            has_eval_set=given.eval_set,
            low_latency=given.low_latency,
            low_cost=given.low_cost,
            duplicate_fraction=getattr(facts, "duplicate_fraction", None),
        )
    )


def plan(
    model: str | None = None,
    *,
    data: str | None = None,
    advise: bool = False,
    setup: PlanSetup | None = None,
    facts: AdviceFacts | None = None,
) -> PlanResult:
    """Plan a fine-tune of ``model`` (a model dir, run dir, alias, Hugging Face id or a size
    like ``7B``): memory estimate and best fit; ``data`` and ``advise`` add the advisor."""
    from tunesmith.plan import render
    from tunesmith.plan.memory import estimate
    from tunesmith.plan.search import best_fit
    from tunesmith.plan.shapes import resolve_shape

    if not (model or advise or data):
        raise UserError("tunesmith plan: give a model (or a size like 7B), --advise or --data")
    s = setup or PlanSetup()
    result = PlanResult()
    text: list[str] = []
    found = _data_facts(model, data) if data else None
    if found is not None:
        result.data = asdict(found) | {"seq_len": found.seq_len}
        text.append(render.render_data(found))
    if model:
        shape = resolve_shape(model)
        train_setup = _train_setup(s, s.seq_len or (found.seq_len if found else 512))
        est = estimate(shape, train_setup)
        best = best_fit(shape, train_setup, s.device_gib, s.grad_accum)
        result.estimate, result.best = _estimate_json(est, s.device_gib), _best_json(best)
        text += [render.render_estimate(est, s.device_gib), render.render_best(best, s.device_gib)]
    if advise or data:
        advice = _advice(facts or AdviceFacts(), found)
        result.advice = asdict(advice)
        text.append(render.render_advice(advice))
    result.text = "\n\n".join(text)
    return result


def _estimate_json(e: Any, device_gib: float) -> dict[str, Any]:
    return {
        "setup": asdict(e.setup),
        "bytes": e.items,
        "peak": e.peak,
        "total": e.total,
        "fits": e.fits(device_gib),
        "total_params": e.total_params,
        "trainable_params": e.trainable_params,
        "notes": e.notes,
    }


def _best_json(c: Any) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "setup": asdict(c.estimate.setup),
        "total": c.estimate.total,
        "grad_accum": c.grad_accum,
        "relative_time": c.relative_time,
    }
