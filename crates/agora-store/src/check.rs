//! `agora store check`: verifies the store's invariants (SQLite's own checks, body
//! reference counts and hashes, UIDs below UIDNEXT, MODSEQ order, message, unseen and
//! quota counts) and, asked to, repairs what can be repaired without losing mail.
//!
//! It reads through its own connection, so it runs beside a live server: the survey is
//! one read snapshot, and every repair is re-counted and applied in one write
//! transaction, which the server's writer simply waits for.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::blob::BlobFiles;
use crate::{Result, StoreError};

/// Files under `blobs/` younger than this may belong to a delivery still committing.
const GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fix what can be fixed without losing mail.
    pub repair: bool,
    /// Read every body and compare it with its hash (slower; off: sizes only).
    pub hashes: bool,
    /// A backup's (or an older copy's) data directory to take missing or damaged bodies from.
    pub from: Option<PathBuf>,
    /// Expunge messages whose bodies are gone and cannot be found (`from`): the mail is
    /// already lost; this makes the mailboxes consistent again.
    pub drop_lost: bool,
}

/// What the store holds, counted during the check.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub domains: u64,
    pub accounts: u64,
    pub mailboxes: u64,
    pub messages: u64,
    pub bodies: u64,
    pub body_bytes: u64,
    pub queued: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The problem, in one line.
    pub problem: String,
    /// What the repair did; None: not repaired (then `fix` says how).
    pub repaired: Option<String>,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub counts: Counts,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Problems left after this run.
    pub fn unrepaired(&self) -> usize {
        self.findings.iter().filter(|f| f.repaired.is_none()).count()
    }
}

/// A body that a message or queue entry points at, but that is missing or damaged.
#[derive(Debug, Clone)]
struct Lost {
    hash: String,
    why: String,
    /// The blob row exists (only its content is bad).
    has_row: bool,
}

