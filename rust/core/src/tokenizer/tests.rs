//! The native encoder against `tokenizers` itself: same ids and offsets on random text, for each
//! pre-tokenizer shape it accepts, and a reason for each tokenizer it refuses.

use serde_json::{json, Value};

use super::tiktoken::tokenizer_from_ranks;
use super::{Backend, TextTokenizer};

const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// As tiktoken gives it: possessive quantifiers and a text anchor.
const CL100K: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
const O200K: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek V3/V4's three `Split` stages.
const DEEPSEEK: [&str; 3] = [
    r"\p{N}{1,3}",
    "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];

const SPECIALS: [&str; 3] = ["<|im_start|>", "<|im_end|>", "<think>"];

/// Text that exercises every branch: contractions (also with `ſ` and the Kelvin sign, which
/// case-fold to `s` and `k`), digit runs, whitespace runs of every kind, several scripts,
/// combining marks, emoji sequences and the special tokens.
const POOLS: &[&str] = &[
    "abcdeXYZ",
    "0123456789",
    " ",
    "  \t\n\r\u{b}\u{c}\u{a0}\u{2003}\u{3000}\u{85}\u{2028}",
    "'sStTlLdDmMrReEvV\u{17f}\u{212a}",
    ".,;:!?-_/\\()[]{}<>\"'`~@#$%^&*+=|",
    "éÉçßİıǅ\u{301}\u{308}\u{323}",
    "中文字符日本語のカタカナ한국어",
    "عربيةעבריתहिन्दीไทย",
    "👩\u{200d}👧🇫🇷🙂\u{fe0f}",
    "½²٣४\u{2160}",
];

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }

    fn text(&mut self) -> String {
        let len = 1 + self.below(50);
        let mut s = String::new();
        for _ in 0..len {
            let pool: Vec<char> = POOLS[self.below(POOLS.len())].chars().collect();
            s.push(pool[self.below(pool.len())]);
        }
        if self.below(5) == 0 {
            s.insert_str(0, SPECIALS[self.below(SPECIALS.len())]);
        }
        s
    }
}

/// Ranks: every byte, then every 2- to 4-byte window of the pool text in first-seen order
/// (windows cut characters, so tokens hold partial characters as real vocabularies do).
fn ranks() -> Vec<(Vec<u8>, u32)> {
    let mut ranks: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
    let mut seen: std::collections::HashSet<Vec<u8>> = ranks.iter().map(|r| r.0.clone()).collect();
    let corpus = format!("{} the them then there 1234 it's we'll", POOLS.concat());
    let bytes = corpus.as_bytes();
    for len in 2..=4 {
        for w in bytes.windows(len) {
            if seen.insert(w.to_vec()) {
                ranks.push((w.to_vec(), ranks.len() as u32));
            }
        }
    }
    ranks
}

fn specials(first: u32) -> Vec<(String, u32)> {
    SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), first + i as u32))
        .collect()
}

fn from_ranks(pattern: &str) -> tokenizers::Tokenizer {
    let ranks = ranks();
    tokenizer_from_ranks(&ranks, pattern, &specials(ranks.len() as u32)).unwrap()
}

fn to_json(tok: &tokenizers::Tokenizer) -> Value {
    serde_json::from_str(&tok.to_string(false).unwrap()).unwrap()
}

fn from_json(v: &Value) -> TextTokenizer {
    TextTokenizer::from_json_str(&v.to_string()).unwrap()
}

/// The native backend is chosen and gives `tokenizers`' ids and offsets on random text.
fn assert_same(tok: &TextTokenizer, what: &str) {
    assert_eq!(
        tok.backend(),
        Backend::Native,
        "{what}: {:?}",
        tok.native_unavailable()
    );
    let mut rng = Lcg(17);
    for _ in 0..3000 {
        let text = rng.text();
        let native = tok.encode(&text).unwrap();
        let reference = tok.encode_with_tokenizers(&text).unwrap();
        assert_eq!(native, reference, "{what}: {text:?}");
    }
}

#[test]
fn tiktoken_style_patterns_match_tokenizers() {
    for (name, pattern) in [
        ("llama3", LLAMA3),
        ("qwen3.5", QWEN35),
        ("cl100k", CL100K),
        ("o200k", O200K),
    ] {
        assert_same(&TextTokenizer::new(from_ranks(pattern)), name);
    }
}

