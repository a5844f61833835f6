"""The run lifecycle every method uses: start, step tail, evaluation, checkpoints, resume, save.

A method file holds its algorithm; everything a run does around it happens here, once:

* :meth:`Run.start` joins the process group ``torchrun`` describes (if any), picks each rank's
  device and precision, and makes the run directory on rank 0 (or, with ``train.resume``, checks
  that the directory holds a checkpoint, that the config differs from the saved one only in
  ``train.max_steps`` / ``train.epochs`` / ``train.resume``, and that the data files still hash
  as ``env.json`` recorded them, unless ``train.allow_data_change``);
* :meth:`Run.announce` writes ``config.yaml`` and ``env.json`` and prints the banner;
* :meth:`Run.optimizer_step` is the tail of every optimizer step: clip the gradient norm, step,
  schedule, zero;
* :meth:`Run.evaluated` records a held-out metric, copies the best weights to ``best/`` and
  says when early stopping triggers;
* :meth:`Run.checkpoint` writes ``checkpoints/step-N/`` atomically with every piece of state:
  trainable weights (or FSDP shards), optimizer, scheduler, every rank's RNG states, the
  :class:`RunState` (step, best metric, the method's own state such as PPO's KL coefficient) and
  any extra modules (PPO's value head); :meth:`Run.restore` puts all of it back;
* :meth:`Run.export` / :meth:`Run.save_final` write a directory that loads with plain
  transformers / peft, atomically.

Every rank calls every method here (the collectives need them all); only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from tunesmith.config import BaseRunConfig, dump_config
from tunesmith.data.dataset import step_batches, write_jsonl
from tunesmith.data.records import NoUsableDataError
from tunesmith.engine import checkpoint as ckpt
from tunesmith.engine import lineage
from tunesmith.engine.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    full_state_dict,
    gather_objects,
    init_distributed,
    is_fsdp,
    load_sharded,
    rank_device,
    save_sharded,
)
from tunesmith.engine.metrics_log import MetricsLog, read_metrics, rewrite_metrics
from tunesmith.engine.optim import build_optimizer, build_scheduler, optimizer_step
from tunesmith.engine.precision import resolve_precision
from tunesmith.engine.rundir import new_run_dir, write_run_files
from tunesmith.engine.tracking import open_metrics_log
from tunesmith.errors import UserError
from tunesmith.models.load import pick_device, resolve_model

CRASH_ENV = "TUNESMITH_CRASH_AFTER_STEP"  # tests: SIGKILL the process right after this step
# What a resumed run may change: the length of the run, and the flag that asks for the resume.
RESUMABLE_CHANGES = frozenset(
    {"train.max_steps", "train.epochs", "train.resume", "train.allow_data_change"}
)
# Keys of announce()'s ``extra`` naming another model a run learns from (distill's teacher):
# lineage records its files and its own node as a parent, beside the base model.
LINEAGE_MODEL_ROLES = ("teacher",)


class ResumeError(UserError):
    """``train.resume`` on a run that cannot be continued exactly."""


class Pruned(Exception):
    """Raised by :meth:`Run.evaluated` when the evaluation hook (a sweep's pruner) stops the run;
    the run dir holds a ``PRUNED`` marker, the metrics log is closed, the process group left."""


EvalHook = Callable[[int, float, bool], bool]
"""``hook(step, value, higher_is_better) -> prune?``, called on rank 0 after every evaluation."""
EVAL_HOOK: list[EvalHook] = []  # set by tunesmith.sweep for the runs it starts in this process


@dataclass
class RunState:
    """Everything about progress a checkpoint restores besides weights, optimizer and RNG.

    ``best_metric`` is the best held-out value seen (lower is better unless the method says
    otherwise); ``method`` holds the method's own scalars (PPO's KL coefficient, GRPO's prompt
    cursor): plain JSON-able values or tensors."""

    step: int = 0
    tokens: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    method: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- resume checks


def flat_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists stay whole values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flat_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two resolved configs (sorted)."""
    a, b = flat_config(saved), flat_config(now)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def check_resumable(run_dir: Path, cfg: BaseRunConfig) -> None:
    """Refuse a resume that would not continue the exact run: no checkpoint to continue from,
    or a config that differs from the saved one in anything but the run's length."""
    found = ckpt.list_checkpoints(run_dir)
    if not found:
        raise ResumeError(
            f"train.resume=true but {run_dir} holds no checkpoint to continue from (the run "
            "stopped before its first train.save_every step); start it again without resume"
        )
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    now = yaml.safe_load(dump_config(cfg))
    changed = [k for k in config_changes(saved, now) if k not in RESUMABLE_CHANGES]
    if changed:
        a, b = flat_config(saved), flat_config(now)
        detail = "; ".join(
            f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in changed
        )
        raise ResumeError(
            f"train.resume=true but the config differs from the one {run_dir} was trained with "
            f"({detail}); only train.max_steps and train.epochs may change on resume"
        )
    if not getattr(cfg.train, "allow_data_change", False):
        check_data_unchanged(run_dir)


