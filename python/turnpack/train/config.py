"""Configuration of ``turnpack train``: typed sections, loaded from TOML or JSON, overridable.

A config file has up to four sections; every key is optional (defaults train the
reference model on the built-in example dataset for a short CPU run)::

    [model]
    preset = "tiny"            # "tiny" or "100m" (turnpack.train.model presets); other keys override it
    dim = 128
    n_layers = 3
    # or, instead of the reference model, a pretrained Hugging Face checkpoint (a local folder):
    # hf = "path/to/Qwen3-0.6B"   # its tokenizer and chat template encode the data by default

    [data]
    source = "example"         # "example" or "dataset" (files or a `turnpack prepare` folder at `path`)
    seq_len = 512
    batch_size = 8             # packed rows per rank per micro-step
    history = "rendered"       # or "faithful", or "expand" (rewritten turns as prefix-tree branches)

    [train]
    max_steps = 300
    lr = 3e-3
    data_parallel = "ddp"      # "ddp" or "fsdp" (FSDP2, fully_shard per layer; also on one GPU, to offload)

    [checkpoint]
    every = 100

``turnpack train --config example`` is the built-in example run (``example_data/train_example.json``,
what ``turnpack demo`` trains).  On the command line, ``--set SECTION.KEY=VALUE`` overrides any key
(repeatable);
``VALUE`` is parsed as JSON when it can be (``1e-3``, ``true``, ``null``,
``[0.9, 0.95]``) and taken as a string otherwise (``data.path=/tmp/x.jsonl``).
TOML needs Python 3.11+ (``tomllib``) or the ``tomli`` package; JSON always works.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from turnpack.data.options import PackingOptions

__all__ = [
    "EXAMPLE_CONFIG",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "ModelSection",
    "TrainConfig",
    "TrainSection",
    "apply_override",
    "config_from_dict",
    "load_config",
]


#: The built-in example run (``turnpack train --config example``): the config ``turnpack demo`` trains with.
EXAMPLE_CONFIG = Path(__file__).resolve().parent / "example_data" / "train_example.json"


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def _positive(section: object, name: str, *keys: str) -> None:
    for key in keys:
        if getattr(section, key) <= 0:
            raise ConfigError(f"{name}.{key} must be positive, got {getattr(section, key)!r}")


@dataclass
class ModelSection:
    """The model: the reference :class:`~turnpack.train.model.Transformer` (a preset plus
    overrides), or a pretrained Hugging Face checkpoint (``hf``).

    ``None`` keeps the preset's value.  ``vocab_size`` defaults to the
    tokenizer's; ``max_seq_len`` defaults to ``data.seq_len``.

    ``hf`` names a local model folder (``config.json`` + safetensors, as
    ``save_pretrained`` writes it) loaded with ``transformers.AutoModelForCausalLM``
    (:mod:`turnpack.train.hf_model`); the preset keys do not apply to it.  Its
    tokenizer and chat template encode the data unless ``data.tokenizer`` names
    another.  Before the first step it is an error when that tokenizer has more
    tokens than the model's embedding has rows, another vocabulary size than the
    folder's own ``tokenizer.json``, or (for a ``turnpack prepare`` folder)
    another than the one the rows were prepared with.  The trained model is saved for
    ``from_pretrained`` in ``{train.out_dir}/final_model``.
    """

    #: A local Hugging Face model folder to fine-tune instead of the reference model.
    hf: str | None = None
    preset: Literal["tiny", "100m"] = "tiny"
    vocab_size: int | None = None
    dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    ffn_hidden: int | None = None
    max_seq_len: int | None = None
    tie_embeddings: bool | None = None
    #: "auto" = FlexAttention on CUDA, SDPA + dense mask elsewhere (for hf models too:
    #: attn_implementation "flex_attention" or "sdpa", the document mask passed in).
    attention_backend: Literal["auto", "flex", "sdpa"] = "auto"

    def __post_init__(self) -> None:
        if self.hf is None:
            return
        reference_only = [
            f.name
            for f in dataclasses.fields(self)
            if f.name not in ("hf", "preset", "attention_backend") and getattr(self, f.name) is not None
        ]
        if reference_only:
            raise ConfigError(
                f"model.hf loads a pretrained model: model.{', model.'.join(reference_only)} apply only "
                "to the reference model (the checkpoint's config.json fixes them)"
            )


@dataclass
class DataConfig:
    """Where batches come from.

    Sources:
        ``example``: the built-in register-machine dialogues (:mod:`turnpack.train.examples`),
        ``num_examples`` of them, encoded with the bundled tokenizer and packed once in memory.
        ``dataset``: :class:`turnpack.data.ChatDataset` over ``path``: JSONL/JSON/Parquet files
        (a file, folder or glob), streamed, encoded with ``tokenizer`` and packed on the fly; or a
        folder written by ``turnpack prepare``, read memory-mapped.  Each rank reads its own shard.
    """

    source: Literal["example", "dataset"] = "example"
    path: str | None = None
    #: A Hugging Face model folder, a tokenizer.json file, or "example"; prepared folders need none.
    tokenizer: str | None = None
    #: Optional chat template file replacing the tokenizer's.
    chat_template: str | None = None
    #: Tokens per packed row; unset: 512, or the prepared folder's.
    seq_len: int | None = None
    #: Packed rows per rank per micro-step; the global batch is batch_size * world_size * grad_accum_steps.
    batch_size: int = 8
    #: Dialogues generated for the example source.
    num_examples: int = 6000
    shuffle: bool = True
    #: What to do with a conversation longer than seq_len: "drop" or "truncate".
    overflow: Literal["drop", "truncate"] = "drop"
    #: What is trained of assistant turns the chat template rewrites in history (Qwen3 drops their
    #: reasoning): "rendered" (as rendered), "faithful" (untrained) or "expand" (trained in their
    #: inference context as prefix-tree branches; batches then carry prefix_starts/prefix_ends, which
    #: the loop gives to the attention mask). See ChatTokenizer.encode. A prepared folder keeps the
    #: history it was prepared with; "expand" there requires a folder prepared with it.
    history: Literal["rendered", "faithful", "expand"] = "rendered"
    #: DataLoader worker processes per rank for the dataset source (0: read in the training process).
    num_workers: int = 0

    def __post_init__(self) -> None:
        _positive(self, "data", "batch_size", "num_examples")

    def packing_options(self, pad_id: int = 0) -> PackingOptions:
        """How this source's conversations are encoded and packed: the defaults, with this section's
        ``overflow`` and ``history`` and the source's padding token ``pad_id``."""
        return PackingOptions(overflow=self.overflow, history=self.history, pad_id=pad_id)


