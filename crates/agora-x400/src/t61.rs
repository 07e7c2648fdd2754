//! Teletex text (T.61, the repertoire of X.400's TeletexString) to and from Unicode, for
//! Latin letters: accents are non-spacing diacritics before the letter, and a few
//! letters and signs have codes of their own. Hand-written: encoding_rs has no T.61,
//! and the table is short.

/// Non-spacing diacritics (0xC1-0xCF) and the letters each makes, as (base, letter).
const DIACRITICS: &[(u8, &[(char, char)])] = &[
    (
        0xC1, // grave
        &[
            ('A', 'À'),
            ('E', 'È'),
            ('I', 'Ì'),
            ('O', 'Ò'),
            ('U', 'Ù'),
            ('a', 'à'),
            ('e', 'è'),
            ('i', 'ì'),
            ('o', 'ò'),
            ('u', 'ù'),
        ],
    ),
    (
        0xC2, // acute
        &[
            ('A', 'Á'),
            ('E', 'É'),
            ('I', 'Í'),
            ('O', 'Ó'),
            ('U', 'Ú'),
            ('Y', 'Ý'),
            ('a', 'á'),
            ('e', 'é'),
            ('i', 'í'),
            ('o', 'ó'),
            ('u', 'ú'),
            ('y', 'ý'),
            ('C', 'Ć'),
            ('c', 'ć'),
            ('N', 'Ń'),
            ('n', 'ń'),
            ('S', 'Ś'),
            ('s', 'ś'),
            ('Z', 'Ź'),
            ('z', 'ź'),
        ],
    ),
    (
        0xC3, // circumflex
        &[
            ('A', 'Â'),
            ('E', 'Ê'),
            ('I', 'Î'),
            ('O', 'Ô'),
            ('U', 'Û'),
            ('a', 'â'),
            ('e', 'ê'),
            ('i', 'î'),
            ('o', 'ô'),
            ('u', 'û'),
        ],
    ),
    (0xC4, &[('A', 'Ã'), ('N', 'Ñ'), ('O', 'Õ'), ('a', 'ã'), ('n', 'ñ'), ('o', 'õ')]), // tilde
    (
        0xC8, // diaeresis
        &[
            ('A', 'Ä'),
            ('E', 'Ë'),
            ('I', 'Ï'),
            ('O', 'Ö'),
            ('U', 'Ü'),
            ('a', 'ä'),
            ('e', 'ë'),
            ('i', 'ï'),
            ('o', 'ö'),
            ('u', 'ü'),
            ('y', 'ÿ'),
        ],
    ),
    (0xCA, &[('A', 'Å'), ('a', 'å'), ('U', 'Ů'), ('u', 'ů')]), // ring
    (0xCB, &[('C', 'Ç'), ('c', 'ç')]),                         // cedilla
    (0xCF, &[('C', 'Č'), ('c', 'č'), ('S', 'Š'), ('s', 'š'), ('Z', 'Ž'), ('z', 'ž'), ('R', 'Ř'), ('r', 'ř')]), // caron
];

/// Letters and signs with codes of their own.
const SPECIALS: &[(u8, char)] = &[
    (0xA1, '¡'),
    (0xA2, '¢'),
    (0xA3, '£'),
    (0xA5, '¥'),
    (0xA7, '§'),
    (0xA8, '¤'),
    (0xAB, '«'),
    (0xB0, '°'),
    (0xB1, '±'),
    (0xB2, '²'),
    (0xB3, '³'),
    (0xB4, '×'),
    (0xB5, 'µ'),
    (0xB6, '¶'),
    (0xB7, '·'),
    (0xB8, '÷'),
    (0xBB, '»'),
    (0xBC, '¼'),
    (0xBD, '½'),
    (0xBE, '¾'),
    (0xBF, '¿'),
    (0xE1, 'Æ'),
    (0xE2, 'Đ'),
    (0xE8, 'Ł'),
    (0xE9, 'Ø'),
    (0xEA, 'Œ'),
    (0xEC, 'Þ'),
    (0xF1, 'æ'),
    (0xF2, 'đ'),
    (0xF3, 'ð'),
    (0xF8, 'ł'),
    (0xF9, 'ø'),
    (0xFA, 'œ'),
    (0xFB, 'ß'),
    (0xFC, 'þ'),
];

/// Text as T.61; the second value says whether some characters became '?'.
pub fn encode(s: &str) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(s.len());
    let mut lost = false;
    'chars: for c in s.chars() {
        if c.is_ascii() {
            out.push(if c.is_ascii_control() && c != '\t' { b' ' } else { c as u8 });
            continue;
        }
        if let Some((b, _)) = SPECIALS.iter().find(|(_, s)| *s == c) {
            out.push(*b);
            continue;
        }
        for (d, letters) in DIACRITICS {
            if let Some((base, _)) = letters.iter().find(|(_, l)| *l == c) {
                out.push(*d);
                out.push(*base as u8);
                continue 'chars;
            }
        }
        out.push(b'?');
        lost = true;
    }
    (out, lost)
}

/// T.61 as text; what has no Unicode reading here becomes U+FFFD. Control characters
/// become spaces (the text goes into headers).
pub fn decode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let o = b[i];
        i += 1;
        match o {
            0x00..=0x1F | 0x7F => out.push(' '),
            0x20..=0x7E => out.push(o as char),
            0xC1..=0xCF => {
                let base = b.get(i).copied().map(char::from);
                let letter = DIACRITICS
                    .iter()
                    .find(|(d, _)| *d == o)
                    .and_then(|(_, ls)| ls.iter().find(|(bc, _)| Some(*bc) == base))
                    .map(|(_, l)| *l);
                match letter {
                    Some(l) => {
                        out.push(l);
                        i += 1;
                    }
                    None => out.push('\u{FFFD}'),
                }
            }
            _ => out.push(SPECIALS.iter().find(|(c, _)| *c == o).map_or('\u{FFFD}', |(_, s)| *s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_text_both_ways() {
        for s in ["Café at noon", "Åsa Ørsted, Straße", "François Žižek", "plain"] {
            let (t, lost) = encode(s);
            assert!(!lost, "{s}");
            assert_eq!(decode(&t), s);
        }
        assert_eq!(encode("é").0, [0xC2, b'e'], "a diacritic before its letter");
        assert_eq!(encode("Ø").0, [0xE9]);
        let (t, lost) = encode("日本");
        assert!(lost && t == b"??");
        assert_eq!(decode(&[b'a', 0x0d, 0x0a, b'b']), "a  b", "no line breaks into headers");
        assert_eq!(decode(&[0xC2]), "\u{FFFD}");
    }
}