def data_changes(run_dir: Path) -> list[str]:
    """Each data file ``env.json`` hashed when the run started that now differs or is gone, as
    ``"<path>: changed (sha256 a -> b)"`` / ``"<path>: missing"`` (lineage's cached hashing)."""
    env = run_dir / "env.json"
    recorded = (
        json.loads(env.read_text(encoding="utf-8")).get("data_sha256") if env.is_file() else None
    )
    out = []
    for name, digest in sorted((recorded or {}).items()):
        path = Path(name)
        if not path.is_file():
            out.append(f"{name}: missing")
        elif (now := lineage.cached_sha256(path)) != digest:
            out.append(f"{name}: changed (sha256 {digest[:12]} -> {now[:12]})")
    return out


def check_data_unchanged(run_dir: Path) -> None:
    """Refuse a resume whose data files are not the bytes the run started on: the restored data
    position would index other records, so the run would not continue its own trajectory."""
    changed = data_changes(run_dir)
    if changed:
        raise ResumeError(
            f"train.resume=true but the data of {run_dir} changed since it started: "
            + "; ".join(changed)
            + ". Restore the files, or resume anyway with --allow-data-change "
            "(train.allow_data_change=true)"
        )


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """One training run: its config, processes, device, directory, progress and metrics log."""

    cfg: BaseRunConfig
    dist: DistInfo
    device: torch.device
    precision: str
    run_dir: Path
    state: RunState = field(default_factory=RunState)
    log: MetricsLog | None = None
    eval_hook: EvalHook | None = field(default_factory=lambda: EVAL_HOOK[-1] if EVAL_HOOK else None)

    @classmethod
    def start(cls, cfg: BaseRunConfig) -> Run:
        """Join the process group, pick the device, make (or check, on resume) the run dir."""
        info = init_distributed(cfg.train.device)
        device = pick_device(rank_device(info, cfg.train.device))
        run_dir = None
        if info.is_main:
            run_dir = new_run_dir(cfg)
            if cfg.train.resume:
                check_resumable(run_dir, cfg)
        run_dir = broadcast_object(run_dir, info)
        return cls(cfg, info, device, resolve_precision(cfg.train.precision, device), run_dir)

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Setup that may be refused (bad data, pre-flight): a fresh run dir that is still empty
        when it fails is removed, so a refused start leaves nothing behind, except when every
        record was rejected: then the rejects are written to ``rejects.jsonl`` (on resume,
        ``rejects.failed.jsonl``) beside a ``FAILED`` marker, and the error names that file."""
        try:
            yield
        except NoUsableDataError as err:
            if not self.dist.is_main:
                raise
            raise err.with_rejects_path(str(self._keep_rejects(err))) from err
        except BaseException:
            fresh = not self.cfg.train.resume and self.dist.is_main
            if fresh and self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()
            raise

    def _keep_rejects(self, err: NoUsableDataError) -> Path:
        """Write the rejects of a start refused for its data, and mark the run dir failed."""
        name = "rejects.failed.jsonl" if self.cfg.train.resume else "rejects.jsonl"
        path = self.run_dir / name
        write_jsonl(path, err.rejects)
        (self.run_dir / "FAILED").write_text(f"{err}\n", encoding="utf-8")
        return path

    def announce(self, data_files: list[str], extra: dict[str, Any], banner: str) -> None:
        """``config.yaml`` and ``env.json`` (rank 0), the banner, and the metrics log."""
        if self.dist.is_main:
            write_run_files(
                self.run_dir, self.cfg, data_files, {**extra, "world_size": self.dist.world}
            )
            base = extra.get("base_model") or _model_dir(self.cfg)
            config_text = (self.run_dir / "config.yaml").read_text(encoding="utf-8")
            others = {role: extra[role] for role in LINEAGE_MODEL_ROLES if extra.get(role)}
            lineage.record_run(self.run_dir, config_text, data_files, base, others)
            print(f"[tunesmith] run dir {self.run_dir}\n[tunesmith] {banner}", flush=True)
        barrier(self.dist)

    def open_log(self) -> MetricsLog:
        """``metrics.jsonl`` (+ the configured tracking backends); ranks > 0 log nothing."""
        self.log = open_metrics_log(self.run_dir, self.cfg, self.dist.is_main)
        return self.log

    def write(self, record: dict[str, Any]) -> None:
        assert self.log is not None, "open_log() first"
        self.log.write(record)

    # ------------------------------------------------------------------------- the loop's parts

    def optimizer(
        self,
        model: Any,
        total_steps: int,
        step_module: Any = None,
        modules: dict[str, torch.nn.Module] | None = None,
    ) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW over ``model``'s trainable parameters and its schedule over ``total_steps``
        optimizer steps; with ``train.resume`` both, the weights, the RNGs and :attr:`state` are
        restored from the latest checkpoint (:meth:`restore`)."""
        optimizer = build_optimizer(model, self.cfg.optim)
        scheduler = build_scheduler(optimizer, self.cfg.optim, total_steps)
        if self.cfg.train.resume:
            self.restore(model, optimizer, scheduler, step_module, modules)
        return optimizer, scheduler

    def batches(self, n_items: int) -> Iterator[list[list[int]]]:
        """Item indices of every step from the current one on: ``grad_accum`` rounds of
        ``micro_batch_size x world`` items (each rank takes its share with ``shard``), reshuffled
        every epoch with ``train.seed``: the data position is the step, so a resume continues it."""
        t = self.cfg.train
        per_round = getattr(t, "micro_batch_size", 1) * self.dist.world
        accum = getattr(t, "grad_accum", 1)
        return step_batches(n_items, t.seed, per_round, accum, start_step=self.state.step)

    def progress(self, total: int, desc: str, unit: str = "step") -> Any:
        """The progress bar (rate, ETA; the loop adds loss) from the current step, rank 0 only."""
        return tqdm(
            total=total,
            initial=self.state.step,
            desc=desc,
            unit=unit,
            dynamic_ncols=True,
            disable=not self.dist.is_main,
        )

    # ------------------------------------------------------------------------- the step tail

    def optimizer_step(
        self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> dict[str, float]:
        """Clip the gradient norm to ``optim.max_grad_norm``, step, schedule, zero the grads.
        Returns the pre-clip norm and the learning rate the step used."""
        return optimizer_step(params, optimizer, scheduler, self.cfg.optim.max_grad_norm)

    def crash_point(self) -> None:
        """Tests: SIGKILL this process right after step ``$TUNESMITH_CRASH_AFTER_STEP``."""
        crash_after = int(os.environ.get(CRASH_ENV, "0"))
        if crash_after and self.state.step == crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------------- evaluation

    def evaluated(
        self, value: float | None, save_best: Callable[[Path], None], higher_is_better: bool = False
    ) -> bool:
        """Record a held-out metric: a new best is saved to ``best/`` (``save_best(path)``, called
        on every rank); returns True when ``train.early_stopping_patience`` evaluations in a row
        brought no improvement."""
        s = self.state
        if value is None or math.isnan(value):
            return False
        better = s.best_metric is None or (
            value > s.best_metric if higher_is_better else value < s.best_metric
        )
        if better:
            s.best_metric, s.best_step, s.evals_without_improvement = value, s.step, 0
            save_best(self.run_dir / "best")
        else:
            s.evals_without_improvement += 1
        if self.eval_hook is not None:
            self._maybe_prune(value, higher_is_better)
        patience = getattr(self.cfg.train, "early_stopping_patience", None)
        return patience is not None and s.evals_without_improvement >= patience

    def _maybe_prune(self, value: float, higher_is_better: bool) -> None:
        """Ask the evaluation hook (rank 0; every rank follows) whether to stop here; if so,
        mark the run dir ``PRUNED``, close the run and raise :class:`Pruned`."""
        assert self.eval_hook is not None
        prune = self.eval_hook(self.state.step, value, higher_is_better) if self.dist.is_main else 0
        if not broadcast_object(prune, self.dist):
            return
        message = f"pruned at step {self.state.step} (held-out value {value:.6g})"
        if self.dist.is_main:
            (self.run_dir / "PRUNED").write_text(message + "\n", encoding="utf-8")
        self.finish()
        raise Pruned(f"{self.run_dir}: {message}")

    # ------------------------------------------------------------------------- saving

    def export(self, out: Path, write: Callable[[Path], None]) -> Path:
        """Write ``out`` atomically on rank 0: ``write(tmp)`` fills a temporary directory beside
        it, the resolved config is added, and the directory is renamed into place."""
        if self.dist.is_main:
            tmp = ckpt.atomic_dir(out)
            try:
                write(tmp)
                shutil.copy(self.run_dir / "config.yaml", tmp / "tunesmith_config.yaml")
                lineage.record_export(tmp, out, self.run_dir)
                ckpt.commit_dir(tmp, out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        barrier(self.dist)
        return out

    def export_model(
        self,
        out: Path,
        model: Any,
        tokenizer: Any = None,
        step_module: Any = None,
        extra: Callable[[Path], None] | None = None,
    ) -> Path:
        """A directory that loads with plain transformers / peft (tokenizer included); under FSDP
        every rank takes part in gathering the weights."""
        weights = full_state_dict(step_module) if step_module is not None else None

        def write(tmp: Path) -> None:
            ckpt.export_model(model, tmp, tokenizer, state_dict=weights)
            if extra is not None:
                extra(tmp)

        return self.export(out, write)

    def checkpoint(
        self,
        model: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        step_module: Any = None,
        modules: dict[str, torch.nn.Module] | None = None,
    ) -> None:
        """``checkpoints/step-N`` atomically, every rank's RNG included; FSDP: every rank adds
        its shard of weights and optimizer state under ``sharded/``. ``modules`` are extra
        trained modules (a value head) saved as ``<name>.safetensors``."""
        info = self.dist
        fsdp = step_module is not None and is_fsdp(step_module)
        rngs = gather_objects(ckpt.rng_state(), info)
        weights = full_state_dict(step_module) if step_module is not None else None
        final = self.run_dir / "checkpoints" / f"step-{self.state.step}"
        staging = broadcast_object(ckpt.atomic_dir(final) if info.is_main else None, info)
        if fsdp:
            save_sharded(step_module, optimizer, staging / "sharded")
        barrier(info)
        if info.is_main:
            for name, module in (modules or {}).items():
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                    str(staging / f"{name}.safetensors"),
                )
            ckpt.save_checkpoint(
                self.run_dir,
                self.state.step,
                model,
                None if fsdp else optimizer,
                scheduler,
                asdict(self.state),
                self.cfg.train.keep_last,
                rng=rngs,
                state_dict=weights,
                staging=staging,
            )
        barrier(info)

    def restore(
        self,
        model: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        step_module: Any = None,
        modules: dict[str, torch.nn.Module] | None = None,
    ) -> RunState:
        """Put the latest checkpoint back (weights, optimizer, scheduler, this rank's RNG, the
        run state, extra modules) and drop what the interrupted run logged after it."""
        step, path = ckpt.list_checkpoints(self.run_dir)[-1]
        saved = ckpt.load_state(path)
        if step_module is not None and is_fsdp(step_module):
            load_sharded(step_module, optimizer, path / "sharded")
        else:
            ckpt.load_trainable(model, path)
            optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        for name, module in (modules or {}).items():
            module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
        rngs = saved["rng"]
        if len(rngs) != self.dist.world:
            raise ResumeError(
                f"{path} was written by {len(rngs)} process(es); resume it with as many"
            )
        ckpt.set_rng_state(rngs[self.dist.rank])
        self.state = RunState(**saved["train"])
        metrics = self.run_dir / "metrics.jsonl"
        if self.dist.is_main and metrics.is_file():
            kept = [r for r in read_metrics(metrics) if r.get("step", 0) <= step]
            rewrite_metrics(metrics, kept)
        barrier(self.dist)
        if self.dist.is_main:
            print(f"[tunesmith] resumed from {path} (step {step})", flush=True)
        return self.state

    def finish(self) -> None:
        """Close the metrics log and wait for every rank. The process group is left by
        :func:`tunesmith.engine.distributed.leave` once the method has returned: destroying it
        here, while the method's DDP module still holds it, can hang gloo's destructor when the
        module is freed afterwards."""
        if self.log is not None:
            self.log.close()
        barrier(self.dist)


def _model_dir(cfg: BaseRunConfig) -> Path | None:
    """The base model directory a config names (aliases and GGUF files resolve to their cached
    conversion, which the method has already made), for lineage."""
    name = getattr(getattr(cfg, "model", None), "name_or_path", None)
    if not isinstance(name, str):
        return None
    if Path(name).expanduser().is_dir():  # a model dir, or a run dir (lineage reads its final/)
        return Path(name).expanduser()
    try:
        return resolve_model(name)
    except (ValueError, OSError):  # ModelError: a name that is not a local model
        return None


class OnRun:
    """Base of a method's ``Setup`` dataclass (which has a ``run: Run`` field): the run's
    directory, device, precision and processes as attributes of the setup."""

    run: Run

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def precision(self) -> str:
        return self.run.precision

    @property
    def dist(self) -> DistInfo:
        return self.run.dist