@dataclass
class TrainSection:
    """Optimisation, devices and logging."""

    max_steps: int = 300
    lr: float = 3e-3
    #: The cosine schedule decays to lr * min_lr_ratio.
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    #: Clip the global gradient norm to this value (0 = no clipping).
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    seed: int = 0
    #: "auto" = cuda:LOCAL_RANK when CUDA is available, else cpu.
    device: str = "auto"
    #: "auto" = bf16 autocast on CUDA, fp32 elsewhere.
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    #: torch.compile the model (CUDA only is worth it).
    compile: bool = False
    #: Recompute each layer's activations in the backward pass (less memory, ~1/3 more compute).
    activation_checkpointing: bool = False
    #: Under torchrun: "ddp" (DistributedDataParallel, whole model per rank) or "fsdp" (FSDP2:
    #: fully_shard per decoder layer, bf16 parameters / fp32 gradient reduction with bf16,
    #: distributed checkpoints). "fsdp" without torchrun runs in a process group of one (with
    #: fsdp_cpu_offload: a model larger than the GPU's memory). See turnpack.train.parallel.
    data_parallel: Literal["ddp", "fsdp"] = "ddp"
    #: FSDP2: keep parameter, gradient and optimizer shards in CPU memory between uses.
    fsdp_cpu_offload: bool = False
    #: FSDP2: free gathered parameters after each layer's forward (False: keep them until backward).
    fsdp_reshard_after_forward: bool = True
    out_dir: str = "runs/example"
    log_every: int = 10

    def __post_init__(self) -> None:
        _positive(self, "train", "max_steps", "grad_accum_steps", "log_every", "lr")


