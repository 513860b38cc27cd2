"""Typed schemas behind every YAML group, registered in Hydra's ConfigStore.

conf/config.yaml lists `config_schema` first in its defaults, so each group's YAML is merged into
the dataclass below: a misspelt key or a value of the wrong type fails at compose time, before
anything heavy is imported. The YAML files stay the human face; this file is the contract.

Keep this module free of jax/keras/tensorflow imports: `--cfg job` and `--help` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from runner.chat import TEMPLATES
from runner.conf_dir import CONF_DIR  # noqa: F401 - re-exported for the config's readers
from runner.distributed import log_file_name
from runner.domains import (
    AutoOr,
    Choice,
    Flag,
    Folder,
    ListOf,
    Mapping,
    MeshShape,
    Number,
    OneOf,
    Template,
    Text,
    at_least,
    fraction,
    key,
    positive,
)
from runner.domains import Mapping as MappingDomain
from runner.errors import UserError
from runner.families import names
from runner.layout import rule_problem
from runner.plan.memory import ACCELERATORS


class TrackingMode(StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class OptimizerName(StrEnum):
    adamw = "adamw"
    sgd = "sgd"


class LayoutSource(StrEnum):
    auto = "auto"  # the model family's own layout (keras-hub's map, its rules file, or derived)
    rules = "rules"  # the named rules in layout.rules, and nothing else
    derived = "derived"  # rules derived from the variables' shapes alone (runner/derived_layout.py)


class Schedule(StrEnum):
    constant = "constant"
    warmup_cosine = "warmup_cosine"  # linear warmup, then cosine decay to min_lr_ratio


class Precision(StrEnum):
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"  # bfloat16 compute, float32 weights
    bfloat16 = "bfloat16"  # bfloat16 weights and compute


class QuantMode(StrEnum):
    none = "none"
    int8 = "int8"
    int4 = "int4"
    nf4 = "nf4"  # QLoRA's NormalFloat4 (runner/nf4.py, runner/nf4_layers.py)


class ComputeDtype(StrEnum):
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class DataFormat(StrEnum):
    text = "text"  # one text field; loss on every token
    prompt_response = "prompt_response"  # loss on the response tokens only
    chat = "chat"  # a list of messages, in the model's chat format; loss on assistant turns
    # prompt / chosen / rejected records (runner/preference_records.py) for objective=dpo|orpo|simpo
    preference = "preference"


class ObjectiveName(StrEnum):
    sft = "sft"  # next-token cross-entropy on the loss tokens (every format but preference)
    dpo = "dpo"  # Direct Preference Optimization (Rafailov et al. 2023), against a reference
    orpo = "orpo"  # Odds Ratio Preference Optimization (Hong et al. 2024): NLL + odds ratio
    simpo = "simpo"  # Simple Preference Optimization (Meng et al. 2024): length-normalised


class DpoLossType(StrEnum):
    sigmoid = "sigmoid"  # DPO's own loss (with label_smoothing > 0: cDPO)
    ipo = "ipo"  # IPO (Azar et al. 2023), on log-ratios averaged over the response tokens
    hinge = "hinge"  # SLiC's hinge (Zhao et al. 2023)


class FileFormat(StrEnum):
    auto = "auto"  # from each file's suffix: .jsonl/.json, .csv, .parquet, .txt
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"
    text = "text"  # one example per non-blank line, in the field "text"


class Weights(StrEnum):
    preset = "preset"  # the preset's own weights
    random = "random"  # the architecture, seeded random weights: real sizes with no download


class Remat(StrEnum):
    none = "none"  # keep every activation the backward pass needs
    blocks = "blocks"  # keep each transformer block's input; recompute the block in backward


class TooLong(StrEnum):
    truncate = "truncate"
    drop = "drop"


class Sampler(StrEnum):
    greedy = "greedy"
    top_k = "top_k"
    top_p = "top_p"


class DistributedMode(StrEnum):
    off = "off"  # one process
    auto = "auto"  # a submitit job's tasks, or JAX's cluster detection (SLURM, TPU pod slices)
    explicit = "explicit"  # coordinator, num_processes, process_id given


def _families():
    return names()


def _accelerators():
    return list(ACCELERATORS)


def _architecture_value(name, value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, (int, float)) and value > 0:
        return None
    return f"{name}={value!r} must be a positive number, true/false, a string or null"


def _layout_rule(name, rule):
    return rule_problem(name, rule)


NAME = Text(pattern=r"[^/\\\s]+",
            pattern_text="a name without slashes or spaces (it names a folder)", bad=("a/b",))
ENUM = Choice()  # OmegaConf checks an enum's choices at compose time


@dataclass
class ModelConfig:
    # keras-hub preset name, hf://org/name, kaggle://org/model/keras/variant, a local preset
    # directory, or the name of a preset shipped in runner/assets/presets.
    preset: str = key(MISSING, Text(),
        help=("the base model: a keras-hub preset name, hf://org/name, kaggle://..., a local "
              "keras-hub or Hugging Face folder, or a shipped preset"))
    # The keras-hub backbone family (runner/families/) and its constructor numbers for a
    # known preset: checked against the preset's own config when it loads, and used to plan
    # the sharding when the preset cannot be read (offline, not downloaded yet).
    family: Optional[str] = key(None, Choice(_families),
        help=("the keras-hub family (runner/families/: gemma, gemma3, llama3, mistral, mixtral, "
              "qwen2, qwen3); null: read from the preset"))
    architecture: Optional[Dict[str, Any]] = key(None, Mapping(
        "a mapping of the backbone's constructor arguments to positive numbers, flags or names",
        _architecture_value, (("rope_max_wavelength", "0"), ("extra", "[1]"))),
        help=("the backbone's constructor numbers, to plan a preset that cannot be read here; "
              "checked against the preset when it loads"))
    # random: the architecture with seeded random weights (benchmarks, sizing, smoke runs of a
    # real-size model where the weights cannot be had); the preset's tokenizer when it can be
    # read here, else the shipped one
    weights: Weights = key(Weights.preset, ENUM,
        help=("preset: the preset's weights; random: its architecture with seeded random weights "
              "(sizing, benchmarks)"))


@dataclass
class MeshConfig:
    shape: List[int] = key([2, 4], MeshShape(),
        help=("devices along each mesh axis; one entry may be -1 (all remaining devices)"))
    axis_names: List[str] = key(["batch", "model"], ListOf(Text(), non_empty=True, unique=True),
        help="a name for each mesh axis, in shape's order")
    batch_axis: str = key("batch", Text(),
        help=("the axis the global batch is split along"))
    model_axis: str = key("model", Text(),
        help=("the axis the family's layout map splits weights along"))
    # Whether layout=auto/derived also split weights along the batch axis (fully sharded data
    # parallel: each device keeps a slice, gathered per layer) or keep a whole copy per batch
    # slice. Rules written by hand (layout.rules) are used as written.
    fsdp: bool = key(True, Flag(),
        help=("layout=auto/derived also split weights along batch_axis (fully sharded data "
              "parallel); false: weights replicated along it (pure data parallel)"))


@dataclass
class LayoutConfig:
    source: LayoutSource = key(LayoutSource.auto, ENUM,
        help=("auto: the family's own layout (keras-hub's map, its conf/layout file, or derived); "
              "derived: from the variables' shapes alone, for any model; rules: layout.rules only"))
    min_split_elements: int = key(16384, at_least(1),
        help=("layout=derived: a variable with fewer elements stays whole on every device"))
    # {name: {pattern: REGEX, axes: [axis or null, ...]}}. Typed as a plain dict because
    # OmegaConf refuses to add a dataclass-typed entry from the command line
    # (`+layout.rules.x={pattern:...,axes:[...]}`); its domain checks each rule's keys and types.
    rules: Dict[str, Any] = key({}, Mapping(
        "named rules {name: {pattern: REGEX, axes: [axis or null, ...]}}", _layout_rule,
        (("x", "{patern:a,axes:[null]}"), ("x", "{pattern:'(',axes:[null]}"),
         ("x", "{pattern:a,axes:model}"), ("x", "{pattern:1,axes:[null]}"))),
        help=("named rules {name: {pattern: REGEX, axes: [axis or null, ...]}} matched against "
              "variable paths"))


@dataclass
class LoraConfig:
    rank: int = key(0, at_least(0),
        help=("LoRA rank; 0 turns LoRA off and every weight trains"))
    # scale = alpha / rank; null means alpha = rank (scale 1)
    alpha: Optional[float] = key(None, positive(),
        help="LoRA alpha: the update is scaled by alpha / rank; null: alpha = rank")
    # layer names; null means the family's defaults
    targets: Optional[List[str]] = key(None, ListOf(Text(), non_empty=True, unique=True),
        help=("layer names LoRA adapts; [all-linear]: every dense layer of the blocks (PEFT's "
              "all-linear); null: the family's defaults (query and value)"))
    # PEFT's lora_dropout: on the LoRA branch's input, in training only (runner/factored_lora.py)
    dropout: float = key(0.0, fraction(open_high=True),
        help=("LoRA dropout on the adapter branch's input, in training only, seeded from `seed` "
              "(PEFT's lora_dropout)"))


@dataclass
class ObjectiveConfig:
    """What the step optimizes (runner/preference_loss.py). Defaults are the papers' and TRL
    1.16's; conf/objective/*.yaml name where each comes from."""
    name: ObjectiveName = key(ObjectiveName.sft, ENUM,
        help="sft (cross-entropy), or a preference objective: dpo, orpo, simpo")
    # DPO's and SimPO's beta; ORPO's lambda (the weight of its odds-ratio term)
    beta: float = key(0.1, positive(),
        help=("dpo/simpo: beta (how far from the reference, the reward scale); orpo: lambda"))
    loss_type: DpoLossType = key(DpoLossType.sigmoid, ENUM,
        help="dpo: sigmoid (DPO; cDPO with label_smoothing), ipo or hinge")
    label_smoothing: float = key(0.0, Number(low=0, high=0.5, high_open=True),
        help=("dpo sigmoid (cDPO) and simpo: the assumed share of pairs whose labels are "
              "flipped"))
    gamma: float = key(0.0, Number(low=0),
        help="simpo: the target reward margin gamma (TRL's simpo_gamma)")


