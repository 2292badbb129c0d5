"""Type stubs for `turnpack._core`, the PyO3 binding over the Rust core."""

from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, TypeAlias, final, overload

import numpy as np
import numpy.typing as npt

__version__: str
IGNORE_INDEX: int
"""The label of positions that are not trained (-100), as the packer writes it."""
DEFAULT_BUFFER: int
"""The packer's default `buffer` (1024 samples per best-fit round)."""
DEFAULT_MAX_OPEN_ROWS: int
"""The packer's default `max_open_rows` (16)."""
__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_MAX_OPEN_ROWS",
    "IGNORE_INDEX",
    "ChatTokenizer",
    "ConversationError",
    "Encoding",
    "PackedBatch",
    "Packer",
    "TemplateError",
    "TokenizerError",
    "TurnpackError",
    "__version__",
    "pack",
    "render_template",
]

Message: TypeAlias = Mapping[str, Any]
Conversation: TypeAlias = Sequence[Message]
Supervise: TypeAlias = Literal["assistant", "last_assistant", "all"]
Role: TypeAlias = Literal[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "ipython",
    "function",
    "tool_response",
    "observation",
    "document",
]
Start: TypeAlias = Literal["prompt", "content"]
SpanSource: TypeAlias = Literal["diff", "generation"]
Boundary: TypeAlias = Literal["merge", "split"]
Method: TypeAlias = Literal["auto", "per_message"]
History: TypeAlias = Literal["rendered", "faithful", "expand"]
Overflow: TypeAlias = Literal["drop", "truncate"]
Eot: TypeAlias = Literal["auto"] | Sequence[str] | None
BpeBackend: TypeAlias = Literal["turnpack", "tokenizers"]

class TurnpackError(ValueError):
    """Base class of turnpack's errors."""

class TemplateError(TurnpackError):
    """A chat template failed to compile or raised (its message is kept), or its spans are inconsistent."""

class ConversationError(TurnpackError):
    """A conversation is malformed (not a list of dicts, missing or unknown role, wrong content type)."""

class TokenizerError(TurnpackError):
    """A tokenizer could not be loaded or used."""

@final
class Encoding:
    """One encoded conversation. `offsets` and `spans` are character offsets into `text`."""

    @property
    def input_ids(self) -> npt.NDArray[np.int32]:
        """Token ids of the whole rendering, `[n]`."""
    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """True where the token is trained, `[n]`."""
    @property
    def offsets(self) -> npt.NDArray[np.int32]:
        """`[n, 2]` character range of each token in `text`."""
    @property
    def spans(self) -> list[tuple[int, int]]:
        """Character spans of the trained text (end-of-turn tokens included), in order."""
    @property
    def span_messages(self) -> list[int | None]:
        """The message index of each span (None for `supervise="all"` and generation spans)."""
    @property
    def skipped(self) -> list[int]:
        """Indices of supervised messages that render no text of their own (no span)."""
    @property
    def text(self) -> str:
        """The rendering, equal to `apply_chat_template(tokenize=False)`."""
    @property
    def num_trained(self) -> int:
        """Number of trained tokens."""
    @property
    def renders(self) -> int:
        """How many times the template was rendered to find the spans."""
    @property
    def history_renders(self) -> int:
        """How many more renderings checking the history took: one with marked contents per trained
        turn but the last (where the template prints contents verbatim), and three per turn that
        check fails for."""
    @property
    def loss_weights(self) -> npt.NDArray[np.float32] | None:
        """Per-token loss weights, `[n]`: each trained token's message `weight` (0 elsewhere); None when
        every trained message weighs 1."""
    @property
    def rewrites(self) -> list[dict[str, Any]]:
        """The supervised turns this rendering shows differently from how the model writes them (Qwen3
        and most reasoning templates drop earlier turns' reasoning), found in every `history` mode, in
        message order. Each dict: `message` (index), `rendered` (its character span in `text`),
        `context` (the text before the target when the message is the last one: its generation
        prompt), `target` (what the model writes there, end-of-turn token included) and `training`:
        `"rendered"` (trained as rendered), `"context"` (not trained), `"branch"` (trained as a branch
        of this encoding's tree), `"sample"` (trained as a sample of its own, in `branches` with
        `prefix_len` 0), or `"empty"` (its target renders nothing)."""
    @property
    def rewritten(self) -> list[int]:
        """Message indices of `rewrites`."""
    @property
    def branches(self) -> list[dict[str, Any]]:
        """With `history="expand"`: each rewritten turn in its inference context, as a dict with
        `message`, `prefix_len` (tokens of `input_ids` it attends to), `input_ids` (int32: the trunk's
        token at `prefix_len`, then the target's tokens tokenized on their own; for a sample of its own
        the context's tokens, then the target's) and `mask` (bool: the target's tokens). Packing an
        Encoding packs its branches with it (`PackedBatch.prefix_starts`). `loss_weights` (float32 or
        None) as `Encoding.loss_weights`."""
    def __len__(self) -> int: ...

