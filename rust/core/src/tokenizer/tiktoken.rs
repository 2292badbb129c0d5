//! Load a tiktoken-format BPE rank file (`<base64 token> <rank>` per line, as shipped for
//! Llama 3/4 as `tokenizer.model`, for Qwen as `qwen.tiktoken`, for OpenAI as
//! `cl100k_base.tiktoken`) as a Hugging Face [`tokenizers::Tokenizer`] whose ids equal tiktoken's.
//!
//! The conversion:
//! - every ranked token becomes a vocabulary entry (id = rank), its bytes spelled with GPT-2's
//!   byte-to-unicode table, as byte-level BPE expects;
//! - every split `(l, r)` of a token `t` with `l`, `r` and `t = l + r` all ranked becomes a merge.
//!   tiktoken repeatedly merges the adjacent pair whose concatenation has the lowest rank, so the
//!   merges are ordered by the rank of the merged token (splits of one token by the ranks of their
//!   halves); Hugging Face's BPE then applies the same merges in the same order, leftmost first;
//! - `ignore_merges` is on: like tiktoken, a whole pre-token that is itself ranked is emitted
//!   directly without running BPE on it;
//! - pre-tokenizer: `Split(pattern, Isolated)` then `ByteLevel` without its own regex; decoder
//!   `ByteLevel`; no normalizer and no post-processor (the chat template owns BOS/EOS);
//! - special tokens become special added tokens with the given ids (they are also entered in the
//!   model's vocabulary so that their ids survive a JSON round trip even when they are not
//!   contiguous, as in cl100k).
//!
//! tiktoken compiles the pattern with `fancy-regex`, Hugging Face with Oniguruma (Ruby syntax).
//! The patterns of Llama 3/4, Qwen and cl100k (`\p{L}`, `(?i:...)`, `(?!\S)`, possessive
//! `?+`/`*+`/`++`) mean the same in both, except for two constructs that are rewritten: a
//! possessive interval `X{n,m}+` (cl100k's `\p{N}{1,3}+`; in Ruby syntax it means "`X{n,m}`
//! repeated") becomes `(?>X{n,m})`, and `^`/`$` (text anchors there, line anchors in Ruby syntax)
//! become `\A`/`\z`.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::byte_level::byte_to_unicode;
use super::regex_dialect::onig_pattern;
use crate::{Error, Result};

/// Base64 as tiktoken's files use it: standard alphabet; padding accepted but not required.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Parse a tiktoken rank file's bytes into (token bytes, rank) pairs.
///
/// Lines are `<base64 token> <rank>` separated by ASCII whitespace; blank lines are skipped and
/// `\r\n` line ends are accepted. Errors name the (1-based) line. Duplicates are detected by
/// [`tokenizer_from_ranks`].
pub fn parse_ranks(data: &[u8]) -> Result<Vec<(Vec<u8>, u32)>> {
    // Most files are sorted by rank and have one token per line: a cheap capacity estimate.
    let mut ranks = Vec::with_capacity(data.len() / 12 + 1);
    for (index, line) in data.split(|&b| b == b'\n').enumerate() {
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let Some(token) = fields.next() else {
            continue; // blank line
        };
        let bad = |why: &str| {
            Error::Tokenizer(format!(
                "tiktoken rank file, line {}: {why}; expected `<base64 token> <rank>`, found {}",
                index + 1,
                show_line(line)
            ))
        };
        let (Some(rank), None) = (fields.next(), fields.next()) else {
            return Err(bad("not two fields"));
        };
        let token = BASE64
            .decode(token)
            .map_err(|e| bad(&format!("token is not valid base64 ({e})")))?;
        if token.is_empty() {
            return Err(bad("empty token"));
        }
        let rank = std::str::from_utf8(rank)
            .ok()
            .filter(|r| r.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|r| r.parse::<u32>().ok())
            .ok_or_else(|| bad("rank is not an integer in 0..2^32"))?;
        ranks.push((token, rank));
    }
    Ok(ranks)
}

