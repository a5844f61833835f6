"""What a training loop calls to measure, guard against and mitigate forgetting.

    fg = Forgetting.build(s)         # probe data, nothing else (inactive when unconfigured)
    fg.before(s)                     # on the base weights: probe, target val loss, EWC/L2 anchors
    ... restore a checkpoint ...; fg.resumed(s, step)
    train_step(..., regularize=fg.regularize)      # adds the EWC/L2 gradient each step
    if fg.due(step, total) and fg.check(s, step, log): stop   # the budget guard
    fg.checkpointed(s, step)         # the probe result beside the checkpoint
    fg.roll_back(s)                  # on_exceed=rollback: latest weights within budget
    fg.finish(s, step, log, val)     # probe the final weights; forgetting.json

Every rank calls every method (the probe runs the same batches on each, through the training
module, so FSDP/DDP collectives match); rank 0 writes files and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.templates import Encoded
from tunesmith.engine.distributed import all_reduce_sum, broadcast_object, is_fsdp
from tunesmith.engine.forward import forward_logits
from tunesmith.engine.metrics_log import MetricsLog
from tunesmith.engine.trainable import due
from tunesmith.eval.perplexity import evaluate_loss
from tunesmith.forgetting.ewc import Regularizer, estimate_fisher, trainable
from tunesmith.forgetting.guard import deltas, flipped, over_budget
from tunesmith.forgetting.probe import TaskItem, load_tasks, task_correct, text_chunks

REPORT = "forgetting.json"


def _logits_fn(s: Any) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Logits of the model being trained; FSDP gathers the root's weights around the call (the
    decoder layers gather their own in their forward hooks)."""
    if not is_fsdp(s.step_module):
        return lambda batch: forward_logits(s.model, batch)

    def call(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        s.step_module.unshard()
        try:
            return forward_logits(s.model, batch)
        finally:
            s.step_module.reshard()

    return call


@dataclass
class Forgetting:
    cfg: Any  # ForgettingSection | None
    reg_cfg: Any  # RegularizationSection
    chunks: list[Encoded] = field(default_factory=list)  # probe text
    fisher_chunks: list[Encoded] = field(default_factory=list)
    tasks: list[TaskItem] = field(default_factory=list)
    regularizer: Regularizer | None = None
    base: dict[str, Any] | None = None  # the probe on the base weights
    target_before: float | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    last: tuple[int, dict[str, Any]] | None = None  # (step, probe) of the latest probe
    good: tuple[int, list[torch.Tensor], dict[str, Any]] | None = None  # latest within budget
    tripped: dict[str, Any] | None = None
    fresh: bool = True  # before() measured now (not read back on resume)

    # ------------------------------------------------------------------------- set up

    @classmethod
    def build(cls, s: Any) -> Forgetting:
        cfg, reg = s.cfg.forgetting, s.cfg.regularization
        fg = cls(cfg, reg)
        if cfg is not None and cfg.text:
            chunks = text_chunks(cfg.text, s.tokenizer, cfg.chunk_tokens)
            fg.chunks = chunks[: cfg.max_chunks]
            fg.fisher_chunks = chunks[len(fg.chunks) :] or chunks  # disjoint when possible
        if cfg is not None and cfg.tasks:
            fg.tasks = load_tasks(cfg.tasks, s.tokenizer, s.cfg.data.template)
        if reg.type == "ewc" and reg.fisher_data:
            size = cfg.chunk_tokens if cfg is not None else 256
            fg.fisher_chunks = text_chunks(reg.fisher_data, s.tokenizer, size)
        return fg

    @property
    def active(self) -> bool:
        return self.cfg is not None

    def _rollback_on(self) -> bool:
        return self.active and self.cfg.budget is not None and self.cfg.on_exceed == "rollback"

    def before(self, s: Any) -> None:
        """Anchors (and Fisher) on the starting weights, then the base probe and target loss."""
        if self.reg_cfg.type != "none":
            self._anchor(s)
        if not self.active:
            return
        saved = None
        if s.cfg.train.resume and s.dist.is_main and (s.run_dir / REPORT).is_file():
            saved = json.loads((s.run_dir / REPORT).read_text())
        saved = broadcast_object(saved, s.dist)
        if saved is not None:
            self.base, self.target_before, self.fresh = saved["before"], saved["target_val"], False
        else:
            self.base, self.target_before = self.probe(s), _target_loss(s)
            self._write(s, {"before": self.base, "target_val": self.target_before})
        self.last = (0, self.base)
        if self._rollback_on():
            self.good = (0, _snapshot(s.model), self.base)

    def _anchor(self, s: Any) -> None:
        fisher = None
        if self.reg_cfg.type == "ewc":
            batch = self.cfg.batch_size if self.cfg is not None else 4
            was = s.model.training
            s.model.eval()  # no dropout: F does not depend on (or draw from) the RNG
            fisher = estimate_fisher(
                trainable(s.model),
                s.step_module,
                self.fisher_chunks,
                s.tokenizer.pad_token_id,
                s.device,
                self.reg_cfg.fisher_batches,
                batch,
            )
            s.model.train(was)
        sharded = is_fsdp(s.step_module)
        self.regularizer = Regularizer.start(s.model, self.reg_cfg.strength, fisher, sharded)

    def resumed(self, s: Any, step: int) -> None:
        """After a checkpoint is restored: checkpoints are only written within budget."""
        if self._rollback_on() and step > 0:
            self.good = (step, _snapshot(s.model), self.probe(s))

    # ------------------------------------------------------------------------- training

    def regularize(self, s: Any) -> float | None:
        """Add the EWC/L2 gradient; the penalty's value (None without regularization)."""
        if self.regularizer is None:
            return None
        value = self.regularizer.add_grad()
        return all_reduce_sum(value, s.dist, s.device) if self.regularizer.sharded else value

    def due(self, step: int, total: int, save_every: int | None) -> bool:
        if not self.active:
            return False
        guarded = self.cfg.budget is not None
        return due(step, self.cfg.every, total) or (guarded and due(step, save_every, total))

    @torch.no_grad()
    def probe(self, s: Any) -> dict[str, Any]:
        """The probe on the current weights (every rank runs the same batches)."""
        out: dict[str, Any] = {}
        if self.chunks:
            r = evaluate_loss(
                s.model,
                self.chunks,
                s.tokenizer.pad_token_id,
                s.device,
                s.precision,
                self.cfg.batch_size,
                loss_module=s.step_module,
            )
            out.update(text_loss=r["loss"], text_ppl=r["perplexity"], text_tokens=r["tokens"])
        if self.tasks:
            was = s.model.training
            s.model.eval()
            pad, size = s.tokenizer.pad_token_id, self.cfg.batch_size
            correct = task_correct(self.tasks, _logits_fn(s), pad, s.device, size)
            s.model.train(was)
            out.update(task_acc=sum(correct) / len(correct), task_correct=correct)
        return out

    def check(self, s: Any, step: int, log: MetricsLog) -> bool:
        """Probe now, log it; True when the budget is exceeded (the run must stop)."""
        now = self.probe(s)
        self.last = (step, now)
        delta = deltas(self.base or {}, now)
        reasons = over_budget(delta, self.cfg.budget)
        row = {"step": step, **_summary(now), **delta, "within_budget": not reasons}
        self.checks.append(row)
        log.write({"split": "forgetting", **row})
        if reasons:
            self.tripped = {"step": step, "reasons": reasons, "action": self.cfg.on_exceed}
            if s.dist.is_main:
                print(f"[tunesmith] forgetting budget exceeded at step {step}: {reasons}")
            return True
        if self._rollback_on():
            self.good = (step, _snapshot(s.model), now)
        return False

    def checkpointed(self, s: Any, step: int) -> None:
        """The probe of this step beside its checkpoint (rank 0)."""
        if not (self.active and s.dist.is_main and self.last and self.last[0] == step):
            return
        path = s.run_dir / "checkpoints" / f"step-{step}"
        if path.is_dir():
            row = next((c for c in self.checks if c["step"] == step), None)
            (path / REPORT).write_text(json.dumps({"probe": self.last[1], "check": row}))

    # ------------------------------------------------------------------------- the end

    def roll_back(self, s: Any) -> int | None:
        """on_exceed=rollback after a trip: put back the latest weights within budget."""
        if self.tripped is None or self.good is None or self.cfg.on_exceed != "rollback":
            return None
        step, weights, probe = self.good
        with torch.no_grad():
            for p, w in zip(trainable(s.model), weights, strict=True):
                p.copy_(w)
        self.tripped["rolled_back_to"] = step
        self.last = (step, probe)
        if s.dist.is_main:
            print(f"[tunesmith] rolled back to the weights of step {step} (within budget)")
        return step

    def finish(self, s: Any, step: int, log: MetricsLog, val_loss: float | None) -> None:
        """Probe the final weights (reusing the last probe when it saw them) and write
        ``forgetting.json``."""
        if not self.active:
            return
        rolled = self.tripped is not None and "rolled_back_to" in self.tripped
        after = self.last[1] if self.last and (self.last[0] == step or rolled) else self.probe(s)
        delta = deltas(self.base or {}, after)
        if not (self.last and self.last[0] == step) and not rolled:
            row = {"step": step, **_summary(after), **delta, "within_budget": None}
            log.write({"split": "forgetting", **row})
        if s.cfg.data.replay is not None:
            val_loss = _target_loss(s)  # the val split also holds replayed general text
        gain = None
        if self.target_before is not None and val_loss is not None:
            gain = self.target_before - val_loss
        prompts = [t.prompt for t in self.tasks]
        self._write(
            s,
            {
                "before": self.base,
                "after": after,
                "delta": delta,
                "flipped": flipped(self.base or {}, after, prompts),
                "target_gain": gain,
                "target_val": self.target_before,
                "target_val_after": val_loss,
                "checks": self.checks,
                "guard": self.tripped,
            },
        )

    def _write(self, s: Any, report: dict[str, Any]) -> None:
        if s.dist.is_main:
            (s.run_dir / REPORT).write_text(json.dumps(report, indent=1))


def _summary(probe: dict[str, Any]) -> dict[str, Any]:
    return {
        "probe_loss": probe.get("text_loss"),
        "probe_ppl": probe.get("text_ppl"),
        "probe_acc": probe.get("task_acc"),
    }


def _snapshot(model: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainable(model)]


def _target_loss(s: Any) -> float | None:
    """Held-out loss on the target task: the validation split without replayed examples."""
    replay = s.cfg.data.replay.tag if s.cfg.data.replay is not None else None
    pairs = zip(s.data.val.examples, s.data.val.encoded, strict=True)
    encoded = [e for x, e in pairs if replay is None or x.meta.get("tag") != replay]
    if not encoded:
        return None
    return evaluate_loss(
        s.model,
        encoded,
        s.tokenizer.pad_token_id,
        s.device,
        s.precision,
        s.cfg.train.micro_batch_size,
        loss_module=s.step_module,
    )["loss"]


def read_report(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / REPORT).read_text())
