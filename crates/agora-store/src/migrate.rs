//! `agora store migrate`: copies a SQLite store (a running one is read in one snapshot)
//! into an empty PostgreSQL database, table by table with every id, UID, MODSEQ, flag
//! and UIDVALIDITY as it was and every body (files included) in the database, then
//! verifies the copy: row counts per table, each mailbox's numbers and a digest of its
//! messages, and every body against its hash.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::blob::{BlobFiles, sha256_hex};
use crate::db::{Db, ToValue, ValueRef};
use crate::{Result, StoreError};

/// Tables in the order their references allow; what each node keeps for itself while
/// running (nodes, leases) is not copied.
const TABLES: &[&str] = &[
    "meta",
    "domains",
    "accounts",
    "addresses",
    "alias_targets",
    "groups",
    "group_members",
    "contacts",
    "dns_records",
    "mailboxes",
    "subscriptions",
    "acl",
    "private_seen",
    "dkim_keys",
    "dnssec_keys",
    "blobs",
    "deliveries",
    "messages",
    "expunged",
    "outbound",
    "tls_outcomes",
    "tls_reports",
    "public_folders",
    "news_articles",
    "news_history",
    "news_peers",
    "web_sessions",
    "account_settings",
    "vacation_replies",
    "sieve_scripts",
    "metadata",
    "sync_log",
    "sync_values",
];

/// Identity columns whose sequences continue after the copied rows.
const IDENTITIES: &[(&str, &str)] = &[
    ("accounts", "id"),
    ("dns_records", "id"),
    ("mailboxes", "id"),
    ("dnssec_keys", "id"),
    ("deliveries", "id"),
    ("outbound", "id"),
    ("tls_reports", "id"),
    ("news_articles", "seq"),
];

/// Rows a batch carries at most (and bytes of bodies).
const BATCH_ROWS: usize = 200;
const BATCH_BYTES: usize = 16 << 20;

/// What was copied and checked.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows per table, in copy order.
    pub tables: Vec<(String, u64)>,
    pub mailboxes: u64,
    pub messages: u64,
    pub bodies: u64,
    pub body_bytes: u64,
}