/// Build the equivalent byte-level BPE tokenizer.
///
/// `ranks` are the mergeable tokens (the rank is the id), `pattern` the pre-tokenizer regex as
/// given to tiktoken, `special_tokens` the (text, id) pairs recognised anywhere in the input.
pub fn tokenizer_from_ranks(
    ranks: &[(Vec<u8>, u32)],
    pattern: &str,
    special_tokens: &[(String, u32)],
) -> Result<tokenizers::Tokenizer> {
    let err = |msg: String| Error::Tokenizer(format!("tiktoken ranks: {msg}"));

    // token bytes -> index into `ranks`
    let mut index: HashMap<&[u8], u32> = HashMap::with_capacity(ranks.len());
    for (i, (token, rank)) in ranks.iter().enumerate() {
        if token.is_empty() {
            return Err(err(format!("empty token (rank {rank})")));
        }
        if let Some(&j) = index.get(token.as_slice()) {
            return Err(err(format!(
                "token {} appears twice (ranks {} and {rank})",
                show_token(token),
                ranks[j as usize].1
            )));
        }
        index.insert(token, i as u32);
    }
    let mut sorted: Vec<u32> = ranks.iter().map(|(_, r)| *r).collect();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(format!("rank {} is given to two tokens", w[0])));
    }
    // Every byte that can occur in UTF-8 text must be a token, or text would be silently lost.
    if let Some(b) = (0..=255u8).find(|&b| utf8_byte(b) && !index.contains_key(&[b][..])) {
        return Err(err(format!(
            "no token for the single byte 0x{b:02X}; a tiktoken rank file ranks every byte"
        )));
    }

    let byte_chars = byte_to_unicode();
    let spell = |bytes: &[u8]| -> String {
        let mut s = String::with_capacity(bytes.len() * 2);
        s.extend(bytes.iter().map(|&b| byte_chars[b as usize]));
        s
    };
    let spelled: Vec<String> = ranks.iter().map(|(t, _)| spell(t)).collect();

    // Merges: (rank of merged, rank of left, rank of right, index of left, index of right).
    let mut merges: Vec<(u32, u32, u32, u32, u32)> = Vec::with_capacity(ranks.len() * 2);
    for (token, rank) in ranks {
        for cut in 1..token.len() {
            let Some(&l) = index.get(&token[..cut]) else {
                continue;
            };
            let Some(&r) = index.get(&token[cut..]) else {
                continue;
            };
            merges.push((*rank, ranks[l as usize].1, ranks[r as usize].1, l, r));
        }
    }
    merges.sort_unstable();
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .map(|(_, _, _, l, r)| (spelled[l as usize].clone(), spelled[r as usize].clone()))
        .collect();

    let mut vocab = Vocab::with_capacity(ranks.len() + special_tokens.len());
    for ((_, rank), s) in ranks.iter().zip(spelled) {
        vocab.insert(s, *rank);
    }
    let by_rank: HashMap<u32, usize> = if special_tokens.is_empty() {
        HashMap::new()
    } else {
        ranks
            .iter()
            .enumerate()
            .map(|(i, (_, r))| (*r, i))
            .collect()
    };
    let mut special_ids: HashMap<u32, &str> = HashMap::with_capacity(special_tokens.len());
    for (text, id) in special_tokens {
        let text = text.as_str();
        if text.is_empty() {
            return Err(err(format!("special token with id {id} has empty text")));
        }
        if let Some(&i) = by_rank.get(id) {
            return Err(err(format!(
                "special token {text:?} has id {id}, which is the rank of token {}",
                show_token(&ranks[i].0)
            )));
        }
        if let Some(other) = special_ids.insert(*id, text) {
            return Err(err(format!(
                "special tokens {other:?} and {text:?} share id {id}"
            )));
        }
        if text.chars().all(|c| byte_chars.contains(&c))
            && !text.bytes().all(|b| b.is_ascii_graphic())
        {
            // Such a text, entered in the vocabulary, would be what the byte-level spelling of
            // ordinary input maps to, and would be emitted for it.
            return Err(err(format!(
                "special token {text:?} consists only of byte-level characters; not supported"
            )));
        }
        if vocab.insert(text.to_owned(), *id).is_some() {
            return Err(err(format!(
                "special token {text:?} is spelled like a ranked token or given twice"
            )));
        }
    }

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(true)
        .build()
        .map_err(|e| err(format!("cannot build the BPE model: {e}")))?;

    let pattern = onig_pattern(pattern);
    let split = Split::new(
        SplitPattern::Regex(pattern.into_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| {
        Error::Tokenizer(format!(
            "tiktoken pre-tokenizer pattern does not compile: {e}"
        ))
    })?;
    let pre_tokenizer = Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ]);

    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre_tokenizer)));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::new(
        false, false, false,
    ))));
    if !special_tokens.is_empty() {
        tokenizer
            .add_special_tokens(
                special_tokens
                    .iter()
                    .map(|(text, _)| AddedToken::from(text.clone(), true)),
            )
            .map_err(|e| err(format!("cannot add the special tokens: {e}")))?;
        for (text, id) in special_tokens {
            let got = tokenizer.token_to_id(text);
            if got != Some(*id) {
                return Err(err(format!(
                    "special token {text:?} got id {got:?} instead of {id}"
                )));
            }
        }
    }
    Ok(tokenizer)
}