/// Checks the store in `dir`; `progress(done, total)` follows the bodies read.
pub fn check(dir: &Path, opts: &Options, progress: &dyn Fn(u64, u64)) -> Result<Report> {
    let path = dir.join("agora.db");
    if !path.exists() {
        return Err(StoreError::NotFound(format!("store {}", path.display())));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch("PRAGMA foreign_keys=ON;")?;
    let blobs = BlobFiles::open(&dir.join("blobs"))?;
    // Each finding with what kind of repair it takes.
    let mut found: Vec<(Kind, Finding)> = Vec::new();
    let mut problem = |kind: Kind, p: String| {
        found.push((kind, Finding { problem: p, repaired: None, fix: None }));
    };

    let started = SystemTime::now();
    // The survey: one read snapshot.
    conn.execute_batch("BEGIN")?;
    let integrity: Vec<String> =
        conn.prepare("PRAGMA quick_check")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    if integrity != ["ok"] {
        for line in integrity.iter().take(20) {
            problem(Kind::Database, format!("database: {line}"));
        }
    }
    let counts = crate::backup::counts(&conn)?;
    let refs = reference_problems(&conn)?;
    let mailboxes = mailbox_problems(&conn)?;
    let quotas = quota_problems(&conn)?;
    let on_disk: HashSet<String> = conn
        .prepare("SELECT hash FROM blobs WHERE data IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Bodies whose content is missing or does not match their address: those in the
    // database read in this snapshot, the files listed for after it.
    let mut lost = Vec::new();
    let mut files = Vec::new();
    let total = counts.bodies;
    {
        let sql = if opts.hashes {
            "SELECT hash, size, data IS NULL, data, length(data) FROM blobs"
        } else {
            "SELECT hash, size, data IS NULL, NULL, length(data) FROM blobs"
        };
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (hash, size, file): (String, i64, bool) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if file {
                files.push((hash, size as u64));
                continue;
            }
            let data = r.get_ref(3)?.as_blob_or_null().map_err(rusqlite::Error::from)?;
            if let Some(why) = verify_inline(&hash, size as u64, r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64, data)
            {
                lost.push(Lost { hash, why, has_row: true });
            }
        }
    }
    for (hash, _) in refs.iter().filter(|(_, p)| p.row_missing) {
        lost.push(Lost { hash: hash.clone(), why: "has no entry in the store".into(), has_row: false });
    }
    for (hash, p) in refs.iter().filter(|(_, p)| !p.row_missing) {
        problem(
            Kind::Counts,
            format!("body {}: reference count {}, but {} reference(s)", short(hash), p.stored, p.actual),
        );
    }
    for m in &mailboxes {
        for d in &m.defects {
            problem(Kind::Counts, format!("mailbox {} of {}: {d}", m.name, m.login));
        }
    }
    for q in &quotas {
        problem(
            Kind::Counts,
            format!("account {}: quota usage {} bytes, but its messages take {}", q.login, q.stored, q.actual),
        );
    }
    conn.execute_batch("COMMIT")?;

    // The files, read outside the snapshot (so checkpoints go on); one found bad counts
    // only if its entry is still there (an expunge may have removed both meanwhile).
    let inline = counts.bodies.saturating_sub(files.len() as u64);
    for (i, (hash, size)) in files.iter().enumerate() {
        if i.is_multiple_of(64) {
            progress(inline + i as u64, total);
        }
        if let Some(why) = verify_file(&blobs.path_of(hash), hash, *size, opts.hashes)
            && file_entry(&conn, hash)?
        {
            lost.push(Lost { hash: hash.clone(), why, has_row: true });
        }
    }
    progress(total, total);
    for (i, l) in lost.iter().enumerate() {
        let who = lost_messages(&conn, &l.hash)?;
        let shown = if who.is_empty() { "no message".to_string() } else { who.join("; ") };
        problem(Kind::Lost(i), format!("body {} {} ({shown})", short(&l.hash), l.why));
    }

    // Files nobody points at (left by a crash between a body's write and its commit),
    // old before this check began.
    let orphans = orphan_files(dir, &on_disk, started);
    for (i, o) in orphans.iter().enumerate() {
        problem(Kind::Orphan(i), format!("{}: a file no body entry points at", o.display()));
    }

    let mut report = Report { counts, findings: Vec::new() };
    // A damaged database is not repaired here: its indexes could make mail look lost.
    let damaged = found.iter().any(|(k, _)| matches!(k, Kind::Database));
    if opts.repair && !damaged {
        // Bodies first (from a copy, or dropped), then the counts they change.
        let source = opts.from.as_deref().map(Source::open).transpose()?;
        let mut bodies = Vec::new();
        for l in &lost {
            let outcome = match &source {
                Some(s) => restore_body(&conn, &blobs, s, l)?,
                None => None,
            };
            bodies.push(match outcome {
                Some(how) => Some(how),
                None if opts.drop_lost => drop_lost(&conn, &blobs, l)?,
                None => None,
            });
        }
        let counted = repair_counts(&conn, &blobs)?;
        for (kind, f) in found.iter_mut() {
            f.repaired = match kind {
                Kind::Counts => Some(counted.clone()),
                Kind::Lost(i) => bodies[*i].clone(),
                Kind::Orphan(i) => remove_orphan(&conn, &orphans[*i], started)?,
                Kind::Database => None,
            };
        }
    }
    for (kind, mut f) in found {
        if f.repaired.is_none() {
            f.fix = Some(match kind {
                Kind::Database => "restore the last backup (agora restore), then take the bodies it lacks from \
                                   this store with agora store check --repair --from OLD-DATA"
                    .into(),
                Kind::Lost(_) => "agora store check --repair --from BACKUP (a backup or copy of the data \
                                  directory that has the body), or --repair --drop-lost to expunge the message(s) \
                                  whose body is gone"
                    .into(),
                Kind::Counts | Kind::Orphan(_) => "agora store check --repair".into(),
            });
        }
        report.findings.push(f);
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// SQLite's own check failed: beyond repair here.
    Database,
    /// A count the rows determine.
    Counts,
    /// The nth lost body.
    Lost(usize),
    /// The nth stray file under blobs/.
    Orphan(usize),
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

#[derive(Debug)]
struct RefProblem {
    stored: i64,
    actual: i64,
    row_missing: bool,
}

/// Every body whose count differs from the messages and queue entries that point at it,
/// and every pointer to a body the store has no entry for.
fn reference_problems(c: &Connection) -> Result<Vec<(String, RefProblem)>> {
    let sql = "WITH r AS (SELECT blob, count(*) AS n FROM (SELECT blob FROM messages UNION ALL SELECT blob FROM outbound) GROUP BY blob)
               SELECT b.hash, b.refs, coalesce(r.n, 0), 0 FROM blobs b LEFT JOIN r ON r.blob = b.hash WHERE b.refs != coalesce(r.n, 0)
               UNION ALL
               SELECT r.blob, 0, r.n, 1 FROM r LEFT JOIN blobs b ON b.hash = r.blob WHERE b.hash IS NULL";
    let mut stmt = c.prepare(sql)?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, RefProblem { stored: r.get(1)?, actual: r.get(2)?, row_missing: r.get(3)? }))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

struct MailboxProblem {
    login: String,
    name: String,
    defects: Vec<String>,
}

/// UIDNEXT above every UID, HIGHESTMODSEQ at least every message's and expunge's MODSEQ,
/// and the kept message and unseen counts.
fn mailbox_problems(c: &Connection) -> Result<Vec<MailboxProblem>> {
    let sql = "SELECT a.login, mb.name, mb.uidnext, mb.highestmodseq, mb.messages, mb.unseen,
                      coalesce(m.top, 0), coalesce(m.modseq, 0), coalesce(m.n, 0), coalesce(m.unseen, 0), coalesce(x.modseq, 0)
               FROM mailboxes mb JOIN accounts a ON a.id = mb.account
               LEFT JOIN (SELECT mailbox, max(uid) AS top, max(modseq) AS modseq, count(*) AS n,
                                 sum((flags & 1) = 0) AS unseen FROM messages GROUP BY mailbox) m ON m.mailbox = mb.id
               LEFT JOIN (SELECT mailbox, max(modseq) AS modseq FROM expunged GROUP BY mailbox) x ON x.mailbox = mb.id";
    let mut stmt = c.prepare(sql)?;
    let mut out = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (uidnext, hms, kept_n, kept_unseen): (i64, i64, i64, i64) = (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
        let (top, modseq, n, unseen, xmodseq): (i64, i64, i64, i64, i64) =
            (r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?);
        let mut defects = Vec::new();
        if uidnext <= top {
            defects.push(format!("UIDNEXT {uidnext} is not above its highest UID {top}"));
        }
        if hms < modseq.max(xmodseq) {
            defects.push(format!("HIGHESTMODSEQ {hms} is below a change's MODSEQ {}", modseq.max(xmodseq)));
        }
        if kept_n != n {
            defects.push(format!("message count {kept_n}, but it holds {n}"));
        }
        if kept_unseen != unseen {
            defects.push(format!("unseen count {kept_unseen}, but {unseen} are unseen"));
        }
        if !defects.is_empty() {
            out.push(MailboxProblem { login: r.get(0)?, name: r.get(1)?, defects });
        }
    }
    Ok(out)
}

struct QuotaProblem {
    login: String,
    stored: i64,
    actual: i64,
}

fn quota_problems(c: &Connection) -> Result<Vec<QuotaProblem>> {
    let sql = "SELECT a.login, a.used, coalesce(u.bytes, 0) FROM accounts a
               LEFT JOIN (SELECT mb.account, sum(m.size) AS bytes FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox
                          GROUP BY mb.account) u ON u.account = a.id
               WHERE a.used != coalesce(u.bytes, 0)";
    let mut stmt = c.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok(QuotaProblem { login: r.get(0)?, stored: r.get(1)?, actual: r.get(2)? }))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Why a body file is not the body it should be; None: it is.
fn verify_file(path: &Path, hash: &str, size: u64, hashes: bool) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some("is missing".into()),
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    if meta.len() != size {
        return Some(format!("has {} bytes instead of {size}", meta.len()));
    }
    if hashes {
        match hash_file(path) {
            Ok(h) if h == hash => {}
            Ok(_) => return Some("does not match its hash (damaged)".into()),
            Err(e) => return Some(format!("cannot be read ({e})")),
        }
    }
    None
}

/// Why a body kept in the database is not the body it should be: its length, then (when
/// read) its hash.
fn verify_inline(hash: &str, size: u64, len: u64, data: Option<&[u8]>) -> Option<String> {
    if len != size {
        return Some(format!("has {len} bytes instead of {size}"));
    }
    data.filter(|d| crate::blob::sha256_hex(d) != hash).map(|_| "does not match its hash (damaged)".to_string())
}

/// The SHA-256 of a file, read in pieces.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::blob::hex(&h.finalize()))
}

