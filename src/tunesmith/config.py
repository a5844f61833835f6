"""Typed configuration: YAML + ``key.sub=value`` overrides, validated once at load.

Sections are small pydantic models composed per method (``method: sft`` picks :class:`SFTConfig`).
Unknown keys are errors that name the file, the line and the nearest valid key; the resolved
config (every default filled in) is written beside every checkpoint.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name_or_path: str = Field(
        "smollm2-135m-instruct",
        description="A local Hugging Face model directory, a .gguf file, or a known alias "
        "(`tunesmith models` lists them).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype when loading; auto = float32 on CPU, bfloat16 on CUDA."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    quantization: Literal["none", "nf4", "int8"] = Field(
        "none",
        description="Frozen base weights: none; nf4 = 4-bit NormalFloat with double-quantized "
        "scales (QLoRA, Dettmers et al. 2023); int8 = LLM.int8 (bitsandbytes, `pip install "
        "tunesmith[quant]`). Adapters still train in 16/32-bit.",
    )


Format = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text"]


class DatasetSpec(Section):
    """One dataset of a mixture."""

    path: str | list[str] = Field(..., description="File(s) of one schema.")
    format: Format | None = Field(None, description="Default: data.format.")
    split: str | None = Field(None, description="Default: data.split.")
    tag: str | None = Field(
        None,
        description="Task tag of every record (default: the record's own `tag`/`task` field, "
        "else the file name).",
    )
    weight: float | None = Field(
        None, gt=0, description="Examples per epoch = weight x dataset size (2 = upsample x2)."
    )
    count: int | None = Field(None, ge=1, description="Exactly this many examples per epoch.")

    @model_validator(mode="after")
    def _one_of(self) -> DatasetSpec:
        if self.weight is not None and self.count is not None:
            raise ValueError("give weight or count, not both")
        return self


class ReplaySection(Section):
    """General-domain data mixed into every epoch, the standard guard against forgetting."""

    path: str | list[str]
    fraction: float = Field(
        ..., gt=0.0, lt=1.0, description="Share of each epoch's examples drawn from replay."
    )
    format: Format | None = None
    tag: str = "replay"


class DataSection(Section):
    train: list[DatasetSpec] = Field(
        ...,
        description="Training file(s): jsonl, json, csv, parquet or a `datasets` directory "
        "saved with save_to_disk; or a list of datasets with weight/count/tag to mix. A plain "
        "path (or a list of paths) is read as datasets of their own with default settings.",
    )
    replay: ReplaySection | None = None
    task_temperature: float | None = Field(
        None,
        gt=0,
        description="Sample task tags with p ~ n_tag^(1/T): 1 = proportional, larger flattens.",
    )
    validation: str | list[str] | None = Field(
        None,
        description="Held-out file(s). When absent, `val_fraction` of train is held out "
        "with a fixed seed.",
    )
    format: Format = "auto"
    split: str = Field("train", description="Split to read from a saved DatasetDict directory.")
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = Field(
        "tokenizer", description="Chat template: the tokenizer's own, or a built-in by name."
    )
    max_length: int = Field(512, ge=8, description="Training length in tokens.")
    train_on: Literal["assistant", "all"] = Field(
        "assistant", description="Which tokens carry loss: assistant turns only, or all tokens."
    )
    truncation: Literal["truncate", "drop"] = Field(
        "truncate", description="Over-long examples: cut to max_length, or drop with a record."
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="Bad records: stop with an error, or skip each into rejects.jsonl."
    )
    packing: bool = Field(
        False,
        description="Pack several examples per row up to max_length (first-fit "
        "decreasing), each attending only to itself (block-diagonal causal mask).",
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Held out of each dataset when no validation is given."
    )
    max_val_examples: int | None = Field(None, ge=1)
    seed: int = 1234

    @field_validator("train", mode="before")
    @classmethod
    def _paths_to_specs(cls, value: Any) -> Any:
        entries = value if isinstance(value, list) else [value]
        return [{"path": e} if isinstance(e, str) else e for e in entries]

    @model_validator(mode="after")
    def _temperature_or_weights(self) -> DataSection:
        if self.task_temperature is not None and any(
            e.weight is not None or e.count is not None for e in self.train
        ):
            raise ValueError("task_temperature sets the mix itself: drop weight/count")
        return self


AdapterType = Literal["lora", "rslora", "dora", "prefix", "prompt", "ia3", "full"]
PROMPT_LEARNING: frozenset[str] = frozenset({"prefix", "prompt"})
LORA_FAMILY: frozenset[str] = frozenset({"lora", "rslora", "dora"})


class AdapterSection(Section):
    type: AdapterType = Field(
        "lora",
        description="What trains (peft): lora; rslora (LoRA scaled alpha/sqrt(r)); dora (LoRA "
        "with a learned magnitude); prefix (prefix tuning, `prefix:`); prompt (prompt tuning, "
        "`prompt:`); ia3 ((IA)3 scaling vectors, `ia3:`); full = train the weights.",
    )


class LoraSection(Section):
    r: int = Field(16, ge=1, description="LoRA rank (Hu et al. 2021).")
    alpha: float = Field(32.0, gt=0, description="LoRA scale numerator; update = alpha/r * B A.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Preset `attention` (q_proj, v_proj) or `all-linear`; a module name; a "
        "list of module names; or a regex matched against the full module name (re.fullmatch, "
        "as peft does).",
    )
    use_rslora: bool = Field(
        False, description="rsLoRA (Kalajdzievski 2023): scale alpha/sqrt(r) instead of alpha/r."
    )


class PrefixSection(Section):
    """Prefix tuning (Li & Liang 2021): trained key/value vectors prepended in every layer."""

    num_virtual_tokens: int = Field(20, ge=1, description="Prefix length per layer.")


class PromptSection(Section):
    """Prompt tuning (Lester et al. 2021): trained input embeddings prepended to every input."""

    num_virtual_tokens: int = Field(20, ge=1, description="Soft-prompt length.")
    init_text: str | None = Field(
        None, description="Initialise the soft prompt from this text's embeddings (else random)."
    )


class IA3Section(Section):
    """(IA)3 (Liu et al. 2022): learned vectors rescaling keys, values and feed-forward inputs."""

    target_modules: str | list[str] | None = Field(
        None, description="Modules to rescale; default: peft's choice for the architecture."
    )
    feedforward_modules: str | list[str] | None = Field(
        None,
        description="Those of target_modules whose input (not output) is scaled; must be a "
        "subset of target_modules. Default: peft's choice for the architecture.",
    )


class OptimSection(Section):
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Used when warmup_steps = 0.")
    max_grad_norm: float | None = Field(1.0, gt=0)
    implementation: Literal["auto", "fused", "foreach", "for-loop"] = Field(
        "auto",
        description="AdamW kernel. auto = fused (one kernel over all tensors; SmolLM2 full "
        "fine-tuning step x0.89 vs foreach, benchmarks/levers.py) unless the parameters are "
        "FSDP-sharded DTensors, which take foreach.",
    )


class TrainSection(Section):
    output_dir: str = "runs"
    run_name: str | None = Field(None, description="Default: <method>-<timestamp>.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; default from epochs.")
    epochs: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto = bf16 autocast on CUDA with bf16 support and on CPUs with native bf16 "
        "(AVX-512 BF16 / AMX), fp32 otherwise.",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each decoder layer's activations in the backward pass: less "
        "memory (SmolLM2 LoRA bf16: 7.4 -> 2.5 GiB), slower steps (~1.5x measured here).",
    )
    compile: bool = Field(
        False,
        description="torch.compile each decoder layer (regional compilation, dynamic shapes). "
        "Off by default: on CPU with packed rows it was x1.33 slower over 5 steps "
        "(recompiles for new shapes; benchmarks/levers.py).",
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes (torchrun): ddp replicates the model; fsdp (FSDP2) "
        "shards weights, gradients and optimizer state per decoder layer.",
    )
    seed: int = 42
    trainable_top_layers: int | None = Field(
        None,
        ge=1,
        description="Full fine-tuning only: freeze all but the top N decoder layers "
        "(and the final norm).",
    )
    eval_every: int | None = Field(None, ge=1, description="Steps between evaluations.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without a lower val loss."
    )
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    log_every: int = Field(1, ge=1)
    resume: bool = Field(False, description="Continue from the latest checkpoint of the run dir.")
    stop_after_step: int | None = Field(
        None, ge=1, description="Exit (as if interrupted) after this step; for crash tests."
    )


class TrackingSection(Section):
    """Where metrics go besides ``metrics.jsonl`` (always written)."""

    backends: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="tensorboard: event files in <run dir>/tensorboard; mlflow: a run in the "
        "tracking store `mlflow_uri`.",
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI; default: file store `file:<output_dir>/mlruns`."
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: the method.")


class BaseRunConfig(Section):
    method: str
    model: ModelSection = ModelSection()
    data: DataSection
    train: TrainSection = TrainSection()
    optim: OptimSection = OptimSection()
    tracking: TrackingSection = TrackingSection()


class ForgettingBudget(Section):
    """How much general ability a run may lose before the guard acts (see docs/forgetting.md)."""

    max_ppl_increase_pct: float | None = Field(
        None, ge=0, description="Largest allowed probe-text perplexity increase, in % of before."
    )
    max_acc_drop_points: float | None = Field(
        None, ge=0, description="Largest allowed drop of probe task accuracy, in % points."
    )


class ForgettingSection(Section):
    """A general-ability probe, measured before and after training (and every N steps)."""

    text: str | None = Field(
        None, description="Plain general-domain text; its perplexity is measured in chunks."
    )
    tasks: str | None = Field(
        None,
        description="JSONL of general questions: {prompt, answer} (greedy exact match) or "
        "{prompt, choices, answer} (highest-likelihood choice).",
    )
    chunk_tokens: int = Field(256, ge=8, description="Tokens per probe-text chunk.")
    max_chunks: int | None = Field(32, ge=1, description="Probe-text chunks used (from the top).")
    batch_size: int = Field(4, ge=1)
    every: int | None = Field(None, ge=1, description="Steps between probes during training.")
    budget: ForgettingBudget | None = None
    on_exceed: Literal["stop", "rollback"] = Field(
        "stop",
        description="Over budget: stop (final/ = the weights that exceeded it), or rollback "
        "(final/ = the latest probed weights within budget).",
    )

    @model_validator(mode="after")
    def _something_to_probe(self) -> ForgettingSection:
        if self.text is None and self.tasks is None:
            raise ValueError("give forgetting.text and/or forgetting.tasks")
        return self


class RegularizationSection(Section):
    """A pull back toward the starting weights (Kirkpatrick et al. 2017 for EWC)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, serialize_by_alias=True
    )

    type: Literal["none", "ewc", "l2"] = Field(
        "none",
        description="ewc: lambda * sum F_i (theta_i - theta0_i)^2 with a diagonal Fisher F from "
        "general text; l2: lambda * sum (theta_i - theta0_i)^2. Trainable parameters only.",
    )
    strength: float = Field(0.0, ge=0, alias="lambda", description="The penalty weight lambda.")
    fisher_batches: int = Field(8, ge=1, description="EWC: batches of general text for F.")
    fisher_data: str | None = Field(
        None, description="EWC: plain text for F (default: forgetting.text)."
    )