/// Convenience: read the file then build.
pub fn load(
    path: &Path,
    pattern: &str,
    special_tokens: &[(String, u32)],
) -> Result<tokenizers::Tokenizer> {
    let data = std::fs::read(path).map_err(|e| {
        Error::Io(format!(
            "cannot read tiktoken rank file {}: {e}",
            path.display()
        ))
    })?;
    let in_file = |e: Error| match e {
        Error::Tokenizer(msg) => Error::Tokenizer(format!("{}: {msg}", path.display())),
        other => other,
    };
    let ranks = parse_ranks(&data).map_err(in_file)?;
    if ranks.is_empty() {
        return Err(Error::Tokenizer(format!(
            "{}: tiktoken rank file has no ranks",
            path.display()
        )));
    }
    tokenizer_from_ranks(&ranks, pattern, special_tokens).map_err(in_file)
}

/// Whether byte `b` can occur in valid UTF-8 (0xC0, 0xC1 and 0xF5..=0xFF never do).
fn utf8_byte(b: u8) -> bool {
    !matches!(b, 0xC0 | 0xC1 | 0xF5..=0xFF)
}

fn show_token(token: &[u8]) -> String {
    format!(
        "{:?} (base64 {})",
        String::from_utf8_lossy(token),
        BASE64.encode(token)
    )
}