@dataclass
class QuantConfig:
    mode: QuantMode = key(QuantMode.none, ENUM,
        help=("quantize the frozen base: none, int8 (Keras's), int4 (Keras's quantizer, the "
              "runner's layers), nf4 (bitsandbytes' NormalFloat4, as QLoRA)"))
    # nf4 and int4, named after transformers' BitsAndBytesConfig: bnb_4bit_quant_storage's block
    # (quantize_4bit's blocksize), bnb_4bit_use_double_quant, bnb_4bit_compute_dtype
    block_size: int = key(64, OneOf((32, 64, 128, 256, 512, 1024, 2048, 4096)),
        help="nf4: values per absolute maximum (bitsandbytes' blocksize); int4: inputs per "
             "scale and zero point")
    double_quant: bool = key(True, Flag(),
        help="nf4: store the blocks' maxima in 8 bits, 256 to a float32 scale (QLoRA's double "
             "quantization)")
    compute_dtype: ComputeDtype = key(ComputeDtype.bfloat16, ENUM,
        help="nf4, int4: the dtype the base is dequantized to and its matmuls run in")


@dataclass
class OptimizerConfig:
    name: OptimizerName = key(OptimizerName.adamw, ENUM,
        help="adamw or sgd")
    learning_rate: float = key(5e-5, positive(),
        help="the peak learning rate")
    weight_decay: float = key(0.0, Number(low=0),
        help="decoupled weight decay (adamw)")
    exclude_from_weight_decay: List[str] = key([], ListOf(Text()),
        help="variable name parts that get no weight decay (e.g. bias, scale)")
    beta_1: float = key(0.9, fraction(open_high=True),
        help="adamw's first-moment decay")
    beta_2: float = key(0.999, fraction(open_high=True),
        help="adamw's second-moment decay")
    epsilon: float = key(1e-7, positive(),
        help="adamw's epsilon")
    momentum: float = key(0.0, fraction(open_high=True),
        help="sgd's momentum")
    clipnorm: Optional[float] = key(None, positive(),
        help="clip each gradient to this norm; null: no clipping")
    global_clipnorm: Optional[float] = key(None, positive(),
        help=("clip all gradients together to this norm; null: no clipping"))
    schedule: Schedule = key(Schedule.constant, ENUM,
        help="constant, or warmup_cosine (linear warmup, then cosine decay)")
    warmup_steps: int = key(0, at_least(0),
        help="warmup_cosine: steps of linear warmup")
    # a share of the run's steps instead (Hugging Face recipes give warmup_ratio)
    warmup_ratio: Optional[float] = key(None, fraction(open_high=True),
        help=("warmup_cosine: linear warmup over this share of the run's steps (rounded up, as "
              "transformers' warmup_ratio); instead of warmup_steps"))
    min_lr_ratio: float = key(0.0, fraction(),
        help=("warmup_cosine: decay to learning_rate x this"))


