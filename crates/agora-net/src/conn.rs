//! One client connection as every protocol session sees it: buffered line and byte
//! reads with limits and timeouts, buffered writes, STARTTLS upgrade, shutdown signal.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Any byte stream a session can run on: TCP, TLS over TCP, or an in-memory pipe in tests.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, for socket options; None for streams in memory.
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
impl Io for tokio::net::TcpStream {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}
impl<T: Io> Io for tokio_rustls::server::TlsStream<T> {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.get_ref().0.socket()
    }
}
impl<T: Io> Io for tokio_rustls::client::TlsStream<T> {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.get_ref().0.socket()
    }
}
impl Io for Box<dyn Io> {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        (**self).socket()
    }
}
impl Io for tokio::io::DuplexStream {}
impl Io for empty::EmptyDuplex {}

/// What a read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A line, including its terminating LF (and CR, if sent).
    Line(Vec<u8>),
    /// The line exceeded the limit; the rest of it up to its LF was discarded.
    TooLong,
    /// Bytes, for exact-length reads.
    Bytes(Vec<u8>),
    Eof,
    Timeout,
    /// The server is shutting down: say goodbye and return.
    Shutdown,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Idle limit before the client has authenticated (or for protocols with no login).
    pub preauth: Duration,
    /// Idle limit once authenticated.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { preauth: Duration::from_secs(60), idle: Duration::from_secs(300) }
    }
}

pub struct Conn {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    rpos: usize,
    /// Whether the last read brought more than a short command's worth.
    bulk: bool,
    wbuf: Vec<u8>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    tls: bool,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    authenticated: bool,
    /// This session's place in its listener's share for sessions not logged in; given
    /// back at login, so logged-in users never count against a flood that does not.
    preauth_place: Option<crate::PreauthPlace>,
    /// The server's own shutdown (the session's token is its child, also cancelled to
    /// close this one session under stress).
    server: Option<CancellationToken>,
    timeouts: Timeouts,
    /// Replaces the session's read timeout while set (a command that waits, like IDLE).
    wait: Option<Duration>,
    shutdown: CancellationToken,
    /// Whether a pending read should stop for shutdown (false while a message is in transfer).
    interruptible: bool,
    compressed: bool,
    /// The client's certificate (DER), when it presented one the TLS handshake checked.
    peer_cert: Option<Vec<u8>>,
    /// The TLS session's tls-exporter channel binding (TLS 1.3 only).
    channel_binding: Option<[u8; 32]>,
    /// Arrived from a registered front-end.
    front_end: bool,
    /// The application protocol the TLS handshake settled on (ALPN).
    alpn: Option<Vec<u8>>,
    metrics: Option<Arc<crate::metrics::ListenerMetrics>>,
}

/// A connection's byte stream for a protocol engine of its own (HTTP): what the
/// `Conn` had read ahead comes first. Closing is done in stages (RFC 9112 §9.6): the
/// write side first, then what the client still sends is read and dropped until it
/// closes or `LINGER` passes, so an answer sent just before the close (a 431, say) is
/// not lost to a reset caused by unread input.
pub struct Stream {
    io: Prefixed<Box<dyn Io>>,
    linger: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The session's place before login goes along (an engine of its own, like HTTP,
    /// has no login of the connection): the session stays one that can be closed for room.
    _place: Option<crate::PreauthPlace>,
}

/// How long a closing stream waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);

impl AsyncRead for Stream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if self.linger.is_none() {
            match std::pin::Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Ready(_) => self.linger = Some(Box::pin(tokio::time::sleep(LINGER))),
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut scratch = [0u8; 4096];
        loop {
            if let Some(l) = self.linger.as_mut()
                && l.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match std::pin::Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // The client closed (or the connection failed): done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.peer).field("tls", &self.tls).finish()
    }
}

const READ_CHUNK: usize = 16 * 1024;
/// The read buffer of a session talking in short commands.
const READ_SMALL: usize = 1024;

