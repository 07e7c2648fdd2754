//! The X.400 ↔ Internet mail gateway (RFC 2156, MIXER): P1 messages with P22 content
//! become RFC 5322 messages and back, P1 reports become delivery status notifications
//! (RFC 3464) and back. What a conversion cannot carry is said in the message (a note
//! part and an `X400-Conversion-Note` field), never dropped silently. MIME is read by
//! mail-parser and charsets converted by encoding_rs; what is written is plain MIME
//! this module lays out itself.

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use rasn::prelude::*;

use crate::acse::{External, ExternalEncoding};
use crate::oraddr::{Mapper, OrAddress, decode_822, encode_822};
use crate::p1;
use crate::p22::{self, BodyPart, Heading, Ipm, OrDescriptor, RecipientSpecifier};
use crate::ppdu::oid;

/// This gateway's identity in X.400.
#[derive(Debug, Clone)]
pub struct Local {
    /// The global domain (C, ADMD, PRMD) MTS identifiers and trace name.
    pub domain: OrAddress,
    /// The name Message-IDs made here carry.
    pub hostname: String,
    /// This MTA's name (internal trace).
    pub mta: String,
}

/// id-ep-general-text and ISO registration numbers of character sets.
const EP_GENERAL_TEXT: &[u32] = &[2, 6, 1, 11, 11];
const REG_ASCII_G0: i64 = 6;
const REG_LATIN1_G1: i64 = 100;
const REG_UTF8: i64 = 196;

pub fn gdi(d: &OrAddress) -> Result<p1::GlobalDomainIdentifier, String> {
    let c = if d.c.is_empty() { "XX" } else { d.c.as_str() };
    let admd = if d.admd.is_empty() { " " } else { d.admd.as_str() };
    Ok(p1::GlobalDomainIdentifier {
        country: p1::Country(p1::CountryName::Printable(p1::printable(c)?)),
        admd: p1::Admd(p1::DomainName::Printable(p1::printable(admd)?)),
        prmd: if d.prmd.is_empty() { None } else { Some(p1::DomainName::Printable(p1::printable(&d.prmd)?)) },
    })
}

fn gdi_text(g: &p1::GlobalDomainIdentifier) -> String {
    let name = |d: &p1::DomainName| match d {
        p1::DomainName::Numeric(n) => String::from_utf8_lossy(n.as_bytes()).into_owned(),
        p1::DomainName::Printable(p) => String::from_utf8_lossy(p.as_bytes()).into_owned(),
    };
    let c = match &g.country.0 {
        p1::CountryName::Numeric(n) => String::from_utf8_lossy(n.as_bytes()).into_owned(),
        p1::CountryName::Printable(p) => String::from_utf8_lossy(p.as_bytes()).into_owned(),
    };
    let mut s = format!("/C={c}/ADMD={}/", name(&g.admd.0));
    if let Some(p) = &g.prmd {
        s.push_str(&format!("PRMD={}/", name(p)));
    }
    s
}

/// `[/C=GB/ADMD= /PRMD=Acme/;4711]`: an MTS identifier as RFC 2156 writes it.
pub fn mts_id_text(id: &p1::MtsIdentifier) -> String {
    header_safe(&format!("[{};{}]", gdi_text(&id.domain), id.local))
}

/// The reverse of `mts_id_text`.
pub fn mts_id_parse(s: &str) -> Option<p1::MtsIdentifier> {
    let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    let (domain, local) = inner.rsplit_once(';')?;
    let d = OrAddress::parse(domain).ok()?;
    Some(p1::MtsIdentifier { domain: gdi(&d).ok()?, local: p1::ia5(local).ok()? })
}

/// Text as teletex (T.61): accented Latin letters as their diacritic and letter; what
/// T.61 cannot hold becomes '?', and says so.
fn teletex(s: &str, notes: &mut Vec<String>, what: &str) -> TeletexString {
    let (out, lost) = crate::t61::encode(s);
    if lost {
        notes.push(format!("the {what} had characters teletex cannot hold; they became '?'"));
    }
    TeletexString::from_bytes(&out).unwrap_or_default()
}

/// Teletex as text for a header: control characters become spaces, so nothing a peer
/// sends can end a field or the header.
fn teletex_text(t: &TeletexString) -> String {
    crate::t61::decode(&t.to_bytes())
}

/// Any text from a peer, made safe for a header the same way.
fn header_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn printable_lossy(s: &str, max: usize) -> PrintableString {
    let cleaned: String = s.chars().map(|c| if crate::oraddr::printable_char(c) { c } else { '?' }).take(max).collect();
    PrintableString::from_bytes(cleaned.as_bytes()).unwrap_or_default()
}

/// The IPM identifier for a Message-ID: RFC 2156 §4.6 carries the id itself in the
/// user-relative part (escaped as an RFC-822 attribute), when it fits.
fn ipm_id(message_id: &str, originator: Option<&p1::OrName>) -> p22::IpmIdentifier {
    let enc = encode_822(message_id.trim_matches(['<', '>']));
    let local = if enc.len() <= 64 {
        enc
    } else {
        use sha2::Digest;
        let h = sha2::Sha256::digest(message_id.as_bytes());
        h.iter().take(16).map(|b| format!("{b:02x}")).collect()
    };
    p22::IpmIdentifier { user: originator.cloned(), local: Some(printable_lossy(&local, 64)) }
}

/// The Message-ID for an IPM identifier.
fn message_id_of(id: &p22::IpmIdentifier, hostname: &str) -> String {
    let local = id.local.as_ref().map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned()).unwrap_or_default();
    match decode_822(&local) {
        Ok(m) if m.contains('@') && !m.contains(['<', '>', ' ']) => format!("<{m}>"),
        _ => {
            let safe: String = local.chars().filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c)).collect();
            format!("<{}.x400@{hostname}>", if safe.is_empty() { "ipm" } else { &safe })
        }
    }
}

fn descriptor_text(d: &OrDescriptor, mapper: &Mapper) -> Option<String> {
    let addr = d.formal_name.as_ref().and_then(|n| mapper.to_822(&OrAddress::from_p1(n)));
    let name = d.free_form_name.as_ref().map(teletex_text).filter(|n| !n.trim().is_empty());
    match (name, addr) {
        (Some(n), Some(a)) => Some(format!("{} <{a}>", agora_store::text::encode_words(&quote_name(&n)))),
        (None, Some(a)) => Some(a),
        (Some(n), None) => {
            let or = d.formal_name.as_ref().map(|f| OrAddress::from_p1(f).text()).unwrap_or_default();
            Some(format!("{} (X.400 {or}) :;", agora_store::text::encode_words(&quote_name(&n))))
        }
        (None, None) => None,
    }
}

fn quote_name(n: &str) -> String {
    if n.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') {
        n.to_string()
    } else {
        format!("\"{}\"", n.replace(['\\', '"'], ""))
    }
}