def _chat_templates():
    return list(TEMPLATES)


@dataclass
class DatasetConfig:
    # a TFDS name (imdb_reviews, tiny_reviews: shipped), hf://OWNER/NAME[@REVISION] (Hugging
    # Face, read with `datasets`), or synthetic (seeded random token ids, no TensorFlow: for
    # benchmarks; needs train.steps); not read when dataset.files is set
    name: str = key(MISSING, Text(),
        help=("a TFDS name, a shipped stand-in (tiny_reviews, ...), hf://OWNER/NAME[@REVISION], or"
              " synthetic"))
    # your own data: a path or glob of JSONL, CSV, Parquet or text files (split "train")
    files: Optional[str] = key(None, Text(),
        help=("your own data: a path or glob of JSONL, CSV/TSV, Parquet or text files (split "
              "train); replaces dataset.name"))
    eval_files: Optional[str] = key(None, Text(),
        help="more of your own files, as split validation")
    file_format: FileFormat = key(FileFormat.auto, ENUM,
        help="auto (from each file's suffix), jsonl, csv, parquet or text")
    subset: Optional[str] = key(None, Text(),
        help=("hf:// datasets: the configuration (subset) to read"))
    # TFDS split syntax; quote slices on the command line: 'train[:10%]'
    split: str = key("train", Text(),
        help="the training split, TFDS split syntax (quote slices: 'train[:90%]')")
    eval_split: Optional[str] = key(None, Text(),
        help=("the split evaluated every train.eval_every steps; null: no evaluation"))
    format: DataFormat = key(DataFormat.text, ENUM,
        help=("text (loss on every token), prompt_response (loss on the response), chat (loss on"
              " assistant turns) or preference (prompt/chosen/rejected pairs)"))
    text_field: str = key("text", Text(),
        help=("format=text: the field holding the text"))
    # format=prompt_response: Python format strings over the example's features, e.g.
    # "Translate this into French:\n{src}\n". The loss covers the response (and EOS) only.
    prompt_template: str = key("", Template(),
        help=("format=prompt_response: a Python format string over the fields, e.g. "
              "'Translate:\\n{src}\\n'"))
    response_template: str = key("", Template(),
        help="format=prompt_response: the response, e.g. '{dst}'")
    add_eos: bool = key(True, Flag(),
        help=("end each response with the tokenizer's end token"))
    # format=chat: the field holding [{"role": "system"|"user"|"assistant", "content": ...}]
    messages_field: str = key("messages", Text(),
        help=("format=chat: the field of messages (left at messages, ShareGPT's conversations is "
              "found)"))
    # format=chat: null is the model family's own (runner/chat.py lists them)
    chat_template: Optional[str] = key(None, Choice(names=_chat_templates),
        help="format=chat: the chat format; null: the model family's own")
    # your own data: a number, true/false, list or object where text is read (text_field, a
    # template's fields) is an error naming file:line; true trains on its JSON text instead
    stringify_values: bool = key(False, Flag(),
        help=("train on the JSON text of numbers, lists or objects where text is read (else "
              "refused with file:line)"))
    too_long: TooLong = key(TooLong.truncate, ENUM,
        help=("examples longer than train.sequence_length: truncate or drop (counted either way)"))
    # several examples per row, attention masked per document (runner/packing.py); off by
    # default so that runs made before it keep their batches (exact reruns)
    packing: bool = key(False, Flag(),
        help=("pack examples into full rows (best-fit decreasing), attention and positions per "
              "document: fewer padding tokens, fewer steps per epoch"))
    take: Optional[int] = key(None, at_least(1),
        help=("use only the first N examples of each split; null: all"))
    shuffle_buffer: int = key(10000, at_least(1),
        help="examples in the shuffle buffer")
    data_dir: Optional[str] = key(None, Folder(),
        help=("where TFDS datasets are prepared; null: $TFDS_DATA_DIR or ~/tensorflow_datasets"))
    download: bool = key(True, Flag(),
        help=("may fetch a dataset that is not prepared (never tried offline)"))
    # A shipped TFDS dataset with the same features, used by debug=smoke to run offline.
    stand_in: Optional[str] = key(None, Text(),
        help="a shipped dataset with the same features, used by debug=smoke")