impl ToValue for rusqlite::types::Value {
    fn to_value(&self) -> ValueRef<'_> {
        use rusqlite::types::Value as V;
        match self {
            V::Null => ValueRef::Null,
            V::Integer(i) => ValueRef::Int(*i),
            V::Real(f) => ValueRef::Real(*f),
            V::Text(s) => ValueRef::Text(s),
            V::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// Copies the store in `dir` into the empty database at `url`, then verifies it.
/// `progress(step, done, total)` is told how far each step is. Blocking: run it off the
/// async threads (it waits on the runtime for PostgreSQL).
pub fn sqlite_to_postgres(
    dir: &Path,
    url: &str,
    password: Option<&str>,
    ca_file: Option<&Path>,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<Report> {
    let rt = tokio::runtime::Handle::current();
    let pool = rt.block_on(crate::pg::Pool::open(url, password, ca_file))?;
    let out = (|| {
        let pg = pool.take()?;
        let src = Connection::open_with_flags(dir.join("agora.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let blobs = BlobFiles::at(&dir.join("blobs"));
        let existing: i64 = pg.query_row("SELECT count(*) FROM domains", (), |r| r.get(0))?;
        if existing > 0 {
            return Err(StoreError::Invalid(
                "the PostgreSQL database already holds a store: migrate into an empty database".into(),
            ));
        }
        // One snapshot of the source, however busy the server that writes it.
        src.execute_batch("BEGIN DEFERRED")?;
        let mut report = copy(&src, &pg, &blobs, progress)?;
        verify(&src, &pg, &mut report, progress)?;
        src.execute_batch("COMMIT")?;
        pool.give(pg);
        Ok(report)
    })();
    pool.close();
    out
}

fn columns_lite(c: &Connection, table: &str) -> Result<Vec<String>> {
    let mut s = c.prepare(&format!("PRAGMA table_info({table})"))?;
    let cols = s.query_map([], |r| r.get::<_, String>(1))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(cols)
}

fn columns_pg(pg: &Db, table: &str) -> Result<Vec<String>> {
    let mut s = pg.prepare_cached(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?1",
    )?;
    s.query_map([table], |r| r.get(0))?.collect()
}

/// Quoted, since some column names (`end`) are keywords.
fn quoted(cols: &[String]) -> String {
    cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
}

fn copy(src: &Connection, pg: &Db, blobs: &BlobFiles, progress: &dyn Fn(&str, u64, u64)) -> Result<Report> {
    let mut report = Report::default();
    pg.execute_batch(
        "BEGIN; ALTER TABLE messages DISABLE TRIGGER USER; ALTER TABLE addresses DISABLE TRIGGER USER;
         ALTER TABLE mailboxes DISABLE TRIGGER USER",
    )?;
    let done = (|| -> Result<()> {
        for &table in TABLES {
            let have = columns_pg(pg, table)?;
            let cols: Vec<String> = columns_lite(src, table)?.into_iter().filter(|c| have.contains(c)).collect();
            let total: i64 = src.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            let filter = if table == "meta" { " WHERE key != 'schema'" } else { "" };
            let mut s = src.prepare(&format!("SELECT {} FROM {table}{filter}", quoted(&cols)))?;
            let data_col = (table == "blobs").then(|| cols.iter().position(|c| c == "data")).flatten();
            let hash_col = cols.iter().position(|c| c == "hash");
            let mut rows = s.query([])?;
            let mut batch: Vec<Vec<rusqlite::types::Value>> = Vec::new();
            let mut bytes = 0usize;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let mut row = (0..cols.len())
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                if let (Some(d), Some(h)) = (data_col, hash_col)
                    && matches!(row[d], rusqlite::types::Value::Null)
                {
                    // A body kept as a file comes into the database.
                    let rusqlite::types::Value::Text(hash) = &row[h] else {
                        return Err(StoreError::Corrupt("a body without its hash".into()));
                    };
                    let body = blobs.read(hash).map_err(|e| StoreError::Corrupt(format!("body {hash}: {e}")))?;
                    row[d] = rusqlite::types::Value::Blob(body);
                }
                if let Some(d) = data_col
                    && let rusqlite::types::Value::Blob(b) = &row[d]
                {
                    bytes += b.len();
                    report.body_bytes += b.len() as u64;
                }
                batch.push(row);
                n += 1;
                if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
                    insert(pg, table, &cols, &batch)?;
                    batch.clear();
                    bytes = 0;
                    progress(table, n, total as u64);
                }
            }
            insert(pg, table, &cols, &batch)?;
            progress(table, n, total as u64);
            report.tables.push((table.to_string(), n));
        }
        for (table, col) in IDENTITIES {
            pg.query_row(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{col}'), coalesce(max({col}), 0) + 1, false) FROM {table}"
                ),
                (),
                |_| Ok(()),
            )?;
        }
        Ok(())
    })();
    match done {
        Ok(()) => pg.execute_batch(
            "ALTER TABLE messages ENABLE TRIGGER USER; ALTER TABLE addresses ENABLE TRIGGER USER;
             ALTER TABLE mailboxes ENABLE TRIGGER USER; COMMIT",
        )?,
        Err(e) => {
            let _ = pg.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(report)
}

/// One multi-row INSERT.
fn insert(pg: &Db, table: &str, cols: &[String], rows: &[Vec<rusqlite::types::Value>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", quoted(cols));
    let mut k = 0;
    for (i, _) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for j in 0..cols.len() {
            k += 1;
            if j > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{k}"));
        }
        sql.push(')');
    }
    let params: Vec<&dyn ToValue> = rows.iter().flatten().map(|v| v as &dyn ToValue).collect();
    pg.prepare(&sql)?.execute(params)?;
    Ok(())
}

/// A mailbox's numbers and a digest of its messages (UID, MODSEQ, flags, keywords,
/// date, body), the same on both sides if nothing was lost.
type MailboxDigest = (String, i64, i64, i64, i64, String);

const MAILBOX_SQL: &str = "SELECT id, name, uidvalidity, uidnext, highestmodseq, messages FROM mailboxes ORDER BY id";
const MESSAGE_SQL: &str =
    "SELECT uid, modseq, flags, keywords, internal_date, blob FROM messages WHERE mailbox = ?1 ORDER BY uid";

fn digest_row(h: &mut Sha256, uid: i64, modseq: i64, flags: i64, keywords: &str, date: i64, blob: &str) {
    h.update(format!("{uid} {modseq} {flags} {keywords} {date} {blob}\n").as_bytes());
}

fn lite_mailboxes(c: &Connection) -> Result<BTreeMap<i64, MailboxDigest>> {
    let mut out = BTreeMap::new();
    let mut s = c.prepare(MAILBOX_SQL)?;
    let mut m = c.prepare(MESSAGE_SQL)?;
    let mut rows = s.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let mut h = Sha256::new();
        let mut msgs = m.query([id])?;
        while let Some(x) = msgs.next()? {
            digest_row(
                &mut h,
                x.get(0)?,
                x.get(1)?,
                x.get(2)?,
                &x.get::<_, String>(3)?,
                x.get(4)?,
                &x.get::<_, String>(5)?,
            );
        }
        out.insert(id, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, crate::blob::hex(&h.finalize())));
    }
    Ok(out)
}

fn pg_mailboxes(pg: &Db) -> Result<BTreeMap<i64, MailboxDigest>> {
    let mut out = BTreeMap::new();
    let boxes: Vec<(i64, String, i64, i64, i64, i64)> = pg
        .prepare(MAILBOX_SQL)?
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<Result<_>>()?;
    for (id, name, v, next, modseq, n) in boxes {
        let mut h = Sha256::new();
        let mut m = pg.prepare_cached(MESSAGE_SQL)?;
        let mut msgs = m.query([id])?;
        while let Some(x) = msgs.next()? {
            digest_row(
                &mut h,
                x.get(0)?,
                x.get(1)?,
                x.get(2)?,
                &x.get::<_, String>(3)?,
                x.get(4)?,
                &x.get::<_, String>(5)?,
            );
        }
        out.insert(id, (name, v, next, modseq, n, crate::blob::hex(&h.finalize())));
    }
    Ok(out)
}

fn verify(src: &Connection, pg: &Db, report: &mut Report, progress: &dyn Fn(&str, u64, u64)) -> Result<()> {
    for (table, n) in &report.tables {
        let filter = if table == "meta" { " WHERE key != 'schema'" } else { "" };
        let there: i64 = pg.query_row(&format!("SELECT count(*) FROM {table}{filter}"), (), |r| r.get(0))?;
        if there as u64 != *n {
            return Err(StoreError::Corrupt(format!("{table}: {n} rows copied, {there} in PostgreSQL")));
        }
    }
    let before = lite_mailboxes(src)?;
    let after = pg_mailboxes(pg)?;
    for (id, want) in &before {
        match after.get(id) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(StoreError::Corrupt(format!(
                    "mailbox {} differs after the copy: {want:?} became {got:?}",
                    want.0
                )));
            }
            None => return Err(StoreError::Corrupt(format!("mailbox {} is missing after the copy", want.0))),
        }
        report.messages += want.4.max(0) as u64;
    }
    report.mailboxes = before.len() as u64;
    // Every body read back and checked against its hash.
    let total: i64 = pg.query_row("SELECT count(*) FROM blobs", (), |r| r.get(0))?;
    let hashes: Vec<String> =
        pg.prepare("SELECT hash FROM blobs ORDER BY hash")?.query_map((), |r| r.get(0))?.collect::<Result<_>>()?;
    for (i, hash) in hashes.iter().enumerate() {
        let data: Vec<u8> = pg.query_row("SELECT data FROM blobs WHERE hash = ?1", [hash], |r| r.get(0))?;
        if sha256_hex(&data) != *hash {
            return Err(StoreError::Corrupt(format!("body {hash} does not match its hash after the copy")));
        }
        if i % 100 == 0 {
            progress("verified bodies", i as u64, total as u64);
        }
    }
    report.bodies = hashes.len() as u64;
    progress("verified bodies", report.bodies, total as u64);
    Ok(())
}
