//! COMPRESS=DEFLATE (RFC 4978): raw DEFLATE both ways over a session's stream, with a
//! sync flush whenever the session flushes, so every answer reaches the client whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Io;

const CHUNK: usize = 16 * 1024;

pub struct Deflate {
    inner: Box<dyn Io>,
    inflate: Decompress,
    deflate: Compress,
    /// Compressed bytes received and not yet inflated.
    input: Vec<u8>,
    in_pos: usize,
    /// Compressed bytes waiting to be written.
    output: Vec<u8>,
    out_pos: usize,
    eof: bool,
    /// The last inflate filled the reader's whole buffer: the decompressor may hold
    /// more output, and must be asked before the socket is (a client that waits for
    /// an answer sends nothing more).
    held: bool,
}

impl Deflate {
    /// Wraps `inner`; `pending` is compressed input that was already read from it.
    pub fn new(inner: Box<dyn Io>, pending: Vec<u8>) -> Deflate {
        Deflate {
            inner,
            inflate: Decompress::new(false),
            deflate: Compress::new(Compression::default(), false),
            input: pending,
            in_pos: 0,
            output: Vec::new(),
            out_pos: 0,
            eof: false,
            held: false,
        }
    }

    fn compress(&mut self, mut data: &[u8], flush: FlushCompress) -> io::Result<()> {
        loop {
            if self.output.capacity() - self.output.len() < 1024 {
                self.output.reserve(CHUNK);
            }
            let before_in = self.deflate.total_in();
            let before_out = self.output.len();
            self.deflate.compress_vec(data, &mut self.output, flush).map_err(io::Error::other)?;
            let used = (self.deflate.total_in() - before_in) as usize;
            data = &data[used..];
            let produced = self.output.len() - before_out;
            // Done when all input is taken and (for a flush) the output did not fill up.
            if data.is_empty() && (matches!(flush, FlushCompress::None) || self.output.capacity() > self.output.len()) {
                return Ok(());
            }
            if used == 0 && produced == 0 && data.is_empty() {
                return Ok(());
            }
        }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.output.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.output[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.output.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl Io for Deflate {
    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.socket()
    }
}

impl AsyncRead for Deflate {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.in_pos < this.input.len() || this.held {
                let before_in = this.inflate.total_in();
                let before_out = this.inflate.total_out();
                let out = buf.initialize_unfilled();
                let room = out.len();
                let status = this
                    .inflate
                    .decompress(&this.input[this.in_pos..], out, FlushDecompress::Sync)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                this.in_pos += (this.inflate.total_in() - before_in) as usize;
                let produced = (this.inflate.total_out() - before_out) as usize;
                this.held = produced > 0 && produced == room;
                if this.in_pos == this.input.len() {
                    this.input.clear();
                    this.in_pos = 0;
                }
                if produced > 0 {
                    buf.advance(produced);
                    return Poll::Ready(Ok(()));
                }
                if status == Status::StreamEnd {
                    this.eof = true;
                }
                if this.in_pos < this.input.len() && status != Status::BufError {
                    continue;
                }
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.input.extend_from_slice(rb.filled());
        }
    }
}

impl AsyncWrite for Deflate {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        // Keep what is queued bounded: send it before taking more.
        if self.output.len() > 4 * CHUNK {
            ready!(self.poll_write_out(cx))?;
        }
        self.compress(data, FlushCompress::None)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out_pos == 0 {
            self.compress(&[], FlushCompress::Sync)?;
        }
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn round_trip_with_sync_flushes() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut x = Deflate::new(Box::new(a), Vec::new());
        let mut y = Deflate::new(Box::new(b), Vec::new());
        for i in 0..50 {
            let line = format!("* {i} FETCH (FLAGS (\\Seen)) {}\r\n", "x".repeat(i * 97));
            x.write_all(line.as_bytes()).await.unwrap();
            x.flush().await.unwrap();
            let mut got = vec![0u8; line.len()];
            y.read_exact(&mut got).await.unwrap();
            assert_eq!(got, line.as_bytes());
        }
        // A large answer in one go.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        x.write_all(&big).await.unwrap();
        x.flush().await.unwrap();
        let mut got = vec![0u8; big.len()];
        y.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
    }

    /// Output the decompressor still holds after filling a small read buffer comes out
    /// without waiting for more input from the peer (which sends nothing more).
    #[tokio::test]
    async fn small_reads_get_everything_already_received() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut x = Deflate::new(Box::new(a), Vec::new());
        let mut y = Deflate::new(Box::new(b), Vec::new());
        let text: Vec<u8> = (0..3000).flat_map(|i| format!("a APPEND line {i}\r\n").into_bytes()).collect();
        x.write_all(&text).await.unwrap();
        x.flush().await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 1024];
        while got.len() < text.len() {
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), y.read(&mut small))
                .await
                .expect("inflated bytes held back until the peer sends more")
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, text);
    }
}
