//! FETCH data items for one message: body sections cut from the stored message by the
//! part offsets cached at delivery (no re-parse), and the matching response text.

use agora_store::{MessageMeta, Part};

use crate::command::{FetchAtt, Section, SectionText};
use crate::response;

/// The bytes of a BODY[section] (the store's section cutting).
pub fn section_bytes(msg: &[u8], root: &Part, section: &Section) -> Vec<u8> {
    use agora_store::section::Within;
    let within = match &section.text {
        None => Within::Body,
        Some(SectionText::Header) => Within::Header,
        Some(SectionText::HeaderFields(n)) => Within::HeaderFields(n.clone()),
        Some(SectionText::HeaderFieldsNot(n)) => Within::HeaderFieldsNot(n.clone()),
        Some(SectionText::Text) => Within::Text,
        Some(SectionText::Mime) => Within::Mime,
    };
    agora_store::section::section_bytes(msg, root, &section.part, &within)
}

fn section_name(section: &Section) -> String {
    let mut s: Vec<String> = section.part.iter().map(u32::to_string).collect();
    match &section.text {
        None => {}
        Some(SectionText::Header) => s.push("HEADER".into()),
        Some(SectionText::Text) => s.push("TEXT".into()),
        Some(SectionText::Mime) => s.push("MIME".into()),
        Some(SectionText::HeaderFields(n)) => s.push(format!("HEADER.FIELDS ({})", n.join(" ").to_ascii_uppercase())),
        Some(SectionText::HeaderFieldsNot(n)) => {
            s.push(format!("HEADER.FIELDS.NOT ({})", n.join(" ").to_ascii_uppercase()))
        }
    }
    s.join(".")
}

/// True if producing `att` needs the message body itself, not just the metadata.
pub fn needs_body(att: &FetchAtt) -> bool {
    matches!(
        att,
        FetchAtt::Rfc822
            | FetchAtt::Rfc822Header
            | FetchAtt::Rfc822Text
            | FetchAtt::BodySection { .. }
            | FetchAtt::Binary { .. }
            | FetchAtt::BinarySize(_)
            | FetchAtt::Preview
    )
}

pub use agora_store::search::email_id;

/// True if the item marks the message \Seen when fetched.
pub fn sets_seen(att: &FetchAtt) -> bool {
    matches!(att, FetchAtt::Rfc822 | FetchAtt::Rfc822Text | FetchAtt::BodySection { peek: false, .. })
}

/// The content BINARY[part] names: the part's body with its transfer encoding undone
/// (multiparts and messages as they are); None for an unknown encoding.
pub use agora_store::section::binary_bytes;