@dataclass
class TrainConfig:
    batch_size: int = key(8, at_least(1),
        help=("global batch, split along mesh.batch_axis"))
    sequence_length: int = key(64, at_least(2),
        help="tokens per example fed to the model")
    steps: Optional[int] = key(None, at_least(1),
        help=("stop after this many steps; null: all epochs"))
    epochs: int = key(1, at_least(1),
        help="passes over the training split")
    log_every: int = key(1, at_least(1),
        help="steps per metrics record (each record averages over its steps' tokens)")
    eval_every: Optional[int] = key(None, at_least(1),
        help="steps between evaluations; null: only at the end")
    eval_steps: Optional[int] = key(None, at_least(1),
        help=("batches per evaluation; null: the whole eval split"))
    precision: Precision = key(Precision.float32, ENUM,
        help="float32, mixed_bfloat16 (bfloat16 compute, float32 weights) or bfloat16")
    # rematerialisation (activation checkpointing): blocks recomputes each transformer block in
    # the backward pass, keeping only its input (less memory, about a third more compute)
    remat: Remat = key(Remat.none, ENUM,
        help=("none, or blocks: recompute each transformer block in the backward pass (less "
              "memory)"))
    # micro-batches per optimizer step (runner/step.py): the batch is split, each part's
    # gradient taken in turn, and the sum weighted by loss tokens, so it equals one step over
    # the whole batch with one micro-batch's activations in memory
    gradient_accumulation_steps: int = key(1, at_least(1),
        help=("micro-batches per optimizer step: train.batch_size split into this many, run one "
              "after another (less activation memory), weighted by their loss tokens"))
    # the loss and its gradient over slices of the sequence (runner/token_loss.py), so the
    # float32 batch x length x vocabulary logits never exist whole
    loss_tiles: Any = key("auto", AutoOr(at_least(1)),
        help=("slices of the sequence the loss is computed over (float32 logits never whole); "
              "auto: the fewest whose float32 logits fit 512 MiB per device; 1: untiled"))
    # steps between checkpoints (null: none); operational: a cut run may resume with another
    checkpoint_every: Optional[int] = key(None, at_least(1), operational=True,
        help="steps between Orbax checkpoints; null: none (a stop signal still saves one)")
    # true: the same config in a folder whose run was cut resumes it, from its newest checkpoint
    # that restores (none restoring is an error); or_restart: the same, but when none restores
    # the run starts over from step 0 (they are set aside in checkpoints_set_aside/, not
    # deleted); false: a folder holding a run is refused
    resume: Any = key(True, OneOf((True, False, "or_restart")), operational=True,
        help=("true: resume a cut run of the same config; or_restart: start over if no checkpoint "
              "restores; false: refuse a used folder"))
    save_adapter: bool = key(True, Flag(),
        help=("LoRA runs: save adapter.lora.h5 (and the logits a reload must reproduce)"))
    save_merged_preset: bool = key(False, Flag(),
        help=("also save a keras-hub preset with the adapter merged in"))
    # at the end, what `python -m runner.export` writes: Hugging Face folders in export/
    export_hf: bool = key(False, Flag(), operational=True,
        help="at the end, write Hugging Face folders (merged model, PEFT adapter) into export/")


