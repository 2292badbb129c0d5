"""Records in, packed rows out: field mapping, encoding in Rust batches, packing.

Encoding runs through `Packer.encode_extend` on chunks of records: `ChatTokenizer.encode_batch`'s work
in Rust, with the GIL released, on `num_threads` threads, each encoding pushed straight into the packer
(no Python `Encoding` in between). A failed sample comes back in its place (as `encode_batch` with
`on_error="skip"` returns it), so that this module can name the file and line of the failure, and then
raise it or count it as `dropped_error`, as the caller asked.

The packed rows depend only on the order of the records and the packing options (the packer is
deterministic, and chunking does not change what is pushed), which is what lets a reader replay an
epoch exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from turnpack._core import ChatTokenizer, Packer
from turnpack.data.batching import Rows
from turnpack.data.errors import OnError, RecordError, check_on_error
from turnpack.data.options import PackingOptions
from turnpack.data.records import Fields, to_conversation

__all__ = ["EncodePacker"]

# encode_extend prefixes errors with the sample's index in the chunk, which means nothing to the user.
_CHUNK_PREFIX = re.compile(r"^sample \d+: ")


def _located(error: BaseException, where: str) -> Exception:
    """`error` with its message prefixed by the sample's location, keeping its type when possible."""
    message = f"{where}: {_CHUNK_PREFIX.sub('', str(error), count=1)}"
    try:
        located = type(error)(message)
    except TypeError:  # an exception type that does not take one message
        located = RecordError(message)
    located.__cause__ = error
    return located


class EncodePacker:
    """Turns `(sample_id, record)` pairs into packed `Rows`, keeping count of every sample.

    `options` say how records are encoded and packed; `describe(sample_id)` names a sample's origin
    (file and line) for error messages.
    """

    def __init__(
        self,
        tokenizer: ChatTokenizer,
        seq_len: int,
        options: PackingOptions,
        *,
        describe: Callable[[int], str],
        fields: Fields = "auto",
        on_error: OnError = "raise",
        num_threads: int | None = None,
        chunk_size: int = 256,
        max_error_examples: int = 5,
    ) -> None:
        self.on_error = check_on_error(on_error)
        self.tokenizer = tokenizer
        self.options = options
        self.packer = Packer(seq_len, **options.pack_kwargs())
        self.encode_kwargs = options.encode_kwargs()
        # An expand stream gives every piece of rows the prefix-tree arrays, even one without a tree,
        # so that its batches (and shards) always have the same arrays.
        self.trees = options.history == "expand"
        self.describe = describe
        self.fields: Fields = fields
        self.num_threads = num_threads
        self.chunk_size = max(1, chunk_size)
        self.samples = 0
        self.dropped_error = 0
        # The first few skipped errors, for a summary (`turnpack prepare` prints them).
        self.error_examples: list[str] = []
        self._max_examples = max_error_examples

    def counts(self) -> dict[str, int]:
        """Per-sample counters so far: samples read, and dropped/truncated by reason; and the packer's
        prefix-tree branches: received, dropped, truncated (see `turnpack.data.stats`)."""
        packer = self.packer.stats
        return {
            "samples": self.samples,
            "dropped_error": self.dropped_error,
            "dropped_empty": packer["dropped_empty"],
            "dropped_too_long": packer["dropped_too_long"],
            "dropped_nothing_to_train": packer["dropped_nothing_to_train"],
            "truncated": packer["truncated"],
            "branches_in": packer["branches_in"],
            "branches_dropped": packer["branches_dropped"],
            "branches_truncated": packer["branches_truncated"],
        }

    def run(self, samples: Iterable[tuple[int, Any]]) -> Iterator[Rows]:
        """Yields rows as soon as the packer finishes them; flushes it when `samples` ends."""
        chunk: list[tuple[int, dict[str, Any]]] = []
        for sample_id, record in samples:
            self.samples += 1
            conversation = self._conversation(sample_id, record)
            if conversation is None:
                continue
            chunk.append((sample_id, conversation))
            if len(chunk) >= self.chunk_size:
                yield from self._encode_and_pack(chunk)
                chunk = []
        if chunk:
            yield from self._encode_and_pack(chunk)
        rest = self.packer.flush()
        if len(rest):
            yield Rows.from_packed(rest, trees=self.trees)

    def _fail(self, error: Exception) -> None:
        if self.on_error == "raise":
            raise error
        self.dropped_error += 1
        if len(self.error_examples) < self._max_examples:
            self.error_examples.append(str(error))

    def _conversation(self, sample_id: int, record: Any) -> dict[str, Any] | None:
        if isinstance(record, RecordError):  # the source could not decode the row; already located
            self._fail(record)
            return None
        try:
            return to_conversation(record, self.fields)
        except RecordError as e:
            self._fail(_located(e, self.describe(sample_id)))
            return None

    def _encode_and_pack(self, chunk: list[tuple[int, dict[str, Any]]]) -> Iterator[Rows]:
        # The good samples are in the packer when this returns; with on_error="raise" the first
        # failure then ends the run, so what they were packed into is never seen.
        errors = self.packer.encode_extend(
            self.tokenizer,
            [conversation for _, conversation in chunk],
            sample_ids=[sample_id for sample_id, _ in chunk],
            num_threads=self.num_threads,
            **self.encode_kwargs,
        )
        for (sample_id, _), error in zip(chunk, errors):
            if error is not None:
                self._fail(_located(error, self.describe(sample_id)))
        ready = self.packer.pop_ready()
        if ready is not None and len(ready):
            yield Rows.from_packed(ready, trees=self.trees)
