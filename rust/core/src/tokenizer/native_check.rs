//! A last check before the native encoder is used: it must give `tokenizers`' ids and offsets
//! on a probe text that exercises every pre-tokenizer branch (contractions, letters after
//! punctuation, digit runs, whitespace runs before words and at the end, newlines, several
//! scripts, combining marks, emoji) and every added token. The tests compare the two on large
//! corpora; this catches a tokenizer that qualifies on paper but is read differently.

use super::bpe::NativeBpe;
use super::tokens::encode_with;

const PROBE: &str = "Hello, world! It's  the DOG'S ball; they'LL see, we'd've gone.\n\
\tIndented   code:\n    fn main() {\n        let x = 1234567 + 89;   \n    }\n\n\n\
Numbers 3.14159, 1,000,000 and ½ ² ٣٤٥ ४२.  \r\n\
Ünïcödé façade naïve ſt Straße İstanbul ﬁ \u{a0}nbsp\u{2003}em\u{3000}ideo \
中文字符，日本語のテキスト、カタカナ 한국어 텍스트 עברית العربية हिन्दी ไทย Ελληνικά Русский \
emoji 👩‍👩‍👧 🇫🇷 🙂🙂 `` ''' \"quoted\" <tag attr=\"v\"/> $$ ## --- ***\n \n  \x0b\x0c end   ";

/// Ok when the native encoder agrees with `tokenizer` on the probe text and on each added token
/// placed inside it.
pub fn check(native: &NativeBpe, tokenizer: &tokenizers::Tokenizer) -> Result<(), String> {
    let mut text = String::from(PROBE);
    for token in tokenizer.get_added_tokens_decoder().values() {
        text.push_str(&token.content);
        text.push_str(" x ");
    }
    text.push_str(PROBE);
    if !native.normalizes_nfc() {
        // Text that NFC would change (decomposed accents; the Kelvin sign, which case-folds to
        // `k`): the native encoder leaves it to `tokenizers` when the tokenizer normalizes.
        text.push_str(" cafe\u{301} e\u{301}\u{302}\u{323} KELVIN \u{212a}'S");
    }
    let reference = encode_with(tokenizer, &text).map_err(|e| format!("probe: {e}"))?;
    match native.encode(&text) {
        None => Err("probe: the native encoder declined NFC text".into()),
        Some(mine) if mine == reference => Ok(()),
        Some(mine) => {
            let at = mine
                .ids
                .iter()
                .zip(&reference.ids)
                .position(|(a, b)| a != b)
                .unwrap_or(mine.ids.len().min(reference.ids.len()));
            Err(format!(
                "probe text encodes differently from tokenizers (first difference at token {at})"
            ))
        }
    }
}