/// A file's age when `at` began; None when it cannot be told.
fn age_at(p: &Path, at: SystemTime) -> Option<Duration> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| at.duration_since(t).ok())
}

/// Files under `blobs/` that no entry points at and that were old before `started`.
fn orphan_files(dir: &Path, on_disk: &HashSet<String>, started: SystemTime) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(dir.join("blobs")) else { return out };
    for shard in shards.flatten() {
        let tmp = shard.file_name() == "tmp";
        let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if (tmp || !on_disk.contains(&name)) && age_at(&f.path(), started).is_some_and(|a| a > GRACE) {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Removes a stray file under the write lock, if still no entry points at it and no
/// delivery has touched it since (a body staged again onto it renews its time).
fn remove_orphan(c: &Connection, path: &Path, started: SystemTime) -> Result<Option<String>> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    c.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| {
        let entry: bool = c.query_row("SELECT count(*) > 0 FROM blobs WHERE hash = ?1", [&name], |r| r.get(0))?;
        if entry || age_at(path, started).is_none_or(|a| a <= GRACE) {
            return Ok(None);
        }
        std::fs::remove_file(path)?;
        Ok::<_, StoreError>(Some("removed".to_string()))
    })();
    c.execute_batch(if done.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    done
}

/// Whether a body's entry still says it is a file.
fn file_entry(c: &Connection, hash: &str) -> Result<bool> {
    Ok(c.query_row("SELECT count(*) > 0 FROM blobs WHERE hash = ?1 AND data IS NULL", [hash], |r| r.get(0))?)
}

/// The messages and queue entries that point at a body, for the report.
fn lost_messages(c: &Connection, hash: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stmt = c.prepare(
        "SELECT a.login, mb.name, m.uid, (SELECT json_extract(summary, '$.envelope.subject') FROM blobs WHERE hash = m.blob)
         FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox JOIN accounts a ON a.id = mb.account
         WHERE m.blob = ?1 ORDER BY a.login, mb.name, m.uid LIMIT 20",
    )?;
    let rows = stmt.query_map([hash], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<String>>(3)?))
    })?;
    for row in rows {
        let (login, mailbox, uid, subject) = row?;
        let subject = subject.map(|s| format!(" \"{}\"", crate::text::decode_words(s.trim()))).unwrap_or_default();
        out.push(format!("{login} {mailbox} UID {uid}{subject}"));
    }
    let queued: i64 = c.query_row("SELECT count(*) FROM outbound WHERE blob = ?1", [hash], |r| r.get(0))?;
    if queued > 0 {
        out.push(format!("{queued} queued recipient(s)"));
    }
    Ok(out)
}