/// Appends one data item (name and value) for `meta` to `out`. `flags` is the
/// already formatted flag list. False if a BINARY item meets an unknown transfer
/// encoding (the command then fails with UNKNOWN-CTE).
pub fn item(out: &mut Vec<u8>, att: &FetchAtt, meta: &MessageMeta, body: Option<&[u8]>, flags: &str) -> bool {
    let body = body.unwrap_or(&[]);
    match att {
        FetchAtt::Uid => out.extend_from_slice(format!("UID {}", meta.uid).as_bytes()),
        FetchAtt::Flags => out.extend_from_slice(format!("FLAGS ({flags})").as_bytes()),
        FetchAtt::InternalDate => {
            out.extend_from_slice(b"INTERNALDATE ");
            out.extend_from_slice(response::internal_date(meta.internal_date).as_bytes());
        }
        FetchAtt::Rfc822Size => out.extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes()),
        FetchAtt::Envelope => {
            out.extend_from_slice(b"ENVELOPE ");
            response::envelope(out, &meta.summary.envelope);
        }
        FetchAtt::Body => {
            out.extend_from_slice(b"BODY ");
            response::body_structure(out, &meta.summary.root, false);
        }
        FetchAtt::BodyStructure => {
            out.extend_from_slice(b"BODYSTRUCTURE ");
            response::body_structure(out, &meta.summary.root, true);
        }
        FetchAtt::Rfc822 => {
            out.extend_from_slice(b"RFC822 ");
            response::literal(out, body);
        }
        FetchAtt::Rfc822Header => {
            out.extend_from_slice(b"RFC822.HEADER ");
            let r = &meta.summary.root;
            response::literal(out, body.get(..(r.body_start as usize).min(body.len())).unwrap_or(&[]));
        }
        FetchAtt::Rfc822Text => {
            out.extend_from_slice(b"RFC822.TEXT ");
            let r = &meta.summary.root;
            response::literal(out, body.get((r.body_start as usize).min(body.len())..).unwrap_or(&[]));
        }
        FetchAtt::BodySection { section, partial, .. } => {
            let data = section_bytes(body, &meta.summary.root, section);
            out.extend_from_slice(format!("BODY[{}]", section_name(section)).as_bytes());
            emit_partial(out, &data, *partial);
        }
        FetchAtt::Binary { part, partial, .. } => {
            let Some(data) = binary_bytes(body, &meta.summary.root, part) else { return false };
            let name: Vec<String> = part.iter().map(u32::to_string).collect();
            out.extend_from_slice(format!("BINARY[{}]", name.join(".")).as_bytes());
            emit_partial(out, &data, *partial);
        }
        FetchAtt::BinarySize(part) => {
            let Some(data) = binary_bytes(body, &meta.summary.root, part) else { return false };
            let name: Vec<String> = part.iter().map(u32::to_string).collect();
            out.extend_from_slice(format!("BINARY.SIZE[{}] {}", name.join("."), data.len()).as_bytes());
        }
        FetchAtt::ModSeq => out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes()),
        FetchAtt::EmailId => out.extend_from_slice(format!("EMAILID ({})", email_id(&meta.blob)).as_bytes()),
        // Threads are computed by THREAD on demand; no stable thread id is kept.
        FetchAtt::ThreadId => out.extend_from_slice(b"THREADID NIL"),
        FetchAtt::SaveDate if meta.saved > 0 => {
            out.extend_from_slice(b"SAVEDATE ");
            out.extend_from_slice(response::internal_date(meta.saved).as_bytes());
        }
        FetchAtt::SaveDate => out.extend_from_slice(b"SAVEDATE NIL"),
        FetchAtt::Preview => {
            out.extend_from_slice(b"PREVIEW ");
            response::string(out, agora_store::text::preview(body, &meta.summary.root).as_bytes());
        }
    }
    true
}

fn emit_partial(out: &mut Vec<u8>, data: &[u8], partial: Option<(u32, u32)>) {
    match partial {
        None => {
            out.push(b' ');
            response::literal(out, data);
        }
        Some((start, len)) => {
            let s = (start as usize).min(data.len());
            let e = s.saturating_add(len as usize).min(data.len());
            out.extend_from_slice(format!("<{start}> ").as_bytes());
            response::literal(out, &data[s..e]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_store::MessageSummary;

    const MSG: &[u8] = b"From: a@b\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\none\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--x--\r\n";

    fn sec(part: &[u32], text: Option<SectionText>) -> Vec<u8> {
        let s = MessageSummary::parse(MSG);
        section_bytes(MSG, &s.root, &Section { part: part.to_vec(), text })
    }

    #[test]
    fn sections() {
        assert_eq!(sec(&[], None), MSG);
        assert!(sec(&[], Some(SectionText::Header)).starts_with(b"From: a@b\r\n"));
        assert!(sec(&[], Some(SectionText::Header)).ends_with(b"\r\n\r\n"));
        assert_eq!(sec(&[1], None), b"one");
        assert_eq!(sec(&[1], Some(SectionText::Mime)), b"Content-Type: text/plain\r\n\r\n");
        assert_eq!(sec(&[2], Some(SectionText::Header)), b"Subject: inner\r\n\r\n");
        assert_eq!(sec(&[2], Some(SectionText::Text)), b"inner body");
        assert_eq!(sec(&[2, 1], None), b"inner body");
        // A message that is not multipart has one part: its body.
        let single = b"Subject: x\r\n\r\nonly body\r\n";
        let sum = MessageSummary::parse(single);
        let body = section_bytes(single, &sum.root, &Section { part: vec![1], text: None });
        assert_eq!(body, b"only body\r\n");
        assert_eq!(sec(&[], Some(SectionText::HeaderFields(vec!["subject".into()]))), b"Subject: s\r\n\r\n");
        assert!(sec(&[9], None).is_empty());
    }
}