fn utc(t: &UtcTime) -> i64 {
    t.timestamp()
}

fn now_utc() -> UtcTime {
    chrono::DateTime::from_timestamp(agora_store::now(), 0).unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct InboundRecipient {
    pub or: OrAddress,
    /// Its RFC 822 address, when it maps.
    pub address: Option<String>,
    /// Its number in the envelope.
    pub number: i64,
    /// The originator asked for a delivery report.
    pub report: bool,
}

/// An X.400 message as the gateway delivers it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The envelope sender (the originator's RFC 822 address; empty if it has none).
    pub sender: String,
    /// Each recipient this MTA is responsible for.
    pub recipients: Vec<InboundRecipient>,
    pub message: Vec<u8>,
}

fn charset_of(regs: &[i64]) -> &'static encoding_rs::Encoding {
    let has = |r: i64| regs.contains(&r);
    if has(REG_UTF8) || has(190) || has(191) || has(192) {
        return encoding_rs::UTF_8;
    }
    for (reg, enc) in [
        (101, encoding_rs::ISO_8859_2),
        (109, encoding_rs::ISO_8859_3),
        (110, encoding_rs::ISO_8859_4),
        (144, encoding_rs::ISO_8859_5),
        (127, encoding_rs::ISO_8859_6),
        (126, encoding_rs::ISO_8859_7),
        (138, encoding_rs::ISO_8859_8),
        (148, encoding_rs::WINDOWS_1254),
        (203, encoding_rs::ISO_8859_15),
    ] {
        if has(reg) {
            return enc;
        }
    }
    encoding_rs::WINDOWS_1252
}

/// MIME parts made from the body, and notes on what could not be.
fn body_to_mime(
    body: &[BodyPart],
    mapper: &Mapper,
    hostname: &str,
    depth: usize,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut parts = Vec::new();
    for (n, bp) in body.iter().enumerate() {
        match bp {
            BodyPart::Ia5(t) => {
                let text = t.data.to_string();
                parts.push(text_part(&text));
            }
            BodyPart::Teletex(t) => {
                let text: Vec<String> = t.data.iter().map(teletex_text).collect();
                parts.push(text_part(&text.join("\r\n")));
            }
            BodyPart::Extended(e) if e.data.direct_reference.as_ref() == Some(&oid(p22::et::GENERAL_TEXT)) => {
                let regs: Vec<i64> = e
                    .parameters
                    .as_ref()
                    .and_then(|p| p.value())
                    .and_then(|v| rasn::ber::decode::<SetOf<i64>>(v).ok())
                    .map(|s| s.to_vec().into_iter().copied().collect())
                    .unwrap_or_default();
                let raw = e.data.value().and_then(|v| rasn::ber::decode::<GeneralString>(v).ok());
                match raw {
                    Some(g) => {
                        let octets = g.to_vec();
                        let (text, _, bad) = charset_of(&regs).decode(&octets);
                        if bad {
                            notes.push(format!("body part {} had octets its character sets do not define", n + 1));
                        }
                        parts.push(text_part(&text));
                    }
                    None => {
                        notes.push(format!("body part {} (general text) could not be read and was left out", n + 1))
                    }
                }
            }
            BodyPart::Extended(e) if e.data.direct_reference.as_ref() == Some(&oid(p22::et::FILE_TRANSFER)) => {
                match file_of(e) {
                    Some((name, data)) => {
                        let name = if name.is_empty() { format!("part{}.bin", n + 1) } else { name };
                        parts.push(binary_part(&type_of_name(&name), &name, &data));
                    }
                    None => notes.push(format!("body part {} (a file) could not be read and was left out", n + 1)),
                }
            }
            BodyPart::Bilateral(o) => {
                parts.push(binary_part("application/octet-stream", &format!("part{}.bin", n + 1), o));
                notes.push(format!(
                    "body part {} was bilaterally defined: it is attached as octets, without a name or type",
                    n + 1
                ));
            }
            BodyPart::Message(m) if depth < 4 => {
                let inner = ipm_to_rfc5322(&m.data, mapper, hostname, None, depth + 1, &mut Vec::new());
                parts.push(format!(
                    "Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n{}",
                    String::from_utf8_lossy(&inner)
                ));
            }
            other => notes.push(format!(
                "body part {} ({}) has no Internet equivalent and was left out",
                n + 1,
                other.kind()
            )),
        }
    }
    parts
}

