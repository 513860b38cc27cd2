"""Typed schemas behind every YAML group, registered in Hydra's ConfigStore.

conf/config.yaml lists `config_schema` first in its defaults, so each group's YAML is merged into
the dataclass below: a misspelt key or a value of the wrong type fails at compose time, before
anything heavy is imported. The YAML files stay the human face; this file is the contract.

Keep this module free of jax/keras/tensorflow imports: `--cfg job` and `--help` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class TrackingMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class OptimizerName(str, Enum):
    adamw = "adamw"
    sgd = "sgd"


class LayoutSource(str, Enum):
    auto = "auto"  # the model family's own keras-hub layout map
    rules = "rules"  # the named rules in layout.rules, and nothing else


class Schedule(str, Enum):
    constant = "constant"
    warmup_cosine = "warmup_cosine"  # linear warmup, then cosine decay to min_lr_ratio


class Precision(str, Enum):
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"  # bfloat16 compute, float32 weights
    bfloat16 = "bfloat16"  # bfloat16 weights and compute


class QuantMode(str, Enum):
    none = "none"
    int8 = "int8"
    int4 = "int4"


class DataFormat(str, Enum):
    text = "text"  # one text field; loss on every token
    prompt_response = "prompt_response"  # loss on the response tokens only


class TooLong(str, Enum):
    truncate = "truncate"
    drop = "drop"


class Sampler(str, Enum):
    greedy = "greedy"
    top_k = "top_k"
    top_p = "top_p"


@dataclass
class ModelConfig:
    # keras-hub preset name, hf://org/name, kaggle://org/model/keras/variant, a local preset
    # directory, or the name of a preset shipped in runner/assets/presets.
    preset: str = MISSING
    # The keras-hub backbone family (gemma, gemma3, llama3) and its constructor numbers for a
    # known preset: checked against the preset's own config when it loads, and used to plan
    # the sharding when the preset cannot be read (offline, not downloaded yet).
    family: Optional[str] = None
    architecture: Optional[Dict[str, Any]] = None


@dataclass
class MeshConfig:
    shape: List[int] = field(default_factory=lambda: [2, 4])  # one entry may be -1
    axis_names: List[str] = field(default_factory=lambda: ["batch", "model"])
    batch_axis: str = "batch"  # the axis the global batch is split along
    model_axis: str = "model"  # the axis the family's own layout map splits weights along


@dataclass
class LayoutConfig:
    source: LayoutSource = LayoutSource.auto
    # {name: {pattern: REGEX, axes: [axis or null, ...]}}. Typed as a plain dict because
    # OmegaConf refuses to add a dataclass-typed entry from the command line
    # (`+layout.rules.x={pattern:...,axes:[...]}`); runner.layout checks each rule's keys and
    # types instead, with the same one-line errors.
    rules: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraConfig:
    rank: int = 0  # 0 turns LoRA off: every weight trains
    alpha: Optional[float] = None  # scale = alpha / rank; null means alpha = rank (scale 1)
    targets: Optional[List[str]] = None  # layer names; null means the family's defaults
    dropout: float = 0.0  # Keras LoRA has no dropout: anything but 0 is rejected, not ignored


@dataclass
class QuantConfig:
    mode: QuantMode = QuantMode.none  # quantize the frozen base before LoRA is added


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adamw
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    exclude_from_weight_decay: List[str] = field(default_factory=list)
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    momentum: float = 0.0
    clipnorm: Optional[float] = None  # clip each gradient's norm
    global_clipnorm: Optional[float] = None  # clip the norm of all gradients together
    schedule: Schedule = Schedule.constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # warmup_cosine decays to learning_rate * min_lr_ratio


@dataclass
class DatasetConfig:
    name: str = MISSING  # a TFDS name, e.g. imdb_reviews or tiny_reviews (shipped)
    split: str = "train"  # TFDS split syntax; quote slices on the command line: 'train[:10%]'
    eval_split: Optional[str] = None  # evaluated every train.eval_every steps
    format: DataFormat = DataFormat.text
    text_field: str = "text"  # format=text: the feature holding the text
    # format=prompt_response: Python format strings over the example's features, e.g.
    # "Translate this into French:\n{src}\n". The loss covers the response (and EOS) only.
    prompt_template: str = ""
    response_template: str = ""
    add_eos: bool = True  # end the response with the tokenizer's end token
    too_long: TooLong = TooLong.truncate  # sequences over train.sequence_length
    take: Optional[int] = None  # use only the first N examples of the split
    shuffle_buffer: int = 10000
    data_dir: Optional[str] = None  # null: $TFDS_DATA_DIR or ~/tensorflow_datasets
    download: bool = True  # may fetch a dataset that is not prepared (never tried offline)
    # A shipped TFDS dataset with the same features, used by debug=smoke to run offline.
    stand_in: Optional[str] = None


@dataclass
class TrainConfig:
    batch_size: int = 8  # global batch, split along mesh.batch_axis
    sequence_length: int = 64
    steps: Optional[int] = None  # stop after this many steps (null: run all epochs)
    epochs: int = 1
    log_every: int = 1
    eval_every: Optional[int] = None  # steps between evaluations of dataset.eval_split
    eval_steps: Optional[int] = None  # batches per evaluation (null: the whole split)
    precision: Precision = Precision.float32
    checkpoint_every: Optional[int] = None  # steps between checkpoints (null: none)
    resume: bool = True  # the same config in a folder whose run was cut resumes it
    save_adapter: bool = True  # LoRA runs: adapter.lora.h5 in the run folder
    save_merged_preset: bool = False  # also a keras-hub preset with the adapter merged in


@dataclass
class GenerateConfig:
    prompts: List[str] = field(default_factory=list)
    max_length: int = 48  # tokens, prompt included
    sampler: Sampler = Sampler.greedy
    top_k: int = 5  # sampler=top_k
    top_p: float = 0.9  # sampler=top_p
    temperature: float = 1.0


@dataclass
class TrackingConfig:
    mode: TrackingMode = TrackingMode.offline
    project: str = "keras-runner"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


class DistributedMode(str, Enum):
    off = "off"  # one process
    auto = "auto"  # a submitit job's tasks, or JAX's cluster detection (SLURM, TPU pod slices)
    explicit = "explicit"  # coordinator, num_processes, process_id given


@dataclass
class DistributedConfig:
    mode: DistributedMode = DistributedMode.off
    coordinator: Optional[str] = None  # host:port of process 0 (explicit)
    num_processes: Optional[int] = None  # explicit
    process_id: Optional[int] = None  # explicit; also names this process's log file
    initialization_timeout_s: int = 300  # a peer that never starts fails the others after this
    heartbeat_timeout_s: int = 60  # a peer that dies ends the others after about this


@dataclass
class PlanConfig:
    """What `python -m runner.plan` sizes the plan against (training runs use the real devices)."""
    devices: Optional[int] = None  # devices to plan for; null: mesh.shape's product, or this
    # machine's device count when mesh.shape has a -1
    accelerator: Optional[str] = None  # e.g. tpu-v5p, h100-80gb: its memory per device
    device_memory_gb: Optional[float] = None  # overrides accelerator (GB = 2**30 bytes)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    name: str = "default"
    seed: int = 0
    cpu_devices: int = 8
    compilation_cache_dir: Optional[str] = None  # JAX's persistent compilation cache (null: off)


def register_configs() -> None:
    """Called by the entry point and by tests, never at import time."""
    from omegaconf import OmegaConf

    from runner.distributed import log_file_name

    # conf/config.yaml names each process's log file with it (hydra.job_logging).
    OmegaConf.register_new_resolver("runner_log_file", log_file_name, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
