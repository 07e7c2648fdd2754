//! APPEND with MULTIAPPEND (RFC 3502, all or nothing), CATENATE (RFC 4469, parts from
//! literals and IMAP URLs to the user's own messages), literal8 (RFC 3516), APPENDLIMIT
//! (RFC 7889) and quota (RFC 9208: OVERQUOTA).

use agora_net::{Conn, Flow};
use agora_store::{Delivery, DeliveryTarget, StoreError};

use crate::command::{AppendMessage, CatPart, Section, parse_section};
use crate::selected::uid_set;
use crate::session::{Session, date_time_secs, parse_flags};
use crate::{binary, fetch};

/// Where a CATENATE URL points (RFC 5092 path: mailbox, UIDVALIDITY, UID, SECTION, PARTIAL).
#[derive(Debug, PartialEq, Eq)]
struct UrlRef {
    mailbox: String,
    uidvalidity: Option<u32>,
    uid: u32,
    section: Option<Section>,
    partial: Option<(usize, Option<usize>)>,
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `imap://host/mbox;UIDVALIDITY=n/;UID=n/;SECTION=s/;PARTIAL=a.b` or the same
/// from `/mbox...` on. URLAUTH-authorized URLs are not accepted here.
fn parse_url(url: &str) -> Option<UrlRef> {
    // RFC 5092 URLs are ASCII; anything else is no URL (and never sliced mid-character).
    if !url.is_ascii() {
        return None;
    }
    let path =
        if url.len() > 7 && url[..7].eq_ignore_ascii_case("imap://") { &url[7 + url[7..].find('/')?..] } else { url };
    let path = path.strip_prefix('/')?;
    let lower = path.to_ascii_lowercase();
    let uid_at = lower.find("/;uid=")?;
    let (mbox_part, rest) = (&path[..uid_at], &path[uid_at + 1..]);
    let (mailbox, uidvalidity) = match mbox_part.to_ascii_lowercase().find(";uidvalidity=") {
        Some(p) => (&mbox_part[..p], Some(mbox_part[p + 13..].parse::<u32>().ok()?)),
        None => (mbox_part, None),
    };
    let mut r = UrlRef { mailbox: percent_decode(mailbox)?, uidvalidity, uid: 0, section: None, partial: None };
    for piece in rest.split("/;") {
        let piece = piece.trim_start_matches(';');
        let (k, v) = piece.split_once('=')?;
        match k.to_ascii_lowercase().as_str() {
            "uid" => r.uid = v.parse().ok().filter(|&u| u > 0)?,
            "section" => r.section = Some(parse_section(&percent_decode(v)?)?),
            "partial" => {
                r.partial = Some(match v.split_once('.') {
                    Some((a, b)) => (a.parse().ok()?, Some(b.parse().ok().filter(|&n| n > 0)?)),
                    None => (v.parse().ok()?, None),
                })
            }
            _ => return None,
        }
    }
    (r.uid > 0).then_some(r)
}

enum Refused {
    BadUrl(String),
    Nul,
    TooBig,
    Empty,
}

impl Session {
    /// The bytes a CATENATE URL names, from the user's own mailboxes.
    async fn url_bytes(&self, url: &str) -> Option<Vec<u8>> {
        let r = parse_url(url)?;
        let mb = self.store.mailbox(self.account_id(), &r.mailbox).await.ok()??;
        if r.uidvalidity.is_some_and(|v| v != mb.uidvalidity) {
            return None;
        }
        let meta = self.store.messages(mb.id, r.uid..=r.uid).await.ok()?.pop()?;
        let body = self.store.read_blob(&meta.blob).await.ok()?;
        let data = match &r.section {
            Some(s) => fetch::section_bytes(&body, &meta.summary.root, s),
            None => body,
        };
        Some(match r.partial {
            None => data,
            Some((start, len)) => {
                let s = start.min(data.len());
                let e = len.map_or(data.len(), |l| s.saturating_add(l).min(data.len()));
                data[s..e].to_vec()
            }
        })
    }

    /// The message an APPEND carries, assembled and checked.
    async fn message_bytes(&self, m: &mut AppendMessage) -> Result<Vec<u8>, Refused> {
        let limit = self.cfg.max_literal;
        let (data, binary) = match m.catenate.take() {
            None => (std::mem::take(&mut m.data), m.binary),
            Some(parts) => {
                let mut out = Vec::new();
                for p in parts {
                    match p {
                        CatPart::Text(t) => out.extend_from_slice(&t),
                        CatPart::Url(u) => match self.url_bytes(&u).await {
                            Some(b) => out.extend_from_slice(&b),
                            None => return Err(Refused::BadUrl(u)),
                        },
                    }
                    if out.len() > limit {
                        return Err(Refused::TooBig);
                    }
                }
                // Parts copied from stored messages never hold a NUL; text parts may
                // come as literal8.
                (out, true)
            }
        };
        if data.is_empty() {
            return Err(Refused::Empty);
        }
        if data.len() > limit {
            return Err(Refused::TooBig);
        }
        if data.contains(&0) {
            if !binary {
                return Err(Refused::Nul);
            }
            return Ok(binary::encode_binary_parts(&data));
        }
        Ok(data)
    }