/// A body found in another store, with its entry's summary and search text.
struct Body {
    data: Vec<u8>,
    summary: String,
    text: Option<String>,
}

/// Another data directory (a backup, or a copy) to take bodies from.
struct Source {
    conn: Connection,
    blobs: BlobFiles,
}

impl Source {
    fn open(dir: &Path) -> Result<Source> {
        let db = dir.join("agora.db");
        if !db.exists() {
            return Err(StoreError::NotFound(format!("store {} (for --from)", db.display())));
        }
        let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Source { conn, blobs: BlobFiles::at(&dir.join("blobs")) })
    }

    /// The body with this hash, if the source has it intact, with its entry's size and summary.
    fn body(&self, hash: &str) -> Result<Option<Body>> {
        let row: Option<(Option<Vec<u8>>, String, Option<String>)> = self
            .conn
            .query_row("SELECT data, summary, text FROM blobs WHERE hash = ?1", [hash], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((inline, summary, text)) = row else { return Ok(None) };
        let data = match inline {
            Some(d) => d,
            None => match self.blobs.read(hash) {
                Ok(d) => d,
                Err(_) => return Ok(None),
            },
        };
        Ok((crate::blob::sha256_hex(&data) == hash).then_some(Body { data, summary, text }))
    }
}

/// Puts a lost body back from the source; says how, or None when the source lacks it.
fn restore_body(c: &Connection, blobs: &BlobFiles, source: &Source, lost: &Lost) -> Result<Option<String>> {
    let Some(Body { data, summary, text }) = source.body(&lost.hash)? else { return Ok(None) };
    let file = data.len() > crate::blob::INLINE_MAX;
    if file {
        // Over whatever damaged file is there, then read back.
        blobs.replace(&lost.hash, &data)?;
        if hash_file(&blobs.path_of(&lost.hash))? != lost.hash {
            return Err(StoreError::Corrupt(format!("body {} reads back wrong after its rewrite", lost.hash)));
        }
    }
    let inline = (!file).then_some(&data);
    c.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| {
        if lost.has_row {
            c.execute("UPDATE blobs SET data = ?2 WHERE hash = ?1", params![lost.hash, inline])?;
        } else {
            // Counted in this transaction, so no expunge between here and the count
            // repair can take it for garbage.
            c.execute(
                "INSERT OR IGNORE INTO blobs (hash, size, refs, summary, data, text) VALUES (?1, ?2,
                    (SELECT count(*) FROM messages WHERE blob = ?1) + (SELECT count(*) FROM outbound WHERE blob = ?1),
                    ?3, ?4, ?5)",
                params![lost.hash, data.len() as i64, summary, inline, text],
            )?;
        }
        Ok::<_, StoreError>(())
    })();
    c.execute_batch(if done.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    done?;
    Ok(Some("restored from the copy (hash verified)".into()))
}

