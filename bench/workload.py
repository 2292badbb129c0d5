"""Deterministic, realistic chat workload for turnpack's benchmarks.

Each conversation is a dict ``{"messages": [...], "tools": [...] | None}`` (the sample shape
`ChatTokenizer.encode_batch` accepts). What it contains, drawn per conversation from its own seeded RNG
(so conversation ``i`` is the same whatever ``n`` is):

- 1 to 40 assistant turns with a long tail (``P(turns >= k) ~ k^-1.1``, capped at 40);
- a system prompt in most conversations;
- several languages: English, German, Chinese, Russian, Japanese, with emoji sprinkled in;
- fenced code blocks (Python, Rust, JavaScript, SQL) with varying identifiers and numbers;
- reasoning (``reasoning_content``) on every assistant message of some conversations;
- tool use in some conversations: a tools list, assistant tool calls (one call per message, as
  Llama 3.1's template requires) answered by ``tool`` messages, then a final answer. A tool-call
  message counts as an assistant turn.

About 700 tokens per conversation on average with the Qwen3 tokenizer and template (run this file
to measure: ``.venv/bin/python bench/workload.py --n 2000``).

`conversations(n)` is the benchmark workload; `conversations_with_turns(turns, n)` gives
conversations with exactly ``turns`` assistant turns (the scaling table), drawn the same way.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

MAX_TURNS = 40

# --------------------------------------------------------------------------------------------------
# Text pools
# --------------------------------------------------------------------------------------------------

TOPICS = [
    "the database migration",
    "our onboarding flow",
    "the quarterly report",
    "a memory leak in the worker",
    "the new pricing page",
    "train delays in Munich",
    "a sourdough recipe",
    "the Kubernetes cluster",
    "a birthday party for my daughter",
    "the tokenizer benchmark",
    "learning Japanese grammar",
    "a flaky integration test",
]

EN_USER = [
    "Can you help me with {topic}?",
    "I have been stuck on {topic} for {n} hours and I am not sure what to try next.",
    "What is the best way to approach {topic} if the deadline is on Friday?",
    "Here is some more context: we have about {n} users and the budget is limited.",
    "Could you explain that again, but simpler? I'm not an expert.",
    "Thanks! One more question about {topic}.",
    "That didn't work. The error says `{ident} is not defined` on line {n}.",
    "Please rewrite the previous answer as a short checklist.",
    "Why does it behave differently on Windows and Linux?",
    "My colleague suggested a different approach; which one would you pick and why?",
    "Is there a way to do this without installing anything new?",
    "Can you give me an example with real numbers, say {n} items at {price} each?",
]

EN_ASSISTANT = [
    "Sure, let's go through {topic} step by step.",
    "The short answer is yes, but there are a few caveats worth knowing about.",
    "First, check that `{ident}` is initialised before it is used; most errors like this come from the order of imports.",
    "A common pattern is to split the work into small batches of {n} and to retry the failed ones.",
    "If the deadline is tight, I would start with the simplest option and measure before optimising.",
    "Here is why: the first approach keeps everything in memory, while the second streams the data.",
    "With {n} items at {price} each, the total comes to roughly {total}.",
    "You can verify this by running the command again with verbose logging enabled.",
    "In practice the difference is small, but the second version is easier to test.",
    "Let me know if you want me to turn this into a script you can run directly.",
    "Note that the behaviour changed in version {n}.{n2}, so older documentation may be misleading.",
    "To summarise: measure first, change one thing at a time, and keep a record of what you tried.",
    "Windows uses CRLF line endings and a different path separator, which explains most of the differences.",
    "Both approaches work; I would pick the one your team already knows, because maintenance matters more.",
]

EN_REASONING = [
    "The user is asking about {topic}, so I should start from what they already tried.",
    "They mentioned {n} users; that is small enough that a single machine is fine.",
    "Let me double-check the arithmetic: {n} times {price} is {total}.",
    "The error about `{ident}` suggests the variable is defined inside a branch that did not run.",
    "I should keep the answer short and give one concrete next step.",
    "There are two plausible causes; the second one matches the symptoms better.",
    "Maybe they want code rather than an explanation. I'll include a small example.",
    "Wait, the previous suggestion assumed Linux. I need to handle Windows paths too.",
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a senior software engineer. Answer concisely and include code when it helps.",
    "You are a friendly tutor. Explain concepts step by step and check the student's understanding.",
    "You are a customer support agent for an online shop. Be polite, precise and never invent order data.",
    "Du bist ein hilfreicher Assistent. Antworte immer auf Deutsch.",
    "你是一个乐于助人的助手。请用中文回答。",
    "Ты полезный ассистент. Отвечай кратко и по делу.",
    "あなたは親切なアシスタントです。日本語で丁寧に答えてください。",
    "You are a data analyst. When you compute numbers, show the formula you used. Today is 2025-03-14.",
]

FOREIGN = {
    "de": [
        "Kannst du mir bei {topic} helfen?",
        "Ich habe das schon {n} Mal versucht, aber es funktioniert immer noch nicht.",
        "Die Lösung ist einfacher, als sie aussieht: Zuerst prüfen wir die Konfiguration.",
        "Danach starten wir den Dienst neu und beobachten die Protokolle für ein paar Minuten.",
        "Wenn der Fehler weiterhin auftritt, liegt es wahrscheinlich an den Zugriffsrechten.",
        "Übrigens: Größere Änderungen sollten immer zuerst in der Testumgebung ausprobiert werden.",
        "Das Ergebnis beträgt ungefähr {total} Euro, inklusive Mehrwertsteuer.",
        "Vielen Dank für die schnelle Antwort, das hat mir sehr geholfen!",
    ],
    "zh": [
        "你能帮我看看{topic}吗？",
        "我已经试了{n}次，但是还是不行。",
        "首先，我们需要检查配置文件是否正确。",
        "然后重新启动服务，并观察几分钟的日志输出。",
        "如果问题仍然存在，很可能是权限设置的问题。",
        "顺便说一句，较大的改动最好先在测试环境中验证。",
        "总价大约是{total}元，已经包含运费。",
        "非常感谢你的耐心解答，这对我帮助很大！",
    ],
    "ru": [
        "Можешь помочь мне с {topic}?",
        "Я уже пробовал {n} раз, но ничего не получается.",
        "Решение проще, чем кажется: сначала проверим конфигурацию.",
        "Затем перезапустим сервис и несколько минут понаблюдаем за логами.",
        "Если ошибка повторится, скорее всего, дело в правах доступа.",
        "Кстати, крупные изменения лучше сначала проверять в тестовой среде.",
        "Итоговая сумма составляет примерно {total} рублей.",
        "Спасибо большое за подробный ответ, это очень помогло!",
    ],
    "ja": [
        "{topic}について手伝ってもらえますか？",
        "もう{n}回試しましたが、まだうまくいきません。",
        "まず、設定ファイルが正しいかどうかを確認しましょう。",
        "次に、サービスを再起動して、数分間ログを確認してください。",
        "それでも問題が続く場合は、権限の設定が原因である可能性が高いです。",
        "ちなみに、大きな変更はまずテスト環境で試すことをおすすめします。",
        "合計はおよそ{total}円になります。",
        "丁寧に説明していただき、本当にありがとうございました！",
    ],
}

LANGUAGES = ["en", "de", "zh", "ru", "ja"]
LANGUAGE_WEIGHTS = [0.6, 0.1, 0.1, 0.1, 0.1]

EMOJI = ["🙂", "😅", "🚀", "👍", "🎉", "🤔", "🔥", "✅", "❤️", "👨‍💻", "🇩🇪", "🍣"]

IDENTS = [
    "user_id",
    "config",
    "batch_size",
    "retry_count",
    "parse_row",
    "total_cost",
    "session",
    "cache_key",
    "load_items",
    "HttpClient",
    "max_tokens",
    "worker_pool",
]

CODE = {
    "python": """import json