#[test]
fn gpt2_byte_level_regex_matches_tokenizers() {
    let mut v = to_json(&from_ranks(LLAMA3));
    v["pre_tokenizer"] = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    assert_same(&from_json(&v), "gpt2");
}

#[test]
fn split_sequences_match_tokenizers() {
    let mut v = to_json(&from_ranks(LLAMA3));
    let mut stages: Vec<Value> = DEEPSEEK
        .iter()
        .map(|p| json!({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false}))
        .collect();
    stages.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
    v["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": stages});
    assert_same(&from_json(&v), "deepseek");
}

#[test]
fn merging_without_ignore_merges_and_nfc_match_tokenizers() {
    // Hugging Face's Qwen files: NFC, merges always applied, a non-special added token that is
    // matched on normalized text, a ByteLevel post-processor that keeps offsets.
    let mut v = to_json(&from_ranks(LLAMA3));
    v["model"]["ignore_merges"] = json!(false);
    v["normalizer"] = json!({"type": "NFC"});
    v["post_processor"] = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    for t in v["added_tokens"].as_array_mut().unwrap() {
        if t["content"] == "<think>" {
            t["special"] = json!(false);
            t["normalized"] = json!(true);
        }
    }
    let tok = from_json(&v);
    assert_same(&tok, "nfc");
    // Text that is not NFC is left to `tokenizers`, which normalizes it.
    let decomposed = "cafe\u{301} cafe\u{301}";
    assert_eq!(
        tok.encode(decomposed).unwrap(),
        tok.encode_with_tokenizers(decomposed).unwrap()
    );
    assert_eq!(
        tok.encode(decomposed).unwrap().ids,
        tok.encode("caf\u{e9} caf\u{e9}").unwrap().ids
    );
}

#[test]
fn long_pieces_match_tokenizers() {
    let tok = TextTokenizer::new(from_ranks(LLAMA3));
    for text in [
        "a".repeat(5000),
        " ".repeat(3000) + "x",
        "thethemthen".repeat(200),
        "中文字符".repeat(300),
        "\n".repeat(1000) + &"\t ".repeat(500),
    ] {
        assert_eq!(
            tok.encode(&text).unwrap(),
            tok.encode_with_tokenizers(&text).unwrap()
        );
    }
}

#[test]
fn tokenizers_that_do_not_qualify_say_why_and_still_encode() {
    let base = to_json(&from_ranks(LLAMA3));
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 5] = [
        ("lstrip", |v| v["added_tokens"][0]["lstrip"] = json!(true)),
        (
            "trim offsets",
            |v| v["post_processor"] = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}),
        ),
        ("prefix space", |v| {
            v["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = json!(true)
        }),
        ("lowercase", |v| {
            v["normalizer"] = json!({"type": "Lowercase"})
        }),
        ("look-behind", |v| {
            v["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
                json!(r"(?<=a)b|\s+|[^\s]+")
        }),
    ];
    for (what, edit) in edits {
        let mut v = base.clone();
        edit(&mut v);
        let mut tok = from_json(&v);
        assert_eq!(tok.backend(), Backend::Tokenizers, "{what}");
        assert!(tok.native_unavailable().is_some(), "{what}");
        assert!(tok.set_backend(Backend::Native).is_err(), "{what}");
        assert!(!tok.encode("it's a test").unwrap().ids.is_empty());
    }
}

#[test]
fn char_offsets_count_code_points() {
    let tok = TextTokenizer::new(from_ranks(LLAMA3));
    let text = "é中 x";
    let tokens = tok.encode(text).unwrap();
    let chars = tokens.char_offsets(text);
    let n = text.chars().count();
    assert_eq!(chars.last().unwrap().1, n);
    for ((cs, ce), (bs, be)) in chars.iter().zip(&tokens.offsets) {
        assert_eq!(text[..*bs].chars().count(), *cs);
        assert_eq!(text[..*be].chars().count(), *ce);
    }
}

#[test]
fn probe_rejects_an_encoder_that_reads_the_tokenizer_differently() {
    let llama = from_ranks(LLAMA3);
    let qwen = from_ranks(QWEN35);
    let native = super::bpe::NativeBpe::from_tokenizer(&qwen).unwrap();
    assert!(super::native_check::check(&native, &qwen).is_ok());
    let err = super::native_check::check(&native, &llama).unwrap_err();
    assert!(err.contains("first difference"), "{err}");
}
