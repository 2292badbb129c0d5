//! GPT-2's byte-level alphabet: the printable characters that byte-level BPE vocabularies (GPT-2,
//! Llama 3, Qwen, tiktoken rank files converted to Hugging Face form) spell raw bytes with.

/// GPT-2's byte-to-unicode table, as used by byte-level BPE: printable Latin-1 bytes stand for
/// themselves, the others are moved to U+0100 onwards in byte order.
pub(crate) fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let keep = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if keep {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(c).expect("below U+0200");
    }
    table
}

/// Byte-level alphabet character (as a code point below 0x200) -> byte.
pub(crate) fn unicode_to_byte() -> Vec<Option<u8>> {
    let mut decode = vec![None; 0x200];
    for (b, c) in byte_to_unicode().iter().enumerate() {
        decode[*c as usize] = Some(b as u8);
    }
    decode
}