@final
class ChatTokenizer:
    """A tokenizer and a chat template: renders conversations and encodes them with training masks."""

    def __new__(
        cls,
        tokenizer: str | PathLike[str],
        chat_template: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
    ) -> ChatTokenizer:
        """Loads a tokenizer.json; `special_tokens` are template variables (`bos_token`, `eos_token`...)."""
    @staticmethod
    def from_dir(path: str | PathLike[str], chat_template: str | None = None) -> ChatTokenizer:
        """Loads a Hugging Face model folder: tokenizer.json, tokenizer_config.json (special tokens and
        `chat_template`) or chat_template.jinja (which wins)."""
    @staticmethod
    def from_tokenizer_json(
        json: str,
        chat_template: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
        bpe_backend: BpeBackend | None = None,
    ) -> ChatTokenizer:
        """Builds from the text of a tokenizer.json; `bpe_backend` as in `with_bpe_backend`."""
    @staticmethod
    def from_tiktoken(
        ranks_path: str | PathLike[str],
        pattern: str,
        special_tokens: Mapping[str, int] | None = None,
        chat_template: str | None = None,
        template_vars: Mapping[str, str] | None = None,
    ) -> ChatTokenizer:
        """Builds an equivalent byte-level BPE from a tiktoken rank file (Llama 3/4 `tokenizer.model`,
        Qwen `qwen.tiktoken`), its pre-tokenizer pattern and its special tokens `{text: id}`."""
    def render(
        self,
        messages: Conversation,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        **template_kwargs: Any,
    ) -> str:
        """Renders like transformers' `apply_chat_template(tokenize=False)`."""
    def encode(
        self,
        messages: Conversation,
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        supervise: Supervise | Sequence[Role] = "assistant",
        eot: Eot = "auto",
        start: Start = "prompt",
        spans: SpanSource = "diff",
        boundary: Boundary = "merge",
        method: Method = "auto",
        history: History = "rendered",
        **template_kwargs: Any,
    ) -> Encoding:
        """Renders, finds each supervised message's span, tokenizes once and builds the mask.

        `eot="auto"` also trains the special token that ends a turn (when only whitespace precedes
        it), a list names the end-of-turn strings, None turns it off (generation spans are extended
        only by an explicit list). `start="prompt"` trains from the end of the generation prompt
        (where that rendering is a prefix; from three supervised messages on, the prompt's text is
        found in the rendering instead, checked against the rendered prompt on the first and last),
        `"content"` from where the message's text differs.
        `boundary="split"` tokenizes the text before each span and the span separately.
        `method="auto"` finds every message's blanked rendering from four renderings when the
        template is local (checked; else per message); `"per_message"` always renders per message
        (the reference; same results).
        `supervise` may also be a list of roles to train (axolotl's `roles_to_train`, e.g.
        `["assistant", "tool"]` or `["user"]`): their spans are found the same way (the message blanked
        with its own role); spans of other roles than assistant start where the message's text starts.
        A message's `"weight"` is any non-negative number: 0 leaves it untrained, others scale its tokens'
        loss (`Encoding.loss_weights`, `PackedBatch.loss_weights`; the training loss is then the
        weighted mean over trained tokens).
        `history` decides what is trained of turns the template rewrites in history (Qwen3 drops the
        reasoning of turns before the last user message; see `Encoding.rewrites`, reported in every
        mode): `"rendered"` (the default) trains them as rendered, `"faithful"` only as context,
        `"expand"` in their inference context with their inference target, as prefix-tree branches
        (`Encoding.branches`, packed with the trunk; train with `prefix_starts`/`prefix_ends`)."""
    def encode_batch(
        self,
        conversations: Iterable[Conversation | Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        supervise: Supervise | Sequence[Role] = "assistant",
        eot: Eot = "auto",
        start: Start = "prompt",
        spans: SpanSource = "diff",
        boundary: Boundary = "merge",
        method: Method = "auto",
        history: History = "rendered",
        num_threads: int | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        **template_kwargs: Any,
    ) -> list[Encoding | TurnpackError]:
        """`encode` on many conversations in parallel in Rust with the GIL released. Items are message
        lists or dicts with "messages", optional per-row "tools" (which replace `tools`) and optional
        per-row "chat_template_kwargs": a dict of template variables for that conversation only (str
        keys; None or absent: none), applied on top of `**template_kwargs`, the row's winning for the
        names both give. A non-dict value, a non-str key or one of turnpack's own names there
        (`supervise`, `tools`, `messages`, ...: not template variables) is that sample's
        `ConversationError` (naming `sample i` and the field). `num_threads` threads in all
        (default $TURNPACK_NUM_THREADS or all cores): the calling thread reads the items from Python
        while the others (kept between calls) encode them, then encodes alongside them. With `on_error="skip"` a failed sample's exception (naming `sample i`)
        takes its place in the result; with "raise" the first one is raised. A bug in turnpack (a
        Rust panic) comes back as that sample's `RuntimeError`, never as a crash."""
    @overload
    def tokenize(self, text: str, *, with_offsets: Literal[False] = False) -> list[int]: ...
    @overload
    def tokenize(
        self, text: str, *, with_offsets: Literal[True]
    ) -> tuple[list[int], list[tuple[int, int]]]: ...
    @overload
    def tokenize(
        self, text: str, *, with_offsets: bool = False
    ) -> list[int] | tuple[list[int], list[tuple[int, int]]]:
        """Plain tokenization: no template, special tokens recognised, no BOS/EOS added.

        With `with_offsets`, also each token's (start, end) character offsets in `text`, as
        `tokenizers.Encoding.offsets` gives them (a token holding part of a character spans the
        whole character).
        """
    @property
    def bpe_backend(self) -> BpeBackend:
        """The encoder that turns text into ids: "turnpack" (turnpack's own byte-level BPE, the
        default when the tokenizer qualifies) or "tokenizers" (Hugging Face `tokenizers`). Both
        give the same ids and offsets."""
    @property
    def bpe_backend_unavailable(self) -> str | None:
        """Why turnpack's BPE encoder cannot be used for this tokenizer; None when it can."""
    def with_bpe_backend(self, backend: BpeBackend) -> ChatTokenizer:
        """A copy that encodes with `backend`. Raises ValueError when asking for "turnpack" for
        a tokenizer that does not qualify (see `bpe_backend_unavailable`)."""
    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of token ids through the tokenizer's decoder, as `tokenizers.Tokenizer.decode` gives
        it (ids outside the vocabulary are left out; special tokens too with `skip_special_tokens`)."""
    @property
    def vocab_size(self) -> int:
        """The highest id of the vocabulary or the added tokens, plus one: the embedding rows a
        model needs for every id this tokenizer produces (transformers' `len(tokenizer)` when ids
        are contiguous)."""
    def to_tokenizer_json(self) -> str:
        """The tokenizer as tokenizer.json text (`tokenizers.Tokenizer.from_str` loads it)."""
    @property
    def special_tokens(self) -> list[str]:
        """The tokenizer's special (added) tokens."""
    @property
    def has_chat_template(self) -> bool: ...
    def token_to_id(self, token: str) -> int | None: ...

def render_template(
    chat_template: str,
    messages: Conversation,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    **template_vars: Any,
) -> str:
    """Renders a chat template without a tokenizer."""

@final
class PackedBatch:
    """Packed rows. Per-token arrays are `[rows, seq_len]`."""

    @property
    def seq_len(self) -> int: ...
    @property
    def input_ids(self) -> npt.NDArray[np.int32]:
        """Tokens; padding (`pad_id`) only at the end of a row."""
    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """`labels[t]` is `input_ids[t + 1]` when that token is trained and in the same document, else -100
        (so every document's last position and all padding are -100)."""
    @property
    def position_ids(self) -> npt.NDArray[np.int32]:
        """0, 1, 2... restarting at each document (and for the padding run)."""
    @property
    def document_ids(self) -> npt.NDArray[np.int32]:
        """0, 1, 2... per document of a row; padding gets its own id (the row's document count)."""
    @property
    def cu_seqlens(self) -> npt.NDArray[np.int32]:
        """`[rows, max_segments + 1]` document boundaries per row, tail filled with `seq_len`."""
    @property
    def sample_ids(self) -> npt.NDArray[np.int64]:
        """`[rows, max_segments]` sample id of each document, -1 for padding and fill."""
    @property
    def doc_lens(self) -> npt.NDArray[np.uint32]:
        """Length of every document, row 0's first (flat)."""
    @property
    def row_doc_offsets(self) -> npt.NDArray[np.uint64]:
        """`rows + 1` offsets into `doc_lens` delimiting each row's documents."""
    @property
    def prefix_starts(self) -> npt.NDArray[np.int32] | None:
        """Prefix-tree rows only (`history="expand"` samples with branches), else None: token `t` also
        attends to the row's tokens `prefix_starts[t]:prefix_ends[t]` (empty for all but branch
        tokens). Pass both to `turnpack.attention`'s masks."""
    @property
    def prefix_ends(self) -> npt.NDArray[np.int32] | None:
        """See `prefix_starts`."""
    @property
    def loss_weights(self) -> npt.NDArray[np.float32] | None:
        """When a packed sample had loss weights (messages weighted other than 1), else None: `[rows,
        seq_len]` weight of each label (its target token's weight; 0 where the label is -100)."""
    @property
    def doc_roles(self) -> npt.NDArray[np.uint8] | None:
        """Prefix-tree rows only: per document (as `doc_lens`), 0 for a sample's own document, 1 for a
        branch, 2 for a context copy of a trunk's first tokens (a tree split over rows)."""
    @property
    def stats(self) -> dict[str, float]:
        """samples_in, packed, pending, dropped (+ by reason), truncated, tokens, trained_tokens,
        padding_tokens, rows, efficiency (cumulative for a `Packer`), and for prefix trees
        branches_in, branches_packed, branches_truncated, branches_dropped, tree_splits."""
    @property
    def efficiency(self) -> float:
        """Non-padding positions / all positions of these rows."""
    def __len__(self) -> int: ...

Sample: TypeAlias = Encoding | tuple[npt.ArrayLike, npt.ArrayLike] | Mapping[str, npt.ArrayLike]

def pack(
    samples: Iterable[Sample],
    seq_len: int,
    *,
    buffer: int = 1024,
    max_open_rows: int = 16,
    overflow: Overflow = "drop",
    pad_id: int = 0,
    sample_ids: Sequence[int] | None = None,
) -> PackedBatch:
    """Best-fit decreasing over a bounded buffer; a sample is never split and never shares attention.
    Samples longer than `seq_len` are dropped (counted) or truncated (counted); samples with nothing
    to train are dropped and counted. `sample_ids` default to the input positions."""

@final
class Packer:
    """Streaming `pack`: push samples, pop finished rows, `flush()` at the end."""

    def __new__(
        cls,
        seq_len: int,
        *,
        buffer: int = 1024,
        max_open_rows: int = 16,
        overflow: Overflow = "drop",
        pad_id: int = 0,
    ) -> Packer: ...
    def push(
        self, sample: Sample, sample_id: int | None = None
    ) -> Literal["accepted", "truncated", "dropped_empty", "dropped_too_long", "dropped_nothing_to_train"]:
        """Adds a sample; `sample_id` defaults to the number of samples pushed before it."""
    def extend(self, samples: Iterable[Sample], sample_ids: Sequence[int] | None = None) -> int:
        """Pushes every sample; returns how many were admitted."""
    def encode_extend(
        self,
        tokenizer: ChatTokenizer,
        conversations: Iterable[Conversation | Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        sample_ids: Sequence[int] | None = None,
        supervise: Supervise | Sequence[Role] = "assistant",
        eot: Eot = "auto",
        start: Start = "prompt",
        spans: SpanSource = "diff",
        boundary: Boundary = "merge",
        method: Method = "auto",
        history: History = "rendered",
        num_threads: int | None = None,
        **template_kwargs: Any,
    ) -> list[TurnpackError | None]:
        """`tokenizer.encode_batch(conversations, ...)` pushed straight into this packer, in input
        order, without making `Encoding`s (the ids and masks stay in Rust). Returns one entry per
        input: None when it reached the packer (whose stats count it as packed, pending or dropped,
        as `extend` would) or the exception that kept it out, exactly as
        `encode_batch(on_error="skip")` returns it (naming `sample i`). Items are those of
        `encode_batch`: a dict item's "tools" and "chat_template_kwargs" apply to it alone, its
        template variables winning over `**template_kwargs`. When `conversations` itself
        raises, nothing is pushed and the exception propagates. `sample_ids` default to consecutive
        ids continuing the count of samples given so far."""
    @property
    def ready_rows(self) -> int: ...
    def pop_ready(self) -> PackedBatch | None:
        """The rows finished so far, or None."""
    def flush(self) -> PackedBatch:
        """Packs everything buffered and returns every row not yet popped."""
    @property
    def stats(self) -> dict[str, float]: ...
    @property
    def seq_len(self) -> int: ...