@dataclass
class CheckpointConfig:
    """Periodic checkpoints in ``{train.out_dir}/checkpoints`` and resuming from them."""

    #: Save every N optimizer steps and after the last one; 0 = never save.
    every: int = 100
    #: Keep only the newest N checkpoints (0 = keep all).
    keep: int = 2
    #: "auto" = resume from the newest checkpoint in out_dir if there is one; "never"; or the path of a
    #: checkpoint file (or, under FSDP2, of a distributed checkpoint folder).
    resume: str = "auto"


@dataclass
class TrainConfig:
    """Everything ``turnpack train`` needs; see the module docstring for the file format."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (round-trips through :func:`config_from_dict`)."""
        return json.loads(json.dumps(asdict(self)))


# ------------------------------------------------------------------ parsing


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation, converting where it is lossless."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r}")  # pragma: no cover - programming error


def _section_fields(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


_SECTIONS = _section_fields(TrainConfig)


def _unknown(kind: str, name: str, known: list[str]) -> ConfigError:
    return ConfigError(f"unknown {kind} {name!r}; expected one of: {', '.join(known)}")


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested dicts, rejecting unknown keys and bad types."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table/object of sections")
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name not in _SECTIONS:
            raise _unknown("config section", name, list(_SECTIONS))
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table/object, got {values!r}")
        fields = _section_fields(_SECTIONS[name])
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                raise _unknown(f"key in [{name}]:", key, list(fields))
            kwargs[key] = _coerce(value, fields[key], f"{name}.{key}")
        sections[name] = _SECTIONS[name](**kwargs)
    return TrainConfig(**sections)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as a path or "auto"


def _accepts_str(annotation: Any) -> bool:
    return annotation is str or str in typing.get_args(annotation)


def apply_override(config: TrainConfig, assignment: str) -> TrainConfig:
    """Return a copy of ``config`` with one ``SECTION.KEY=VALUE`` override applied."""
    key, sep, text = assignment.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"override {assignment!r} must look like SECTION.KEY=VALUE (e.g. train.lr=1e-3)")
    if section not in _SECTIONS:
        raise _unknown("config section", section, list(_SECTIONS))
    fields = _section_fields(_SECTIONS[section])
    if name not in fields:
        raise _unknown(f"key in [{section}]:", name, list(fields))
    text = text.strip()
    try:
        value = _coerce(_parse_value(text), fields[name], key.strip())
    except ConfigError:
        if not _accepts_str(fields[name]):
            raise
        value = text  # a string field takes the text verbatim, even if it parses as JSON (data.path=123)
    updated = dataclasses.replace(getattr(config, section), **{name: value})
    return dataclasses.replace(config, **{section: updated})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError(
                f"{path}: reading TOML needs Python 3.11+ or `pip install tomli`; or write the config as JSON"
            ) from None
    with path.open("rb") as f:
        return tomllib.load(f)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a ``.toml`` or ``.json`` config and apply overrides.

    ``path`` None gives the defaults; ``"example"`` the built-in example run (:data:`EXAMPLE_CONFIG`).
    """
    config = TrainConfig()
    if path is not None:
        path = EXAMPLE_CONFIG if str(path) == "example" else Path(path)
        if path.suffix.lower() == ".toml":
            data = _read_toml(path)
        elif path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise ConfigError(f"{path}: config files must end in .toml or .json")
        try:
            config = config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for assignment in overrides:
        config = apply_override(config, assignment)
    return config