/// Expunges every message whose body is this lost one, as an IMAP EXPUNGE would (each
/// gets an expunge MODSEQ, so clients that resynchronise see it go), and drops queue
/// entries that would send it.
fn drop_lost(c: &Connection, blobs: &BlobFiles, lost: &Lost) -> Result<Option<String>> {
    let hash = lost.hash.as_str();
    c.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| {
        // Looked at again under the lock: gone since (expunged), or back (delivered again),
        // means nothing to drop.
        if !still_lost(c, blobs, lost)? {
            return Ok(None);
        }
        let victims: Vec<(i64, i64, i64)> = c
            .prepare("SELECT mailbox, uid, size FROM messages WHERE blob = ?1")?
            .query_map([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (mailbox, uid, size) in &victims {
            let modseq: i64 = c.query_row(
                "UPDATE mailboxes SET highestmodseq = highestmodseq + 1, messages = messages - 1 WHERE id = ?1 RETURNING highestmodseq",
                [mailbox],
                |r| r.get(0),
            )?;
            c.execute("DELETE FROM messages WHERE mailbox = ?1 AND uid = ?2", params![mailbox, uid])?;
            c.execute(
                "INSERT OR REPLACE INTO expunged (mailbox, uid, modseq) VALUES (?1, ?2, ?3)",
                params![mailbox, uid, modseq],
            )?;
            c.execute("DELETE FROM private_seen WHERE mailbox = ?1 AND uid = ?2", params![mailbox, uid])?;
            c.execute(
                "UPDATE accounts SET used = max(0, used - ?2) WHERE id = (SELECT account FROM mailboxes WHERE id = ?1)",
                params![mailbox, size],
            )?;
        }
        let queued = c.execute("DELETE FROM outbound WHERE blob = ?1", [hash])?;
        let file = c
            .query_row("DELETE FROM blobs WHERE hash = ?1 RETURNING data IS NULL", [hash], |r| r.get::<_, bool>(0))
            .optional()?;
        Ok::<_, StoreError>(Some((victims.len(), queued, file.unwrap_or(false))))
    })();
    c.execute_batch(if done.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    let Some((messages, queued, file)) = done? else {
        return Ok(Some("nothing to drop: the body's entry changed since the check".into()));
    };
    if file {
        let _ = blobs.remove(hash);
    }
    Ok(Some(format!("expunged {messages} message(s) and dropped {queued} queued recipient(s) whose body was lost")))
}

/// Whether a lost body is lost still (inside the caller's write transaction).
fn still_lost(c: &Connection, blobs: &BlobFiles, lost: &Lost) -> Result<bool> {
    let row: Option<(i64, Option<Vec<u8>>)> = c
        .query_row("SELECT size, data FROM blobs WHERE hash = ?1", [&lost.hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match (row, lost.has_row) {
        (None, true) => false,
        (None, false) => true,
        (Some(_), false) => false,
        (Some((size, None)), true) => verify_file(&blobs.path_of(&lost.hash), &lost.hash, size as u64, true).is_some(),
        (Some((size, Some(d))), true) => verify_inline(&lost.hash, size as u64, d.len() as u64, Some(&d)).is_some(),
    })
}

/// Sets every reference count, mailbox counter and quota usage to what the rows say,
/// in one transaction; the counts are taken again under the write lock.
fn repair_counts(c: &Connection, blobs: &BlobFiles) -> Result<String> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| {
        let mut fixed: HashMap<&str, usize> = HashMap::new();
        let refs = c.execute(
            "WITH r AS (SELECT blob, count(*) AS n FROM (SELECT blob FROM messages UNION ALL SELECT blob FROM outbound) GROUP BY blob)
             UPDATE blobs SET refs = coalesce((SELECT n FROM r WHERE r.blob = blobs.hash), 0)
             WHERE refs != coalesce((SELECT n FROM r WHERE r.blob = blobs.hash), 0)",
            [],
        )?;
        fixed.insert("reference counts", refs);
        let boxes = c.execute(
            "WITH m AS (SELECT mailbox, max(uid) AS top, max(modseq) AS modseq, count(*) AS n, sum((flags & 1) = 0) AS unseen
                        FROM messages GROUP BY mailbox),
                  x AS (SELECT mailbox, max(modseq) AS modseq FROM expunged GROUP BY mailbox),
                  want AS (SELECT mb.id,
                                  max(mb.uidnext, coalesce(m.top, 0) + 1) AS uidnext,
                                  max(mb.highestmodseq, coalesce(m.modseq, 0), coalesce(x.modseq, 0)) AS hms,
                                  coalesce(m.n, 0) AS n, coalesce(m.unseen, 0) AS unseen
                           FROM mailboxes mb LEFT JOIN m ON m.mailbox = mb.id LEFT JOIN x ON x.mailbox = mb.id)
             UPDATE mailboxes SET uidnext = want.uidnext, highestmodseq = want.hms, messages = want.n, unseen = want.unseen
             FROM want WHERE want.id = mailboxes.id
               AND (mailboxes.uidnext, mailboxes.highestmodseq, mailboxes.messages, mailboxes.unseen)
                   IS NOT (want.uidnext, want.hms, want.n, want.unseen)",
            [],
        )?;
        fixed.insert("mailboxes", boxes);
        let quota = c.execute(
            "WITH u AS (SELECT mb.account, sum(m.size) AS bytes FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox GROUP BY mb.account)
             UPDATE accounts SET used = coalesce((SELECT bytes FROM u WHERE u.account = accounts.id), 0)
             WHERE used != coalesce((SELECT bytes FROM u WHERE u.account = accounts.id), 0)",
            [],
        )?;
        fixed.insert("quota usages", quota);
        // Bodies nobody points at any more go, as after an expunge.
        let gone: Vec<(String, bool)> = c
            .prepare("DELETE FROM blobs WHERE refs <= 0 RETURNING hash, data IS NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        fixed.insert("unreferenced bodies removed", gone.len());
        Ok::<_, StoreError>((fixed, gone))
    })();
    c.execute_batch(if done.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    let (fixed, gone) = done?;
    for (hash, file) in gone {
        if file {
            let _ = blobs.remove(&hash);
        }
    }
    let mut parts: Vec<String> = fixed.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}: {n}")).collect();
    parts.sort();
    Ok(if parts.is_empty() {
        "nothing left to change".into()
    } else {
        format!("set from the rows ({})", parts.join(", "))
    })
}