@dataclass
class GenerateConfig:
    prompts: List[str] = key([], ListOf(Text(non_empty=False)),
        help="prompts sampled before and after training")
    max_length: int = key(48, at_least(2),
        help="tokens per sample, prompt included")
    sampler: Sampler = key(Sampler.greedy, ENUM,
        help="greedy, top_k or top_p")
    top_k: int = key(5, at_least(1),
        help="sampler=top_k: candidates kept")
    top_p: float = key(0.9, Number(low=0, low_open=True, high=1),
        help="sampler=top_p: probability mass kept")
    temperature: float = key(1.0, positive(),
        help="top_k and top_p: the softmax temperature")


@dataclass
class TrackingConfig:
    mode: TrackingMode = key(TrackingMode.offline, ENUM,
        help="W&B: offline (wandb sync later), online (needs a key and the network) or disabled")
    project: str = key("keras-runner", Text(),
        help="W&B project")
    entity: Optional[str] = key(None, Text(),
        help="W&B entity (user or team); null: the key's default")
    group: Optional[str] = key(None, Text(),
        help="W&B group; null: a sweep's own group")
    tags: List[str] = key([], ListOf(Text()),
        help="W&B tags")


@dataclass
class DistributedConfig:
    mode: DistributedMode = key(DistributedMode.off, ENUM,
        help="off (one process), auto (submitit tasks, SLURM, TPU pod slices) or explicit")
    coordinator: Optional[str] = key(None, Text(  # host:port of process 0 (explicit)
        pattern=r"[^\s:]+:\d{1,5}", pattern_text="host:port, e.g. localhost:12355",
        bad=("localhost",)),
        help="explicit: host:port of process 0")
    num_processes: Optional[int] = key(None, at_least(1),
        help="explicit: how many processes form the program")
    process_id: Optional[int] = key(None, at_least(0),
        help=("explicit: this process's rank (also names its log file)"))
    # a peer that never starts fails the others after this
    initialization_timeout_s: int = key(300, at_least(1),
        help="seconds to wait for every process to join")
    heartbeat_timeout_s: int = key(60, at_least(1),
        help=("seconds after which a dead process ends the others"))


