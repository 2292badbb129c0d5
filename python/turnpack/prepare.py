"""`turnpack prepare`: encode and pack a dataset once, into shards that training memory-maps.

    turnpack prepare data/*.jsonl --tokenizer path/to/model --seq-len 4096 --out prepared/

    turnpack prepare chats.parquet --tiktoken qwen.tiktoken --pattern "$PAT" \\
        --special-tokens specials.json --chat-template template.jinja \\
        --template-var eos_token='<|im_end|>' --seq-len 4096 --out prepared/

Inputs are JSONL/JSON/Parquet files, folders or globs (OpenAI `messages` or ShareGPT records). The
output folder holds `.npy` shards, `index.json` and `stats.json` (see `turnpack.data.shards`); pass it
as the source of `turnpack.ChatDataset` to train on it, shuffled by row and split across ranks and
workers. A summary of the sample accounting is printed at the end.

Rows are packed in input order (no shuffling here: `ChatDataset` shuffles rows every epoch), with the
same packer as streaming, so preparing and streaming the same unshuffled input give the same rows.

`--encode-kwargs '{"history": "expand"}'` prepares prefix-tree rows (turns the template rewrites in
history trained as branches in their inference context): the shards then also hold positions, prefix
ranges and document roles, and `ChatDataset` reads them back with their `prefix_starts`/`prefix_ends`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from turnpack._core import ChatTokenizer, TurnpackError
from turnpack.data.errors import ON_ERROR, DataError, OnError
from turnpack.data.options import DEFAULT_BUFFER, DEFAULT_MAX_OPEN_ROWS, PackingOptions
from turnpack.data.pipeline import EncodePacker
from turnpack.data.records import FIELDS, Fields
from turnpack.data.sharding import Shard
from turnpack.data.shards import ShardWriter
from turnpack.data.sources import Source, iter_epoch, resolve_sources, split_sample_id
from turnpack.data.stats import RowTally, format_stats, with_totals
from turnpack.tokenizer import load_tokenizer

__all__ = ["build_parser", "main", "packing_options", "prepare", "tokenizer_from_args"]

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="turnpack prepare",
        description="Encode and pack chat data once into memory-mapped shards for training.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="JSONL/JSON/Parquet files, folders or globs")
    p.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    p.add_argument("--seq-len", required=True, type=int, help="tokens per packed row")

    tok = p.add_argument_group("tokenizer (a model folder, or a tiktoken rank file)")
    tok.add_argument("--tokenizer", type=Path, metavar="DIR", help="Hugging Face model folder")
    tok.add_argument("--tiktoken", type=Path, metavar="RANKS", help="tiktoken rank file")
    tok.add_argument("--pattern", help="pre-tokenizer regex of the tiktoken encoding")
    tok.add_argument(
        "--special-tokens", metavar="JSON", help="special tokens {text: id}: a JSON file or inline JSON"
    )
    tok.add_argument(
        "--chat-template", type=Path, metavar="FILE", help="Jinja chat template (overrides the folder's)"
    )
    tok.add_argument(
        "--template-var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="template variable for tiktoken tokenizers, e.g. eos_token='<|im_end|>' (repeatable)",
    )

    enc = p.add_argument_group("encoding")
    enc.add_argument("--fields", choices=FIELDS, default="auto", help="record layout (default: auto)")
    enc.add_argument("--supervise", choices=("assistant", "last_assistant", "all"), default="assistant")
    enc.add_argument(
        "--encode-kwargs",
        metavar="JSON",
        default="{}",
        help="more encode options, e.g. '{\"enable_thinking\": false}' (a record's chat_template_kwargs win)",
    )
    enc.add_argument("--on-error", choices=ON_ERROR, default="raise", help="bad records (default: raise)")
    enc.add_argument("--num-threads", type=int, default=None, help="encoding threads (default: all cores)")
    enc.add_argument("--chunk-size", type=int, default=4096, help="records per encode batch")

    pack = p.add_argument_group("packing")
    pack.add_argument(
        "--buffer", type=int, default=DEFAULT_BUFFER, help="samples per best-fit round (default: 1024)"
    )
    pack.add_argument("--max-open-rows", type=int, default=DEFAULT_MAX_OPEN_ROWS)
    pack.add_argument("--overflow", choices=("drop", "truncate"), default="drop")
    pack.add_argument("--pad-id", type=int, default=0)

    out = p.add_argument_group("output")
    out.add_argument("--rows-per-shard", type=int, default=None, help="default: about 2**24 tokens per shard")
    out.add_argument("--overwrite", action="store_true", help="replace a previous preparation in --out")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _json_arg(text: str, what: str) -> Any:
    """Inline JSON, or the JSON in the file `text` names."""
    path = Path(text)
    source = path.read_text() if not text.lstrip().startswith(("{", "[")) and path.is_file() else text
    try:
        return json.loads(source)
    except ValueError as e:
        raise ValueError(f"{what} is neither inline JSON nor a JSON file: {e}") from None


def tokenizer_from_args(args: argparse.Namespace) -> tuple[ChatTokenizer, str]:
    """The tokenizer the arguments describe (loaded by `turnpack.load_tokenizer`), and a description of
    it for stats.json."""
    if (args.tokenizer is None) == (args.tiktoken is None):
        raise ValueError(
            "give either --tokenizer DIR or --tiktoken RANKS (with --pattern and --chat-template)"
        )
    if args.tokenizer is not None:
        return load_tokenizer(args.tokenizer, args.chat_template), str(args.tokenizer)
    if not args.pattern or args.chat_template is None:
        raise ValueError("--tiktoken needs --pattern and --chat-template")
    specials = _json_arg(args.special_tokens, "--special-tokens") if args.special_tokens else {}
    if not isinstance(specials, dict):
        raise TypeError("--special-tokens must be a JSON object {text: id}")
    variables = {}
    for item in args.template_var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--template-var takes NAME=VALUE, got {item!r}")
        variables[name] = value
    tokenizer = load_tokenizer(
        args.tiktoken,
        args.chat_template,
        pattern=args.pattern,
        special_tokens=specials,
        template_vars=variables,
    )
    return tokenizer, f"tiktoken:{args.tiktoken}"


def packing_options(args: argparse.Namespace) -> PackingOptions:
    """The encoding and packing options the arguments give (`--encode-kwargs` wins over `--supervise`)."""
    encode_kwargs = _json_arg(args.encode_kwargs, "--encode-kwargs")
    if not isinstance(encode_kwargs, dict):
        raise TypeError("--encode-kwargs must be a JSON object")
    return PackingOptions.from_encode_kwargs(
        {"supervise": args.supervise, **encode_kwargs},
        buffer=args.buffer,
        max_open_rows=args.max_open_rows,
        overflow=args.overflow,
        pad_id=args.pad_id,
    )


class _Progress:
    """tqdm when installed, else a one-line counter on stderr refreshed about once a second."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self._bar = None
        stream = stream or sys.stderr  # looked up now: tests and callers may have replaced it
        self._stream = stream if enabled else None
        self._count = 0
        self._last = 0.0
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(desc="samples", unit=" samples", unit_scale=True, file=stream)

    def track(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            yield item
            self._count += 1
            if self._bar is not None:
                self._bar.update(1)
            elif self._stream is not None and time.monotonic() - self._last >= 1.0:
                self._last = time.monotonic()
                print(f"\r{self._count:,} samples", end="", file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._stream is not None:
            print(f"\r{self._count:,} samples", file=self._stream, flush=True)


def prepare(
    sources: list[Source],
    tokenizer: ChatTokenizer,
    writer: ShardWriter,
    options: PackingOptions | None = None,
    *,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    fields: Fields = "auto",
    on_error: OnError = "raise",
    num_threads: int | None = None,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Encodes and packs `sources` into `writer`'s folder; returns the written index.

    `options` default to `PackingOptions(pad_id=writer.pad_id, history=writer.history)`; their `pad_id`
    and `history` must be the writer's (a `history="expand"` writer stores the prefix-tree arrays).
    `fields`, `on_error`, `num_threads` and `chunk_size` are those of `EncodePacker`.
    """
    options = options or PackingOptions(pad_id=writer.pad_id, history=writer.history)
    if options.pad_id != writer.pad_id:
        raise ValueError(f"the options pad with {options.pad_id}, the shards with {writer.pad_id}")
    if options.history != writer.history:
        raise ValueError(
            f"the options encode with history={options.history!r}, the shards were made for {writer.history!r}"
        )

    def describe(sample_id: int) -> str:
        source, row = split_sample_id(sample_id)
        return sources[source].describe(row)

    started = time.monotonic()
    pipe = EncodePacker(
        tokenizer,
        writer.seq_len,
        options,
        describe=describe,
        fields=fields,
        on_error=on_error,
        num_threads=num_threads,
        chunk_size=chunk_size,
    )
    tally = RowTally()
    bar = _Progress(progress)
    try:
        for rows in pipe.run(bar.track(iter_epoch(sources, range(len(sources)), Shard(0, 1)))):
            tally.batch(rows)
            writer.add(rows)
    finally:
        bar.close()
    counts = {**pipe.counts(), **tally.counts}
    elapsed = time.monotonic() - started
    info = {
        **(metadata or {}),
        "seconds": round(elapsed, 3),
        "samples_per_second": round(counts["samples"] / elapsed, 1) if elapsed else None,
        "error_examples": pipe.error_examples,
    }
    stats = with_totals(counts)
    del stats["batches"]  # counted pieces of packer output, not training batches
    return writer.close(info, stats)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = packing_options(args)
        sources = resolve_sources(args.inputs)  # before the (slower) tokenizer: fail fast on a typo
        tokenizer, tokenizer_name = tokenizer_from_args(args)
        writer = ShardWriter(
            args.out,
            args.seq_len,
            pad_id=options.pad_id,
            rows_per_shard=args.rows_per_shard,
            overwrite=args.overwrite,
            history=options.history,
        )
    except (ValueError, TypeError, OSError) as e:  # ValueError includes TurnpackError and DataError
        print(f"turnpack prepare: error: {e}", file=sys.stderr)
        return 2
    metadata = {
        "inputs": [s.name for s in sources],
        "tokenizer": tokenizer_name,
        # what a trainer checks its model's tokenizer against (ids mean tokens of this vocabulary)
        "vocab_size": tokenizer.vocab_size,
        "seq_len": args.seq_len,
        "options": {
            "fields": args.fields,
            # supervise is always recorded, as when --supervise went into the encode_kwargs dict
            "encode_kwargs": {"supervise": options.supervise, **options.encode_kwargs()},
            "on_error": args.on_error,
            **options.pack_kwargs(),
        },
    }
    try:
        index = prepare(
            sources,
            tokenizer,
            writer,
            options,
            progress=not args.no_progress,
            metadata=metadata,
            fields=args.fields,
            on_error=args.on_error,
            num_threads=args.num_threads,
            chunk_size=args.chunk_size,
        )
    except (DataError, TurnpackError, ValueError, OSError) as e:
        writer.abort()
        print(f"turnpack prepare: error: {e}\n(nothing was kept in {args.out})", file=sys.stderr)
        return 1
    stats = index["stats"]
    print(
        f"prepared {args.out}: {index['rows']:,} rows of {args.seq_len} tokens in {len(index['shards'])} shard(s)"
    )
    print(format_stats(stats))
    meta = index["metadata"]
    print(
        f"time               {meta['seconds']:>14.1f} s  ({meta['samples_per_second'] or 0:,.0f} samples/s)"
    )
    if meta["error_examples"]:
        print("first errors skipped:")
        for message in meta["error_examples"]:
            print(f"  {message}")
    return 0