class AdapterRunConfig(BaseRunConfig):
    """A method that trains the base model in full or through a peft adapter (SFT, DPO, GRPO):
    the adapter sections and the checks that hold for all of them."""

    adapter: AdapterSection = AdapterSection()
    lora: LoraSection = LoraSection()
    prefix: PrefixSection = PrefixSection()
    prompt: PromptSection = PromptSection()
    ia3: IA3Section = IA3Section()

    @model_validator(mode="after")
    def _check_adapter(self) -> AdapterRunConfig:
        kind = self.adapter.type
        if self.train.trainable_top_layers is not None and kind != "full":
            raise ValueError("train.trainable_top_layers needs adapter.type=full")
        if self.model.quantization != "none" and kind not in LORA_FAMILY:
            raise ValueError(
                f"model.quantization={self.model.quantization} trains adapters on a frozen "
                f"quantized base: use adapter.type lora, rslora or dora (got {kind})"
            )
        return self


class SFTConfig(AdapterRunConfig):
    method: Literal["sft"] = "sft"
    forgetting: ForgettingSection | None = None
    regularization: RegularizationSection = RegularizationSection()

    @model_validator(mode="after")
    def _check_forgetting(self) -> SFTConfig:
        reg = self.regularization
        if (
            reg.type == "ewc"
            and reg.fisher_data is None
            and not (self.forgetting and self.forgetting.text)
        ):
            raise ValueError(
                "regularization.type=ewc needs regularization.fisher_data or "
                "forgetting.text (general text to estimate the Fisher on)"
            )
        return self

    @model_validator(mode="after")
    def _check_packing(self) -> SFTConfig:
        kind = self.adapter.type
        if self.data.packing and kind in PROMPT_LEARNING:
            raise ValueError(
                f"data.packing does not work with adapter.type={kind}: the virtual tokens sit "
                "in front of the whole row, so packed examples would share them; set "
                "data.packing=false"
            )
        return self