@dataclass
class PlanConfig:
    """What `python -m runner.plan` sizes the plan against (training runs use the real devices)."""
    # devices to plan for; null: mesh.shape's product, or this machine's device count when
    # mesh.shape has a -1
    devices: Optional[int] = key(None, at_least(1),
        help="runner.plan: devices to plan for; null: mesh.shape's product")
    accelerator: Optional[str] = key(None, Choice(_accelerators),
        help=("runner.plan: the accelerator whose memory per device to plan against"))
    topology: Optional[str] = key(None, Text(
        pattern=r"(v\d+[a-z]*:)?\d+(x\d+){1,2}",
        pattern_text="a TPU topology: sides joined by x, optionally after the generation "
                     "(v5p:4x4x4, v5e:2x4, 2x2)", bad=("v5p-64", "4by4")),
        help=("runner.plan --compile with a TPU plan.accelerator: the slice's topology as "
              "libtpu names it (v5p:4x4x4, v5e:2x4, or just 4x4x4); null: the most even one "
              "of the planned devices"))
    device_memory_gb: Optional[float] = key(None, positive(),
        help=("runner.plan: memory per device in GB (2^30 bytes); overrides plan.accelerator"))
    large_replicated_mb: float = key(64.0, positive(),
        help=("a variable left whole on every device at least this large (MB per device) is "
              "named as a warning by the plan and the run"))


def _group(cls, operational: bool = False):
    return field(default_factory=cls, metadata={"operational": operational})


@dataclass
class Config:
    model: ModelConfig = _group(ModelConfig)
    mesh: MeshConfig = _group(MeshConfig)
    layout: LayoutConfig = _group(LayoutConfig)
    lora: LoraConfig = _group(LoraConfig)
    quant: QuantConfig = _group(QuantConfig)
    objective: ObjectiveConfig = _group(ObjectiveConfig)
    optimizer: OptimizerConfig = _group(OptimizerConfig)
    dataset: DatasetConfig = _group(DatasetConfig)
    train: TrainConfig = _group(TrainConfig)
    generate: GenerateConfig = _group(GenerateConfig)
    tracking: TrackingConfig = _group(TrackingConfig, operational=True)
    plan: PlanConfig = _group(PlanConfig, operational=True)
    distributed: DistributedConfig = _group(DistributedConfig, operational=True)
    name: str = key("default", NAME,
        help=("names the outputs folder and the W&B run"))
    seed: int = key(0, Number(low=0, high=2**32 - 1, integer=True),
        help="one seed for weights, LoRA, data order and sampling")
    cpu_devices: int = key(8, at_least(1), operational=True,
        help="virtual devices when running on CPU")
    # JAX's persistent compilation cache (null: off)
    compilation_cache_dir: Optional[str] = key(None, Folder(), operational=True,
        help="a folder for JAX's persistent compilation cache; null: off")


def register_configs() -> None:
    """Called by the entry points and by tests, never at import time."""
    from omegaconf import OmegaConf

    # conf/config.yaml names each process's log file with it (hydra.job_logging).
    OmegaConf.register_new_resolver("runner_log_file", log_file_name, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


def compose(overrides=(), job_name: str = "runner"):
    """The config `python -m runner OVERRIDES` would run, typed, with no Hydra run folder.
    A compose mistake (unknown key, wrong type, unknown group option) is a UserError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with compose_errors():
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3",
                                   job_name=job_name):
            return hydra_compose(config_name="config", overrides=list(overrides))


def load(path) -> Any:
    """A run's resolved_config.yaml, typed by the schema as Hydra would give it."""
    from omegaconf import OmegaConf

    with compose_errors(f"{path}: "):
        return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))


