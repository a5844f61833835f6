"""The config sections every method composes: model, data, adapters, optimizer, train, tracking.

Each method's config class (``config/<method>.py``) takes only the sections it reads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name_or_path: str = Field(
        "smollm2-135m-instruct",
        description="A local Hugging Face model directory, a .gguf file, a known alias "
        "(`tunesmith models` lists them), or a Hugging Face id (org/name[@revision]) resolved "
        "through the standard Hugging Face cache (HF_HUB_OFFLINE=1: cache only).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight dtype when loading for training. auto = float32 for every weight "
        "that trains (fp32 master weights and optimizer state, bf16 autocast per "
        "train.precision); under LoRA/QLoRA the frozen base loads in bfloat16 where bf16 is "
        "native (CUDA; CPUs with AVX-512 BF16/AMX when train.precision resolves to bf16). "
        "bfloat16 = pure-bf16 weights (less memory; optimizer updates rounded to bf16). "
        "float16 is refused: training in fp16 needs a loss scaler, which tunesmith does not run.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    quantization: Literal["none", "nf4", "int8"] = Field(
        "none",
        description="Frozen base weights: none; nf4 = 4-bit NormalFloat with double-quantized "
        "scales (QLoRA, Dettmers et al. 2023); int8 = LLM.int8 (bitsandbytes, `pip install "
        "tunesmith[quant]`). Adapters still train in 16/32-bit.",
    )
    trust_pickle: bool = Field(
        False,
        description="Allow a model or adapter directory holding only pickle weights (.bin, .pt, "
        ".pth; no .safetensors) to load. A pickle file can run arbitrary code when loaded, even "
        "through torch's weights_only loader (CVE-2025-32434): enable only for files from a "
        "source you trust, or convert them to safetensors. Same as TUNESMITH_TRUST_PICKLE=1.",
    )

    @field_validator("dtype")
    @classmethod
    def _no_fp16_training(cls, value: str) -> str:
        # fp16's 5-bit exponent underflows small gradients unless the loss is scaled
        # (torch.amp.GradScaler); bf16 has fp32's range and needs no scaler.
        if value == "float16":
            raise ValueError(
                "model.dtype=float16 is not supported for training: fp16 gradients underflow "
                "without a loss scaler; use model.dtype=auto (fp32 weights + bf16 autocast) or "
                "bfloat16 (pure bf16), and train.precision=bf16 or fp32"
            )
        return value


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

    @field_validator("train", mode="before", json_schema_input_type=str | list[str | DatasetSpec])
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


class PairDataSection(Section):
    """Preference pairs for DPO and reward models (:mod:`tunesmith.data.preference`)."""

    train: str | list[str] = Field(
        ...,
        description="File(s) of preference pairs: jsonl, json, csv, parquet or a saved "
        "`datasets` directory; rows {prompt|messages, chosen, rejected}, or the conversational "
        "form where chosen and rejected are conversations ending in an assistant turn.",
    )
    validation: str | list[str] | None = Field(
        None,
        description="Held-out pair file(s). When absent, `val_fraction` of train is held out "
        "with a fixed seed.",
    )
    split: str = Field("train", description="Split to read from a saved DatasetDict directory.")
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = Field(
        "tokenizer", description="Chat template: the tokenizer's own, or a built-in by name."
    )
    max_length: int = Field(
        512,
        ge=8,
        description="Tokens per side (prompt + response). Longer pairs lose prompt tokens from "
        "the left first, then response tokens from the right; the count is logged.",
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise",
        description="Malformed rows: stop with an error, or skip each into rejects.jsonl. Pairs "
        "with identical or empty sides always go to rejects.jsonl.",
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Held out of train when no validation is given."
    )
    max_val_pairs: int | None = Field(
        None, ge=1, description="At most this many held-out pairs (a fixed-seed sample)."
    )
    seed: int = Field(1234, description="Seed of the held-out split.")


class PromptDataSection(Section):
    """Prompt records for online RL (GRPO, PPO; :mod:`tunesmith.data.prompts`): ``prompt``,
    ``messages`` (a trailing assistant reply is dropped) or preference pairs (their prompt), plus
    the fields reward functions read (``answer``...)."""

    train: list[str] = Field(
        ...,
        description="Prompt file(s): jsonl, json, csv, parquet or a saved `datasets` directory.",
    )
    validation: list[str] | None = Field(
        None,
        description="Held-out prompt file(s), answered greedily for the method's held-out "
        "metric. When absent, `val_fraction` of train is held out with a fixed seed.",
    )
    split: str = Field("train", description="Split to read from a saved DatasetDict directory.")
    template: Literal["tokenizer", "chatml", "llama2", "llama3", "alpaca"] = Field(
        "tokenizer", description="Chat template: the tokenizer's own, or a built-in by name."
    )
    system_prompt: str | None = Field(
        None, description="A system turn put before every prompt that has none."
    )
    max_prompt_length: int = Field(
        512, ge=1, description="Longer prompts are an error naming file and line (or rejects)."
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="Bad records: stop with an error, or skip each into rejects.jsonl."
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Held out of train when no validation is given."
    )
    max_val_examples: int | None = Field(
        200, ge=1, description="At most this many held-out prompts (a fixed-seed sample)."
    )
    seed: int = Field(1234, description="Seed of the held-out split (and GRPO's prompt order).")

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FileSplitFields(Section):
    """The held-out split of a method that reads one record per row from files (classify,
    embed): the class adds ``train`` (a list of files; one path is taken as a list) and its
    ``max_length``; ``data/split.py`` applies the one held-out rule."""

    validation: str | list[str] | None = Field(
        None,
        description="Held-out file(s). When absent, `val_fraction` of train is held out "
        "with a fixed seed.",
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Held out of train when no validation is given."
    )
    max_val_examples: int | None = Field(
        None, ge=1, description="At most this many held-out rows (a fixed-seed sample)."
    )
    seed: int = Field(1234, description="Seed of the held-out split.")

    @field_validator("train", mode="before", check_fields=False)
    @classmethod
    def _one_path_to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


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


# The train section is composed per method from these groups, so a method's config holds exactly
# the train fields it reads (a field of another group is an unknown key for it). Bases are listed
# last group first: pydantic orders fields from the last base, so RunFields come first in dumps.


class RunFields(Section):
    """Every method: where the run lives, how long it runs, its device, seed and checkpoints."""

    output_dir: str = "runs"
    run_name: str | None = Field(None, description="Default: <method>-<timestamp>.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; default from epochs.")
    epochs: float = Field(1.0, gt=0)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto = bf16 autocast on CUDA with bf16 support and on CPUs with native bf16 "
        "(AVX-512 BF16 / AMX), fp32 otherwise.",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    seed: int = Field(42, description="Seed of the initial weights, dropout and the data order.")
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    log_every: int = Field(1, ge=1)
    resume: bool = Field(False, description="Continue from the latest checkpoint of the run dir.")
    allow_data_change: bool = Field(
        False,
        description="With resume: continue even though a data file differs from (or is missing "
        "since) the content hash env.json recorded when the run started; the resumed run then no "
        "longer continues the same trajectory.",
    )


class EvalFields(Section):
    """Methods with a held-out evaluation: its cadence, best/ and early stopping."""

    eval_every: int | float | None = Field(
        None,
        description="Steps between evaluations (an integer), or a fraction of the run's total "
        "steps (0 < x < 1: 0.2 evaluates every 20% of the run, 5 times; always after the last).",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without a better held-out value of the "
        "method's metric (best/ holds the weights of the best one).",
    )

    @field_validator("eval_every")
    @classmethod
    def _steps_or_fraction(cls, value: int | float | None) -> int | float | None:
        if isinstance(value, float) and not 0 < value < 1:
            raise ValueError("a fraction of the run is 0 < eval_every < 1 (steps: an integer)")
        if isinstance(value, int) and value < 1:
            raise ValueError("eval_every in steps is >= 1")
        return value


class BatchFields(Section):
    """Methods that step over micro-batches of records."""

    micro_batch_size: int = Field(4, ge=1, description="Records per micro-batch per process.")
    grad_accum: int = Field(1, ge=1)


class CheckpointingFields(Section):
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each decoder layer's activations in the backward pass: less "
        "memory, slower steps (SmolLM2 LoRA bf16 on CPU: peak RSS 5.0 -> 2.2 GiB, 1.77x the "
        "step time; benchmarks/results/levers.json).",
    )


class ParallelFields(Section):
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes (torchrun): ddp replicates the model; fsdp (FSDP2) "
        "shards weights, gradients and optimizer state per decoder layer.",
    )


class TopLayersFields(Section):
    trainable_top_layers: int | None = Field(
        None,
        ge=1,
        description="Full fine-tuning only: freeze all but the top N decoder layers "
        "(and the final norm).",
    )


class TrainSection(
    EvalFields, TopLayersFields, ParallelFields, CheckpointingFields, BatchFields, RunFields
):
    """SFT's train section: every group, and regional compilation."""

    compile: bool | Literal["static", "dynamic"] = Field(
        False,
        description="torch.compile each decoder layer (regional compilation). true or dynamic: "
        "one graph with symbolic shapes; static: one graph per packed bucket width "
        "(dynamic=False). Off by default: on CPU with packed rows it was x1.33 slower over 5 "
        "steps (recompiles for new shapes; benchmarks/levers.py).",
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
