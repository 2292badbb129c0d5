//! Token ids with their byte offsets, and the one rule that turns byte offsets into the character
//! offsets Python indexes strings by.

use crate::{Error, Result};

/// Token ids with the byte range of the text each one covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, in text order.
    pub ids: Vec<u32>,
    /// Byte range `(start, end)` of the text each token covers.
    pub offsets: Vec<(usize, usize)>,
}

impl Tokens {
    /// The offsets as character (code point) positions in `text`, as Python's `tokenizers` gives
    /// them.
    pub fn char_offsets(&self, text: &str) -> Vec<(usize, usize)> {
        let chars = CharIndex::new(text);
        self.offsets
            .iter()
            .map(|&(s, e)| (chars.char_of(s), chars.char_of(e)))
            .collect()
    }
}

/// Byte offsets to character offsets (Python indexes strings by character). An offset inside a
/// character rounds up to the next character.
#[derive(Debug, Clone)]
pub struct CharIndex {
    /// Chars started before each byte position.
    counts: Vec<u32>,
}

impl CharIndex {
    /// The index of `text`.
    pub fn new(text: &str) -> Self {
        let mut counts = Vec::with_capacity(text.len() + 1);
        let mut n = 0u32;
        for b in text.bytes() {
            counts.push(n);
            // Count each char at its first byte, so an offset inside a char rounds up.
            if (b & 0xC0) != 0x80 {
                n += 1;
            }
        }
        counts.push(n);
        CharIndex { counts }
    }

    /// The character offset of byte offset `byte` (clamped to the text's end).
    pub fn char_of(&self, byte: usize) -> usize {
        self.counts[byte.min(self.counts.len() - 1)] as usize
    }
}

/// `text` through `tokenizers` without BOS/EOS, as [`Tokens`].
pub(crate) fn encode_with(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Tokens> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(format!("tokenization failed: {e}")))?;
    Ok(Tokens {
        ids: encoding.get_ids().to_vec(),
        offsets: encoding.get_offsets().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_offsets_count_code_points_and_round_up_inside_a_char() {
        let text = "aé😀b";
        let chars = CharIndex::new(text);
        let at: Vec<usize> = (0..=text.len()).map(|b| chars.char_of(b)).collect();
        assert_eq!(at, [0, 1, 2, 2, 3, 3, 3, 3, 4]);
        let tokens = Tokens {
            ids: vec![1, 2, 3],
            offsets: vec![(0, 3), (3, 7), (7, 8)],
        };
        assert_eq!(tokens.char_offsets(text), [(0, 2), (2, 3), (3, 4)]);
    }
}