from pathlib import Path


def {f}(path: Path, limit: int = {n}) -> list[dict]:
    \"\"\"Read at most `limit` records from a JSON-lines file.\"\"\"
    rows = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= limit:
                break
            rows.append(json.loads(line))
    return rows


if __name__ == "__main__":
    print(len({f}(Path("data.jsonl"))))""",
    "rust": """use std::collections::HashMap;

/// Counts how often each word occurs, keeping the {n} most frequent.
fn {f}(text: &str) -> Vec<(String, usize)> {{
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in text.split_whitespace() {{
        *counts.entry(word).or_insert(0) += 1;
    }}
    let mut top: Vec<_> = counts.into_iter().map(|(w, c)| (w.to_string(), c)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate({n});
    top
}}""",
    "javascript": """async function {f}(url, retries = {n}) {{
  for (let attempt = 0; attempt < retries; attempt++) {{
    try {{
      const response = await fetch(url, {{ headers: {{ Accept: "application/json" }} }});
      if (!response.ok) throw new Error(`HTTP ${{response.status}}`);
      return await response.json();
    }} catch (err) {{
      console.warn(`attempt ${{attempt + 1}} failed:`, err.message);
      await new Promise((r) => setTimeout(r, 2 ** attempt * 100));
    }}
  }}
  throw new Error("giving up");
}}""",
    "sql": """SELECT c.name, COUNT(o.id) AS orders, SUM(o.total) AS revenue
FROM customers AS c
JOIN orders AS o ON o.customer_id = c.id
WHERE o.created_at >= DATE '2024-01-01' AND o.total > {n}
GROUP BY c.name
HAVING COUNT(o.id) > 3
ORDER BY revenue DESC
LIMIT 20;""",
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Berlin"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_web",
            "description": "Search the web and return the top results.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 10},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_sql",
            "description": "Run a read-only SQL query against the analytics database.",
            "parameters": {
                "type": "object",
                "properties": {"sql": {"type": "string"}},
                "required": ["sql"],
            },
        },
    },
]

CITIES = ["Berlin", "Tokyo", "São Paulo", "Москва", "北京", "Zürich", "Reykjavík", "Lagos"]


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------


class _Writer:
    """Draws text for one conversation from its own RNG."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lang = rng.choices(LANGUAGES, LANGUAGE_WEIGHTS)[0]
        self.topic = rng.choice(TOPICS)
        self.emoji = rng.random() < 0.3

    def _fill(self, template: str) -> str:
        r = self.rng
        n, price = r.randint(2, 500), round(r.uniform(0.5, 99.0), 2)
        return template.format(
            topic=self.topic,
            n=n,
            n2=r.randint(0, 12),
            price=price,
            total=f"{n * price:.2f}",
            ident=r.choice(IDENTS),
        )

    def sentences(self, pool: list[str], k: int) -> str:
        # Non-English conversations still use some English (code talk, quotes, mixed users).
        use = FOREIGN[self.lang] if self.lang != "en" and self.rng.random() < 0.8 else pool
        out = [self._fill(self.rng.choice(use)) for _ in range(k)]
        if self.emoji and self.rng.random() < 0.5:
            out.append(self.rng.choice(EMOJI))
        sep = "" if self.lang in ("zh", "ja") and use is not pool else " "
        return sep.join(out)

    def count(self, mean: float) -> int:
        """A message length in sentences: log-normal-ish, at least 1."""
        return max(1, round(self.rng.lognormvariate(0, 0.6) * mean))

    def user(self) -> str:
        return self.sentences(EN_USER, self.count(1.6))

    def assistant(self) -> str:
        parts = [self.sentences(EN_ASSISTANT, self.count(4.0))]
        if self.rng.random() < 0.22:
            lang = self.rng.choice(list(CODE))
            code = CODE[lang].format(f=self.rng.choice(IDENTS), n=self.rng.randint(2, 100))
            parts.append(f"```{lang}\n{code}\n```")
            parts.append(self.sentences(EN_ASSISTANT, self.count(1.2)))
        elif self.rng.random() < 0.15:
            items = [self.sentences(EN_ASSISTANT, 1) for _ in range(self.rng.randint(2, 5))]
            parts.append("\n".join(f"{i + 1}. {t}" for i, t in enumerate(items)))
        return "\n\n".join(parts)

    def reasoning(self) -> str:
        return " ".join(self._fill(self.rng.choice(EN_REASONING)) for _ in range(self.count(2.5)))

    def tool_call(self) -> tuple[dict, str]:
        """An assistant tool-call message and the matching tool result text."""
        r = self.rng
        name = r.choice([t["function"]["name"] for t in TOOLS])
        if name == "get_weather":
            city = r.choice(CITIES)
            args = {"city": city, "unit": "celsius"}
            result = {
                "city": city,
                "temperature": r.randint(-10, 35),
                "condition": r.choice(["sunny", "rain"]),
            }
        elif name == "search_web":
            args = {"query": f"{self.topic} best practices", "max_results": r.randint(2, 5)}
            result = {
                "results": [
                    {"title": self._fill(r.choice(EN_ASSISTANT))[:60], "url": f"https://example.com/{i}"}
                    for i in range(args["max_results"])
                ]
            }
        else:
            args = {"sql": CODE["sql"].format(n=r.randint(10, 1000))}
            result = {
                "columns": ["name", "orders", "revenue"],
                "rows": [["Acme", 12, 3400.5], ["Globex", 7, 990.0]],
            }
        call = {"type": "function", "function": {"name": name, "arguments": args}}
        return call, json.dumps(result, ensure_ascii=False)


def _turns(rng: random.Random) -> int:
    """Assistant turns: 1..MAX_TURNS, P(turns >= k) ~ k^-1.1 (most conversations are short)."""
    return min(MAX_TURNS, int(rng.paretovariate(1.1)))


def _conversation(rng: random.Random, turns: int) -> dict:
    w = _Writer(rng)
    reasoning = rng.random() < 0.3
    tools = rng.random() < 0.25
    messages: list[dict] = []
    if rng.random() < 0.75:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    done = 0
    while done < turns:
        messages.append({"role": "user", "content": w.user()})
        # With tools, some user requests are answered by a tool call, its result, then an answer.
        if tools and turns - done >= 2 and rng.random() < 0.6:
            call, result = w.tool_call()
            msg = {"role": "assistant", "content": "", "tool_calls": [call]}
            if reasoning:
                msg["reasoning_content"] = w.reasoning()
            messages.append(msg)
            messages.append({"role": "tool", "content": result})
            done += 1
        msg = {"role": "assistant", "content": w.assistant()}
        if reasoning:
            msg["reasoning_content"] = w.reasoning()
        messages.append(msg)
        done += 1
    return {"messages": messages, "tools": TOOLS if tools else None}


def _rng(seed: int, kind: str, i: int) -> random.Random:
    return random.Random(f"turnpack-bench/{seed}/{kind}/{i}")


def conversation(i: int, seed: int = 0) -> dict:
    """Conversation ``i`` of the benchmark workload."""
    rng = _rng(seed, "mixed", i)
    return _conversation(rng, _turns(rng))


def conversations(n: int, seed: int = 0) -> list[dict]:
    """The first ``n`` conversations of the benchmark workload."""
    return [conversation(i, seed) for i in range(n)]


def conversations_with_turns(turns: int, n: int, seed: int = 0) -> list[dict]:
    """``n`` conversations with exactly ``turns`` assistant turns, drawn like the workload's."""
    return [_conversation(_rng(seed, f"turns{turns}", i), turns) for i in range(n)]


def tiny_conversations(n: int) -> Iterator[list[dict]]:
    """``n`` tiny conversations (a user question, a short answer), generated lazily (the RSS test)."""
    for i in range(n):
        yield [
            {"role": "user", "content": f"What is {i} + {i % 97}?"},
            {"role": "assistant", "content": f"{i} + {i % 97} = {i + i % 97}."},
        ]


def assistant_turns(conv: dict) -> int:
    return sum(m["role"] == "assistant" for m in conv["messages"])


# --------------------------------------------------------------------------------------------------
# Measure the workload
# --------------------------------------------------------------------------------------------------


def main() -> None:
    import argparse
    import collections
    import statistics

    from oracle import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="conversations to measure")
    ap.add_argument("--model", default="qwen3", help="qwen3 or llama3")
    args = ap.parse_args()

    model = load_model(args.model)
    convs = conversations(args.n)
    encs = model.tok.encode_batch(convs)
    lens = [len(e) for e in encs]
    turns = [assistant_turns(c) for c in convs]
    trained = sum(e.num_trained for e in encs)
    print(f"{args.n} conversations, {args.model} tokenizer and template")
    print(
        f"  tokens per conversation: mean {statistics.mean(lens):.0f}, median {statistics.median(lens):.0f}, "
        f"max {max(lens)}; trained {trained / sum(lens):.0%} of tokens"
    )
    print(
        f"  assistant turns: mean {statistics.mean(turns):.2f}, median {statistics.median(turns)}, max {max(turns)}"
    )
    hist = collections.Counter(min(t, 41) for t in turns)
    buckets = [(1, 1), (2, 2), (3, 4), (5, 9), (10, 19), (20, 39), (40, 40)]
    print(
        "  turns histogram: "
        + ", ".join(
            f"{a}-{b}: {sum(hist[t] for t in range(a, b + 1))}" if a != b else f"{a}: {hist[a]}"
            for a, b in buckets
        )
    )
    feats = {
        "system": sum(c["messages"][0]["role"] == "system" for c in convs),
        "tools": sum(c["tools"] is not None for c in convs),
        "reasoning": sum(any("reasoning_content" in m for m in c["messages"]) for c in convs),
        "code": sum(any("```" in (m.get("content") or "") for m in c["messages"]) for c in convs),
    }
    print("  conversations with: " + ", ".join(f"{k} {v / args.n:.0%}" for k, v in feats.items()))


if __name__ == "__main__":
    main()