/// A file transfer body part's name (its last pathname element) and octets.
fn file_of(e: &p22::Extended) -> Option<(String, Vec<u8>)> {
    let params: Option<p22::FileTransferParameters> =
        e.parameters.as_ref().and_then(|p| p.value()).and_then(|v| rasn::ber::decode(v).ok());
    let name = params
        .and_then(|p| p.file_attributes)
        .and_then(|a| a.pathname)
        .and_then(|p| match p {
            p22::Pathname::Incomplete(v) | p22::Pathname::Actual(v) => v.last().map(|g| g.to_vec()),
        })
        .map(|b| safe_name(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let externals: Vec<External> = rasn::ber::decode(e.data.value()?).ok()?;
    let mut data = Vec::new();
    for x in &externals {
        match &x.encoding {
            ExternalEncoding::Octets(o) => data.extend_from_slice(o),
            // A value of one ASN.1 type: an OCTET STRING holds the octets.
            ExternalEncoding::Single(a) => data.extend(rasn::ber::decode::<OctetString>(a.as_bytes()).ok()?.to_vec()),
            ExternalEncoding::Arbitrary(b) => data.extend(b.as_raw_slice()),
        }
    }
    Some((name, data))
}

/// A file name safe in a header parameter: no path, no quotes, no control characters.
fn safe_name(s: &str) -> String {
    let last = s.rsplit(['/', '\\']).next().unwrap_or_default();
    last.chars().filter(|c| !c.is_control() && *c != '"').take(200).collect::<String>().trim().to_string()
}

/// A MIME type for a file name's extension (the file transfer body part has none).
fn type_of_name(name: &str) -> String {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "csv" => "text/csv",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
    .to_string()
}

/// An attachment as a file transfer body part: its name in the file attributes, its
/// octets as FTAM unstructured binary.
fn file_body_part(name: &str, data: &[u8]) -> BodyPart {
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    let params = p22::FileTransferParameters {
        file_attributes: Some(p22::FileAttributes {
            pathname: Some(p22::Pathname::Incomplete(vec![
                GraphicString::from_bytes(name.as_bytes()).unwrap_or_default(),
            ])),
            object_size: Some(p22::ObjectSize::Actual(data.len() as i64)),
        }),
        ..p22::FileTransferParameters::default()
    };
    let file = External {
        direct_reference: Some(oid(p22::FTAM_UNSTRUCTURED_BINARY)),
        indirect_reference: None,
        encoding: ExternalEncoding::Octets(OctetString::from(data.to_vec())),
    };
    BodyPart::Extended(p22::Extended {
        parameters: Some(External {
            direct_reference: Some(oid(p22::EP_FILE_TRANSFER)),
            indirect_reference: None,
            encoding: ExternalEncoding::Single(Any::new(rasn::ber::encode(&params).unwrap_or_default())),
        }),
        data: External {
            direct_reference: Some(oid(p22::et::FILE_TRANSFER)),
            indirect_reference: None,
            encoding: ExternalEncoding::Single(Any::new(rasn::ber::encode(&vec![file]).unwrap_or_default())),
        },
    })
}

fn text_part(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if text.is_ascii() {
        format!("Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{text}")
    } else {
        format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            wrap64(text.as_bytes())
        )
    }
}

fn binary_part(ctype: &str, name: &str, data: &[u8]) -> String {
    format!(
        "Content-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}",
        wrap64(data)
    )
}

fn wrap64(data: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(b.len() + b.len() / 76 * 2 + 2);
    for chunk in b.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// An IPM as an RFC 5322 message; `envelope` adds the X400- trace fields.
fn ipm_to_rfc5322(
    ipm: &Ipm,
    mapper: &Mapper,
    hostname: &str,
    envelope: Option<&p1::Envelope>,
    depth: usize,
    notes: &mut Vec<String>,
) -> Vec<u8> {
    let h: &Heading = &ipm.heading;
    let mut head = String::new();
    let mut field = |name: &str, value: &str| {
        if !value.is_empty() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    };
    let date =
        envelope.and_then(|e| e.trace.0.first()).map(|t| utc(&t.info.arrival_time)).unwrap_or_else(agora_store::now);
    field("Date", &agora_store::time::rfc5322_date(date));
    let originator = h
        .originator
        .as_ref()
        .and_then(|o| descriptor_text(o, mapper))
        .or_else(|| envelope.and_then(|e| mapper.to_822(&OrAddress::from_p1(&e.originator))));
    field("From", originator.as_deref().unwrap_or("X.400 originator :;"));
    let list = |rs: &Option<Vec<RecipientSpecifier>>| -> String {
        rs.iter().flatten().filter_map(|r| descriptor_text(&r.recipient, mapper)).collect::<Vec<_>>().join(",\r\n ")
    };
    field("To", &list(&h.primary_recipients));
    field("Cc", &list(&h.copy_recipients));
    let reply: Vec<String> = h.reply_recipients.iter().flatten().filter_map(|d| descriptor_text(d, mapper)).collect();
    field("Reply-To", &reply.join(", "));
    if let Some(s) = &h.subject {
        field("Subject", &agora_store::text::encode_words(&teletex_text(s)));
    }
    field("Message-ID", &message_id_of(&h.this_ipm, hostname));
    if let Some(r) = &h.replied_to {
        field("In-Reply-To", &message_id_of(r, hostname));
    }
    match h.importance {
        Some(p22::Importance::Low) => field("Importance", "low"),
        Some(p22::Importance::High) => field("Importance", "high"),
        _ => {}
    }
    match h.sensitivity {
        Some(p22::Sensitivity::Personal) => field("Sensitivity", "Personal"),
        Some(p22::Sensitivity::Private) => field("Sensitivity", "Private"),
        Some(p22::Sensitivity::CompanyConfidential) => field("Sensitivity", "Company-Confidential"),
        None => {}
    }
    if h.auto_forwarded == Some(true) {
        field("Autoforwarded", "TRUE");
    }
    if let Some(t) = &h.expiry_time {
        field("Expires", &agora_store::time::rfc5322_date(utc(t)));
    }
    let rn = h
        .primary_recipients
        .iter()
        .chain(h.copy_recipients.iter())
        .flatten()
        .any(|r| r.notification_requests.as_ref().is_some_and(|b| b.get(p22::RN).is_some_and(|v| *v)));
    if rn && let Some(o) = &originator {
        field("Disposition-Notification-To", o);
    }
    if let Some(e) = envelope {
        field("X400-MTS-Identifier", &mts_id_text(&e.identifier));
        field("X400-Originator", &OrAddress::from_p1(&e.originator).text());
        let recips: Vec<String> = e.recipients.iter().map(|r| OrAddress::from_p1(&r.recipient).text()).collect();
        field("X400-Recipients", &recips.join(",\r\n "));
        let ct = match p1::ContentType::of(&e.content_type_built_in, &e.content_type_extended) {
            Some(p1::ContentType::BuiltIn(p1::P2)) => "P2-1984 (2)".to_string(),
            Some(p1::ContentType::BuiltIn(p1::P22)) => "P2-1988 (22)".to_string(),
            Some(p1::ContentType::BuiltIn(n)) => format!("({n})"),
            Some(p1::ContentType::Extended(o)) => o.to_string(),
            None => String::new(),
        };
        field("X400-Content-Type", &ct);
        for t in &e.trace.0 {
            field(
                "X400-Received",
                &format!("by {}; {}", gdi_text(&t.domain), agora_store::time::rfc5322_date(utc(&t.info.arrival_time))),
            );
        }
    }
    let mut parts = body_to_mime(&ipm.body, mapper, hostname, depth, notes);
    if !notes.is_empty() {
        let text = format!(
            "Note from the X.400 gateway at {hostname}: this message was converted from X.400, and not all of it could be.\r\n{}\r\n",
            notes.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\r\n")
        );
        parts.insert(0, text_part(&text));
        for n in notes.iter() {
            field("X400-Conversion-Note", n);
        }
    }
    head.push_str("MIME-Version: 1.0\r\n");
    let mut out = head.into_bytes();
    match parts.len() {
        0 => out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"),
        1 => out.extend_from_slice(parts[0].as_bytes()),
        _ => {
            let boundary = format!("=_x400_{}", crate::gateway::boundary_token(&out));
            out.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n").as_bytes());
            for p in &parts {
                out.extend_from_slice(format!("--{boundary}\r\n{p}\r\n").as_bytes());
            }
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        }
    }
    out
}

fn boundary_token(seed: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(seed);
    h.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// RFC 2156 §5: a P1 message as an Internet message, for the recipients this MTA is
/// responsible for.
pub fn to_internet(m: &p1::Message, mapper: &Mapper, hostname: &str) -> Result<Inbound, String> {
    let e = &m.envelope;
    if e.recipients.len() > p1::MAX_RECIPIENTS {
        return Err(format!("more than {} recipients in one envelope", p1::MAX_RECIPIENTS));
    }
    let mut notes = Vec::new();
    let message = match p1::ContentType::of(&e.content_type_built_in, &e.content_type_extended) {
        Some(p1::ContentType::BuiltIn(p1::P2 | p1::P22)) => match p22::decode::<p22::InformationObject>(&m.content) {
            Ok(p22::InformationObject::Ipm(ipm)) => ipm_to_rfc5322(&ipm, mapper, hostname, Some(e), 0, &mut notes),
            Ok(p22::InformationObject::Ipn(ipn)) => ipn_to_mdn(&ipn, mapper, hostname, e),
            Err(err) => return Err(err),
        },
        _ => return Err("a content type the gateway does not convert".into()),
    };
    let sender = mapper.to_822(&OrAddress::from_p1(&e.originator)).unwrap_or_default();
    let recipients = e
        .recipients
        .iter()
        .filter(|r| r.indicators.first().is_some_and(|b| *b))
        .map(|r| {
            let or = OrAddress::from_p1(&r.recipient);
            let address = mapper.to_822(&or);
            let report = r.indicators.get(p1::indicator::ORIGINATOR_REPORT).is_some_and(|b| *b);
            InboundRecipient { or, address, number: r.originally_specified_number, report }
        })
        .collect();
    Ok(Inbound { sender, recipients, message })
}

/// A receipt notification as an MDN (RFC 8098).
fn ipn_to_mdn(ipn: &p22::Ipn, mapper: &Mapper, hostname: &str, e: &p1::Envelope) -> Vec<u8> {
    let from = ipn
        .originator
        .as_ref()
        .and_then(|o| descriptor_text(o, mapper))
        .or_else(|| mapper.to_822(&OrAddress::from_p1(&e.originator)))
        .unwrap_or_else(|| "X.400 originator :;".into());
    let original = message_id_of(&ipn.subject_ipm, hostname);
    let (disposition, text) = match &ipn.choice {
        p22::IpnChoice::Receipt(_) => ("automatic-action/MDN-sent-automatically; displayed", "was displayed"),
        p22::IpnChoice::NonReceipt(_) => ("automatic-action/MDN-sent-automatically; deleted", "was not read"),
    };
    let boundary = format!("=_x400_{}", boundary_token(original.as_bytes()));
    format!(
        "Date: {}\r\nFrom: {from}\r\nSubject: Notification: your message {text}\r\nMessage-ID: <{}.ipn@{hostname}>\r\n\
         X400-MTS-Identifier: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=disposition-notification; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nYour message {original} {text} (an X.400 notification).\r\n\
         --{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: {hostname}; Agora X.400 gateway\r\n\
         Original-Message-ID: {original}\r\nDisposition: {disposition}\r\n\r\n--{boundary}--\r\n",
        agora_store::time::rfc5322_date(agora_store::now()),
        boundary_token(original.as_bytes()),
        mts_id_text(&e.identifier),
    )
    .into_bytes()
}

/// RFC 2156 §4: an Internet message as a P1 message with P22 content, for `recipients`
/// (RFC 822 addresses this gateway maps), sent by `sender` (the envelope's).
pub fn to_x400(
    sender: &str,
    recipients: &[String],
    message: &[u8],
    mapper: &Mapper,
    local: &Local,
    mts_local: &str,
) -> Result<(p1::Message, Vec<String>), String> {
    let parsed = MessageParser::default().parse(message).ok_or("the message cannot be read")?;
    let mut notes = Vec::new();
    let or_of = |a: &str| mapper.to_or(a).and_then(|o| o.to_p1());
    let originator = or_of(if sender.is_empty() { "postmaster@invalid" } else { sender })?;
    let descriptor = |addr: &mail_parser::Addr, notes: &mut Vec<String>| -> Option<OrDescriptor> {
        let a = addr.address()?;
        let formal = or_of(a).ok()?;
        let free = addr.name().map(|n| teletex(n, notes, "display name"));
        Some(OrDescriptor { formal_name: Some(formal), free_form_name: free, telephone: None })
    };
    let recipients_of =
        |list: Option<&mail_parser::Address>, notes: &mut Vec<String>| -> Option<Vec<RecipientSpecifier>> {
            let v: Vec<RecipientSpecifier> = list
                .into_iter()
                .flat_map(|l| l.iter())
                .filter_map(|a| descriptor(a, notes))
                .map(|d| RecipientSpecifier {
                    recipient: d,
                    notification_requests: None,
                    reply_requested: None,
                    extensions: None,
                })
                .collect();
            (!v.is_empty()).then_some(v)
        };
    let from = parsed.from().and_then(|f| f.first()).and_then(|a| descriptor(a, &mut notes));
    let mut primary = recipients_of(parsed.to(), &mut notes);
    let copy = recipients_of(parsed.cc(), &mut notes);
    // A receipt asked for (Disposition-Notification-To) becomes RN on each recipient.
    if parsed.header_raw("Disposition-Notification-To").is_some() {
        for r in primary.iter_mut().flatten() {
            let mut bits = BitString::repeat(false, 2);
            bits.set(p22::RN, true);
            r.notification_requests = Some(bits);
        }
    }
    let message_id =
        parsed.message_id().map(str::to_string).unwrap_or_else(|| format!("{mts_local}@{}", local.hostname));
    let replied_to = parsed.in_reply_to().as_text().map(|r| ipm_id(r, None));
    let importance =
        parsed.header_raw("Importance").map(|v| v.trim().to_ascii_lowercase()).and_then(|v| match v.as_str() {
            "low" => Some(p22::Importance::Low),
            "high" => Some(p22::Importance::High),
            "normal" => Some(p22::Importance::Normal),
            _ => None,
        });
    let sensitivity =
        parsed.header_raw("Sensitivity").map(|v| v.trim().to_ascii_lowercase()).and_then(|v| match v.as_str() {
            "personal" => Some(p22::Sensitivity::Personal),
            "private" => Some(p22::Sensitivity::Private),
            "company-confidential" => Some(p22::Sensitivity::CompanyConfidential),
            _ => None,
        });
    let heading = Heading {
        this_ipm: ipm_id(&message_id, from.as_ref().and_then(|f| f.formal_name.as_ref())),
        originator: from,
        authorizing_users: None,
        primary_recipients: primary,
        copy_recipients: copy,
        blind_copy_recipients: None,
        replied_to,
        obsoleted: None,
        related: None,
        subject: parsed.subject().map(|s| teletex(s, &mut notes, "subject")),
        expiry_time: None,
        reply_time: None,
        reply_recipients: None,
        importance,
        sensitivity,
        auto_forwarded: None,
        extensions: None,
    };
    let mut body = Vec::new();
    for part in parsed.text_bodies() {
        let text = part.text_contents().unwrap_or_default();
        body.push(text_body_part(text));
    }
    for part in parsed.attachments() {
        let name = part.attachment_name().unwrap_or("unnamed");
        let ctype = part.content_type().map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")));
        let ctype = ctype.as_deref().unwrap_or("application/octet-stream").to_ascii_lowercase();
        // The file transfer body part carries the name; the MIME type only as far as
        // the name's extension tells it again.
        if type_of_name(name) != ctype {
            notes.push(format!("the attachment {name} went as a file without its type ({ctype})"));
        }
        body.push(file_body_part(name, part.contents()));
    }
    if parsed.html_body_count() > 0 && parsed.text_body_count() == 0 {
        notes.push("the message had only an HTML body; its text went without the markup".into());
    }
    if !notes.is_empty() {
        let text = format!(
            "Note from the Internet mail gateway at {}: this message was converted to X.400, and not all of it could be.\r\n{}\r\n",
            local.hostname,
            notes.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\r\n")
        );
        body.insert(0, text_body_part(&text));
    }
    let ipm = Ipm { heading, body };
    let content = p22::encode(&p22::InformationObject::Ipm(ipm));
    let mut indicators = BitString::repeat(false, 8);
    indicators.set(p1::indicator::RESPONSIBILITY, true);
    indicators.set(p1::indicator::MTA_NON_DELIVERY_REPORT, true);
    indicators.set(p1::indicator::ORIGINATOR_NON_DELIVERY_REPORT, true);
    if recipients.len() > p1::MAX_RECIPIENTS {
        return Err(format!("more than {} recipients for one envelope", p1::MAX_RECIPIENTS));
    }
    let recips = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(p1::PerRecipientFields {
                recipient: or_of(r)?,
                originally_specified_number: i as i64 + 1,
                indicators: indicators.clone(),
                explicit_conversion: None,
                extensions: None,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if recips.is_empty() {
        return Err("no recipient".into());
    }
    Ok((p22_message(originator, recips, content, local, mts_local)?, notes))
}

/// A P1 message with P22 content leaving this MTA: its identifier, trace and internal
/// trace.
fn p22_message(
    originator: p1::OrName,
    recipients: Vec<p1::PerRecipientFields>,
    content: Vec<u8>,
    local: &Local,
    mts_local: &str,
) -> Result<p1::Message, String> {
    let domain = gdi(&local.domain)?;
    let envelope = p1::Envelope {
        identifier: p1::MtsIdentifier { domain: domain.clone(), local: p1::ia5(mts_local)? },
        originator,
        original_eits: None,
        content_type_built_in: Some(p1::P22),
        content_type_extended: None,
        content_identifier: None,
        priority: None,
        per_message_indicators: None,
        deferred_delivery_time: None,
        per_domain_bilateral: None,
        trace: trace_here(domain, now_utc()),
        extensions: Some(internal_trace(&local.mta, &local.domain)?),
        recipients,
    };
    Ok(p1::Message { envelope, content: OctetString::from(content) })
}

/// This domain's trace element, now: the message was relayed here.
fn trace_here(domain: p1::GlobalDomainIdentifier, now: UtcTime) -> p1::TraceInformation {
    p1::TraceInformation(vec![p1::TraceElement {
        domain,
        info: p1::DomainSuppliedInformation {
            arrival_time: now,
            routing_action: p1::RoutingAction::Relayed,
            attempted_domain: None,
            deferred_time: None,
            converted: None,
            other_actions: None,
        },
    }])
}

/// The internal trace extension (X.411's standard extension 38) naming this MTA.
fn internal_trace(mta: &str, domain: &OrAddress) -> Result<SetOf<p1::ExtensionField>, String> {
    let element = p1::InternalTraceElement {
        domain: gdi(domain)?,
        mta_name: p1::ia5(mta)?,
        info: p1::MtaSuppliedInformation {
            arrival_time: now_utc(),
            routing_action: p1::RoutingAction::Relayed,
            attempted_mta: None,
            attempted_domain: None,
            deferred_time: None,
            converted: None,
            other_actions: None,
        },
    };
    let value = rasn::ber::encode(&vec![element]).map_err(|e| e.to_string())?;
    Ok(SetOf::from_vec(vec![p1::ExtensionField {
        kind: p1::ExtensionType::Standard(p1::EXT_INTERNAL_TRACE),
        criticality: None,
        value: Some(Any::new(value)),
    }]))
}

/// Whether a message's trace says it was in this domain already (a loop).
pub fn looped(e: &p1::Envelope, ours: &OrAddress) -> bool {
    let Ok(mine) = gdi(ours) else { return false };
    e.trace.0.iter().any(|t| t.domain == mine)
}

/// Text as IA5 when it is ASCII, else as general text in Latin-1 or UTF-8.
fn text_body_part(text: &str) -> BodyPart {
    if text.is_ascii()
        && let Ok(data) = Ia5String::try_from(text.to_string())
    {
        return BodyPart::Ia5(p22::Ia5Text { parameters: p22::Ia5Parameters { repertoire: None }, data });
    }
    let (regs, octets): (Vec<i64>, Vec<u8>) = if text.chars().all(|c| (c as u32) < 0x100) {
        (vec![1, REG_ASCII_G0, REG_LATIN1_G1], text.chars().map(|c| c as u8).collect())
    } else {
        (vec![1, REG_UTF8], text.as_bytes().to_vec())
    };
    let params = rasn::ber::encode(&SetOf::from_vec(regs)).unwrap_or_default();
    let data = rasn::ber::encode(&GeneralString::from_bytes(&octets).unwrap_or_default()).unwrap_or_default();
    BodyPart::Extended(p22::Extended {
        parameters: Some(External {
            direct_reference: Some(oid(EP_GENERAL_TEXT)),
            indirect_reference: None,
            encoding: ExternalEncoding::Single(Any::new(params)),
        }),
        data: External {
            direct_reference: Some(oid(p22::et::GENERAL_TEXT)),
            indirect_reference: None,
            encoding: ExternalEncoding::Single(Any::new(data)),
        },
    })
}

/// Status codes for non-delivery reasons and diagnostics (RFC 2156 §6.2 in spirit).
fn status_of(nd: &p1::NonDeliveryReport) -> (&'static str, &'static str) {
    match (nd.reason, nd.diagnostic) {
        (_, Some(p1::nd::UNRECOGNISED_OR_NAME)) => ("5.1.1", "unrecognised O/R name"),
        (_, Some(p1::nd::AMBIGUOUS_OR_NAME)) => ("5.1.4", "ambiguous O/R name"),
        (_, Some(p1::nd::MTS_CONGESTION)) => ("4.3.2", "MTS congestion"),
        (_, Some(p1::nd::LOOP_DETECTED)) => ("5.4.6", "loop detected"),
        (_, Some(p1::nd::RECIPIENT_UNAVAILABLE)) => ("4.2.1", "recipient unavailable"),
        (_, Some(p1::nd::MAXIMUM_TIME_EXPIRED)) => ("4.4.7", "maximum time expired"),
        (_, Some(p1::nd::CONTENT_TOO_LONG)) => ("5.3.4", "content too long"),
        (_, Some(p1::nd::CONTENT_SYNTAX_ERROR)) => ("5.6.0", "content syntax error"),
        (p1::nd::UNABLE_TO_TRANSFER, _) => ("5.0.0", "unable to transfer"),
        _ => ("5.0.0", "transfer failure"),
    }
}

/// A P1 report as a DSN to its destination: (the destination's RFC 822 address, DSN).
pub fn report_to_dsn(r: &p1::Report, mapper: &Mapper, hostname: &str) -> Result<(String, Vec<u8>), String> {
    let dest = mapper
        .to_822(&OrAddress::from_p1(&r.envelope.destination))
        .ok_or("the report's destination has no RFC 822 address here")?;
    let boundary = format!("=_x400_{}", boundary_token(mts_id_text(&r.envelope.identifier).as_bytes()));
    let subject_id = mts_id_text(&r.content.subject);
    let mut human =
        format!("This is the X.400 gateway at {hostname}, with a report on your message {subject_id}.\r\n\r\n");
    let mut machine = format!(
        "Reporting-MTA: x400; {}\r\nX400-Subject-Identifier: {subject_id}\r\n",
        gdi_text(&r.envelope.identifier.domain)
    );
    let mut any_failed = false;
    for rr in &r.content.recipients {
        let or = OrAddress::from_p1(&rr.actual_recipient);
        let addr = mapper.to_822(&or);
        let final_rcpt = match &addr {
            Some(a) => format!("rfc822; {a}"),
            None => format!("x400; {}", or.text()),
        };
        let (action, status, diag) = match &rr.last_trace.report {
            p1::ReportType::Delivery(_) => ("delivered", "2.0.0", String::new()),
            p1::ReportType::NonDelivery(nd) => {
                any_failed = true;
                let (s, why) = status_of(nd);
                (
                    if s.starts_with('4') { "delayed" } else { "failed" },
                    s,
                    format!("x400; {} ({}/{})", why, nd.reason, nd.diagnostic.unwrap_or(-1)),
                )
            }
        };
        human.push_str(&format!(
            "{}: {action}{}\r\n",
            addr.as_deref().unwrap_or(&or.text()),
            if diag.is_empty() { String::new() } else { format!(", {diag}") }
        ));
        machine.push_str(&format!("\r\nFinal-Recipient: {final_rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"));
        if !diag.is_empty() {
            machine.push_str(&format!("Diagnostic-Code: {diag}\r\n"));
        }
        machine.push_str(&format!(
            "Arrival-Date: {}\r\n",
            agora_store::time::rfc5322_date(utc(&rr.last_trace.arrival_time))
        ));
    }
    let subject = if any_failed { "Undelivered Mail Returned to Sender" } else { "Successful Mail Delivery Report" };
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: <{dest}>\r\nSubject: {subject}\r\nDate: {}\r\n\
         Message-ID: <{}.report@{hostname}>\r\nAuto-Submitted: auto-replied\r\nX400-MTS-Identifier: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{human}\r\n\
         --{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{machine}\r\n",
        agora_store::time::rfc5322_date(agora_store::now()),
        boundary_token(boundary.as_bytes()),
        mts_id_text(&r.envelope.identifier),
    );
    if let Some(c) = &r.content.returned_content
        && let Ok(p22::InformationObject::Ipm(ipm)) = p22::decode::<p22::InformationObject>(c)
    {
        let returned = ipm_to_rfc5322(&ipm, mapper, hostname, None, 1, &mut Vec::new());
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n{}\r\n",
            String::from_utf8_lossy(&returned)
        ));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    Ok((dest, out.into_bytes()))
}

/// What an MDN (RFC 8098) says: the message it is about, who read it (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnSummary {
    pub original_message_id: String,
    /// Displayed (a receipt), or anything else (a non-receipt).
    pub displayed: bool,
    /// The reader's address (Final-Recipient).
    pub reader: String,
}

pub fn read_mdn(message: &[u8]) -> Option<MdnSummary> {
    let parsed = MessageParser::default().parse(message)?;
    for part in parsed.parts.iter() {
        let ct = part.content_type()?;
        let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase();
        if kind != "message/disposition-notification" {
            continue;
        }
        let text = String::from_utf8_lossy(part.contents()).into_owned();
        let (mut original, mut disposition, mut reader) = (None, None, None);
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "original-message-id" => original = Some(v.to_string()),
                "disposition" => disposition = Some(v.to_ascii_lowercase()),
                "final-recipient" => reader = Some(v.split_once(';').map_or(v, |(_, a)| a).trim().to_string()),
                _ => {}
            }
        }
        let disposition = disposition?;
        let displayed = disposition.rsplit(';').next().is_some_and(|d| d.trim().starts_with("displayed"));
        return Some(MdnSummary { original_message_id: original?, displayed, reader: reader? });
    }
    None
}

/// An MDN as an X.400 receipt or non-receipt notification (P22 IPN) to `destination`,
/// the originator of the message it is about (whose IPM identifier it names again).
pub fn mdn_to_ipn(
    m: &MdnSummary,
    destination: &p1::OrName,
    mapper: &Mapper,
    local: &Local,
    mts_local: &str,
) -> Result<p1::Message, String> {
    let reader = mapper.to_or(&m.reader)?.to_p1()?;
    let now = now_utc();
    let choice = if m.displayed {
        p22::IpnChoice::Receipt(p22::Receipt { receipt_time: now, acknowledgment_mode: None })
    } else {
        // ipm-discarded
        p22::IpnChoice::NonReceipt(p22::NonReceipt { reason: 0, discard_reason: None })
    };
    let ipn = p22::Ipn {
        subject_ipm: ipm_id(&m.original_message_id, Some(destination)),
        originator: Some(OrDescriptor { formal_name: Some(reader.clone()), free_form_name: None, telephone: None }),
        preferred_recipient: None,
        conversion_eits: None,
        extensions: None,
        choice,
    };
    let content = p22::encode(&p22::InformationObject::Ipn(ipn));
    let mut indicators = BitString::repeat(false, 8);
    indicators.set(p1::indicator::RESPONSIBILITY, true);
    let recipient = p1::PerRecipientFields {
        recipient: destination.clone(),
        originally_specified_number: 1,
        indicators,
        explicit_conversion: None,
        extensions: None,
    };
    p22_message(reader, vec![recipient], content, local, mts_local)
}

/// What a DSN says, read back for a report to an X.400 originator: the subject's MTS
/// identifier (from the returned header's X400-MTS-Identifier) and each recipient's
/// outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnSummary {
    pub subject: p1::MtsIdentifier,
    /// (recipient's RFC 822 address, delivered?, status code)
    pub recipients: Vec<(String, bool, String)>,
}