    pub(crate) async fn append(
        &mut self,
        conn: &mut Conn,
        tag: &str,
        name: &str,
        messages: Vec<AppendMessage>,
    ) -> Flow {
        let mb = match self.open_mailbox(name).await {
            Ok(Some(o)) if o.rights.has('i') => o.mailbox,
            Ok(Some(_)) => {
                conn.queue(format!("{tag} NO [NOPERM] No right to insert into this mailbox\r\n").as_bytes());
                return Flow::Continue;
            }
            Ok(None) => {
                conn.queue(format!("{tag} NO [TRYCREATE] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!("imap: append: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Append failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        let mut deliveries = Vec::with_capacity(messages.len());
        for mut m in messages {
            let data = match self.message_bytes(&mut m).await {
                Ok(d) => d,
                Err(why) => {
                    let line = match why {
                        Refused::BadUrl(u) => format!("{tag} NO [BADURL {}] Cannot use this URL\r\n", printable(&u)),
                        Refused::Nul => format!("{tag} NO Message contains NUL; send it as literal8 (BINARY)\r\n"),
                        Refused::TooBig => format!("{tag} NO [TOOBIG] Message larger than APPENDLIMIT\r\n"),
                        Refused::Empty => format!("{tag} NO Empty message\r\n"),
                    };
                    conn.queue(line.as_bytes());
                    return Flow::Continue;
                }
            };
            let (flags, keywords) = parse_flags(&m.flags);
            let date = m.date.map(date_time_secs).unwrap_or_else(agora_store::now);
            let body = match self.store.stage(data).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("imap: append: {e}");
                    conn.queue(format!("{tag} NO [SERVERBUG] Append failed\r\n").as_bytes());
                    return Flow::Continue;
                }
            };
            deliveries.push(Delivery {
                body,
                internal_date: date,
                envelope: None,
                flags,
                keywords,
                targets: vec![DeliveryTarget { account: mb.account, mailbox: mb.name.clone() }],
                relay: Vec::new(),
                enforce_quota: true,
            });
        }
        let done = if deliveries.len() == 1 {
            self.store.deliver(deliveries.remove(0)).await.map(|d| vec![d])
        } else {
            self.store.deliver_all(deliveries).await
        };
        let uids: Vec<u32> = match done {
            Ok(d) => d.iter().filter_map(|x| x.first().map(|y| y.uid)).collect(),
            Err(StoreError::OverQuota(_)) => {
                conn.queue(format!("{tag} NO [OVERQUOTA] Quota exceeded\r\n").as_bytes());
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!("imap: append: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Append failed\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        if self.selected.as_ref().is_some_and(|s| s.mailbox.id == mb.id) {
            self.sync(conn, false).await;
        }
        conn.queue(
            format!("{tag} OK [APPENDUID {} {}] Append completed\r\n", mb.uidvalidity, uid_set(&uids)).as_bytes(),
        );
        Flow::Continue
    }
}

/// A client's URL echoed in a response code: printable ASCII only, no `]`, so it can
/// neither end the code early nor start a new response line.
fn printable(url: &str) -> String {
    url.chars().take(256).map(|c| if c.is_ascii_graphic() && c != ']' { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_8bit_bytes_are_refused_not_a_panic() {
        // Byte 7 inside a character: once sliced with url[..7], killing the session.
        assert!(parse_url("imap:/\u{e9}").is_none());
        assert!(parse_url("/INBOX\u{fffd}/;UID=1").is_none());
        assert!(parse_url("/INBOX/;UID=1").is_some());
        assert_eq!(printable("/a]b\r\n* BYE"), "/a?b??*?BYE");
    }
    use crate::command::SectionText;

    #[test]
    fn urls() {
        let r = parse_url("/INBOX;UIDVALIDITY=785799047/;UID=113330/;section=1.5.9").unwrap();
        assert_eq!((r.mailbox.as_str(), r.uidvalidity, r.uid), ("INBOX", Some(785799047), 113330));
        assert_eq!(r.section.unwrap().part, vec![1, 5, 9]);
        let r = parse_url("imap://joe@example.com/Sent%20Items/;uid=20/;section=header").unwrap();
        assert_eq!((r.mailbox.as_str(), r.uid), ("Sent Items", 20));
        assert_eq!(r.section.unwrap().text, Some(SectionText::Header));
        let r = parse_url("/box/;uid=2/;partial=100000.1").unwrap();
        assert_eq!(r.partial, Some((100000, Some(1))));
        assert!(parse_url("/box/;uid=0").is_none());
        assert!(parse_url("/box/;uid=1/;urlauth=anonymous:internal:abc").is_none());
        assert!(parse_url("box").is_none());
    }
}
