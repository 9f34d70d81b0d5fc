//! Characters an identifier must not hold.
//!
//! Host ids, job names and labels are printed in logs, tables, the audit
//! history and alerts, and operators type them back. A character that
//! prints as nothing, or that reorders what follows it, makes two different
//! ids look the same (`web-1` and `web-1` + U+200B) or makes an id print as
//! something it is not (a right-to-left override turns `web-1-canary` into
//! something that reads differently). So identifiers refuse:
//!
//! - control characters (Unicode general category Cc), and
//! - format characters (Cf): the bidirectional embeddings, overrides and
//!   isolates (U+202A–U+202E, U+2066–U+2069), the zero-width space, joiners
//!   and direction marks (U+200B–U+200F), the word joiner and invisible
//!   operators (U+2060–U+2064), the byte-order mark (U+FEFF), the soft
//!   hyphen, tag characters, and the rest of category Cf.
//!
//! Free text (reasons, evidence) is not an identifier and may hold them.

/// Whether `c` is a format character (Unicode general category Cf, as of
/// Unicode 15.1).
pub fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Whether `c` must not appear in an identifier: a control or a format
/// character (see the module documentation).
pub fn is_hidden(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// The first character of `s` that must not appear in an identifier, if
/// any.
pub fn first_hidden(s: &str) -> Option<char> {
    s.chars().find(|&c| is_hidden(c))
}

/// Words for a refused character, for error messages: `U+202E`.
pub fn describe(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_isolates_and_zero_width_characters_are_hidden() {
        for c in [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
            '\u{0000}',
            '\u{007F}',
            '\u{0085}',
        ] {
            assert!(is_hidden(c), "{} must be hidden", describe(c));
        }
    }

    #[test]
    fn ordinary_letters_digits_and_punctuation_are_not_hidden() {
        for c in "web-1.use1_a:b/é中ß".chars() {
            assert!(!is_hidden(c), "{c:?} is ordinary");
        }
        assert_eq!(first_hidden("web-1"), None);
        assert_eq!(first_hidden("web\u{200B}-1"), Some('\u{200B}'));
        assert_eq!(describe('\u{202E}'), "U+202E");
    }
}