fn show_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if text.chars().count() > 60 {
        format!("{:?}...", text.chars().take(60).collect::<String>())
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
    const O200K_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    /// Lookahead-free, so that the reference below can use the `regex` crate.
    const SIMPLE_PATTERN: &str = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

    /// All 256 bytes (rank = byte value, shuffled a little so that ranks and bytes differ),
    /// then the given multi-byte tokens in order.
    fn table(extra: &[&[u8]]) -> Vec<(Vec<u8>, u32)> {
        let mut ranks: Vec<(Vec<u8>, u32)> = (0..=255u8)
            .map(|b| (vec![b], (b as u32 * 7) % 256))
            .collect();
        for (i, t) in extra.iter().enumerate() {
            ranks.push((t.to_vec(), 256 + i as u32));
        }
        ranks
    }

    fn ids(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
        tok.encode(text, false).unwrap().get_ids().to_vec()
    }

    fn rank_of(ranks: &[(Vec<u8>, u32)], bytes: &[u8]) -> u32 {
        ranks.iter().find(|(t, _)| t == bytes).unwrap().1
    }

    /// tiktoken's algorithm, written plainly: a whole ranked piece is emitted as is, otherwise
    /// repeatedly merge the leftmost adjacent pair whose concatenation has the lowest rank.
    fn reference(ranks: &[(Vec<u8>, u32)], pattern: &str, text: &str) -> Vec<u32> {
        let map: HashMap<&[u8], u32> = ranks.iter().map(|(t, r)| (t.as_slice(), *r)).collect();
        let re = regex::Regex::new(pattern).unwrap();
        let mut out = vec![];
        for m in re.find_iter(text) {
            let piece = m.as_str().as_bytes();
            if let Some(&r) = map.get(piece) {
                out.push(r);
                continue;
            }
            let mut parts: Vec<Vec<u8>> = piece.iter().map(|&b| vec![b]).collect();
            loop {
                let best = (0..parts.len().saturating_sub(1))
                    .filter_map(|i| {
                        let joined = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
                        map.get(joined.as_slice()).map(|&r| (r, i))
                    })
                    .min();
                let Some((_, i)) = best else { break };
                let right = parts.remove(i + 1);
                parts[i].extend(right);
            }
            out.extend(parts.iter().map(|p| map[p.as_slice()]));
        }
        out
    }

    #[test]
    fn parse_ranks_reads_lines() {
        let data = b"IQ== 0\r\nIg== 1\n\n  \naGVsbG8= 7\nd29ybGQ 8";
        let ranks = parse_ranks(data).unwrap();
        assert_eq!(
            ranks,
            vec![
                (b"!".to_vec(), 0),
                (b"\"".to_vec(), 1),
                (b"hello".to_vec(), 7),
                (b"world".to_vec(), 8),
            ]
        );
        assert_eq!(parse_ranks(b"").unwrap(), vec![]);
    }

    #[test]
    fn parse_ranks_errors_name_the_line() {
        for (data, line, why) in [
            (&b"IQ== 0\nIg==\n"[..], 2, "not two fields"),
            (b"IQ== 0\n\nIg== 1 2\n", 3, "not two fields"),
            (b"IQ== 0\n!!!! 1\n", 2, "base64"),
            (b"IQ== x\n", 1, "integer"),
            (b"IQ== -1\n", 1, "integer"),
            (b"IQ== 4294967296\n", 1, "integer"),
            (b"{\"version\": \"1.0\"}\n", 1, "base64"),
        ] {
            let e = parse_ranks(data).unwrap_err();
            let Error::Tokenizer(msg) = &e else {
                panic!("{e:?}")
            };
            assert!(msg.contains(&format!("line {line}:")), "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn ids_follow_lowest_rank_merges() {
        // "ab" is ranked before "bc", so "abc" -> ab + c; "bcd": bc, then bcd.
        let ranks = table(&[b"ab", b"bc", b"bcd", b"abcd", b" a"]);
        let tok = tokenizer_from_ranks(&ranks, SIMPLE_PATTERN, &[]).unwrap();
        let r = |t: &[u8]| rank_of(&ranks, t);
        assert_eq!(ids(&tok, "abc"), vec![r(b"ab"), r(b"c")]);
        assert_eq!(ids(&tok, "bcd"), vec![r(b"bcd")]);
        // "abcd" is ranked but unreachable by merges (ab + cd, cd unranked): emitted whole.
        assert_eq!(ids(&tok, "abcd"), vec![r(b"abcd")]);
        // Not whole: ab + c + d (bc is never adjacent once ab merged).
        assert_eq!(
            ids(&tok, "abcdd"),
            vec![r(b"ab"), r(b"c"), r(b"d"), r(b"d")]
        );
        // " a" is ranked after "ab", so " abc" -> " " + ab + c.
        assert_eq!(
            ids(&tok, "x abc"),
            vec![r(b"x"), r(b" "), r(b"ab"), r(b"c")]
        );
        assert_eq!(
            ids(&tok, "x acd"),
            vec![r(b"x"), r(b" a"), r(b"c"), r(b"d")]
        );
        assert_eq!(
            ids(&tok, "é\n"),
            vec![r(&[0xC3]), r(&[0xA9]), r(b"\n")],
            "bytes of non-ASCII text"
        );
        assert_eq!(ids(&tok, ""), Vec::<u32>::new());
    }

    #[test]
    fn matches_reference_bpe_on_many_strings() {
        let ranks = table(&[
            b"th",
            b"he",
            b"the",
            b" t",
            b" the",
            b"in",
            b"ing",
            b" th",
            b"er",
            b"re",
            b"ere",
            b"here",
            b" here",
            b"==",
            b"===",
            b"====",
            b"aa",
            b"aaa",
            b"ab",
            b"ba",
            b"aba",
            b"bab",
            b"12",
            b"123",
            b"23",
            b"\xC3\xA9",
            b"\xE4\xB8",
            b"\xE4\xB8\xAD",
            b"  ",
            b"   ",
        ]);
        let tok = tokenizer_from_ranks(&ranks, SIMPLE_PATTERN, &[]).unwrap();
        let alphabet: Vec<&str> = vec![
            "a", "b", "t", "h", "e", "r", "i", "n", "g", " ", "=", "1", "2", "3", "é", "中", "\n",
            "th", "the",
        ];
        // A small deterministic LCG so that the test needs no extra crate.
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % n
        };
        for _ in 0..3000 {
            let len = next(12);
            let text: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            assert_eq!(
                ids(&tok, &text),
                reference(&ranks, SIMPLE_PATTERN, &text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn special_tokens_keep_their_ids() {
        let mut ranks = table(&[b"<|", b"|>", b"hi"]);
        ranks.push((b"far".to_vec(), 5000));
        // Non-contiguous ids, below the ranks' maximum, would not survive sequential assignment.
        let specials = vec![
            ("<|endoftext|>".to_string(), 1000),
            ("<|fim|>".to_string(), 300),
            ("<｜begin▁of▁sentence｜>".to_string(), 2000),
        ];
        let tok = tokenizer_from_ranks(&ranks, LLAMA3_PATTERN, &specials).unwrap();
        let r = |t: &[u8]| rank_of(&ranks, t);
        assert_eq!(
            ids(&tok, "hi<|endoftext|>hi<|fim|><|"),
            vec![r(b"hi"), 1000, r(b"hi"), 300, r(b"<|")]
        );
        assert_eq!(ids(&tok, "<｜begin▁of▁sentence｜>"), vec![2000]);
        // The JSON form loads back with the same ids.
        let json = tok.to_string(false).unwrap();
        let back: tokenizers::Tokenizer = json.parse().unwrap();
        assert_eq!(
            ids(&back, "hi<|endoftext|><|fim|>hi"),
            vec![r(b"hi"), 1000, 300, r(b"hi")]
        );
        assert_eq!(
            back.decode(&[r(b"hi"), 1000], false).unwrap(),
            "hi<|endoftext|>"
        );
    }

    #[test]
    fn real_patterns_compile_and_split_like_tiktoken() {
        let ranks = table(&[]);
        for pattern in [LLAMA3_PATTERN, QWEN_PATTERN, CL100K_PATTERN, O200K_PATTERN] {
            let tok = tokenizer_from_ranks(&ranks, pattern, &[]).unwrap();
            // Bytes only: one id per byte, whatever the split; checks nothing is lost.
            let text = "Hello I'LL  wörld 12345\n\n\t 中文 😀";
            assert_eq!(ids(&tok, text).len(), text.len());
        }
        // With merges for words, the splits show: "(?i:'ll)" separates "'LL", and
        // "\s+(?!\S)" leaves the last space for the word.
        let ranks = table(&[
            b"He", b"Hel", b"Hell", b"Hello", b"'L", b"'LL", b" w", b" wo", b"  ",
        ]);
        let r = |t: &[u8]| rank_of(&ranks, t);
        let tok = tokenizer_from_ranks(&ranks, LLAMA3_PATTERN, &[]).unwrap();
        assert_eq!(
            ids(&tok, "Hello'LL   wo"),
            vec![r(b"Hello"), r(b"'LL"), r(b"  "), r(b" wo")]
        );
    }

    #[test]
    fn patterns_are_rewritten_for_oniguruma() {
        // In Ruby syntax `$` would also match before "\n", giving " " + "\n" + ...
        let pattern = r"\s+$|\s+|\S+";
        assert_eq!(onig_pattern(pattern), r"\s+\z|\s+|\S+");
        let ranks = table(&[b" \n"]);
        let tok = tokenizer_from_ranks(&ranks, pattern, &[]).unwrap();
        let r = |t: &[u8]| rank_of(&ranks, t);
        assert_eq!(ids(&tok, "a \nb"), vec![r(b"a"), r(b" \n"), r(b"b")]);
        for (from, to) in [
            (r"[$^]\$[^a$]^", r"[$^]\$[^a$]\A"),
            (r"[]$][^]^]$", r"[]$][^]^]\z"),
            (r"(?m)^a$", r"(?m)^a$"),
            (r"[[:alpha:]$]$", r"[[:alpha:]$]\z"),
            (
                r"\p{N}{1,3}+|a{2}+b{3,}+c{1,2}",
                r"(?>\p{N}{1,3})|(?>a{2})(?>b{3,})c{1,2}",
            ),
            (
                r"(ab|c){1,2}+[x\]]{3}+\pL{2}+",
                r"(?>(ab|c){1,2})(?>[x\]]{3})(?>\pL{2})",
            ),
            (r"\{1,3}+ x{a}+ {1}", r"\{1,3}+ x{a}+ {1}"),
            (r"\p{N}{1,3}?+", r"\p{N}{1,3}?+"),
        ] {
            assert_eq!(onig_pattern(from), to, "{from}");
        }
        for pattern in [LLAMA3_PATTERN, QWEN_PATTERN, O200K_PATTERN] {
            assert_eq!(onig_pattern(pattern), pattern);
        }
        assert_eq!(
            onig_pattern(CL100K_PATTERN),
            r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|(?>\p{N}{1,3})| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++\z|\s*[\r\n]|\s+(?!\S)|\s"
        );
        // cl100k splits digits in threes: "1234" -> "123" + "4", not "12" + "34" (Ruby syntax
        // would read `{1,3}+` as "runs of 1-3 digits, repeated" and give one pre-token).
        let ranks = table(&[b"12", b"34", b"123"]);
        let r = |t: &[u8]| rank_of(&ranks, t);
        let tok = tokenizer_from_ranks(&ranks, CL100K_PATTERN, &[]).unwrap();
        assert_eq!(ids(&tok, "1234"), vec![r(b"123"), r(b"4")]);
    }

    #[test]
    fn bad_tables_are_rejected() {
        let msg = |r: Result<tokenizers::Tokenizer>| match r {
            Err(Error::Tokenizer(m)) => m,
            other => panic!("expected a tokenizer error, got {other:?}"),
        };
        let mut missing = table(&[]);
        missing.retain(|(t, _)| t != b"A");
        assert!(msg(tokenizer_from_ranks(&missing, SIMPLE_PATTERN, &[])).contains("0x41"));
        // Bytes that never occur in UTF-8 may be missing.
        let mut no_ff = table(&[]);
        no_ff.retain(|(t, _)| t[0] < 0xF5);
        assert!(tokenizer_from_ranks(&no_ff, SIMPLE_PATTERN, &[]).is_ok());

        let mut dup_rank = table(&[b"ab"]);
        dup_rank.push((b"cd".to_vec(), 256));
        assert!(msg(tokenizer_from_ranks(&dup_rank, SIMPLE_PATTERN, &[])).contains("rank 256"));
        let mut dup_token = table(&[b"ab"]);
        dup_token.push((b"ab".to_vec(), 999));
        assert!(msg(tokenizer_from_ranks(&dup_token, SIMPLE_PATTERN, &[])).contains("twice"));

        let ranks = table(&[b"ab"]);
        let special = |t: &str, id| vec![(t.to_string(), id)];
        assert!(msg(tokenizer_from_ranks(
            &ranks,
            SIMPLE_PATTERN,
            &special("<s>", 256)
        ))
        .contains("rank of token"));
        assert!(msg(tokenizer_from_ranks(
            &ranks,
            SIMPLE_PATTERN,
            &special("ab", 300)
        ))
        .contains("\"ab\""));
        assert!(msg(tokenizer_from_ranks(
            &ranks,
            SIMPLE_PATTERN,
            &special("", 300)
        ))
        .contains("empty"));
        assert!(msg(tokenizer_from_ranks(
            &ranks,
            SIMPLE_PATTERN,
            &special("Ã©", 300)
        ))
        .contains("byte-level"));
        let two = vec![("<a>".to_string(), 300), ("<b>".to_string(), 300)];
        assert!(msg(tokenizer_from_ranks(&ranks, SIMPLE_PATTERN, &two)).contains("share id 300"));
        assert!(msg(tokenizer_from_ranks(&ranks, r"(\p{L}+", &[])).contains("pattern"));
    }

    #[test]
    fn load_names_the_path() {
        let dir = std::env::temp_dir().join(format!("turnpack-tiktoken-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.tiktoken");
        match load(&missing, SIMPLE_PATTERN, &[]) {
            Err(Error::Io(m)) => assert!(m.contains("missing.tiktoken"), "{m}"),
            other => panic!("{other:?}"),
        }

        let corrupt = dir.join("corrupt.tiktoken");
        std::fs::write(&corrupt, "IQ== 0\nnot a rank line at all\n").unwrap();
        match load(&corrupt, SIMPLE_PATTERN, &[]) {
            Err(Error::Tokenizer(m)) => {
                assert!(
                    m.contains("corrupt.tiktoken") && m.contains("line 2"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let empty = dir.join("empty.tiktoken");
        std::fs::write(&empty, "\n").unwrap();
        assert!(matches!(
            load(&empty, SIMPLE_PATTERN, &[]),
            Err(Error::Tokenizer(_))
        ));

        let good = dir.join("good.tiktoken");
        let ranks = table(&[b"hi"]);
        let text: String = ranks
            .iter()
            .map(|(t, r)| format!("{} {r}\n", BASE64.encode(t)))
            .collect();
        std::fs::write(&good, text).unwrap();
        let tok = load(&good, LLAMA3_PATTERN, &[("<|eot|>".into(), 500)]).unwrap();
        assert_eq!(ids(&tok, "hi<|eot|>"), vec![256, 500]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