pub fn read_dsn(message: &[u8]) -> Option<DsnSummary> {
    let parsed = MessageParser::default().parse(message)?;
    let mut subject = None;
    let mut recipients = Vec::new();
    for part in parsed.parts.iter() {
        let ct = part.content_type();
        let kind = ct.map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()).to_ascii_lowercase());
        let text = String::from_utf8_lossy(part.contents()).into_owned();
        match kind.as_deref() {
            Some("message/delivery-status") => {
                let mut cur: Option<(String, bool, String)> = None;
                for line in text.lines() {
                    let Some((k, v)) = line.split_once(':') else { continue };
                    let v = v.trim();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "final-recipient" => {
                            if let Some(c) = cur.take() {
                                recipients.push(c);
                            }
                            let addr = v.split_once(';').map_or(v, |(_, a)| a).trim().to_string();
                            cur = Some((addr, false, String::new()));
                        }
                        "action" => {
                            if let Some(c) = cur.as_mut() {
                                c.1 = matches!(v.to_ascii_lowercase().as_str(), "delivered" | "relayed" | "expanded");
                            }
                        }
                        "status" => {
                            if let Some(c) = cur.as_mut() {
                                c.2 = v.to_string();
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(c) = cur.take() {
                    recipients.push(c);
                }
            }
            Some("text/rfc822-headers") | Some("message/rfc822") => {
                for line in text.lines() {
                    if let Some(v) =
                        line.strip_prefix("X400-MTS-Identifier:").or_else(|| line.strip_prefix("x400-mts-identifier:"))
                    {
                        subject = mts_id_parse(v);
                    }
                }
            }
            _ => {}
        }
    }
    Some(DsnSummary { subject: subject?, recipients })
}

/// The non-delivery diagnostic for an enhanced status code.
pub fn diagnostic_of(status: &str) -> Option<i64> {
    match status {
        s if s.starts_with("5.1.1") || s.starts_with("5.1.0") => Some(p1::nd::UNRECOGNISED_OR_NAME),
        s if s.starts_with("5.3.4") => Some(p1::nd::CONTENT_TOO_LONG),
        s if s.starts_with("5.4.6") => Some(p1::nd::LOOP_DETECTED),
        s if s.starts_with("4.4.7") => Some(p1::nd::MAXIMUM_TIME_EXPIRED),
        _ => None,
    }
}

/// A report on `subject` to `destination` (an X.400 originator) from what a DSN said.
pub fn dsn_to_report(
    d: &DsnSummary,
    destination: &p1::OrName,
    mapper: &Mapper,
    local: &Local,
    report_local: &str,
) -> Result<p1::Report, String> {
    let outcomes: Vec<Outcome> = d
        .recipients
        .iter()
        .enumerate()
        .filter_map(|(i, (addr, delivered, status))| {
            let name = mapper.to_or(addr).ok()?.to_p1().ok()?;
            Some((name, i as i64 + 1, if *delivered { Ok(()) } else { Err(diagnostic_of(status)) }))
        })
        .collect();
    report_on(&d.subject, destination, &outcomes, local, report_local)
}

/// One recipient's outcome in a report: its name, its number in the subject, and
/// delivered or the non-delivery diagnostic.
pub type Outcome = (p1::OrName, i64, Result<(), Option<i64>>);

/// A report on `subject` to `destination`, recipient by recipient.
pub fn report_on(
    subject: &p1::MtsIdentifier,
    destination: &p1::OrName,
    outcomes: &[Outcome],
    local: &Local,
    report_local: &str,
) -> Result<p1::Report, String> {
    let domain = gdi(&local.domain)?;
    let now = now_utc();
    let recipients: Vec<p1::PerRecipientReportFields> = outcomes
        .iter()
        .map(|(name, n, outcome)| {
            let report = match outcome {
                Ok(()) => p1::ReportType::Delivery(p1::DeliveryReport { delivery_time: now, type_of_user: None }),
                Err(diagnostic) => p1::ReportType::NonDelivery(p1::NonDeliveryReport {
                    reason: p1::nd::UNABLE_TO_TRANSFER,
                    diagnostic: *diagnostic,
                }),
            };
            p1::PerRecipientReportFields {
                actual_recipient: name.clone(),
                originally_specified_number: *n,
                indicators: BitString::repeat(false, 8),
                last_trace: p1::LastTrace { arrival_time: now, converted: None, report },
                originally_intended: None,
                supplementary: None,
                extensions: None,
            }
        })
        .collect();
    if recipients.is_empty() {
        return Err("the report names no recipient the gateway can map".into());
    }
    let trace = trace_here(domain.clone(), now);
    Ok(p1::Report {
        envelope: p1::ReportEnvelope {
            identifier: p1::MtsIdentifier { domain, local: p1::ia5(report_local)? },
            destination: destination.clone(),
            trace,
            extensions: None,
        },
        content: p1::ReportContent {
            subject: subject.clone(),
            subject_trace: None,
            original_eits: None,
            content_type_built_in: Some(p1::P22),
            content_type_extended: None,
            content_identifier: None,
            returned_content: None,
            additional_information: None,
            extensions: None,
            recipients,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oraddr::Mapping;

    fn side(domain: &str, or: &str) -> (Mapper, Local) {
        let mapper = Mapper {
            entries: vec![
                Mapping { or: OrAddress::parse("/C=GB/ADMD= /PRMD=Acme/O=A/").unwrap(), domain: "a.example".into() },
                Mapping { or: OrAddress::parse("/C=GB/ADMD= /PRMD=Beta/O=B/").unwrap(), domain: "b.example".into() },
            ],
            gateway: OrAddress::parse(or).unwrap(),
        };
        (mapper, Local { domain: OrAddress::parse(or).unwrap(), hostname: domain.into(), mta: "MTA".into() })
    }

    #[test]
    fn an_internet_message_goes_through_x400_and_back() {
        let (m, local) = side("mx.a.example", "/C=GB/ADMD= /PRMD=Acme/");
        let raw = "From: Ann Lee <ann@a.example>\r\nTo: Bob <bob@b.example>, carol@b.example\r\nCc: dave@elsewhere.test\r\n\
                   Subject: Caf\u{e9} plans\r\nMessage-ID: <m1@a.example>\r\nImportance: high\r\nSensitivity: Private\r\n\
                   MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
                   Let's meet \u{e0} midi.\r\n--b\r\nContent-Type: application/pdf; name=plan.pdf\r\nContent-Disposition: attachment; filename=plan.pdf\r\n\
                   Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
        let (msg, notes) = to_x400(
            "ann@a.example",
            &["bob@b.example".into(), "carol@b.example".into()],
            raw.as_bytes(),
            &m,
            &local,
            "42",
        )
        .unwrap();
        assert!(notes.is_empty(), "a PDF's type is told again by its name: {notes:?}");
        // Encoded and decoded as P1 travels.
        let wire = p1::encode(&p1::MtsApdu::Message(msg.clone()));
        let p1::MtsApdu::Message(back) = p1::decode::<p1::MtsApdu>(&wire).unwrap() else { panic!() };
        assert_eq!(back, msg);
        let (mb, _) = side("mx.b.example", "/C=GB/ADMD= /PRMD=Beta/");
        let inbound = to_internet(&back, &mb, "mx.b.example").unwrap();
        assert_eq!(inbound.sender, "ann@a.example");
        let rcpts: Vec<_> = inbound.recipients.iter().map(|r| r.address.clone().unwrap()).collect();
        assert_eq!(rcpts, ["bob@b.example", "carol@b.example"]);
        let text = String::from_utf8(inbound.message.clone()).unwrap();
        let parsed = MessageParser::default().parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.subject(), Some("Caf\u{e9} plans"));
        assert_eq!(parsed.message_id(), Some("m1@a.example"));
        assert_eq!(parsed.from().unwrap().first().unwrap().address(), Some("ann@a.example"));
        assert_eq!(parsed.from().unwrap().first().unwrap().name(), Some("Ann Lee"));
        assert_eq!(parsed.to().unwrap().iter().count(), 2);
        assert!(parsed.cc().unwrap().first().unwrap().address() == Some("dave@elsewhere.test"));
        assert_eq!(parsed.header_raw("Importance").map(str::trim), Some("high"));
        assert_eq!(parsed.header_raw("Sensitivity").map(str::trim), Some("Private"));
        assert!(parsed.header_raw("X400-MTS-Identifier").unwrap().contains(";42]"));
        let texts: Vec<String> =
            (0..parsed.text_body_count()).filter_map(|i| parsed.body_text(i)).map(|t| t.into_owned()).collect();
        assert!(texts.iter().any(|b| b.contains("Let's meet \u{e0} midi.")), "{text}");
        assert!(!text.contains("X400-Conversion-Note"), "nothing lost: {text}");
        assert_eq!(parsed.attachment_count(), 1, "{text}");
        let file = parsed.attachment(0).unwrap();
        assert_eq!(file.contents(), b"%PDF-1.4\n");
        assert_eq!(file.attachment_name(), Some("plan.pdf"));
        assert_eq!(file.content_type().map(|c| c.subtype().unwrap_or_default().to_string()).as_deref(), Some("pdf"));
    }

    #[test]
    fn an_mdn_becomes_a_receipt_for_the_original_ipm() {
        let (m, local) = side("mx.b.example", "/C=GB/ADMD= /PRMD=Beta/");
        let mdn = "From: bob@b.example\r\nTo: ann@a.example\r\nSubject: Read: lunch\r\nMIME-Version: 1.0\r\n\
                   Content-Type: multipart/report; report-type=disposition-notification; boundary=z\r\n\r\n\
                   --z\r\nContent-Type: text/plain\r\n\r\nread\r\n--z\r\nContent-Type: message/disposition-notification\r\n\r\n\
                   Reporting-UA: x; y\r\nFinal-Recipient: rfc822; bob@b.example\r\nOriginal-Message-ID: <lunch-1@a.example>\r\n\
                   Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--z--\r\n";
        let s = read_mdn(mdn.as_bytes()).unwrap();
        assert!(s.displayed && s.reader == "bob@b.example" && s.original_message_id == "<lunch-1@a.example>");
        let dest = m.to_or("ann@a.example").unwrap().to_p1().unwrap();
        let msg = mdn_to_ipn(&s, &dest, &m, &local, "n1").unwrap();
        let wire = p1::encode(&p1::MtsApdu::Message(msg.clone()));
        let p1::MtsApdu::Message(back) = p1::decode::<p1::MtsApdu>(&wire).unwrap() else { panic!() };
        let Ok(p22::InformationObject::Ipn(ipn)) = p22::decode::<p22::InformationObject>(&back.content) else {
            panic!()
        };
        // The IPM identifier the original had (its originator and the Message-ID).
        assert_eq!(ipn.subject_ipm, ipm_id("<lunch-1@a.example>", Some(&dest)));
        assert!(matches!(ipn.choice, p22::IpnChoice::Receipt(_)));
        // And at the originator's side, an MDN about the same Message-ID.
        let (ma, _) = side("mx.a.example", "/C=GB/ADMD= /PRMD=Acme/");
        let inbound = to_internet(&back, &ma, "mx.a.example").unwrap();
        let text = String::from_utf8(inbound.message).unwrap();
        assert!(text.contains("Original-Message-ID: <lunch-1@a.example>") && text.contains("displayed"), "{text}");
    }

    #[test]
    fn reports_and_dsns() {
        let (m, local) = side("mx.b.example", "/C=GB/ADMD= /PRMD=Beta/");
        let subject = mts_id_parse("[/C=GB/ADMD= /PRMD=Acme/;42]").unwrap();
        let d = DsnSummary {
            subject: subject.clone(),
            recipients: vec![("nobody@b.example".into(), false, "5.1.1".into())],
        };
        let dest = m.to_or("ann@a.example").unwrap().to_p1().unwrap();
        let r = dsn_to_report(&d, &dest, &m, &local, "r1").unwrap();
        let wire = p1::encode(&p1::MtsApdu::Report(r.clone()));
        let p1::MtsApdu::Report(back) = p1::decode::<p1::MtsApdu>(&wire).unwrap() else { panic!() };
        assert_eq!(back, r);
        let (ma, _) = side("mx.a.example", "/C=GB/ADMD= /PRMD=Acme/");
        let (to, dsn) = report_to_dsn(&back, &ma, "mx.a.example").unwrap();
        assert_eq!(to, "ann@a.example");
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Final-Recipient: rfc822; nobody@b.example"), "{text}");
        assert!(text.contains("Status: 5.1.1") && text.contains("Action: failed"), "{text}");
        assert!(text.contains("X400-Subject-Identifier: [/C=GB/ADMD= /PRMD=Acme/;42]"), "{text}");
        // A DSN with the original header read back.
        let dsn = "From: MAILER-DAEMON@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=z\r\n\r\n\
                   --z\r\nContent-Type: text/plain\r\n\r\nsorry\r\n--z\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; b\r\n\r\n\
                   Final-Recipient: rfc822; nobody@b.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--z\r\nContent-Type: text/rfc822-headers\r\n\r\n\
                   Subject: x\r\nX400-MTS-Identifier: [/C=GB/ADMD= /PRMD=Acme/;42]\r\n\r\n--z--\r\n";
        let s = read_dsn(dsn.as_bytes()).unwrap();
        assert_eq!(s.subject, subject);
        assert_eq!(s.recipients, [("nobody@b.example".to_string(), false, "5.1.1".to_string())]);
    }
}
