"""Field mapping: turn one dataset record into what `ChatTokenizer.encode_batch` takes.

Two layouts are understood:

* OpenAI chat (`fields="messages"`): `{"messages": [{"role", "content", ...}], "tools": [...]}`; a bare
  list of messages is accepted too. Messages pass through untouched (the Rust side validates them).
* ShareGPT (`fields="sharegpt"`): `{"conversations": [{"from", "value"}], "system": ..., "tools": ...}`
  with roles `human`/`gpt`/`system`/`tool` (and the usual aliases), plus `function_call` turns whose
  value is a JSON call `{"name", "arguments"}` (or a list of them), as in LLaMA-Factory's format.

`fields="auto"` picks per record: `messages` if present, else `conversations` (read as ShareGPT when its
messages use `from`/`value`, as OpenAI messages when they use `role`/`content`), else a bare list.

Either layout may carry `chat_template_kwargs` (the name vLLM and verl use): template variables for that
conversation only, e.g. `{"enable_thinking": false}`, applied on top of the call's (or the dataset's
`PackingOptions.template_kwargs`), the record's winning. Keys whose value is null are left out: Arrow
(Parquet, `datasets`) stores such a column as a struct of every key any row uses and fills the keys a
row lacks with null, which must not override the dataset's defaults.

`messages`, `conversations`, `tools` and `chat_template_kwargs` may also be JSON strings (a common way to
store nested data in Parquet or CSV-derived datasets); they are decoded here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from turnpack.data.errors import RecordError

__all__ = ["FIELDS", "SHAREGPT_ROLES", "Fields", "sharegpt_to_messages", "to_conversation"]

Fields = Literal["auto", "messages", "sharegpt"]
FIELDS: tuple[str, ...] = ("auto", "messages", "sharegpt")

# ShareGPT speaker names -> chat roles. `function_call` is handled separately (it becomes tool_calls).
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function_response": "tool",
    "ipython": "ipython",
}


def _decoded(value: Any, what: str) -> Any:
    """`value`, JSON-decoded if it is a string (nested data stored as text)."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError as e:
            raise RecordError(f"{what} is a string but not valid JSON: {e}") from None
    return value


def _message_list(value: Any, what: str) -> list[Any]:
    value = _decoded(value, what)
    # Arrow-backed datasets hand back lists; numpy object arrays can appear too: accept any sequence.
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, Mapping)):
        return list(value)
    if hasattr(value, "tolist"):
        return list(value.tolist())
    raise RecordError(f"{what} must be a list of messages, got {type(value).__name__}")


def _tool_calls(value: Any, index: int) -> list[dict[str, Any]]:
    """The `tool_calls` of a ShareGPT `function_call` turn (a JSON call or list of calls)."""
    calls = _decoded(value, f"conversations[{index}] (function_call)")
    calls = calls if isinstance(calls, list) else [calls]
    out = []
    for call in calls:
        if not isinstance(call, Mapping) or "name" not in call:
            raise RecordError(
                f"conversations[{index}]: a function_call value must be a JSON object with a 'name', "
                f"got {call!r:.80}"
            )
        function: dict[str, Any] = {"name": call["name"], "arguments": call.get("arguments", {})}
        out.append({"type": "function", "function": function})
    return out


def sharegpt_to_messages(turns: list[Any], system: Any = None) -> list[dict[str, Any]]:
    """ShareGPT turns (`{"from", "value"}`) -> chat messages (`{"role", "content"}`).

    A top-level `system` prompt (LLaMA-Factory's column) becomes the first message unless the turns
    already start with one. A turn's `weight` (0/1 or bool) is kept: it excludes that turn from training.
    """
    messages: list[dict[str, Any]] = []
    if system not in (None, "") and not (
        turns and isinstance(turns[0], Mapping) and turns[0].get("from") == "system"
    ):
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RecordError(f"conversations[{i}] must be an object, got {type(turn).__name__}")
        if "from" not in turn and "role" in turn:  # already an OpenAI message
            messages.append(dict(turn))
            continue
        speaker, value = turn.get("from"), turn.get("value")
        if speaker == "function_call":
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "",
                "tool_calls": _tool_calls(value, i),
            }
        elif speaker in SHAREGPT_ROLES:
            message = {"role": SHAREGPT_ROLES[speaker], "content": value}
        else:
            known = ", ".join(sorted([*SHAREGPT_ROLES, "function_call"]))
            raise RecordError(f"conversations[{i}]: unknown speaker {speaker!r} (known: {known})")
        if "weight" in turn and turn["weight"] is not None:
            message["weight"] = turn["weight"]
        messages.append(message)
    return messages


def _tools(record: Mapping[str, Any]) -> Any:
    tools = record.get("tools")
    if tools is None or (isinstance(tools, str) and not tools.strip()):
        return None
    return _decoded(tools, "tools")


def _template_kwargs(record: Mapping[str, Any]) -> dict[str, Any] | None:
    kwargs = record.get("chat_template_kwargs")
    if kwargs is None or (isinstance(kwargs, str) and not kwargs.strip()):
        return None
    kwargs = _decoded(kwargs, "chat_template_kwargs")
    if kwargs is None:
        return None
    if isinstance(kwargs, Mapping):
        pairs = list(kwargs.items())
    elif isinstance(kwargs, list) and all(isinstance(p, tuple) and len(p) == 2 for p in kwargs):
        pairs = kwargs  # an Arrow map column, as pyarrow gives it: (key, value) tuples
    else:
        raise RecordError(
            f"chat_template_kwargs must be an object of template variables, got {type(kwargs).__name__}"
        )
    # Null values are left out (Arrow fills the struct keys a row lacks with null); the rest is checked
    # by the encoder (str keys, no turnpack option names).
    return {key: value for key, value in pairs if value is not None} or None


def _is_sharegpt(turns: list[Any]) -> bool:
    return bool(turns) and isinstance(turns[0], Mapping) and "from" in turns[0]


def to_conversation(record: Any, fields: Fields = "auto") -> dict[str, Any]:
    """One record -> `{"messages": [...]}` plus `"tools"` and `"chat_template_kwargs"` when the record
    has them.

    Raises `RecordError` (without file context; the caller adds it) when the record has neither layout.
    """
    if fields not in FIELDS:
        raise ValueError(f"fields must be one of {', '.join(map(repr, FIELDS))}, got {fields!r}")
    if not isinstance(record, Mapping):
        if fields != "sharegpt" and isinstance(record, (list, tuple)):
            return {"messages": list(record)}
        raise RecordError(f"a record must be an object or a list of messages, got {type(record).__name__}")
    if fields == "messages" or (fields == "auto" and "messages" in record):
        if "messages" not in record:
            raise RecordError(f"the record has no 'messages' field (fields: {', '.join(map(str, record))})")
        out = {"messages": _message_list(record["messages"], "messages")}
    elif "conversations" in record:
        turns = _message_list(record["conversations"], "conversations")
        if fields == "auto" and not _is_sharegpt(turns):
            out = {"messages": turns}
        else:
            out = {"messages": sharegpt_to_messages(turns, record.get("system"))}
    else:
        wanted = "'conversations'" if fields == "sharegpt" else "'messages' or 'conversations'"
        raise RecordError(f"the record has no {wanted} field (fields: {', '.join(map(str, record))})")
    tools = _tools(record)
    if tools is not None:
        out["tools"] = tools
    kwargs = _template_kwargs(record)
    if kwargs is not None:
        out["chat_template_kwargs"] = kwargs
    return out
