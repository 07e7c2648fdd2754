//! The one SASL challenger of the line protocols: a challenge goes out as
//! `PREFIX base64` on one line (SMTP's `334 `, IMAP's and POP3's `+ `), the answer comes
//! back as one base64 line, or `*` to cancel.

use agora_directory::sasl::{self, Challenger};
use agora_net::{Conn, Read};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

pub struct LineChallenger<'a> {
    conn: &'a mut Conn,
    prefix: &'static str,
    max_line: usize,
}

impl<'a> LineChallenger<'a> {
    /// `max_line`: the longest answer line taken, its line end included.
    pub fn new(conn: &'a mut Conn, prefix: &'static str, max_line: usize) -> LineChallenger<'a> {
        LineChallenger { conn, prefix, max_line }
    }
}

#[async_trait::async_trait]
impl Challenger for LineChallenger<'_> {
    fn via_front_end(&self) -> bool {
        self.conn.via_front_end()
    }

    async fn challenge(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
        let line = format!("{}{}\r\n", self.prefix, B64.encode(data));
        if self.conn.send(line.as_bytes()).await.is_err() {
            return Err("connection lost");
        }
        let answer = match self.conn.read_line(self.max_line).await {
            Read::Line(l) => l,
            Read::TooLong => return Err("Response too long"),
            _ => return Err("connection lost"),
        };
        let text = String::from_utf8_lossy(&answer);
        if text.trim() == "*" {
            return Ok(None);
        }
        sasl::decode_line(&text).map(Some).ok_or("Invalid base64")
    }
}
