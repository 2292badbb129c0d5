"""`turnpack` command line: one subcommand per job, each implemented in its own module."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help); each module exposes `main(argv: list[str]) -> int`
COMMANDS = {
    "demo": ("turnpack.demo", "encode the bundled example conversations and show what is trained"),
    "prepare": ("turnpack.prepare", "encode and pack a dataset once into memory-mapped shards"),
    "train": ("turnpack.train", "train the reference model on a prepared or streamed dataset"),
}


def _usage() -> str:
    lines = ["usage: turnpack COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"turnpack: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
