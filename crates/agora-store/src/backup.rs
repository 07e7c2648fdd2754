//! A consistent copy of a live store: the database as one snapshot (`VACUUM INTO`, which
//! readers and the writer go on beside) and the body files it points at, copied or
//! hard-linked (body files never change once written, so a link is a copy).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::blob::BlobFiles;
use crate::check::Counts;
use crate::{Result, StoreError};

/// What a copy holds.
#[derive(Debug, Clone, Default)]
pub struct Copied {
    pub counts: Counts,
    pub schema: u32,
    /// Body files copied or linked, and their bytes.
    pub files: u64,
    pub file_bytes: u64,
}

/// Copies the store in `data` into the new directory `dest` (`agora.db`, `blobs/`).
/// `link`: hard-link body files where the file system allows (else copied).
/// `progress(done, total)` follows the body files.
pub fn copy_store(data: &Path, dest: &Path, link: bool, progress: &dyn Fn(u64, u64)) -> Result<Copied> {
    let src_db = data.join("agora.db");
    if !src_db.exists() {
        return Err(StoreError::NotFound(format!("store {}", src_db.display())));
    }
    let (from, to) = (BlobFiles::at(&data.join("blobs")), BlobFiles::at(&dest.join("blobs")));
    std::fs::create_dir_all(dest.join("blobs"))?;
    // Files first: every body already there is in the copy before the snapshot is taken,
    // so the snapshot can only miss one written (and deleted again) while it ran.
    let present = list_files(&data.join("blobs"));
    let total = present.len() as u64;
    let mut copied = HashSet::new();
    for (i, hash) in present.iter().enumerate() {
        if i % 64 == 0 {
            progress(i as u64, total);
        }
        // Gone since the listing: expunged, so no snapshot from now on points at it.
        if place(&from.path_of(hash), &to.path_of(hash), link)?.is_some() {
            copied.insert(hash.clone());
        }
    }
    progress(total, total);
    let dest_db = dest.join("agora.db");
    let _ = std::fs::remove_file(&dest_db);
    // Read-only where it can be (a backup on read-only media); a live store in WAL mode
    // without its shared-memory file needs a writable open.
    let conn = Connection::open_with_flags(&src_db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM meta", [], |_| Ok(())).map(|()| c))
        .or_else(|_| Connection::open_with_flags(&src_db, OpenFlags::SQLITE_OPEN_READ_WRITE))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [dest_db.to_string_lossy()])?;
    drop(conn);
    std::fs::File::open(&dest_db)?.sync_all()?;

    let snap = Connection::open_with_flags(&dest_db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let wanted: HashSet<String> = snap
        .prepare("SELECT hash FROM blobs WHERE data IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Copied { schema: schema(&snap)?, ..Copied::default() };
    for hash in &wanted {
        if !copied.contains(hash) && place(&from.path_of(hash), &to.path_of(hash), link)?.is_none() {
            return Err(StoreError::Invalid(format!("body {hash} was removed while the copy was made; run it again")));
        }
        out.files += 1;
        out.file_bytes += std::fs::metadata(to.path_of(hash)).map(|m| m.len()).unwrap_or(0);
    }
    // Files the snapshot does not point at (expunged before it was taken) stay out.
    for hash in copied.difference(&wanted) {
        let _ = std::fs::remove_file(to.path_of(hash));
    }
    out.counts = counts(&snap)?;
    sync_tree(&dest.join("blobs"))?;
    std::fs::File::open(dest)?.sync_all()?;
    Ok(out)
}

/// The schema version a store file says it has.
pub fn schema(c: &Connection) -> Result<u32> {
    c.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get::<_, String>(0))?
        .parse()
        .map_err(|_| StoreError::Corrupt("schema version is not a number".into()))
}

/// The counts of a store file (read-only).
pub fn counts_of(db: &Path) -> Result<Counts> {
    counts(&Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?)
}

pub(crate) fn counts(c: &Connection) -> Result<Counts> {
    let n = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|v| v.max(0) as u64);
    Ok(Counts {
        domains: n("SELECT count(*) FROM domains")?,
        accounts: n("SELECT count(*) FROM accounts")?,
        mailboxes: n("SELECT count(*) FROM mailboxes")?,
        messages: n("SELECT count(*) FROM messages")?,
        bodies: n("SELECT count(*) FROM blobs")?,
        body_bytes: n("SELECT coalesce(sum(size), 0) FROM blobs")?,
        queued: n("SELECT count(*) FROM outbound")?,
    })
}

/// Every body file's name under a `blobs/` directory (not the temporary ones).
pub fn list_files(blobs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(blobs) else { return out };
    for shard in shards.flatten() {
        if shard.file_name() == "tmp" {
            continue;
        }
        let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
        out.extend(files.flatten().map(|f| f.file_name().to_string_lossy().into_owned()));
    }
    out.sort();
    out
}

/// Links or copies one body file; None when the source is gone.
fn place(src: &Path, dst: &Path, link: bool) -> Result<Option<()>> {
    if dst.exists() {
        return Ok(Some(()));
    }
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if link && std::fs::hard_link(src, dst).is_ok() {
        return Ok(Some(()));
    }
    let tmp = tmp_name(dst);
    match std::fs::copy(src, &tmp) {
        Ok(_) => {
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, dst)?;
            Ok(Some(()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(&tmp);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn tmp_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// fsyncs a directory and the directories in it (the files were synced when written).
fn sync_tree(dir: &Path) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::File::open(e.path())?.sync_all()?;
            }
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
