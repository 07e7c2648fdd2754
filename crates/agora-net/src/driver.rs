//! The one session loop every line-based protocol runs: read a line, hand it to the
//! protocol, hold replies while the client pipelines, and say the protocol's own
//! goodbye on idle timeout or server shutdown.

use async_trait::async_trait;

use crate::{Conn, Read};

/// Replies held for a pipelining client are sent once they reach this size.
const FLUSH_AT: usize = 256 * 1024;

/// How a protocol wants its session to go on after handling input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Flush what is queued, close politely, end the session.
    Close,
}

/// The hooks of a line-based protocol (SMTP, POP3, IMAP, NNTP …).
#[async_trait]
pub trait LineProtocol: Send {
    /// The protocol's name in metrics (`smtp`, `imap` …).
    fn name(&self) -> &'static str;
    /// Whether a command whose answer ended with `last_line` failed (`-ERR`, a 5xx).
    fn failed(&self, last_line: &[u8]) -> bool;
    /// Longest command line accepted, line ending included.
    fn max_line(&self) -> usize;
    /// The first thing the server says; may depend on the connection (TLS already on?).
    fn greeting(&self, conn: &Conn) -> Vec<u8>;
    /// Handles one complete line (with its line ending); may read more from `conn`
    /// (message data, literals, SASL responses) and queue replies.
    async fn line(&mut self, conn: &mut Conn, line: &[u8]) -> Flow;
    /// A line longer than `max_line` was received and discarded.
    fn too_long(&mut self, conn: &mut Conn) -> Flow;
    fn timeout_reply(&self) -> Vec<u8>;
    fn shutdown_reply(&self) -> Vec<u8>;
    /// Said to a session closed before login to make room under a flood.
    fn busy_goodbye(&self) -> Vec<u8> {
        self.shutdown_reply()
    }
    /// Whether the protocol may have something to say between commands, unasked (IMAP
    /// NOTIFY); only then does the loop wait for `unasked` too.
    fn listening(&self) -> bool {
        false
    }
    /// Resolves when there is something to tell the client unasked. Must be
    /// cancellation-safe: the loop drops it when a command arrives first.
    async fn unasked(&mut self) {
        std::future::pending::<()>().await
    }
    /// Queues what `unasked` found.
    async fn tell(&mut self, conn: &mut Conn) -> Flow {
        let _ = conn;
        Flow::Continue
    }
}

/// Runs a session to its end. An `async` block rather than an `async fn`: the latter
/// keeps its arguments twice (as given and as moved in), and a session's future lives
/// as long as the session.
#[allow(clippy::manual_async_fn)]
pub fn drive(mut protocol: impl LineProtocol, mut conn: Conn) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let commands = metrics::counter!("agora_commands_total", "protocol" => protocol.name());
        let errors = metrics::counter!("agora_command_errors_total", "protocol" => protocol.name());
        let greeting = protocol.greeting(&conn);
        if conn.send(&greeting).await.is_err() {
            return;
        }
        loop {
            // A command already received goes first (nothing unasked is said while one is
            // in progress, RFC 9051 §7.4.1); read_line keeps partial input, so losing the
            // race loses nothing.
            let read = if protocol.listening() && !conn.has_buffered_line() {
                tokio::select! {
                    biased;
                    r = conn.read_line(protocol.max_line()) => Some(r),
                    () = protocol.unasked() => None,
                }
            } else {
                Some(conn.read_line(protocol.max_line()).await)
            };
            let Some(read) = read else {
                if protocol.tell(&mut conn).await == Flow::Close || conn.flush().await.is_err() {
                    conn.close().await;
                    return;
                }
                continue;
            };
            let flow = match read {
                Read::Line(line) => {
                    commands.increment(1);
                    let flow = protocol.line(&mut conn, &line).await;
                    if protocol.failed(conn.last_line()) {
                        errors.increment(1);
                    }
                    flow
                }
                Read::TooLong => {
                    commands.increment(1);
                    errors.increment(1);
                    protocol.too_long(&mut conn)
                }
                Read::Timeout => {
                    conn.queue(&protocol.timeout_reply());
                    Flow::Close
                }
                Read::Shutdown => {
                    let bye = if conn.evicted() { protocol.busy_goodbye() } else { protocol.shutdown_reply() };
                    conn.queue(&bye);
                    Flow::Close
                }
                Read::Eof | Read::Bytes(_) => Flow::Close,
            };
            if flow == Flow::Close {
                conn.close().await;
                return;
            }
            // PIPELINING: hold replies while the client has more commands queued, but
            // never more than FLUSH_AT bytes of them (pipelined ARTICLEs would pile up).
            if (!conn.has_buffered_line() || conn.queued() >= FLUSH_AT) && conn.flush().await.is_err() {
                return;
            }
        }
    }
}