impl Conn {
    pub fn new(
        io: Box<dyn Io>,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        tls_config: Option<Arc<rustls::ServerConfig>>,
        timeouts: Timeouts,
        shutdown: CancellationToken,
    ) -> Conn {
        Conn {
            io,
            rbuf: Vec::new(),
            rpos: 0,
            bulk: false,
            wbuf: Vec::with_capacity(1024),
            peer,
            local,
            tls,
            tls_config,
            authenticated: false,
            preauth_place: None,
            server: None,
            wait: None,
            timeouts,
            shutdown,
            interruptible: true,
            compressed: false,
            peer_cert: None,
            channel_binding: None,
            front_end: false,
            alpn: None,
            metrics: None,
        }
    }

    pub fn set_alpn(&mut self, alpn: Option<Vec<u8>>) {
        self.alpn = alpn;
    }

    /// The application protocol the TLS handshake settled on (ALPN).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// Cancelled when the server shuts down (for engines that run their own loop).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The session's timeouts (before and after authentication).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Hands the byte stream over, with whatever was read ahead and not consumed.
    pub fn into_stream(self) -> Stream {
        Stream { io: Prefixed::new(self.rbuf[self.rpos..].to_vec(), self.io), linger: None, _place: self.preauth_place }
    }

    /// This connection came from one of this cluster's front-ends (its TCP peer is a
    /// registered front-end, which named the client in a PROXY header): only such a
    /// connection may log in as the front-end acting for a user.
    pub fn via_front_end(&self) -> bool {
        self.front_end
    }

    pub fn set_from_front_end(&mut self, on: bool) {
        self.front_end = on;
    }

    /// The client certificate of this TLS connection, if one was presented and verified.
    /// The TLS session's tls-exporter channel binding (RFC 9266), for proofs that
    /// must hold for this session only; None without TLS 1.3.
    pub fn channel_binding(&self) -> Option<&[u8; 32]> {
        self.channel_binding.as_ref()
    }

