//! In-memory connections for the session tests of every protocol: a `Conn` for the
//! session under test and the `TestClient` at the other end of the pipe.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use crate::{Conn, Timeouts};

/// A session's connection (plain text, from 127.0.0.1 to `port`, default timeouts,
/// stopped by `shutdown`) and the client talking to it.
pub fn pipe(port: u16, shutdown: CancellationToken) -> (Conn, TestClient) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conn = Conn::new(Box::new(a), addr, addr, false, None, Timeouts::default(), shutdown);
    let (r, w) = tokio::io::split(b);
    (conn, TestClient { r: BufReader::new(r), w })
}

/// The client end: writes text, reads lines (each within ten seconds, or the test fails).
pub struct TestClient {
    r: BufReader<ReadHalf<DuplexStream>>,
    w: WriteHalf<DuplexStream>,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestClient")
    }
}

#[allow(clippy::unwrap_used, clippy::expect_used)]
impl TestClient {
    /// The next line, line end included; empty once the server closed.
    pub async fn line(&mut self) -> String {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut s))
            .await
            .expect("a line from the server within 10 s")
            .unwrap();
        s
    }

    /// Exactly `n` bytes (for binary protocols); within ten seconds, or the test fails.
    pub async fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(10), self.r.read_exact(&mut buf))
            .await
            .expect("bytes from the server within 10 s")
            .unwrap();
        buf
    }

    /// True once the server closed its end (nothing more to read).
    pub async fn at_eof(&mut self) -> bool {
        let buf =
            tokio::time::timeout(Duration::from_secs(10), self.r.fill_buf()).await.expect("eof or data within 10 s");
        buf.map(|b| b.is_empty()).unwrap_or(true)
    }

    pub async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    /// Writes and flushes, so a test can feed a session byte by byte.
    pub async fn send_bytes(&mut self, data: &[u8]) {
        self.w.write_all(data).await.unwrap();
        self.w.flush().await.unwrap();
    }

    /// Lines up to and including the first for which `last` holds (or the end).
    pub async fn until(&mut self, last: impl Fn(&str) -> bool) -> String {
        let mut all = String::new();
        loop {
            let l = self.line().await;
            let done = l.is_empty() || last(&l);
            all.push_str(&l);
            if done {
                return all;
            }
        }
    }
}