# method name -> "module:ConfigClass"; imported only when a config names the method, so each
# method's config class lives beside its training loop.
METHODS: dict[str, str] = {
    "sft": "tunesmith.config:SFTConfig",
    "dpo": "tunesmith.methods.dpo_config:DPOConfig",
    "reward": "tunesmith.methods.reward:RewardConfig",
    "ppo": "tunesmith.methods.ppo:PPOConfig",
    "grpo": "tunesmith.methods.grpo:GRPOConfig",
    "classify": "tunesmith.methods.classify_config:ClassifyConfig",
}


def method_config_class(method: str) -> type[BaseRunConfig]:
    """The config class registered for ``method`` (see :data:`METHODS`)."""
    module, _, name = METHODS[method].partition(":")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, BaseRunConfig)
    return cls


class ConfigError(ValueError):
    """A config problem, naming the file, the line and the field."""


# ----------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=3`` -> (["a", "b"], 3); the value is parsed as YAML so types come out right."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.sub=value")
    key, _, raw = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({e})") from None
    return path, value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``value`` at ``path`` (``["tasks", "0", "limit"]``): missing mappings are created, a
    numeric part indexes into an existing list (``tasks.0.limit`` changes the first task)."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(path[:depth])
                raise ConfigError(
                    f"override '{'.'.join(path)}': {where} is a list of {len(node)} item(s); "
                    f"'{part}' is not an index in it (use 0 to {len(node) - 1})"
                )
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
            continue
        if last:
            node[part] = value
            return
        child = node.get(part)
        if not isinstance(child, dict | list):
            child = {}
            node[part] = child
        node = child


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every key path of a YAML mapping document to its 1-based line."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                path = (*prefix, str(k.value))
                lines[path] = k.start_mark.line + 1
                walk(v, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                path = (*prefix, str(i))
                lines[path] = item.start_mark.line + 1
                walk(item, path)

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _section_class(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic class that owns the last element of ``loc``."""
    current: type[BaseModel] = cls
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections: same class
            continue
        field = current.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        current_ann = _model_in(ann)
        if current_ann is None:
            return None
        current = current_ann
    return current


def _model_in(ann: Any) -> type[BaseModel] | None:
    """The section class in an annotation: ``X``, ``list[X]`` or ``X | None``."""
    if get_origin(ann) is list:
        ann = get_args(ann)[0]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    models = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _nearest(key: str, options: list[str]) -> list[str]:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return close or [o for o in options if key.startswith(o) or o.startswith(key)][:1]


def _describe_error(
    err: dict[str, Any],
    cls: type[BaseModel],
    lines: dict[tuple[str, ...], int],
    source: str,
    overridden: dict[tuple[str, ...], str],
) -> str:
    loc = tuple(str(p) for p in err["loc"])
    dotted = ".".join(loc) or "(top level)"
    line = lines.get(loc)
    where = f"{source}:{line}" if line else source
    if loc in overridden:
        where = f"override '{overridden[loc]}'"
    if err["type"] == "extra_forbidden":
        owner = _section_class(cls, err["loc"])
        options = list(owner.model_fields) if owner else []
        close = _nearest(loc[-1], options)
        hint = f"; did you mean '{'.'.join((*loc[:-1], close[0]))}'?" if close else ""
        valid = f" (valid keys here: {', '.join(options)})" if options else ""
        return f"{where}: unknown key '{dotted}'{hint}{valid}"
    msg = err["msg"]
    if "input" in err and err["type"] != "missing":
        msg += f" (got {err['input']!r})"
    return f"{where}: field '{dotted}': {msg}"


def _read_yaml(path: str | Path) -> tuple[dict[str, Any], str]:
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{source}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data, text


M = TypeVar("M", bound=BaseModel)


def load_model(
    cls: type[M] | Callable[[dict[str, Any], str], type[M]],
    path: str | Path | None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> M:
    """Read YAML at ``path`` (or start from ``base``), apply ``key.sub=value`` overrides and
    validate once against ``cls`` (or the class ``cls(data, source)`` picks). Every error names
    the file, the line (or the override) and the field, with the nearest valid key."""
    source = str(path) if path is not None else "<config>"
    data, text = _read_yaml(path) if path is not None else (dict(base or {}), "")
    overridden: dict[tuple[str, ...], str] = {}
    for item in overrides or []:
        key, value = parse_override(item)
        apply_override(data, key, value)
        overridden[tuple(key)] = item
    model_cls = cls if isinstance(cls, type) else cls(data, source)
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        lines = _yaml_lines(text) if text else {}
        msgs = [
            _describe_error(dict(err), model_cls, lines, source, overridden) for err in e.errors()
        ]
        raise ConfigError("invalid config:\n  " + "\n  ".join(msgs)) from None


def _method_class(data: dict[str, Any], source: str) -> type[BaseRunConfig]:
    method = data.get("method", "sft")
    if method not in METHODS:
        close = _nearest(str(method), list(METHODS))
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{source}: field 'method': unknown method '{method}'{hint} "
            f"(known: {', '.join(METHODS)})"
        )
    return method_config_class(method)


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> BaseRunConfig:
    """A training config: the method's config class, validated once."""
    return load_model(_method_class, path, overrides, base)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (every default filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