    pub fn set_channel_binding(&mut self, cb: Option<[u8; 32]>) {
        self.channel_binding = cb;
    }

    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_cert.as_deref()
    }

    /// Records the certificate the implicit-TLS handshake verified.
    pub fn set_peer_certificate(&mut self, der: Option<Vec<u8>>) {
        self.peer_cert = der;
    }

    /// Bytes already received but not yet consumed (left over from a PROXY header read).
    pub fn prepend_input(&mut self, bytes: &[u8]) {
        self.rbuf.splice(self.rpos..self.rpos, bytes.iter().copied());
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// True if STARTTLS can be offered: a certificate is configured and TLS is not yet on.
    pub fn can_starttls(&self) -> bool {
        !self.tls && self.tls_config.is_some()
    }

    pub fn set_authenticated(&mut self) {
        self.authenticated = true;
        self.preauth_place = None;
    }

    /// Gives the place before login back without a login (SMTP once a transaction is
    /// under way): the session is no longer one a flood's newcomers may close.
    pub fn leave_preauth_share(&mut self) {
        self.preauth_place = None;
    }

    /// Holds a place in the listener's share for sessions not logged in until login.
    pub(crate) fn set_preauth_place(&mut self, place: crate::PreauthPlace) {
        self.preauth_place = Some(place);
    }

    pub(crate) fn set_server_token(&mut self, server: CancellationToken) {
        self.server = Some(server);
    }

    /// Closed to make room under a flood, not because the server stops: the goodbye
    /// says "busy", not "shutting down".
    pub fn evicted(&self) -> bool {
        self.shutdown.is_cancelled() && self.server.as_ref().is_some_and(|s| !s.is_cancelled())
    }

    pub fn set_interruptible(&mut self, on: bool) {
        self.interruptible = on;
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// True when a complete line is already buffered, i.e. the client pipelined.
    pub fn has_buffered_line(&self) -> bool {
        self.rbuf[self.rpos..].contains(&b'\n')
    }

    fn timeout(&self) -> Duration {
        match self.wait {
            Some(w) => w,
            None if self.authenticated => self.timeouts.idle,
            // Under a flood the listener's stress mode shortens the wait before login.
            None => match &self.preauth_place {
                Some(p) if p.stressed() => self.timeouts.preauth.min(crate::STRESS_PREAUTH),
                _ => self.timeouts.preauth,
            },
        }
    }

    /// While `Some`, reads wait this long for the client instead of the session's
    /// timeout (IMAP IDLE may outlast it); `None` returns to the session's.
    pub fn set_wait(&mut self, wait: Option<Duration>) {
        self.wait = wait;
    }

    /// Reads more input. Cancellation-safe: `read_buf` either appended bytes or did
    /// not, so a shutdown or timeout in `select!` loses nothing.
    async fn fill(&mut self) -> Result<usize, Read> {
        if self.rpos > 0 && self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > READ_CHUNK {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        // A client sending short commands (or idling) gets a small buffer, so a held
        // session costs little; a read that fills it means a transfer, and the next
        // read gets a full chunk.
        if !self.bulk && self.rbuf.is_empty() && self.rbuf.capacity() > 2 * READ_SMALL {
            self.rbuf = Vec::new();
        }
        let chunk = if self.bulk { READ_CHUNK } else { READ_SMALL };
        // Read straight into the buffer's spare capacity: no zeroing, no copy.
        self.rbuf.reserve(chunk);
        let timeout = self.timeout();
        // A wait before login that began before its listener came under stress is cut
        // short when the stress begins, not only at the next read.
        let stress = match (&self.preauth_place, self.wait, self.authenticated) {
            (Some(p), None, false) if !p.stressed() => Some(p.stress_begins()),
            _ => None,
        };
        let io = &mut self.io;
        let rbuf = &mut self.rbuf;
        let read = async {
            let started = tokio::time::Instant::now();
            let sleep = tokio::time::sleep_until(started + timeout);
            tokio::pin!(sleep);
            let mut stress = stress;
            loop {
                let begins = async {
                    match &stress {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = io.read_buf(rbuf) => return match r {
                        Ok(0) | Err(_) => Err(Read::Eof),
                        Ok(n) => Ok(n),
                    },
                    _ = &mut sleep => return Err(Read::Timeout),
                    _ = begins => {
                        let cut = (started + timeout.min(crate::STRESS_PREAUTH)).min(sleep.deadline());
                        sleep.as_mut().reset(cut);
                        stress = None;
                    }
                }
            }
        };
        let got = if self.interruptible {
            let token = self.shutdown.clone();
            tokio::select! {
                r = read => r,
                _ = token.cancelled() => Err(Read::Shutdown),
            }
        } else {
            read.await
        };
        if let Ok(n) = got {
            self.bulk = n >= READ_SMALL / 2;
        }
        got
    }

    /// Waits until input is buffered, without taking any (cancellation-safe: for a
    /// session that waits on the client and on something else at once).
    pub async fn wait_input(&mut self) -> Result<(), Read> {
        while self.rpos >= self.rbuf.len() {
            self.fill().await?;
        }
        Ok(())
    }

    /// Reads one line of at most `max` bytes including its line ending.
    pub async fn read_line(&mut self, max: usize) -> Read {
        if self.interruptible && self.shutdown.is_cancelled() {
            return Read::Shutdown;
        }
        let mut scanned = 0;
        loop {
            let avail = &self.rbuf[self.rpos..];
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = self.rpos + scanned + i + 1;
                if end - self.rpos > max {
                    self.rpos = end;
                    return Read::TooLong;
                }
                let line = self.rbuf[self.rpos..end].to_vec();
                self.rpos = end;
                return Read::Line(line);
            }
            scanned = avail.len();
            if scanned > max {
                // Discard the overlong line through its end, without buffering it.
                self.rpos = self.rbuf.len();
                loop {
                    if let Err(e) = self.fill().await {
                        return e;
                    }
                    if let Some(i) = self.rbuf[self.rpos..].iter().position(|&b| b == b'\n') {
                        self.rpos += i + 1;
                        return Read::TooLong;
                    }
                    self.rpos = self.rbuf.len();
                }
            }
            if let Err(e) = self.fill().await {
                return e;
            }
        }
    }

    /// Reads exactly `n` bytes (for BDAT chunks and literals).
    pub async fn read_exact(&mut self, n: usize) -> Read {
        if self.rbuf.len() - self.rpos < n {
            self.ack_promptly();
        }
        while self.rbuf.len() - self.rpos < n {
            if let Err(e) = self.fill().await {
                return e;
            }
        }
        let out = self.rbuf[self.rpos..self.rpos + n].to_vec();
        self.rpos += n;
        Read::Bytes(out)
    }

    /// Appends exactly `n` more bytes to `out` (for length-prefixed frames); on failure
    /// says why, as `read_line` would.
    pub async fn read_more(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), Read> {
        while self.rbuf.len() - self.rpos < n {
            self.fill().await?;
        }
        out.extend_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.rpos += n;
        Ok(())
    }

    /// Reads and drops `n` bytes (a chunk the server refuses but must consume).
    pub async fn skip(&mut self, mut n: usize) -> Read {
        loop {
            let avail = self.rbuf.len() - self.rpos;
            let take = avail.min(n);
            self.rpos += take;
            n -= take;
            if n == 0 {
                return Read::Bytes(Vec::new());
            }
            if let Err(e) = self.fill().await {
                return e;
            }
        }
    }

    /// Queues bytes; they go out at the next `flush`.
    pub fn queue(&mut self, data: &[u8]) {
        self.wbuf.extend_from_slice(data);
    }

    /// The last complete line queued and not yet flushed (without its line ending; at
    /// most its last 512 bytes), or empty: how the session loop tells whether a
    /// command's final answer was an error.
    pub fn last_line(&self) -> &[u8] {
        let Some(body) = self.wbuf.strip_suffix(b"\n") else { return &[] };
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let window = &body[body.len().saturating_sub(512)..];
        match window.iter().rposition(|&b| b == b'\n') {
            Some(p) => &window[p + 1..],
            None => window,
        }
    }

    /// Counts this connection's STARTTLS handshakes under its listener.
    pub fn set_metrics(&mut self, m: Arc<crate::metrics::ListenerMetrics>) {
        self.metrics = Some(m);
    }

    /// Bytes queued and not yet flushed (long answers flush as they go).
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            let timeout = self.timeouts.idle;
            let res = tokio::time::timeout(timeout, async {
                self.io.write_all(&self.wbuf).await?;
                self.io.flush().await
            })
            .await;
            self.wbuf.clear();
            // An idle session should not keep the buffer of its largest answer.
            if self.wbuf.capacity() > 64 * 1024 {
                self.wbuf.shrink_to(4096);
            }
            match res {
                Ok(r) => r?,
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")),
            }
        }
        Ok(())
    }

    /// Queues and flushes.
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.queue(data);
        self.flush().await
    }

    /// Upgrades to TLS. Anything the client sent after the STARTTLS command and before
    /// the handshake is discarded, so no plaintext command can ride into the TLS session.
    pub async fn start_tls(&mut self) -> std::io::Result<()> {
        let cfg = self.tls_config.clone().ok_or_else(|| std::io::Error::other("TLS is not configured"))?;
        self.flush().await?;
        self.rbuf.clear();
        self.rpos = 0;
        let placeholder: Box<dyn Io> = Box::new(empty::EmptyDuplex);
        let plain = std::mem::replace(&mut self.io, placeholder);
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let token = self.shutdown.clone();
        let tls = tokio::select! {
            r = tokio::time::timeout(self.timeouts.preauth.min(crate::HANDSHAKE), acceptor.accept(plain)) => r
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))
                .and_then(|r| r),
            // Closed for room (or shutdown) while in the handshake.
            _ = token.cancelled() => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed")),
        };
        if let Some(m) = &self.metrics {
            m.handshake(tls.is_ok());
        }
        let tls = tls?;
        self.peer_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
        self.channel_binding = crate::tls::channel_binding(tls.get_ref().1);
        self.io = Box::new(tls);
        self.tls = true;
        Ok(())
    }

    /// Turns on COMPRESS=DEFLATE after the plain answer went out: everything read and
    /// written from here on is raw DEFLATE.
    pub async fn start_deflate(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        let pending = self.rbuf[self.rpos..].to_vec();
        self.rbuf.clear();
        self.rpos = 0;
        let placeholder: Box<dyn Io> = Box::new(empty::EmptyDuplex);
        let plain = std::mem::replace(&mut self.io, placeholder);
        self.io = Box::new(crate::deflate::Deflate::new(plain, pending));
        self.compressed = true;
        Ok(())
    }

    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// The client sends data next, and its last small write may wait (Nagle) for this
    /// side to acknowledge the one before (a literal, then its CRLF): acknowledge at
    /// once rather than after the delayed-ACK timer (TCP_QUICKACK), or each such
    /// command costs 40 ms.
    pub fn ack_promptly(&self) {
        if let Some(fd) = self.io.socket() {
            let _ = socket2::SockRef::from(&fd).set_tcp_quickack(true);
        }
    }

    /// Closes the write side politely.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
    }
}

