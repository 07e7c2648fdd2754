//! Content-addressed blob files: write to a temporary file, fsync, rename, fsync the
//! directory, so a body is durable before any index entry points at it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::summary::{BodyText, MessageSummary};

/// Bodies up to this size live inside the metadata database, so one WAL fsync covers
/// body and index together; larger ones are files.
pub const INLINE_MAX: usize = 128 * 1024;

/// A message body, hashed, parsed, and (if large) already durable on disk.
#[derive(Debug, Clone)]
pub struct StagedBlob {
    pub hash: String,
    pub size: u64,
    pub summary: MessageSummary,
    /// The body's decoded text for search, when the raw bytes are not already that text.
    pub text: Option<String>,
    /// Some for inline bodies; None when the body is already a durable file.
    pub inline: Option<Arc<Vec<u8>>>,
}

#[derive(Debug)]
pub struct BlobFiles {
    root: PathBuf,
}

/// Hashes and parses a body (and decodes its text for search), keeping it in memory
/// for the delivery's transaction to write.
pub fn stage_in_memory(data: Vec<u8>) -> StagedBlob {
    let hash = sha256_hex(&data);
    let mut summary = MessageSummary::parse(&data);
    let text = crate::text::search_text(&data, &summary.root);
    summary.body_text = if text.is_some() { BodyText::Kept } else { BodyText::Raw };
    StagedBlob { hash, size: data.len() as u64, summary, text, inline: Some(Arc::new(data)) }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// N octets from their 2N hexadecimal digits (either case); None for anything else.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hexadecimal, as blob names are spelled.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

impl BlobFiles {
    pub fn open(root: &Path) -> io::Result<BlobFiles> {
        fs::create_dir_all(root.join("tmp"))?;
        Ok(BlobFiles { root: root.to_path_buf() })
    }

    /// The blob files under `root`, creating nothing (for reading another store's).
    pub fn at(root: &Path) -> BlobFiles {
        BlobFiles { root: root.to_path_buf() }
    }

    fn path(&self, hash: &str) -> PathBuf {
        let shard = hash.get(..2).unwrap_or("00");
        self.root.join(shard).join(hash)
    }

    /// Where the body with this hash lives when it is a file.
    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.path(hash)
    }

    /// Writes a body's file durably (temporary file, fsync, rename, fsync of the
    /// directory); one already there is left as it is.
    pub fn put(&self, hash: &str, data: &[u8]) -> io::Result<()> {
        let dest = self.path(hash);
        if dest.exists() {
            // Its time renewed: a stray file a delivery now relies on is not old any more
            // (`agora store check --repair` removes only old ones).
            if let Ok(f) = File::options().write(true).open(&dest) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Ok(());
        }
        self.write_new(hash, data)
    }

    /// Writes a body's file durably even over one already there (a damaged copy).
    pub fn replace(&self, hash: &str, data: &[u8]) -> io::Result<()> {
        self.write_new(hash, data)
    }

    fn write_new(&self, hash: &str, data: &[u8]) -> io::Result<()> {
        let dest = self.path(hash);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(self.root.join("tmp"))?;
        let mut nonce = [0u8; 8];
        fill_random(&mut nonce);
        let tmp = self.root.join("tmp").join(format!("{hash}.{}", u64::from_le_bytes(nonce)));
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &dest)?;
        File::open(&dir)?.sync_all()?;
        metrics::counter!("agora_store_fsyncs_total").increment(2);
        Ok(())
    }

    /// Hashes and parses `data` (and decodes its text for search); large bodies are written durably before this returns.
    pub fn stage(&self, data: Vec<u8>) -> io::Result<StagedBlob> {
        if data.len() <= INLINE_MAX {
            return Ok(stage_in_memory(data));
        }
        let mut staged = stage_in_memory(data);
        if let Some(data) = staged.inline.take() {
            self.put(&staged.hash, &data)?;
        }
        Ok(staged)
    }

    pub fn read(&self, hash: &str) -> io::Result<Vec<u8>> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad blob address"));
        }
        fs::read(self.path(hash))
    }

    pub fn remove(&self, hash: &str) -> io::Result<()> {
        match fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Unpredictable bytes from the OS; temp-file names only need uniqueness, so a
/// failure falls back to time and pid.
fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> (i * 8)) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_back() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(unhex::<3>("00AB7f"), Some([0x00, 0xab, 0x7f]));
        assert_eq!(unhex::<3>("00ab7"), None);
        assert_eq!(unhex::<2>("zz00"), None);
    }

    #[test]
    fn large_blob_roundtrip_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let files = BlobFiles::open(dir.path()).unwrap();
        let data = vec![b'x'; INLINE_MAX + 10];
        let a = files.stage(data.clone()).unwrap();
        let b = files.stage(data.clone()).unwrap();
        assert!(a.inline.is_none());
        assert_eq!(a.hash, b.hash);
        assert_eq!(files.read(&a.hash).unwrap(), data);
        assert!(files.read("../etc/passwd").is_err());
    }
}