class compose_errors:
    """Hydra's and OmegaConf's compose errors as one UserError line: what and where, and the
    fix Hydra suggests (its messages run over several lines)."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not is_compose_error(exc):
            return False
        raise UserError(self.prefix + compose_error_line(exc)) from None


def is_compose_error(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


def compose_error_line(exc: BaseException) -> str:
    """Hydra's several-line compose messages as one line, e.g. `Could not find 'mesh/3x3';
    available options in 'mesh': ...`. A key the schema lacks (`optimizer.learnin_rate=1e-3`)
    gets unknown_key_line instead: Hydra's own hint there (`+optimizer.learnin_rate=...`) would
    add a key nothing reads."""
    missing = _missing_schema_key(exc)
    if missing is not None:
        return unknown_key_line(missing)

    def lines(e):
        out = []
        for line in str(e).strip().splitlines():
            line = line.strip()
            if line.startswith("Config search path"):
                break  # where Hydra looked: not the user's concern
            if line and not line.startswith(("full_key:", "object_type=", "reference_type=",
                                              "provider=")):
                out.append(line.rstrip("."))
        return out
    parts = lines(exc) + [ln for ln in lines(exc.__cause__ or "") if ln not in lines(exc)]
    text = "; ".join(parts) or type(exc).__name__

    # "Available options in 'mesh':; 1x8; 2x4" -> "available options in 'mesh': 1x8, 2x4"
    head, sep, options = text.partition("Available options in ")
    if sep:
        group, _, names = options.partition(":; ")
        text = f"{head}available options in {group}: {', '.join(names.split('; '))}"
    for needle, extra in PLUGIN_EXTRAS.items():
        if needle in text:  # a plugin choice whose extra is not installed
            return f'{text}; it comes with an extra: pip install -e ".[{extra}]"'
    return text


# What a Hydra plugin choice (or the module it loads) is called in Hydra's errors when its
# extra is not installed -> that extra (pyproject.toml).
PLUGIN_EXTRAS = {"'hydra/launcher/submitit_local'": "launchers",
                 "'hydra/launcher/submitit_slurm'": "launchers",
                 "'hydra/sweeper/optuna'": "optuna", "module 'optuna'": "optuna"}


def _missing_schema_key(exc: BaseException) -> Optional[str]:
    """The dotted key of a compose error that names a key missing from a schema section."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    for e in (exc, exc.__cause__):
        full_key = getattr(e, "full_key", None)
        if isinstance(e, (ConfigAttributeError, ConfigKeyError)) and full_key:
            parent = full_key.rpartition(".")[0]
            if _section(parent) is not None:
                return full_key
    return None


def _section(dotted: str):
    """The schema dataclass of a section ("" for the whole config, "optimizer"), or None when
    `dotted` is no section: a leaf key, an open mapping (layout.rules, model.architecture:
    their keys are the user's) or not in the schema."""
    import dataclasses

    cls = Config
    for part in filter(None, dotted.split(".")):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields or not dataclasses.is_dataclass(fields[part].default_factory):
            return None
        cls = fields[part].default_factory
    return cls


def unknown_keys(cfg, prefix: str = "") -> list[str]:
    """Dotted keys of a composed config that its schema lacks: added with `+key=` or `++key=`
    (Hydra lets an override add a key to a typed config), or written into a YAML file. Nothing
    would read them, so a misspelt `+optimizer.learnin_rate` would be silently ignored."""
    import dataclasses

    from omegaconf import OmegaConf

    cls = _section(prefix.rstrip("."))
    if cls is None or not OmegaConf.is_dict(cfg):
        return []
    fields = {f.name for f in dataclasses.fields(cls)}
    found = []
    for name in cfg.keys():
        if not prefix and name == "hydra":  # Hydra's settings: in the config callbacks get
            continue
        if name not in fields:
            found.append(prefix + str(name))
        else:
            found += unknown_keys(cfg._get_node(name), f"{prefix}{name}.")
    return found


def unknown_key_line(dotted: str) -> str:
    """One line for a key the schema lacks: the key, its close matches, and where keys live."""
    import dataclasses
    import difflib

    parent, _, name = dotted.rpartition(".")
    cls = _section(parent)
    known = [f.name for f in dataclasses.fields(cls)] if cls is not None else []
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(prefix + c for c in close)}?" if close else
            f"{'the keys of ' + parent if parent else 'top-level keys'}: {', '.join(known)}")
    return (f"{dotted} is not a key of the config schema (runner/config.py), so nothing would "
            f"read it; {hint} (+ and ++ cannot add keys; `python -m runner --cfg job` shows them "
            "all)")


def unknown_override_key(overrides) -> Optional[str]:
    """The key of the first override that sets or adds a key the schema lacks
    (`+optimizer.learnin_rate=1`), or None. For a sweep, whose jobs' configs are composed only as
    each job starts: every job would fail alike, so the sweep is refused before the first."""
    import dataclasses

    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0] == "hydra" or (CONF_DIR / key).is_dir():
            continue  # Hydra's own settings, or a group choice (model=..., +experiment=...)
        cls, parts = Config, key.split(".")
        for i, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                return ".".join(parts[:i + 1])
            cls = fields[part].default_factory
            if not dataclasses.is_dataclass(cls):
                break  # a leaf or an open mapping: what follows is a value's business
    return None


def walk_schema(cls=None, prefix: str = ""):
    """(dotted key, dataclass field) for every leaf key of the schema, in declaration order."""
    import dataclasses

    for f in dataclasses.fields(cls or Config):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not
                                    dataclasses.MISSING else None):
            yield from walk_schema(f.default_factory, name + ".")
        else:
            yield name, f


def operational_keys(cls=None, prefix: str = "") -> list[str]:
    """Dotted keys (whole groups or single keys) marked operational in the schema."""
    import dataclasses

    found = []
    for f in dataclasses.fields(cls or Config):
        name = f"{prefix}{f.name}"
        if f.metadata.get("operational"):
            found.append(name)
        elif dataclasses.is_dataclass(f.default_factory):
            found += operational_keys(f.default_factory, name + ".")
    return found


def _with_defaults(resolved: dict) -> dict:
    """A resolved config with the keys the schema gained since it was written at their
    defaults (a run started before mesh.fsdp existed resumes as the same run); as it is when
    the schema cannot read it (a key it no longer has: the comparison then says which)."""
    import copy

    from omegaconf import OmegaConf

    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), resolved)
        return OmegaConf.to_container(merged, resolve=True, enum_to_str=True)
    except Exception:  # noqa: BLE001 - any schema mismatch: compare the file as written
        return copy.deepcopy(resolved)


def experiment_part(resolved: dict) -> dict:
    """The resolved config without its operational keys: what decides "the same run" for
    resume, rerun and a re-launched sweep (tracking mode, devices, caches do not)."""
    out = _with_defaults(resolved)
    for dotted in operational_keys():
        *parents, last = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def validate(cfg) -> None:
    """Every key's value against its domain (runner/domains.py); the first one outside it is a
    UserError naming the key, the value, the domain and the fix. Pure Python: runs before
    anything heavy is imported."""
    from omegaconf import OmegaConf

    unknown = unknown_keys(cfg)
    if unknown:
        raise UserError(unknown_key_line(unknown[0]))
    for dotted, f in walk_schema():
        domain = f.metadata.get("domain")
        value = OmegaConf.select(cfg, dotted, throw_on_missing=False)
        if value is None and domain is not None and "Optional" not in str(f.type) \
                and f.default is not MISSING:  # a key typed Any: OmegaConf let null through
            raise UserError(f"{dotted}=null is not allowed; it must be {domain.text}"
                            f"{_fix(dotted, f, domain, 'must be')}")
        if domain is None or value is None:
            continue
        plain = OmegaConf.to_container(value, resolve=True) \
            if OmegaConf.is_config(value) else value
        problem = domain.problem(plain)
        if problem is None:
            continue
        if isinstance(domain, MappingDomain):
            raise UserError(f"{dotted}.{problem}")
        raise UserError(f"{dotted}={plain!r} {problem}{_fix(dotted, f, domain, problem)}")


def _fix(dotted: str, f, domain, problem: str) -> str:
    """The domain (unless the problem already says it) and a value that works."""
    fix = "" if problem.startswith("must be") else f"; it must be {domain.text}"
    if f.default is None:
        return f"{fix}; or set {dotted}=null (the default)"
    import dataclasses

    if f.default is MISSING or f.default_factory is not dataclasses.MISSING:
        return fix
    default = f.default.value if isinstance(f.default, StrEnum) else f.default
    default = str(default).lower() if isinstance(default, bool) else default
    return f"{fix}; e.g. {dotted}={default if default != '' else repr('')} (the default)"