/// A stream that is always at EOF and swallows writes; stands in while the real stream
/// is moved into the TLS acceptor.
mod empty {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    pub struct EmptyDuplex;
    impl AsyncRead for EmptyDuplex {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    impl AsyncWrite for EmptyDuplex {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

/// A byte stream whose first bytes were read already (with a PROXY header, or ahead by
/// a `Conn`): they are read again first, so that nothing that came early is lost.
pub(crate) struct Prefixed<T> {
    pre: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(pre: Vec<u8>, inner: T) -> Prefixed<T> {
        Prefixed { pre, pos: 0, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = buf.remaining().min(self.pre.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.pre[start..start + n]);
            self.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: Io> Io for Prefixed<T> {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.inner.socket()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Conn, tokio::io::DuplexStream, CancellationToken) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let token = CancellationToken::new();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = Timeouts { preauth: Duration::from_millis(300), idle: Duration::from_secs(5) };
        (Conn::new(Box::new(a), addr, addr, false, None, t, token.clone()), b, token)
    }

    #[tokio::test]
    async fn lines_limits_and_exact_reads() {
        let (mut c, mut peer, _t) = pair();
        peer.write_all(b"HELO a\r\nxxxxxxxxxxxxxxxxxxxx\r\nBDAT").await.unwrap();
        peer.write_all(b"12345rest\n").await.unwrap();
        assert_eq!(c.read_line(100).await, Read::Line(b"HELO a\r\n".to_vec()));
        assert_eq!(c.read_line(10).await, Read::TooLong);
        assert_eq!(c.read_exact(4).await, Read::Bytes(b"BDAT".to_vec()));
        assert_eq!(c.skip(5).await, Read::Bytes(Vec::new()));
        assert_eq!(c.read_line(100).await, Read::Line(b"rest\n".to_vec()));
        drop(peer);
        assert_eq!(c.read_line(100).await, Read::Eof);
    }

    #[tokio::test]
    async fn overlong_line_split_across_reads() {
        let (mut c, mut peer, _t) = pair();
        let w = tokio::spawn(async move {
            for _ in 0..10 {
                peer.write_all(&[b'a'; 1000]).await.unwrap();
            }
            peer.write_all(b"\r\nNOOP\r\n").await.unwrap();
            peer
        });
        assert_eq!(c.read_line(512).await, Read::TooLong);
        assert_eq!(c.read_line(512).await, Read::Line(b"NOOP\r\n".to_vec()));
        drop(w.await.unwrap());
    }

    #[tokio::test]
    async fn timeout_and_shutdown() {
        let (mut c, _peer, token) = pair();
        assert_eq!(c.read_line(100).await, Read::Timeout);
        token.cancel();
        assert_eq!(c.read_line(100).await, Read::Shutdown);
    }
}
