"""`PackingOptions`: how conversations become packed rows, as one frozen, validated value.

What `ChatTokenizer.encode_batch` takes besides the conversations (what is supervised, the end-of-turn
token, template variables, ...) and what `Packer` takes besides `seq_len` (buffer, open rows, overflow,
padding) decide, together with the order of the records, every packed row. `ChatDataset`,
`turnpack prepare`, `EncodePacker` and the training config pass them around as this one object instead
of a dozen keyword arguments each, so they are spelled, defaulted and checked in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from turnpack._core import DEFAULT_BUFFER, DEFAULT_MAX_OPEN_ROWS, Packer

__all__ = ["DEFAULT_BUFFER", "DEFAULT_MAX_OPEN_ROWS", "ENCODE_OPTIONS", "HISTORIES", "PackingOptions"]

# DEFAULT_BUFFER, DEFAULT_MAX_OPEN_ROWS: the packer's own defaults, from the core.

#: The values of the `history` option (`ChatTokenizer.encode`); `"expand"` makes prefix-tree rows.
HISTORIES: tuple[str, ...] = ("rendered", "faithful", "expand")

# encode_batch arguments that the pipeline sets itself, per call.
_RESERVED = frozenset({"conversations", "num_threads", "on_error", "sample_ids"})


@dataclass(frozen=True)
class PackingOptions:
    """Encoding and packing options, as `ChatTokenizer.encode_batch` and `turnpack.Packer` take them.

    Encoding (see `ChatTokenizer.encode`):
        tools: tools for every conversation that does not bring its own (a record's `tools` win).
        supervise, eot, start, spans, boundary, method: which tokens are trained, and how they are found.
        history: what is trained of turns the template rewrites in history (`"rendered"`, the default,
            `"faithful"` or `"expand"`; see `ChatTokenizer.encode`). `"expand"` makes prefix-tree rows:
            their batches and shards carry `prefix_starts`/`prefix_ends` (and document roles), which
            the attention mask must be given (`turnpack.attention`). Checked here, since it decides the
            rows' layout and not only the encoding.
        template_kwargs: further template variables, e.g. `{"enable_thinking": False}`, for every
            conversation (a record's own `chat_template_kwargs` win for that record).

    Packing (see `turnpack.pack`):
        buffer: samples per best-fit round.
        max_open_rows: rows kept open for later samples.
        overflow: `"drop"` or `"truncate"` samples longer than a row.
        pad_id: the token that fills the end of a row.

    The packing options are checked by the packer itself when the object is made (so a bad value fails
    here, not when the first row is packed); the encoding options are checked by the encoder.
    """

    tools: Sequence[Mapping[str, Any]] | None = None
    supervise: Literal["assistant", "last_assistant", "all"] = "assistant"
    eot: Literal["auto"] | Sequence[str] | None = "auto"
    start: Literal["prompt", "content"] = "prompt"
    spans: Literal["diff", "generation"] = "diff"
    boundary: Literal["merge", "split"] = "merge"
    method: Literal["auto", "per_message"] = "auto"
    history: Literal["rendered", "faithful", "expand"] = "rendered"
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    buffer: int = DEFAULT_BUFFER
    max_open_rows: int = DEFAULT_MAX_OPEN_ROWS
    overflow: Literal["drop", "truncate"] = "drop"
    pad_id: int = 0

    def __post_init__(self) -> None:
        named = sorted(set(self.template_kwargs) & set(ENCODE_OPTIONS))
        if named:
            raise ValueError(f"{', '.join(named)} are options of their own, not template variables")
        _check_reserved(self.template_kwargs)
        if self.history not in HISTORIES:
            # The encoder would refuse it too, but only at the first record; the writer and the dataset
            # decide from it whether rows carry prefix trees.
            raise ValueError(
                f"history must be one of {', '.join(map(repr, HISTORIES))}, got {self.history!r}"
            )
        # A copy, so that changing the caller's dict later cannot change these options. (A plain dict,
        # not a read-only proxy: options are pickled to DataLoader workers, and proxies do not pickle.)
        object.__setattr__(self, "template_kwargs", dict(self.template_kwargs))
        if isinstance(self.eot, list):
            object.__setattr__(self, "eot", tuple(self.eot))
        if isinstance(self.tools, list):
            object.__setattr__(self, "tools", tuple(self.tools))
        Packer(2, **self.pack_kwargs())  # the packer's own checks (buffer >= 1, overflow, pad_id range)

    @classmethod
    def from_encode_kwargs(
        cls, encode_kwargs: Mapping[str, Any] | None = None, **packing: Any
    ) -> PackingOptions:
        """Options from an `encode_batch`-style dict, where named options and template variables mix
        (`ChatDataset(encode_kwargs=...)`, `turnpack prepare --encode-kwargs`), plus packing options."""
        kwargs = dict(encode_kwargs or {})
        _check_reserved(kwargs, "encode_kwargs")
        named = {key: kwargs.pop(key) for key in ENCODE_OPTIONS if key in kwargs}
        return cls(**named, template_kwargs=kwargs, **packing)

    def encode_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `encode_batch`: the encoding options that differ from its defaults,
        then the template variables. Only what was changed, so that a dataset's resume fingerprint
        (`ChatDataset` compares it) reads as it did when these were loose keyword arguments."""
        kwargs = {key: getattr(self, key) for key in ENCODE_OPTIONS if getattr(self, key) != _DEFAULTS[key]}
        return {**kwargs, **self.template_kwargs}

    def pack_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `turnpack.pack` and `turnpack.Packer` (besides `seq_len`)."""
        return {
            "buffer": self.buffer,
            "max_open_rows": self.max_open_rows,
            "overflow": self.overflow,
            "pad_id": self.pad_id,
        }


#: The encoding options that are fields of their own (everything else is a template variable).
ENCODE_OPTIONS: tuple[str, ...] = (
    "tools",
    "supervise",
    "eot",
    "start",
    "spans",
    "boundary",
    "method",
    "history",
)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PackingOptions) if f.name in ENCODE_OPTIONS}


def _check_reserved(kwargs: Mapping[str, Any], what: str = "encoding options") -> None:
    reserved = sorted(_RESERVED & kwargs.keys())
    if reserved:
        raise ValueError(f"{what} may not set {', '.join(reserved)}: they are arguments of their own")
