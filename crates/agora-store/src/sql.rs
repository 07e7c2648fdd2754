//! The store's one body of logic over the SQL layer, on either engine: SQLite (embedded:
//! WAL mode, one writer thread that group-commits the writes of many sessions under one
//! fsync, a small pool of reader connections) or PostgreSQL (`pg`: pooled connections,
//! a transaction per write, changes heard from other nodes).

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use crate::db::{Db, OptionalExtension, Row, params};
use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use crate::blob::BlobFiles;
use crate::{
    Account, AccountId, AccountUpdate, AddressEntry, Change, ClusterStore, Contact, DEFAULT_MAILBOXES, Delivered,
    Delivery, DeliveryStore, DirectoryStore, DkimKey, DkimState, DnsRecord, DnssecKey, DnssecKeyState, Domain,
    Envelope, FeedArticle, FlagOp, Flags, FlagsStored, Group, Mailbox, MailboxChanges, MailboxId, MailboxStore,
    MessageMeta, MessageRef, MessageSummary, NewAccount, NewsGroup, NodeInfo, Overview, PUBLIC_OWNER, Profile,
    PublicFolder, PublicFolderUpdate, QueueOutcome, Queued, Result, Role, SharedMailbox, SieveScriptInfo, SpecialUse,
    StagedBlob, Store, StoreError, SyncRecord, TlsOutcome, TlsReport, WebSession, now,
};

/// Most writes folded into one transaction; bounds the latency of the first in a batch.
const MAX_BATCH: usize = 512;
const READERS: usize = 8;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Directory replication (RFC 4533): each entry ever served, by entryUUID, with the CSN
-- of its last change; deleted ones stay a while so that replicas learn of the delete.
CREATE TABLE IF NOT EXISTS sync_log (
    uuid BLOB PRIMARY KEY,
    dn TEXT NOT NULL,
    csn TEXT NOT NULL,
    hash BLOB NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sync_values (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    mta_sts_mode TEXT NOT NULL DEFAULT 'testing'
);
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    login TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL REFERENCES domains(name),
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    scram TEXT NOT NULL DEFAULT '',
    quota INTEGER NOT NULL DEFAULT 0,
    used INTEGER NOT NULL DEFAULT 0,
    role TEXT NOT NULL,
    created INTEGER NOT NULL,
    profile TEXT NOT NULL DEFAULT '{}',
    uuid BLOB,
    changed INTEGER NOT NULL DEFAULT 0
);
-- One namespace for every deliverable address: account, extra address, alias, group.
CREATE TABLE IF NOT EXISTS addresses (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    kind TEXT NOT NULL CHECK (kind IN ('account', 'alias', 'group')),
    account INTEGER REFERENCES accounts(id) ON DELETE CASCADE
);
-- An account's extra addresses are read with every account (created on open, so older
-- stores get it too).
CREATE INDEX IF NOT EXISTS addresses_account ON addresses (account);
CREATE TABLE IF NOT EXISTS alias_targets (
    address TEXT NOT NULL REFERENCES addresses(address) ON DELETE CASCADE,
    target TEXT NOT NULL,
    PRIMARY KEY (address, target)
);
CREATE TABLE IF NOT EXISTS groups (
    address TEXT PRIMARY KEY REFERENCES addresses(address) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    profile TEXT NOT NULL DEFAULT '{}',
    uuid BLOB,
    created INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0
);
-- Records an administrator adds to a hosted zone besides the generated ones.
CREATE TABLE IF NOT EXISTS dns_records (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    name TEXT NOT NULL,
    rtype TEXT NOT NULL,
    value TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    UNIQUE (domain, name, rtype, value)
);
-- External recipients shown in the address book; not deliverable addresses here.
CREATE TABLE IF NOT EXISTS contacts (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name),
    display_name TEXT NOT NULL,
    profile TEXT NOT NULL DEFAULT '{}',
    uuid BLOB NOT NULL,
    created INTEGER NOT NULL,
    changed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    grp TEXT NOT NULL REFERENCES groups(address) ON DELETE CASCADE,
    member TEXT NOT NULL,
    PRIMARY KEY (grp, member)
);
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    special_use TEXT,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    recent_uid INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account, name)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (account, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acl (
    mailbox INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    identifier TEXT NOT NULL,
    rights TEXT NOT NULL,
    PRIMARY KEY (mailbox, identifier)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS acl_identifier ON acl (identifier);
CREATE TABLE IF NOT EXISTS private_seen (
    mailbox INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    PRIMARY KEY (mailbox, account, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dkim_keys (
    domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    selector TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    private_key BLOB NOT NULL,
    public_key BLOB NOT NULL,
    created INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    PRIMARY KEY (domain, selector)
) WITHOUT ROWID;
-- DNSSEC signing keys of the hosted zones (private: never served).
CREATE TABLE IF NOT EXISTS dnssec_keys (
    id INTEGER PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    ksk INTEGER NOT NULL,
    algorithm INTEGER NOT NULL,
    private_key BLOB NOT NULL,
    created INTEGER NOT NULL,
    state TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL,
    summary TEXT NOT NULL,
    data BLOB
);
-- Only bodies no message refers to: removing them after an expunge reads these rows,
-- not every body in the store.
CREATE INDEX IF NOT EXISTS blobs_unreferenced ON blobs (refs) WHERE refs <= 0;
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    envelope TEXT NOT NULL,
    received INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    mailbox INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    keywords TEXT NOT NULL DEFAULT '',
    internal_date INTEGER NOT NULL,
    saved INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    blob TEXT NOT NULL REFERENCES blobs(hash),
    delivery INTEGER REFERENCES deliveries(id),
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox, modseq);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbound (
    id INTEGER PRIMARY KEY,
    blob TEXT NOT NULL REFERENCES blobs(hash),
    mail_from TEXT NOT NULL,
    recipient TEXT NOT NULL,
    delivery INTEGER REFERENCES deliveries(id),
    created INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    held INTEGER NOT NULL DEFAULT 0,
    warned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbound_due ON outbound (next_attempt);
CREATE TABLE IF NOT EXISTS tls_outcomes (
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy TEXT NOT NULL,
    mx TEXT NOT NULL,
    ip TEXT NOT NULL,
    result TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, domain, policy_type, policy, mx, ip, result)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tls_reports (
    id INTEGER PRIMARY KEY,
    received INTEGER NOT NULL,
    organization TEXT NOT NULL,
    report_id TEXT NOT NULL,
    domains TEXT NOT NULL,
    start TEXT NOT NULL,
    end TEXT NOT NULL,
    successes INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    details TEXT NOT NULL,
    UNIQUE (organization, report_id)
);
-- Public folders: mailboxes of the organisation's own account (role 'system').
CREATE TABLE IF NOT EXISTS public_folders (
    mailbox INTEGER PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
    newsgroup TEXT UNIQUE,
    address TEXT UNIQUE,
    moderated INTEGER NOT NULL DEFAULT 0,
    anonymous_mail INTEGER NOT NULL DEFAULT 0,
    expire_days INTEGER NOT NULL DEFAULT 0,
    expire_count INTEGER NOT NULL DEFAULT 0
);
-- A folder's address is one of the deliverable addresses: no account, alias or group
-- may take it later.
CREATE TRIGGER IF NOT EXISTS public_folder_address BEFORE INSERT ON addresses
WHEN EXISTS (SELECT 1 FROM public_folders WHERE address = NEW.address)
BEGIN SELECT RAISE(ABORT, 'the address belongs to a public folder'); END;
-- News: every message in a public folder is known by its Message-ID (ARTICLE <id>,
-- NEWNEWS), and every Message-ID ever taken stays in the history for a while after
-- the article expires, so that peers cannot feed it again. Kept by the database itself,
-- whichever door (NNTP, SMTP, IMAP) the message came through.
-- seq orders arrivals for the outgoing feeds (never reused).
CREATE TABLE IF NOT EXISTS news_articles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    mailbox INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    arrived INTEGER NOT NULL,
    UNIQUE (message_id, mailbox)
);
CREATE INDEX IF NOT EXISTS news_articles_uid ON news_articles (mailbox, uid);
CREATE INDEX IF NOT EXISTS news_articles_arrived ON news_articles (arrived);
CREATE TABLE IF NOT EXISTS news_history (
    message_id TEXT PRIMARY KEY,
    seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS news_history_seen ON news_history (seen);
-- Outgoing news feeds: how far each peer has been offered the arrivals (news_articles
-- seq); an article a peer defers holds its cursor back, so nothing is skipped.
CREATE TABLE IF NOT EXISTS news_peers (
    peer TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS web_sessions (
    id TEXT PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created INTEGER NOT NULL,
    seen INTEGER NOT NULL,
    address TEXT NOT NULL,
    agent TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS web_sessions_account ON web_sessions (account);
-- An account's own settings (webmail preferences, vacation reply, forwarding).
CREATE TABLE IF NOT EXISTS account_settings (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (account, name)
) WITHOUT ROWID;
-- Who got a vacation reply from an account, and when (one per sender per period).
CREATE TABLE IF NOT EXISTS vacation_replies (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    sender TEXT NOT NULL,
    sent INTEGER NOT NULL,
    PRIMARY KEY (account, sender)
) WITHOUT ROWID;
-- Each account's Sieve scripts (ManageSieve); the active one is run at delivery.
CREATE TABLE IF NOT EXISTS sieve_scripts (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    script TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL,
    PRIMARY KEY (account, name)
);
-- At most one active script per account, kept by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS sieve_scripts_active ON sieve_scripts (account) WHERE active = 1;
-- IMAP METADATA entries (RFC 5464): per account, of a mailbox (0: the server), names
-- lower-cased with their /private/ or /shared/ prefix.
CREATE TABLE IF NOT EXISTS metadata (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    mailbox INTEGER NOT NULL,
    entry TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (account, mailbox, entry)
);
-- Nodes sharing this store (one row each, kept fresh by its heartbeat), and leases that
-- hold across them (the POP3 maildrop lock, sessions per user), renewed by the holder's
-- heartbeat and worthless once it stops.
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    role TEXT NOT NULL,
    started INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL,
    version TEXT NOT NULL,
    holder TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    account INTEGER NOT NULL,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_account ON leases (kind, account);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '17');
"#;

/// Triggers over the current columns: made after the migrations (an older store gets
/// the columns they read first).
const TRIGGERS: &str = r#"
CREATE TRIGGER IF NOT EXISTS metadata_gone AFTER DELETE ON mailboxes
BEGIN
    DELETE FROM metadata WHERE mailbox = OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS unseen_in AFTER INSERT ON messages WHEN (NEW.flags & 1) = 0
BEGIN
    UPDATE mailboxes SET unseen = unseen + 1 WHERE id = NEW.mailbox;
END;
CREATE TRIGGER IF NOT EXISTS unseen_out AFTER DELETE ON messages WHEN (OLD.flags & 1) = 0
BEGIN
    UPDATE mailboxes SET unseen = unseen - 1 WHERE id = OLD.mailbox;
END;
CREATE TRIGGER IF NOT EXISTS unseen_moved AFTER UPDATE OF flags, mailbox ON messages
WHEN (OLD.flags & 1) != (NEW.flags & 1) OR OLD.mailbox != NEW.mailbox
BEGIN
    UPDATE mailboxes SET unseen = unseen - 1 WHERE id = OLD.mailbox AND (OLD.flags & 1) = 0;
    UPDATE mailboxes SET unseen = unseen + 1 WHERE id = NEW.mailbox AND (NEW.flags & 1) = 0;
END;
CREATE TRIGGER IF NOT EXISTS news_article_in AFTER INSERT ON messages
WHEN EXISTS (SELECT 1 FROM public_folders WHERE mailbox = NEW.mailbox)
BEGIN
    INSERT OR IGNORE INTO news_articles (message_id, mailbox, uid, arrived)
    SELECT trim(json_extract(b.summary, '$.envelope.message_id')), NEW.mailbox, NEW.uid,
           CASE WHEN NEW.saved > 0 THEN NEW.saved ELSE NEW.internal_date END
    FROM blobs b WHERE b.hash = NEW.blob AND json_extract(b.summary, '$.envelope.message_id') IS NOT NULL;
    INSERT OR IGNORE INTO news_history (message_id, seen)
    SELECT trim(json_extract(b.summary, '$.envelope.message_id')),
           CASE WHEN NEW.saved > 0 THEN NEW.saved ELSE NEW.internal_date END
    FROM blobs b WHERE b.hash = NEW.blob AND json_extract(b.summary, '$.envelope.message_id') IS NOT NULL;
END;
-- When an article goes, its history entry restarts its time: the Message-ID is kept
-- for the history's days after the article is gone.
DROP TRIGGER IF EXISTS news_article_out;
CREATE TRIGGER news_article_out AFTER DELETE ON messages
BEGIN
    UPDATE news_history SET seen = max(seen, CAST(strftime('%s', 'now') AS INTEGER))
    WHERE message_id IN (SELECT message_id FROM news_articles WHERE mailbox = OLD.mailbox AND uid = OLD.uid);
    DELETE FROM news_articles WHERE mailbox = OLD.mailbox AND uid = OLD.uid;
END;
"#;

/// Sends a job's reply; runs only after the stamp and the change bus are updated.
type Reply = Box<dyn FnOnce() + Send>;
/// Given the commit's outcome, a job yields its committed changes and its reply.
/// Schema changes since version 1, applied in order to stores written by older versions.
const MIGRATIONS: &[(u32, &str)] = &[
    (2, "ALTER TABLE accounts ADD COLUMN scram TEXT NOT NULL DEFAULT ''"),
    (3, "ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 0"),
    // Subscriptions outlive their mailboxes (RFC 9051 §6.3.7), so they get their own table.
    (
        4,
        "INSERT OR IGNORE INTO subscriptions (account, name) SELECT account, name FROM mailboxes WHERE subscribed = 1;
         ALTER TABLE mailboxes DROP COLUMN subscribed",
    ),
    // When a message was saved in its mailbox (SAVEDATE, RFC 8514); 0 for older ones.
    (5, "ALTER TABLE messages ADD COLUMN saved INTEGER NOT NULL DEFAULT 0"),
    // Shared mailboxes (RFC 4314): the acl and private_seen tables come with the base
    // schema (CREATE ... IF NOT EXISTS); nothing to convert.
    (6, "SELECT 1"),
    // The outbound queue's retry state.
    (
        7,
        "ALTER TABLE outbound ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
         ALTER TABLE outbound ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
    ),
    // Whether the sender was told of the delay (one warning per entry).
    (8, "ALTER TABLE outbound ADD COLUMN warned INTEGER NOT NULL DEFAULT 0"),
    // DKIM keys: the table comes with the base schema (CREATE ... IF NOT EXISTS).
    (9, "SELECT 1"),
    // DKIM key rotation: pending keys are published before they sign, retired ones after.
    (10, "ALTER TABLE dkim_keys ADD COLUMN state TEXT NOT NULL DEFAULT 'active'"),
    // The address book: profiles, stable identities and change times (contacts come
    // with the base schema).
    (
        11,
        "ALTER TABLE accounts ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
         ALTER TABLE accounts ADD COLUMN uuid BLOB;
         ALTER TABLE accounts ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
         UPDATE accounts SET uuid = randomblob(16), changed = created;
         ALTER TABLE groups ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
         ALTER TABLE groups ADD COLUMN uuid BLOB;
         ALTER TABLE groups ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE groups ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
         UPDATE groups SET uuid = randomblob(16)",
    ),
    // Extra DNS records: the table comes with the base schema.
    (12, "SELECT 1"),
    // DNSSEC keys: the table comes with the base schema.
    (13, "SELECT 1"),
    // Each domain's MTA-STS mode.
    (14, "ALTER TABLE domains ADD COLUMN mta_sts_mode TEXT NOT NULL DEFAULT 'testing'"),
    // TLS reporting: outbound outcomes and received reports come with the base schema.
    (15, "SELECT 1"),
    // Public folders: the table comes with the base schema.
    (16, "SELECT 1"),
    // News: the tables and triggers come with the base schema; messages already in
    // public folders are entered by their Message-ID.
    (
        17,
        "INSERT OR IGNORE INTO news_articles (message_id, mailbox, uid, arrived)
         SELECT trim(json_extract(b.summary, '$.envelope.message_id')), m.mailbox, m.uid,
                CASE WHEN m.saved > 0 THEN m.saved ELSE m.internal_date END
         FROM messages m JOIN blobs b ON b.hash = m.blob JOIN public_folders p ON p.mailbox = m.mailbox
         WHERE json_extract(b.summary, '$.envelope.message_id') IS NOT NULL;
         INSERT OR IGNORE INTO news_history (message_id, seen) SELECT message_id, arrived FROM news_articles",
    ),
    // A body's decoded text for search, made at delivery (older bodies are decoded when
    // searched, as before).
    (18, "ALTER TABLE blobs ADD COLUMN text TEXT"),
    // Webmail sessions: the table comes with the base schema.
    (19, "SELECT 1"),
    // A second factor per account (TOTP secret, base32; empty: none) and the last step
    // a code was used for (each code signs in once).
    (
        20,
        "ALTER TABLE accounts ADD COLUMN totp TEXT NOT NULL DEFAULT '';
         ALTER TABLE accounts ADD COLUMN totp_step INTEGER NOT NULL DEFAULT 0",
    ),
    // Account settings and vacation replies: the tables come with the base schema.
    (21, "SELECT 1"),
    // Each mailbox's count of messages without \Seen, kept by triggers (folder lists
    // read it instead of counting).
    (
        22,
        "ALTER TABLE mailboxes ADD COLUMN unseen INTEGER NOT NULL DEFAULT 0;
         UPDATE mailboxes SET unseen = (SELECT count(*) FROM messages m WHERE m.mailbox = mailboxes.id AND (m.flags & 1) = 0)",
    ),
    // Sieve scripts: the table comes with the base schema.
    (23, "SELECT 1"),
    // IMAP METADATA: the table comes with the base schema.
    (24, "SELECT 1"),
    // The index of unreferenced bodies comes with the base schema.
    (25, "SELECT 1"),
    // Directory replication's log and values: the tables come with the base schema.
    (26, "SELECT 1"),
    // The outbound queue is claimed by the process delivering it (nodes share it);
    // nodes and leases come with the base schema.
    (
        27,
        "ALTER TABLE outbound ADD COLUMN claimed_by TEXT;
         ALTER TABLE outbound ADD COLUMN claim_until INTEGER NOT NULL DEFAULT 0",
    ),
    // Each account's home node (back-end), and each node's TLS certificate for the
    // front-ends that connect to it.
    (28, "ALTER TABLE accounts ADD COLUMN home TEXT; ALTER TABLE nodes ADD COLUMN tls_pin TEXT NOT NULL DEFAULT ''"),
    // NTLM for DCE/RPC, off (NULL) unless turned on for the account.
    (29, "ALTER TABLE accounts ADD COLUMN ntlm TEXT"),
    // Each domain's X.400 O/R address space (empty: none).
    (30, "ALTER TABLE domains ADD COLUMN x400 TEXT NOT NULL DEFAULT ''"),
];

/// Brings an older store up to the current schema, in one transaction.
fn migrate(conn: &Connection) -> Result<()> {
    let version: u32 = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", (), |r| r.get::<_, String>(0))?
        .parse()
        .map_err(|_| StoreError::Corrupt("schema version is not a number".into()))?;
    let latest = MIGRATIONS.last().map_or(1, |m| m.0);
    if version > latest {
        return Err(StoreError::Invalid(format!(
            "this store has schema version {version}, newer than this Agora understands ({latest})"
        )));
    }
    if version == latest {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| -> Result<()> {
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
            conn.execute_batch(sql)?;
            conn.execute("UPDATE meta SET value = ?1 WHERE key = 'schema'", [v.to_string()])?;
        }
        Ok(())
    })();
    match applied {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    tracing::info!("store: schema upgraded from version {version} to {latest}");
    Ok(())
}

const WEB_SESSION_SELECT: &str = "SELECT id, account, csrf, created, seen, address, agent FROM web_sessions";

fn web_session_row(r: &Row<'_>) -> Result<WebSession> {
    Ok(WebSession {
        id: r.get(0)?,
        account: r.get(1)?,
        csrf: r.get(2)?,
        created: r.get(3)?,
        seen: r.get(4)?,
        address: r.get(5)?,
        agent: r.get(6)?,
    })
}

type Finish = Box<dyn FnOnce(Result<()>) -> (Vec<Change>, Reply) + Send>;
type Job = Box<dyn FnOnce(&Db) -> Finish + Send>;

/// Whether a store URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The directory of a `sqlite:DIR` URL (or of a plain path).
pub fn sqlite_dir(url: &str) -> PathBuf {
    let dir = url.strip_prefix("sqlite:").unwrap_or(url);
    PathBuf::from(dir.strip_prefix("//").unwrap_or(dir))
}

/// A store URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    crate::pg::redact(url)
}

/// The store on either engine: the logic below is shared; how writes are committed,
/// where reads run and how other processes' changes are heard is each engine's own.
pub struct SqlStore {
    engine: Engine,
    /// Bodies kept as files (SQLite's large ones); None on PostgreSQL, which keeps
    /// every body in the database.
    blobs: Option<Arc<BlobFiles>>,
    bus: broadcast::Sender<Change>,
    /// Per-mailbox buses, made when a session first watches the mailbox and dropped
    /// when nobody listens any more.
    mailbox_buses: Arc<Mutex<HashMap<MailboxId, broadcast::Sender<Change>>>>,
    version: Arc<VersionCache>,
    /// This process, as the holder of queue claims and leases (new at every start).
    holder: String,
}

/// A name for this process's claims and leases.
fn new_holder() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = (now() as u64 ^ u64::from(std::process::id()) << 32).to_le_bytes();
    }
    crate::blob::hex(&b)
}

enum Engine {
    Lite(LiteEngine),
    Pg(Arc<crate::pg::Pool>),
}

/// SQLite: one writer thread that group-commits, pooled readers, a checkpointer.
struct LiteEngine {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// Dropping the sender stops the checkpointer.
    checkpointer: Mutex<Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>>,
    readers: Mutex<Vec<Db>>,
    /// `directory.version`: 16 hex digits rewritten in place on every directory change.
    stamp: std::fs::File,
}

/// The directory version without a system call per check: this process's own changes
/// count at once (the writer bumps `local` before it replies), other processes' within
/// `STAMP_RECHECK` (the stamp file is read again when its last reading is older).
#[derive(Debug)]
struct VersionCache {
    epoch: std::time::Instant,
    file: std::sync::atomic::AtomicU64,
    /// Milliseconds after `epoch` (plus one) when `file` was read; 0: never.
    read_ms: std::sync::atomic::AtomicU64,
    local: std::sync::atomic::AtomicU64,
}

impl VersionCache {
    fn new() -> VersionCache {
        VersionCache {
            epoch: std::time::Instant::now(),
            file: Default::default(),
            read_ms: Default::default(),
            local: Default::default(),
        }
    }
}

/// How stale another process's directory change may be seen, in milliseconds.
const STAMP_RECHECK: u64 = 2;

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.engine {
            Engine::Lite(l) => f.debug_struct("SqlStore").field("sqlite", &l.path).finish(),
            Engine::Pg(p) => f.debug_struct("SqlStore").field("postgres", p).finish(),
        }
    }
}

fn open_conn(path: &Path) -> Result<Db> {
    Ok(Db::sqlite(open_lite(path)?))
}

fn open_lite(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // PostgreSQL's greatest(), so that statements read the same on both engines.
    conn.create_scalar_function(
        "greatest",
        2,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8 | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            use rusqlite::types::Value;
            let (a, b): (Value, Value) = (ctx.get(0)?, ctx.get(1)?);
            Ok(match (a, b) {
                (Value::Integer(x), Value::Integer(y)) => Value::Integer(x.max(y)),
                (Value::Text(x), Value::Text(y)) => Value::Text(x.max(y)),
                (Value::Null, v) | (v, Value::Null) => v,
                (x, _) => x,
            })
        },
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // FULL makes every WAL commit an fsync: acknowledged means durable.
    // mmap: reads of pages (and small bodies) without a pread and a copy each.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA mmap_size=1073741824;",
    )?;
    Ok(conn)
}

impl SqlStore {
    /// Opens the store a URL names: `postgres://…` (or `postgresql://…`) for PostgreSQL,
    /// `sqlite:DIR` or a plain directory for the embedded store.
    pub async fn open_url(url: &str) -> Result<Arc<SqlStore>> {
        if is_postgres_url(url) { SqlStore::open_postgres(url).await } else { SqlStore::open(&sqlite_dir(url)) }
    }

    /// Connects to a PostgreSQL database (creating or upgrading its schema), and starts
    /// hearing other nodes' changes. Must be called inside the runtime.
    pub async fn open_postgres(url: &str) -> Result<Arc<SqlStore>> {
        SqlStore::open_postgres_with(url, None, None).await
    }

    /// As `open_postgres`, with the password given apart from the URL, and the CA that
    /// the server's certificate must come from (else the system's roots).
    pub async fn open_postgres_with(
        url: &str,
        password: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Arc<SqlStore>> {
        let pool = crate::pg::Pool::open(url, password, ca_file).await?;
        let (bus, _) = broadcast::channel(4096);
        let buses = Buses { all: bus.clone(), mailboxes: Arc::new(Mutex::new(HashMap::new())) };
        let store = Arc::new(SqlStore {
            engine: Engine::Pg(Arc::clone(&pool)),
            blobs: None,
            bus,
            mailbox_buses: Arc::clone(&buses.mailboxes),
            version: Arc::new(VersionCache::new()),
            holder: pool.origin.clone(),
        });
        pool.listen(Arc::new(move |changes| buses.publish(changes)));
        Ok(store)
    }

    /// Which engine keeps this store: "sqlite" or "postgres".
    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Lite(_) => "sqlite",
            Engine::Pg(_) => "postgres",
        }
    }

    /// Opens (creating if needed) the store in directory `dir`: `agora.db` and `blobs/`.
    pub fn open(dir: &Path) -> Result<Arc<SqlStore>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("agora.db");
        let writer_conn = open_lite(&path)?;
        writer_conn.execute_batch(SCHEMA)?;
        migrate(&writer_conn)?;
        writer_conn.execute_batch(TRIGGERS)?;
        // Checkpoints run on their own thread, so a commit never waits for one.
        // A log that grew past its limit under load is cut back to it once restarted.
        writer_conn.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864;")?;
        let ckpt_conn = open_lite(&path)?;
        let (ckpt_tx, ckpt_rx) = mpsc::channel::<()>();
        let restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let restart2 = Arc::clone(&restart);
        let ckpt = thread::Builder::new()
            .name("agora-store-checkpoint".into())
            .spawn(move || checkpoint_loop(ckpt_conn, ckpt_rx, &restart2))?;
        let blobs = Arc::new(BlobFiles::open(&dir.join("blobs"))?);
        let mut readers = Vec::new();
        for _ in 0..READERS {
            readers.push(open_conn(&path)?);
        }
        let (bus, _) = broadcast::channel(4096);
        let (tx, rx) = mpsc::channel::<Job>();
        let buses = Buses { all: bus.clone(), mailboxes: Arc::new(Mutex::new(HashMap::new())) };
        let bus2 = buses.clone();
        let stamp = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("directory.version"))?;
        let stamp2 = stamp.try_clone()?;
        let version = Arc::new(VersionCache::new());
        let version2 = Arc::clone(&version);
        let handle = thread::Builder::new()
            .name("agora-store-writer".into())
            .spawn(move || writer_loop(Db::sqlite(writer_conn), rx, bus2, &stamp2, &version2, &restart))?;
        Ok(Arc::new(SqlStore {
            engine: Engine::Lite(LiteEngine {
                path,
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                checkpointer: Mutex::new(Some((ckpt_tx, ckpt))),
                readers: Mutex::new(readers),
                stamp,
            }),
            blobs: Some(blobs),
            bus,
            mailbox_buses: buses.mailboxes,
            version,
            holder: new_holder(),
        }))
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        let lite = match &self.engine {
            Engine::Lite(l) => l,
            Engine::Pg(p) => return p.close(),
        };
        if let Some((tx, h)) = lite.checkpointer.lock().ok().and_then(|mut c| c.take()) {
            drop(tx);
            let _ = h.join();
        }
        if let Ok(mut w) = lite.writer.lock() {
            w.take();
        }
        if let Some(h) = lite.writer_thread.lock().ok().and_then(|mut h| h.take()) {
            let _ = h.join();
        }
    }

    /// Runs `f` as one write: on SQLite in one savepoint of the next group commit, on
    /// PostgreSQL as its own transaction (run again if it meets a concurrent one);
    /// resolves once it is durable.
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&Db) -> Result<(T, Vec<Change>)> + Send + Sync + 'static,
    ) -> Result<T> {
        self.write_as(crate::pg::Isolation::Serializable, f).await
    }

    /// A write that takes the rows it depends on (`FOR UPDATE`: a mailbox's before its
    /// messages change, an account's before its leases are counted) instead of being
    /// SERIALIZABLE: on PostgreSQL concurrent ones wait for each other rather than fail.
    async fn write_locked<T: Send + 'static>(
        &self,
        f: impl Fn(&Db) -> Result<(T, Vec<Change>)> + Send + Sync + 'static,
    ) -> Result<T> {
        self.write_as(crate::pg::Isolation::RowLocks, f).await
    }

    async fn write_as<T: Send + 'static>(
        &self,
        isolation: crate::pg::Isolation,
        f: impl Fn(&Db) -> Result<(T, Vec<Change>)> + Send + Sync + 'static,
    ) -> Result<T> {
        let lite = match &self.engine {
            Engine::Lite(l) => l,
            Engine::Pg(pool) => {
                let permit = Arc::clone(&pool.permits).acquire_owned().await.map_err(|_| StoreError::Closed)?;
                let pool = Arc::clone(pool);
                let version = Arc::clone(&self.version);
                let buses = Buses { all: self.bus.clone(), mailboxes: Arc::clone(&self.mailbox_buses) };
                return tokio::task::spawn_blocking(move || {
                    let out = pool.write(&f, isolation);
                    drop(permit);
                    let (v, changes) = out?;
                    if changes.contains(&Change::DirectoryChanged) {
                        version.local.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    buses.publish(changes);
                    Ok(v)
                })
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            }
        };
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn: &Db| {
            let outcome = run_in_savepoint(conn, f);
            Box::new(move |commit: Result<()>| {
                let (reply, changes) = match (commit, outcome) {
                    (Ok(()), Ok((v, changes))) => (Ok(v), changes),
                    (Err(e), _) | (Ok(()), Err(e)) => (Err(e), Vec::new()),
                };
                let send: Reply = Box::new(move || {
                    let _ = tx.send(reply);
                });
                (changes, send)
            })
        });
        {
            let guard = lite.writer.lock().map_err(|_| StoreError::Closed)?;
            let sender = guard.as_ref().ok_or(StoreError::Closed)?;
            sender.send(job).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a pooled reader connection, on the calling thread (blocking).
    fn with_reader<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        let lite = match &self.engine {
            Engine::Lite(l) => l,
            Engine::Pg(pool) => return pool.read(f),
        };
        let conn = lite.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&lite.path)?,
        };
        let out = f(&conn);
        if let Ok(mut r) = lite.readers.lock()
            && r.len() < READERS
        {
            r.push(conn);
        }
        out
    }

    /// A read that may take a while (many rows, blob files): off the async threads.
    async fn read<T: Send + 'static>(self: &Arc<Self>, f: impl FnOnce(&Db) -> Result<T> + Send + 'static) -> Result<T> {
        let permit = match &self.engine {
            Engine::Pg(pool) => Some(Arc::clone(&pool.permits).acquire_owned().await.map_err(|_| StoreError::Closed)?),
            Engine::Lite(_) => None,
        };
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let out = this.with_reader(f);
            drop(permit);
            out
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }

    /// A point lookup by key: microseconds in SQLite's WAL mode, where readers never
    /// wait for the writer, so it runs inline rather than paying for a thread hand-off;
    /// a network round trip on PostgreSQL, so a read there.
    async fn lookup<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self.engine {
            Engine::Lite(_) => self.with_reader(f),
            Engine::Pg(_) => self.read(f).await,
        }
    }
}

/// A fresh random UUID (version 4) for a new directory entry.
fn random_uuid() -> [u8; 16] {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = (u128::from(now() as u64) << 64 | u128::from(std::process::id())).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

/// A delivery with its summary and envelope already serialized (outside the writer).
struct PreparedDelivery {
    d: Delivery,
    summary: String,
    envelope: Option<String>,
}

fn prepare_delivery(d: Delivery) -> Result<PreparedDelivery> {
    let summary = serde_json::to_string(&d.body.summary).map_err(|e| StoreError::Invalid(format!("summary: {e}")))?;
    let envelope = match &d.envelope {
        Some(e) => Some(serde_json::to_string(e).map_err(|e| StoreError::Invalid(format!("envelope: {e}")))?),
        None => None,
    };
    Ok(PreparedDelivery { d, summary, envelope })
}

/// Refuses a write that would take an account over its storage quota (0: none).
fn check_quota(c: &Db, account: AccountId, adding: i64) -> Result<()> {
    let (login, quota, used): (String, i64, i64) = c
        .prepare_cached("SELECT login, quota, used FROM accounts WHERE id = ?1")?
        .query_row([account], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if quota > 0 && used.saturating_add(adding) > quota {
        return Err(StoreError::OverQuota(login));
    }
    Ok(())
}

/// One delivery inside the writer's transaction: the body once, then one message per
/// target and one queue entry per remote recipient.
fn deliver_in(c: &Db, p: &PreparedDelivery) -> Result<(Vec<Delivered>, Vec<Change>)> {
    let d = &p.d;
    let size = d.body.size as i64;
    if d.enforce_quota {
        for t in &d.targets {
            check_quota(c, t.account, size)?;
        }
    }
    let refs = (d.targets.len() + d.relay.len()) as i64;
    c.prepare_cached(
        "INSERT INTO blobs (hash, size, refs, summary, data, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(hash) DO UPDATE SET refs = blobs.refs + excluded.refs",
    )?
    .execute(params![d.body.hash, size, refs, p.summary, d.body.inline.as_deref(), d.body.text])?;
    let delivery_id = match &p.envelope {
        Some(env) => {
            let id: i64 = c
                .prepare_cached("INSERT INTO deliveries (envelope, received) VALUES (?1, ?2) RETURNING id")?
                .query_row(params![env, now()], |r| r.get(0))?;
            Some(id)
        }
        None => None,
    };
    let mail_from = d.envelope.as_ref().map(|e| e.mail_from.clone()).unwrap_or_default();
    for rcpt in &d.relay {
        let t = now();
        c.prepare_cached(
            "INSERT INTO outbound (blob, mail_from, recipient, delivery, created, next_attempt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![d.body.hash, mail_from, rcpt, delivery_id, t])?;
    }
    let mut delivered = Vec::with_capacity(d.targets.len());
    let mut changes = Vec::with_capacity(d.targets.len());
    for t in &d.targets {
        let name = canonical_mailbox_name(&t.mailbox);
        let mb: Option<(MailboxId, i64, i64, i64)> = c
            .prepare_cached(
                "SELECT id, uidvalidity, uidnext, highestmodseq FROM mailboxes WHERE account = ?1 AND name = ?2 FOR UPDATE",
            )?
            .query_row(params![t.account, name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let (mailbox, uidvalidity, uid, modseq) = match mb {
            Some((id, v, n, m)) => (id, v, n, m + 1),
            None => {
                let mb = match public_queue_target(c, t.account, &name)? {
                    Some(made) => made,
                    // Another node made it meanwhile: the delivery runs again and finds it.
                    None => insert_mailbox(c, t.account, &name, None).map_err(|e| match e {
                        StoreError::Exists(m) if c.is_pg() => StoreError::Conflict(m),
                        e => e,
                    })?,
                };
                (mb.id, i64::from(mb.uidvalidity), i64::from(mb.uidnext), mb.highestmodseq as i64 + 1)
            }
        };
        if uid >= i64::from(u32::MAX) {
            return Err(StoreError::Invalid(format!("mailbox {name} has run out of UIDs")));
        }
        c.prepare_cached(
            "INSERT INTO messages (mailbox, uid, modseq, flags, keywords, internal_date, size, blob, delivery, saved)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            mailbox,
            uid,
            modseq,
            i64::from(d.flags.0),
            keywords_to_text(&d.keywords),
            d.internal_date,
            size,
            d.body.hash,
            delivery_id,
            now()
        ])?;
        c.prepare_cached(
            "UPDATE mailboxes SET uidnext = ?2, highestmodseq = ?3, messages = messages + 1 WHERE id = ?1",
        )?
        .execute(params![mailbox, uid + 1, modseq])?;
        c.prepare_cached("UPDATE accounts SET used = used + ?2 WHERE id = ?1")?.execute(params![t.account, size])?;
        delivered.push(Delivered {
            account: t.account,
            mailbox,
            uidvalidity: uidvalidity as u32,
            uid: uid as u32,
            modseq: modseq as u64,
        });
        changes.push(Change::Appended { account: t.account, mailbox, uid: uid as u32, modseq: modseq as u64 });
    }
    Ok((delivered, changes))
}

/// A replicated domain's directory is its provider's: only replication writes it.
/// `names` are the addresses or domains a write touches.
fn replica_guard(c: &Db, privileged: bool, names: &[&str]) -> Result<()> {
    if privileged {
        return Ok(());
    }
    let mut stmt = c.prepare_cached("SELECT value FROM sync_values WHERE key = 'replica.domain.' || ?1")?;
    for name in names {
        let domain = name.rsplit('@').next().unwrap_or_default().to_ascii_lowercase();
        if let Some(provider) = stmt.query_row([&domain], |r| r.get::<_, String>(0)).optional()? {
            return Err(StoreError::ReadOnly(provider));
        }
    }
    Ok(())
}

/// What a new account's writes touch: its login and extra addresses.
fn new_account_names(new: &NewAccount) -> Vec<&str> {
    std::iter::once(new.login.as_str()).chain(new.addresses.iter().map(String::as_str)).collect()
}

/// The address book a contact is in ("" when there is no such contact).
fn contact_domain(c: &Db, address: &str) -> Result<String> {
    Ok(c.query_row("SELECT domain FROM contacts WHERE address = ?1", [address], |r| r.get(0))
        .optional()?
        .unwrap_or_default())
}

fn run_in_savepoint<T>(conn: &Db, f: impl FnOnce(&Db) -> Result<(T, Vec<Change>)>) -> Result<(T, Vec<Change>)> {
    conn.prepare_cached("SAVEPOINT job")?.execute(())?;
    let out = f(conn);
    match &out {
        Ok(_) => conn.prepare_cached("RELEASE job")?.execute(())?,
        Err(_) => conn.execute_batch("ROLLBACK TO job; RELEASE job").map(|_| 0)?,
    };
    out
}

/// Marks a committed directory change for every process on this store. Written in
/// place so readers keep one open file and pay one `pread` per check; a torn read only
/// makes a reader drop its cache once more than needed.
fn bump_stamp(stamp: &std::fs::File) {
    use std::os::unix::fs::FileExt;
    let mut v = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut v)).is_err() {
        v = (now() as u64 ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    if let Err(e) = stamp.write_at(format!("{:016x}", u64::from_le_bytes(v)).as_bytes(), 0) {
        tracing::warn!("store: updating directory.version: {e}");
    }
}

/// WAL frames (4 KiB pages) past which the writer finishes a checkpoint itself, so
/// that the log starts over.
const WAL_RESTART_FRAMES: i64 = 4096;

/// Copies the WAL into the database in the background (PASSIVE: never blocks the
/// writer or readers), every 200 ms while the store is open. Under steady writes the
/// copy never catches up with the end of the log, so the log would only grow (and
/// each commit append to new file space): past `WAL_RESTART_FRAMES` it asks the
/// writer to copy the rest between two commits, after which the log restarts.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>, restart: &std::sync::atomic::AtomicBool) {
    loop {
        match stop.recv_timeout(std::time::Duration::from_millis(200)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |r| r.get::<_, i64>(1)) {
                    Ok(frames) if frames >= WAL_RESTART_FRAMES => {
                        restart.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("store: checkpoint: {e}"),
                }
            }
            _ => return,
        }
    }
}

/// Where the writer publishes committed changes.
#[derive(Clone)]
struct Buses {
    all: broadcast::Sender<Change>,
    mailboxes: Arc<Mutex<HashMap<MailboxId, broadcast::Sender<Change>>>>,
}

impl Buses {
    fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        {
            let mut per = self.mailboxes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for change in &changes {
                if let Some(mb) = change.mailbox()
                    && let Some(tx) = per.get(&mb)
                    && tx.send(change.clone()).is_err()
                {
                    per.remove(&mb);
                }
            }
        }
        for change in changes {
            let _ = self.all.send(change);
        }
    }
}

fn writer_loop(
    conn: Db,
    rx: mpsc::Receiver<Job>,
    bus: Buses,
    stamp: &std::fs::File,
    version: &VersionCache,
    restart: &std::sync::atomic::AtomicBool,
) {
    while let Ok(first) = rx.recv() {
        // No frame is added while the writer copies the tail: the next commit, finding
        // the log fully copied, writes from its start again.
        if restart.swap(false, std::sync::atomic::Ordering::Relaxed)
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |_| Ok(()))
        {
            tracing::warn!("store: checkpoint: {e}");
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let jobs_len = jobs.len();
        let started = std::time::Instant::now();
        let begin = conn.execute_batch("BEGIN IMMEDIATE");
        let mut finishers = Vec::with_capacity(jobs.len());
        let commit = match begin {
            Ok(()) => {
                for job in jobs {
                    finishers.push(job(&conn));
                }
                conn.execute_batch("COMMIT")
            }
            Err(e) => Err(e),
        };
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        } else {
            // One COMMIT in WAL mode with synchronous=FULL is one fsync of the log.
            metrics::histogram!("agora_store_commit_duration_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("agora_store_fsyncs_total").increment(1);
            metrics::counter!("agora_store_transactions_total").increment(jobs_len as u64);
        }
        // A failed BEGIN means no job ran: their replies go out as errors below.
        if finishers.is_empty() {
            tracing::error!("store: begin transaction failed: {:?}", commit);
            continue;
        }
        let mut directory_changed = false;
        let mut replies = Vec::with_capacity(finishers.len());
        let mut changes = Vec::new();
        for fin in finishers {
            let result = match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Invalid(format!("commit failed: {e}"))),
            };
            let (c, reply) = fin(result);
            directory_changed |= c.contains(&Change::DirectoryChanged);
            changes.extend(c);
            replies.push(reply);
        }
        // Whoever sees a reply must also see the stamp and the changes it made.
        if directory_changed {
            bump_stamp(stamp);
            version.local.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        bus.publish(changes);
        for reply in replies {
            reply();
        }
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

fn domain_from_row(r: &Row<'_>) -> Result<Domain> {
    Ok(Domain { name: r.get(0)?, created: r.get(1)?, mta_sts_mode: r.get(2)?, x400: r.get(3)? })
}

fn domain_of(address: &str) -> Result<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| StoreError::Invalid(format!("{address} is not a full address")))
}

fn require_account(conn: &Db, account: AccountId) -> Result<()> {
    let found: Option<i64> =
        conn.prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?.query_row([account], |r| r.get(0)).optional()?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("account {account}"))),
    }
}

fn require_domain(conn: &Db, domain: &str) -> Result<()> {
    let found: Option<i64> =
        conn.prepare_cached("SELECT 1 FROM domains WHERE name = ?1")?.query_row([domain], |r| r.get(0)).optional()?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("domain {domain}"))),
    }
}

fn claim_address(conn: &Db, address: &str, kind: &str, account: Option<AccountId>) -> Result<()> {
    let domain = domain_of(address)?;
    require_domain(conn, domain)?;
    let n = conn.execute(
        "INSERT INTO addresses (address, domain, kind, account) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        params![address, domain, kind, account],
    )?;
    if n == 0 {
        return Err(StoreError::Exists(format!("address {address}")));
    }
    Ok(())
}

fn address_kind(conn: &Db, address: &str) -> Result<Option<(String, Option<AccountId>)>> {
    conn.query_row("SELECT kind, account FROM addresses WHERE address = ?1", [address], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

const ACCOUNT_COLS: &str =
    "id, login, display_name, password_hash, quota, role, created, used, scram, profile, uuid, changed, home";

/// A stored UUID; a missing or short one (never written so) reads as zeros.
fn uuid_of(v: Option<Vec<u8>>) -> [u8; 16] {
    v.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()).unwrap_or_default()
}

fn account_from_row(conn: &Db, r: &Row<'_>) -> Result<Account> {
    let id: i64 = r.get(0)?;
    let login: String = r.get(1)?;
    let mut stmt =
        conn.prepare_cached("SELECT address FROM addresses WHERE account = ?1 AND address != ?2 ORDER BY address")?;
    let addresses = stmt.query_map(params![id, login], |r| r.get(0))?.collect::<Result<Vec<String>>>()?;
    account_with(r, addresses)
}

/// An account row with its extra addresses, read by the caller.
fn account_with(r: &Row<'_>, addresses: Vec<String>) -> Result<Account> {
    let id: i64 = r.get(0)?;
    let login: String = r.get(1)?;
    let role: String = r.get(5)?;
    Ok(Account {
        id,
        login,
        display_name: r.get(2)?,
        password_hash: r.get(3)?,
        scram: r.get(8)?,
        quota: r.get::<_, i64>(4)?.max(0) as u64,
        role: Role::parse(&role).unwrap_or(Role::User),
        created: r.get(6)?,
        used: r.get::<_, i64>(7)?.max(0) as u64,
        addresses,
        profile: Profile::from_json(&r.get::<_, String>(9)?),
        uuid: uuid_of(r.get(10)?),
        changed: r.get(11)?,
        home: r.get(12)?,
    })
}

fn query_account(conn: &Db, where_: &str, arg: &dyn crate::db::ToValue) -> Result<Option<Account>> {
    let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE {where_}");
    conn.prepare_cached(&sql)?.query_row([arg], |r| account_from_row(conn, r)).optional()
}

const QUEUE_COLS: &str =
    "id, blob, mail_from, recipient, created, attempts, next_attempt, last_error, held, delivery, warned";

fn queued_from_row(r: &Row<'_>) -> Result<Queued> {
    Ok(Queued {
        id: r.get(0)?,
        blob: r.get(1)?,
        mail_from: r.get(2)?,
        recipient: r.get(3)?,
        created: r.get(4)?,
        attempts: r.get::<_, i64>(5)? as u32,
        next_attempt: r.get(6)?,
        last_error: r.get(7)?,
        held: r.get(8)?,
        delivery: r.get(9)?,
        warned: r.get(10)?,
    })
}

const REF_COLS: &str = "uid, modseq, flags, keywords, internal_date, size, blob, saved";

fn ref_from_row(r: &Row<'_>) -> Result<MessageRef> {
    Ok(MessageRef {
        uid: r.get::<_, i64>(0)? as u32,
        modseq: r.get::<_, i64>(1)? as u64,
        flags: Flags(r.get::<_, i64>(2)? as u8),
        keywords: keywords_from_text(&r.get::<_, String>(3)?),
        internal_date: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        blob: r.get(6)?,
        saved: r.get(7)?,
    })
}

/// A message with its summary, from `messages m JOIN blobs b`.
const META_COLS: &str = "m.uid, m.modseq, m.flags, m.keywords, m.internal_date, m.size, m.blob, b.summary, m.saved";

type MetaRow = (i64, i64, i64, String, i64, i64, String, String, i64);

fn meta_row(r: &Row<'_>) -> Result<MetaRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

/// Parsed summaries by body hash: a body never changes, so neither does its summary,
/// and FETCH of ENVELOPE or BODYSTRUCTURE need not parse the stored JSON again.
struct Summaries {
    map: std::collections::HashMap<String, (Arc<MessageSummary>, usize)>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
}

/// How much parsed summary is kept, counted by the size of the stored JSON (the oldest
/// go first): a few large part trees cannot pin much memory.
const SUMMARIES_KEPT: usize = 32 << 20;

fn parsed_summary(blob: &str, json: &str) -> Result<Arc<MessageSummary>> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Summaries>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        std::sync::Mutex::new(Summaries { map: Default::default(), order: Default::default(), bytes: 0 })
    });
    if let Some((s, _)) = cache.lock().unwrap_or_else(|e| e.into_inner()).map.get(blob) {
        return Ok(Arc::clone(s));
    }
    let parsed: MessageSummary =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("summary of {blob}: {e}")))?;
    let parsed = Arc::new(parsed);
    let weight = json.len() + blob.len();
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if weight <= SUMMARIES_KEPT / 8 && c.map.insert(blob.to_string(), (Arc::clone(&parsed), weight)).is_none() {
        c.order.push_back(blob.to_string());
        c.bytes += weight;
        while c.bytes > SUMMARIES_KEPT {
            let Some(old) = c.order.pop_front() else { break };
            if let Some((_, w)) = c.map.remove(&old) {
                c.bytes -= w;
            }
        }
    }
    Ok(parsed)
}

fn meta_from_row(mailbox: MailboxId, row: MetaRow) -> Result<MessageMeta> {
    let (uid, modseq, flags, keywords, internal_date, size, blob, summary, saved) = row;
    let summary = parsed_summary(&blob, &summary)?;
    Ok(MessageMeta {
        mailbox,
        uid: uid as u32,
        modseq: modseq as u64,
        flags: Flags(flags as u8),
        keywords: keywords_from_text(&keywords),
        internal_date,
        size: size as u64,
        blob,
        summary,
        saved,
    })
}

/// MAILBOX_COLS for a query where the mailboxes table is aliased `m`.
const MAILBOX_COLS_M: &str = "m.id, m.account, m.name, m.special_use, m.uidvalidity, m.uidnext, m.highestmodseq,
    EXISTS (SELECT 1 FROM subscriptions s WHERE s.account = m.account AND s.name = m.name),
    m.messages, m.recent_uid";

const MAILBOX_COLS: &str = "id, account, name, special_use, uidvalidity, uidnext, highestmodseq,
    EXISTS (SELECT 1 FROM subscriptions s WHERE s.account = mailboxes.account AND s.name = mailboxes.name),
    messages, recent_uid";

fn mailbox_from_row(r: &Row<'_>) -> Result<Mailbox> {
    let su: Option<String> = r.get(3)?;
    Ok(Mailbox {
        id: r.get(0)?,
        account: r.get(1)?,
        name: r.get(2)?,
        special_use: su.as_deref().and_then(SpecialUse::parse),
        uidvalidity: r.get::<_, i64>(4)? as u32,
        uidnext: r.get::<_, i64>(5)? as u32,
        highestmodseq: r.get::<_, i64>(6)? as u64,
        subscribed: r.get(7)?,
        messages: r.get::<_, i64>(8)? as u32,
        recent_uid: r.get::<_, i64>(9)? as u32,
    })
}

fn query_mailbox(conn: &Db, account: AccountId, name: &str) -> Result<Option<Mailbox>> {
    let sql = format!("SELECT {MAILBOX_COLS} FROM mailboxes WHERE account = ?1 AND name = ?2");
    conn.prepare_cached(&sql)?.query_row(params![account, name], mailbox_from_row).optional()
}

/// UIDVALIDITY must differ for a name re-created later: derive it from the clock, and
/// keep it strictly above every value handed out before in this store.
fn next_uidvalidity(conn: &Db) -> Result<u32> {
    let last: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'uidvalidity'", (), |r| r.get(0)).optional()?;
    let last: u32 = last.and_then(|v| v.parse().ok()).unwrap_or(0);
    let clock = (now() as u64 & 0xffff_ffff) as u32;
    let v = clock.max(last.wrapping_add(1)).max(1);
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [v.to_string()],
    )?;
    Ok(v)
}

fn insert_mailbox(conn: &Db, account: AccountId, name: &str, special_use: Option<SpecialUse>) -> Result<Mailbox> {
    let uidvalidity = next_uidvalidity(conn)?;
    let n = conn.execute(
        "INSERT INTO mailboxes (account, name, special_use, uidvalidity, uidnext, highestmodseq)
         VALUES (?1, ?2, ?3, ?4, 1, 1) ON CONFLICT DO NOTHING",
        params![account, name, special_use.map(|s| s.as_str()), uidvalidity],
    )?;
    if n == 0 {
        return Err(StoreError::Exists(format!("mailbox {name}")));
    }
    query_mailbox(conn, account, name)?.ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))
}

/// The organisation's own account, which owns the public folders; made on first use
/// (it cannot log in: its password hash is no hash).
fn public_owner(c: &Db) -> Result<AccountId> {
    let found: Option<AccountId> = c
        .query_row("SELECT id FROM accounts WHERE role = 'system' AND login = ?1", [PUBLIC_OWNER], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    let domain: Option<String> =
        c.query_row("SELECT name FROM domains ORDER BY created LIMIT 1", (), |r| r.get(0)).optional()?;
    let domain = domain.ok_or_else(|| StoreError::Invalid("add a domain before public folders".into()))?;
    c.query_row(
        "INSERT INTO accounts (login, domain, display_name, password_hash, role, created, uuid, changed)
         VALUES (?1, ?2, 'Public Folders', '!', 'system', ?3, ?4, ?3) RETURNING id",
        params![PUBLIC_OWNER, domain, now(), random_uuid()],
        |r| r.get(0),
    )
}

fn public_folder_path(path: &str) -> Result<String> {
    let path = path.trim_matches('/').to_string();
    if path.is_empty()
        || path.len() > 1024
        || path.split('/').any(|c| c.trim().is_empty())
        || path.contains(['\0', '\r', '\n', '*', '%'])
    {
        return Err(StoreError::Invalid(format!("{path:?} is not a folder path (names separated by /)")));
    }
    Ok(path)
}

const PUBLIC_COLS: &str =
    "m.id, m.name, p.newsgroup, p.address, p.moderated, p.anonymous_mail, p.expire_days, p.expire_count";

fn public_from_row(r: &Row<'_>) -> Result<PublicFolder> {
    Ok(PublicFolder {
        mailbox: r.get(0)?,
        path: r.get(1)?,
        newsgroup: r.get(2)?,
        address: r.get(3)?,
        moderated: r.get(4)?,
        anonymous_mail: r.get(5)?,
        expire_days: r.get::<_, i64>(6)? as u32,
        expire_count: r.get::<_, i64>(7)? as u32,
    })
}

fn query_public(c: &Db, path: &str) -> Result<Option<PublicFolder>> {
    let sql = format!(
        "SELECT {PUBLIC_COLS} FROM public_folders p JOIN mailboxes m ON m.id = p.mailbox
         JOIN accounts a ON a.id = m.account WHERE a.role = 'system' AND m.name = ?1"
    );
    c.prepare_cached(&sql)?.query_row([path], public_from_row).optional()
}

/// A uniqueness violation as "already exists" (naming what); other errors as they are.
fn constraint(e: StoreError, what: &str) -> StoreError {
    match e {
        StoreError::Constraint(_) => StoreError::Exists(what.to_string()),
        e => e,
    }
}

/// Makes a moderated folder's queue, or sets an existing one right: a subfolder hidden
/// from news and mail, open to exactly the folder's moderators (the entries holding x).
/// Returns its id when it was made now.
fn ensure_queue(c: &Db, owner: AccountId, folder: &PublicFolder) -> Result<Option<MailboxId>> {
    let path = folder.queue_path();
    let (id, made) = match query_mailbox(c, owner, &path)? {
        Some(m) => (m.id, false),
        None => (insert_mailbox(c, owner, &path, None)?.id, true),
    };
    c.execute(
        "INSERT INTO public_folders (mailbox) VALUES (?1)
         ON CONFLICT(mailbox) DO UPDATE SET newsgroup = NULL, address = NULL, moderated = 0",
        [id],
    )?;
    c.execute("DELETE FROM acl WHERE mailbox = ?1", [id])?;
    c.execute(
        "INSERT INTO acl (mailbox, identifier, rights)
         SELECT ?1, identifier, rights FROM acl WHERE mailbox = ?2 AND rights LIKE '%x%'",
        params![id, folder.mailbox],
    )?;
    Ok(made.then_some(id))
}

/// A delivery to a missing mailbox of the public folders' account: a moderated
/// folder's queue is made properly; any other public folder that is gone is an error
/// (never a plain mailbox outside the folder model).
fn public_queue_target(c: &Db, account: AccountId, name: &str) -> Result<Option<Mailbox>> {
    let system: bool = c
        .prepare_cached("SELECT role = 'system' FROM accounts WHERE id = ?1")?
        .query_row([account], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    if !system {
        return Ok(None);
    }
    let parent = name.strip_suffix(&format!("/{}", crate::MODERATION_QUEUE));
    match parent.map(|p| query_public(c, p)).transpose()?.flatten() {
        Some(folder) if folder.moderated => {
            ensure_queue(c, account, &folder)?;
            Ok(query_mailbox(c, account, name)?)
        }
        _ => Err(StoreError::NotFound(format!("public folder {name}"))),
    }
}

/// Whether a public folder path is a moderation queue's name (reserved for queues).
fn is_queue_path(path: &str) -> bool {
    path.rsplit('/').next() == Some(crate::MODERATION_QUEUE) && path.contains('/')
}

/// The moderation queue of the public folder `mailbox`, when it is moderated.
fn queue_of(c: &Db, mailbox: MailboxId) -> Result<Option<MailboxId>> {
    let sql = format!(
        "SELECT {PUBLIC_COLS} FROM public_folders p JOIN mailboxes m ON m.id = p.mailbox WHERE p.mailbox = ?1 AND p.moderated != 0"
    );
    let Some(folder) = c.prepare_cached(&sql)?.query_row([mailbox], public_from_row).optional()? else {
        return Ok(None);
    };
    Ok(query_public(c, &folder.queue_path())?.map(|q| q.mailbox))
}

/// Deletes a mailbox with its messages (bodies lose a reference, the quota gets the
/// space back); returns the body files to unlink after commit.
fn delete_mailbox_rows(c: &Db, account: AccountId, mailbox: MailboxId) -> Result<Vec<String>> {
    c.execute(
        "UPDATE blobs SET refs = refs - (SELECT count(*) FROM messages m WHERE m.mailbox = ?1 AND m.blob = blobs.hash)
         WHERE hash IN (SELECT blob FROM messages WHERE mailbox = ?1)",
        [mailbox],
    )?;
    c.execute(
        "UPDATE accounts SET used = greatest(0, used - (SELECT coalesce(sum(size), 0) FROM messages WHERE mailbox = ?1))
         WHERE id = ?2",
        params![mailbox, account],
    )?;
    c.execute("DELETE FROM messages WHERE mailbox = ?1", [mailbox])?;
    c.execute("DELETE FROM mailboxes WHERE id = ?1", [mailbox])?;
    collect_garbage(c)
}

/// Mailboxes with an ACL entry for any of `identifiers`, rights joined: other users'
/// mailboxes (`Some(reader)`: not the reader's own, not the organisation's), or the
/// public folders (`None`).
fn acl_mailboxes(c: &Db, reader: Option<AccountId>, identifiers: &[String]) -> Result<Vec<SharedMailbox>> {
    let which = if reader.is_some() {
        "m.account != ?1 AND a.role != 'system'"
    } else {
        "CAST(?1 AS BIGINT) IS NULL AND a.role = 'system'"
    };
    let sql = format!(
        "SELECT {MAILBOX_COLS_M}, a.login, acl.identifier, acl.rights
         FROM acl JOIN mailboxes m ON m.id = acl.mailbox JOIN accounts a ON a.id = m.account
         WHERE {which} AND acl.identifier = ?2"
    );
    let mut s = c.prepare_cached(&sql)?;
    let mut out: Vec<SharedMailbox> = Vec::new();
    for ident in identifiers {
        let rows = s.query_map(params![reader, ident], |r| {
            Ok((mailbox_from_row(r)?, r.get::<_, String>(10)?, r.get::<_, String>(12)?))
        })?;
        for row in rows {
            let (mailbox, owner, rights) = row?;
            match out.iter_mut().find(|x| x.mailbox.id == mailbox.id) {
                Some(x) => x.rights.push_str(&rights),
                None => out.push(SharedMailbox { mailbox, owner, rights }),
            }
        }
    }
    Ok(out)
}

fn keywords_to_text(k: &[String]) -> String {
    k.join(" ")
}

fn keywords_from_text(s: &str) -> Vec<String> {
    s.split(' ').filter(|k| !k.is_empty()).map(str::to_string).collect()
}

/// Drops blobs nobody references any more; returns file-backed ones to unlink after commit.
fn collect_garbage(conn: &Db) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("DELETE FROM blobs WHERE refs <= 0 RETURNING hash, data IS NULL")?;
    let rows = stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?;
    let mut files = Vec::new();
    for row in rows {
        let (hash, on_disk) = row?;
        if on_disk {
            files.push(hash);
        }
    }
    Ok(files)
}

fn remove_blob_files(blobs: &Option<Arc<BlobFiles>>, hashes: &[String]) {
    let Some(blobs) = blobs else { return };
    for h in hashes {
        if let Err(e) = blobs.remove(h) {
            tracing::warn!("store: removing blob file {h}: {e}");
        }
    }
}

#[async_trait]
impl DirectoryStore for Arc<SqlStore> {
    async fn add_domain(&self, name: &str) -> Result<Domain> {
        let privileged = crate::replicating();
        let name = name.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[name.as_str()])?;
            let created = now();
            let n = c.execute(
                "INSERT INTO domains (name, created) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![name, created],
            )?;
            if n == 0 {
                return Err(StoreError::Exists(format!("domain {name}")));
            }
            Ok((
                Domain { name: name.clone(), created, mta_sts_mode: "testing".into(), x400: String::new() },
                vec![Change::DirectoryChanged],
            ))
        })
        .await
    }

    async fn remove_domain(&self, name: &str) -> Result<()> {
        let privileged = crate::replicating();
        let name = name.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[name.as_str()])?;
            require_domain(c, &name)?;
            let used: i64 = c.query_row("SELECT count(*) FROM addresses WHERE domain = ?1", [&name], |r| r.get(0))?;
            if used > 0 {
                return Err(StoreError::Invalid(format!(
                    "domain {name} still has {used} address(es); remove its users, aliases and groups first"
                )));
            }
            let contacts: i64 =
                c.query_row("SELECT count(*) FROM contacts WHERE domain = ?1", [&name], |r| r.get(0))?;
            if contacts > 0 {
                return Err(StoreError::Invalid(format!(
                    "domain {name} still has {contacts} contact(s) in its address book; remove them first"
                )));
            }
            // The organisation's own account (public folders) moves to another domain.
            let system: i64 =
                c.query_row("SELECT count(*) FROM accounts WHERE role = 'system' AND domain = ?1", [&name], |r| {
                    r.get(0)
                })?;
            if system > 0 {
                let other: Option<String> = c
                    .query_row("SELECT name FROM domains WHERE name != ?1 ORDER BY created LIMIT 1", [&name], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let Some(other) = other else {
                    return Err(StoreError::Invalid(format!(
                        "domain {name} is the last one and the public folders need a domain; remove them first"
                    )));
                };
                c.execute("UPDATE accounts SET domain = ?2 WHERE role = 'system' AND domain = ?1", [&name, &other])?;
            }
            c.execute("DELETE FROM dns_records WHERE domain = ?1", [&name])?;
            c.execute("DELETE FROM dnssec_keys WHERE domain = ?1", [&name])?;
            c.execute("DELETE FROM domains WHERE name = ?1", [&name])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn domains(&self) -> Result<Vec<Domain>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT name, created, mta_sts_mode, x400 FROM domains ORDER BY name")?;
            let rows = stmt.query_map((), domain_from_row)?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn domain(&self, name: &str) -> Result<Option<Domain>> {
        let name = name.to_ascii_lowercase();
        self.lookup(move |c| {
            c.prepare_cached("SELECT name, created, mta_sts_mode, x400 FROM domains WHERE name = ?1")?
                .query_row([name], domain_from_row)
                .optional()
        })
        .await
    }

    async fn set_domain_x400(&self, domain: &str, space: &str) -> Result<()> {
        let (domain, space) = (domain.to_ascii_lowercase(), space.to_string());
        self.write(move |c| {
            require_domain(c, &domain)?;
            c.execute("UPDATE domains SET x400 = ?2 WHERE name = ?1", params![domain, space])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn set_mta_sts_mode(&self, domain: &str, mode: &str) -> Result<()> {
        if !["testing", "enforce", "none"].contains(&mode) {
            return Err(StoreError::Invalid(format!("MTA-STS mode {mode:?}: say testing, enforce or none")));
        }
        let (domain, mode) = (domain.to_ascii_lowercase(), mode.to_string());
        self.write(move |c| {
            require_domain(c, &domain)?;
            c.execute("UPDATE domains SET mta_sts_mode = ?2 WHERE name = ?1", params![domain, mode])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn add_web_session(&self, session: WebSession) -> Result<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO web_sessions (id, account, csrf, created, seen, address, agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    session.id,
                    session.account,
                    session.csrf,
                    session.created,
                    session.seen,
                    session.address,
                    session.agent
                ],
            )?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn web_session(&self, id: &str) -> Result<Option<WebSession>> {
        let id = id.to_string();
        self.lookup(move |c| {
            c.prepare_cached(&format!("{WEB_SESSION_SELECT} WHERE id = ?1"))?
                .query_row([&id], web_session_row)
                .optional()
        })
        .await
    }

    async fn touch_web_session(&self, id: &str, seen: i64) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.execute("UPDATE web_sessions SET seen = greatest(seen, ?2) WHERE id = ?1", params![id, seen])?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn web_sessions(&self, account: AccountId) -> Result<Vec<WebSession>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!("{WEB_SESSION_SELECT} WHERE account = ?1 ORDER BY created"))?;
            let rows = st.query_map([account], web_session_row)?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn remove_web_sessions(&self, account: AccountId, only: Option<&str>) -> Result<usize> {
        let only = only.map(str::to_string);
        self.write(move |c| {
            let n = match &only {
                Some(id) => {
                    c.execute("DELETE FROM web_sessions WHERE account = ?1 AND id = ?2", params![account, id])?
                }
                None => c.execute("DELETE FROM web_sessions WHERE account = ?1", [account])?,
            };
            Ok((n, Vec::new()))
        })
        .await
    }

    async fn expire_web_sessions(&self, idle_before: i64, created_before: i64) -> Result<usize> {
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM web_sessions WHERE seen < ?1 OR created < ?2",
                params![idle_before, created_before],
            )?;
            Ok((n, Vec::new()))
        })
        .await
    }

    async fn account_settings(&self, account: AccountId) -> Result<Vec<(String, String)>> {
        self.read(move |c| {
            let mut st =
                c.prepare_cached("SELECT name, value FROM account_settings WHERE account = ?1 ORDER BY name")?;
            let rows = st.query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn set_account_setting(&self, account: AccountId, name: &str, value: Option<&str>) -> Result<()> {
        let (name, value) = (name.to_string(), value.map(str::to_string));
        self.write(move |c| {
            match &value {
                Some(v) => c.execute(
                    "INSERT INTO account_settings (account, name, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (account, name) DO UPDATE SET value = excluded.value",
                    params![account, name, v],
                )?,
                None => {
                    c.execute("DELETE FROM account_settings WHERE account = ?1 AND name = ?2", params![account, name])?
                }
            };
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn settings_named(&self, name: &str) -> Result<Vec<(AccountId, String)>> {
        let name = name.to_string();
        self.read(move |c| {
            let mut st =
                c.prepare_cached("SELECT account, value FROM account_settings WHERE name = ?1 ORDER BY account")?;
            let rows = st.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn note_vacation_reply(&self, account: AccountId, sender: &str, now: i64, period: i64) -> Result<bool> {
        let sender = sender.to_lowercase();
        self.write(move |c| {
            let n = c.execute(
                "INSERT INTO vacation_replies (account, sender, sent) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account, sender) DO UPDATE SET sent = excluded.sent WHERE vacation_replies.sent <= ?4",
                params![account, sender, now, now - period],
            )?;
            Ok((n > 0, Vec::new()))
        })
        .await
    }

    async fn metadata(&self, account: AccountId, mailbox: MailboxId) -> Result<Vec<(String, Vec<u8>)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT entry, value FROM metadata WHERE account = ?1 AND mailbox = ?2 ORDER BY entry",
            )?;
            let rows = st.query_map(params![account, mailbox], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn set_metadata(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        changes: Vec<(String, Option<Vec<u8>>)>,
        max_entries: usize,
    ) -> Result<()> {
        self.write(move |c| {
            for (entry, value) in &changes {
                let entry = entry.to_lowercase();
                match value {
                    Some(v) => {
                        c.prepare_cached(
                            "INSERT INTO metadata (account, mailbox, entry, value) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (account, mailbox, entry) DO UPDATE SET value = excluded.value",
                        )?
                        .execute(params![account, mailbox, entry, v])?;
                    }
                    None => {
                        c.prepare_cached("DELETE FROM metadata WHERE account = ?1 AND mailbox = ?2 AND entry = ?3")?
                            .execute(params![account, mailbox, entry])?;
                    }
                }
            }
            let n: i64 = c
                .prepare_cached("SELECT count(*) FROM metadata WHERE account = ?1 AND mailbox = ?2")?
                .query_row(params![account, mailbox], |r| r.get(0))?;
            if n as usize > max_entries {
                // Rolled back with the rest of this write.
                return Err(StoreError::OverQuota(format!("more than {max_entries} entries")));
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn sieve_scripts(&self, account: AccountId) -> Result<Vec<SieveScriptInfo>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT name, active, octet_length(script) FROM sieve_scripts WHERE account = ?1 ORDER BY name",
            )?;
            let rows = st.query_map([account], |r| {
                Ok(SieveScriptInfo { name: r.get(0)?, active: r.get(1)?, size: r.get::<_, i64>(2)?.max(0) as u64 })
            })?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn sieve_script(&self, account: AccountId, name: &str) -> Result<Option<String>> {
        let name = name.to_string();
        self.lookup(move |c| {
            c.prepare_cached("SELECT script FROM sieve_scripts WHERE account = ?1 AND name = ?2")?
                .query_row(params![account, name], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn put_sieve_script(&self, account: AccountId, name: &str, script: &str) -> Result<()> {
        let (name, script) = (name.to_string(), script.to_string());
        self.write(move |c| {
            require_account(c, account)?;
            c.execute(
                "INSERT INTO sieve_scripts (account, name, script, updated) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, name) DO UPDATE SET script = excluded.script, updated = excluded.updated",
                params![account, name, script, now()],
            )?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn rename_sieve_script(&self, account: AccountId, from: &str, to: &str) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(move |c| {
            let exists = |name: &str| -> Result<bool> {
                Ok(c.prepare_cached("SELECT 1 FROM sieve_scripts WHERE account = ?1 AND name = ?2")?
                    .query_row(params![account, name], |_| Ok(()))
                    .optional()?
                    .is_some())
            };
            if !exists(&from)? {
                return Err(StoreError::NotFound(format!("Sieve script {from}")));
            }
            if exists(&to)? {
                return Err(StoreError::Exists(format!("Sieve script {to}")));
            }
            c.execute(
                "UPDATE sieve_scripts SET name = ?3, updated = ?4 WHERE account = ?1 AND name = ?2",
                params![account, from, to, now()],
            )?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn delete_sieve_script(&self, account: AccountId, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            let active: Option<bool> = c
                .prepare_cached("SELECT active FROM sieve_scripts WHERE account = ?1 AND name = ?2")?
                .query_row(params![account, name], |r| r.get(0))
                .optional()?;
            match active {
                None => Err(StoreError::NotFound(format!("Sieve script {name}"))),
                Some(true) => Err(StoreError::Invalid(format!("Sieve script {name} is active"))),
                Some(false) => {
                    c.execute("DELETE FROM sieve_scripts WHERE account = ?1 AND name = ?2", params![account, name])?;
                    Ok(((), Vec::new()))
                }
            }
        })
        .await
    }

    async fn activate_sieve_script(&self, account: AccountId, name: Option<&str>) -> Result<()> {
        let name = name.map(str::to_string);
        self.write(move |c| {
            // The old one off first: the index allows one active script per account.
            c.execute("UPDATE sieve_scripts SET active = 0 WHERE account = ?1 AND active = 1", [account])?;
            if let Some(name) = &name {
                let n = c.execute(
                    "UPDATE sieve_scripts SET active = 1 WHERE account = ?1 AND name = ?2",
                    params![account, name],
                )?;
                if n == 0 {
                    // The savepoint is rolled back: the old one stays active.
                    return Err(StoreError::NotFound(format!("Sieve script {name}")));
                }
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn active_sieve_script(&self, account: AccountId) -> Result<Option<(String, String)>> {
        self.lookup(move |c| {
            c.prepare_cached("SELECT name, script FROM sieve_scripts WHERE account = ?1 AND active = 1")?
                .query_row([account], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .await
    }

    async fn accounts_with_active_sieve(&self) -> Result<Vec<AccountId>> {
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT account FROM sieve_scripts WHERE active = 1 ORDER BY account")?;
            let rows = st.query_map((), |r| r.get(0))?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn noted_since(&self, account: AccountId, key: &str, since: i64) -> Result<bool> {
        let key = key.to_lowercase();
        self.read(move |c| {
            let n: Option<i64> = c
                .prepare_cached("SELECT 1 FROM vacation_replies WHERE account = ?1 AND sender = ?2 AND sent > ?3")?
                .query_row(params![account, key, since], |r| r.get(0))
                .optional()?;
            Ok(n.is_some())
        })
        .await
    }

    async fn create_account(&self, new: NewAccount) -> Result<Account> {
        let privileged = crate::replicating();
        self.write(move |c| {
            replica_guard(c, privileged, &new_account_names(&new))?;
            insert_account(c, new.clone())
        })
        .await
    }

    async fn set_directory_uuid(&self, address: &str, uuid: [u8; 16]) -> Result<()> {
        let address = address.to_ascii_lowercase();
        let privileged = crate::replicating();
        self.write(move |c| {
            replica_guard(c, privileged, &[address.as_str()])?;
            let mut n = 0;
            for sql in [
                "UPDATE accounts SET uuid = ?2 WHERE login = ?1",
                "UPDATE groups SET uuid = ?2 WHERE address = ?1",
                "UPDATE contacts SET uuid = ?2 WHERE address = ?1",
            ] {
                n += c.execute(sql, params![address, &uuid[..]])?;
            }
            if n == 0 {
                return Err(StoreError::NotFound(address.clone()));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn create_accounts(&self, batch: Vec<NewAccount>) -> Result<Vec<Result<Account>>> {
        let privileged = crate::replicating();
        self.write(move |c| {
            let mut out = Vec::with_capacity(batch.len());
            let mut changes = Vec::new();
            for new in batch.iter().cloned() {
                // Each account in its own savepoint: one refused leaves the others.
                if let Err(e) = replica_guard(c, privileged, &new_account_names(&new)) {
                    out.push(Err(e));
                    continue;
                }
                c.execute_batch("SAVEPOINT one_account")?;
                match insert_account(c, new) {
                    Ok((acc, ch)) => {
                        c.execute_batch("RELEASE one_account")?;
                        changes.extend(ch);
                        out.push(Ok(acc));
                    }
                    // A conflict with another node is the whole write's: it runs again.
                    Err(StoreError::Conflict(m)) => return Err(StoreError::Conflict(m)),
                    Err(e) => {
                        c.execute_batch("ROLLBACK TO one_account; RELEASE one_account")?;
                        out.push(Err(e));
                    }
                }
            }
            changes.dedup_by(|a, b| matches!((a, b), (Change::DirectoryChanged, Change::DirectoryChanged)));
            Ok((out, changes))
        })
        .await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        self.lookup(move |c| query_account(c, "id = ?1", &id)).await
    }

    async fn account_by_login(&self, login: &str) -> Result<Option<Account>> {
        let login = login.to_ascii_lowercase();
        self.lookup(move |c| query_account(c, "login = ?1", &login)).await
    }

    async fn accounts(&self, domain: Option<&str>) -> Result<Vec<Account>> {
        let domain = domain.map(|d| d.to_ascii_lowercase());
        self.read(move |c| {
            let sql = format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE role != 'system' AND (CAST(?1 AS TEXT) IS NULL OR domain = ?1) ORDER BY login"
            );
            // Every extra address in one pass, not one query per account (the LDAP tree
            // reads every account at each rebuild).
            let mut extra: HashMap<i64, Vec<String>> = HashMap::new();
            let mut st = c.prepare(
                "SELECT a.account, a.address FROM addresses a JOIN accounts u ON u.id = a.account
                 WHERE a.address != u.login AND (CAST(?1 AS TEXT) IS NULL OR u.domain = ?1) ORDER BY a.address",
            )?;
            let mut rows = st.query([&domain])?;
            while let Some(r) = rows.next()? {
                extra.entry(r.get(0)?).or_default().push(r.get(1)?);
            }
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([domain], |r| {
                let id: i64 = r.get(0)?;
                account_with(r, extra.remove(&id).unwrap_or_default())
            })?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn remove_account(&self, login: &str) -> Result<()> {
        let privileged = crate::replicating();
        let login = login.to_ascii_lowercase();
        let blobs = self.blobs.clone();
        let files = self
            .write(move |c| {
                replica_guard(c, privileged, &[login.as_str()])?;
                let id: AccountId = c
                    .query_row("SELECT id FROM accounts WHERE login = ?1", [&login], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound(format!("user {login}")))?;
                c.execute(
                    "UPDATE blobs SET refs = refs - (
                        SELECT count(*) FROM messages m JOIN mailboxes b ON m.mailbox = b.id
                        WHERE b.account = ?1 AND m.blob = blobs.hash)
                     WHERE hash IN (SELECT m.blob FROM messages m JOIN mailboxes b ON m.mailbox = b.id
                                    WHERE b.account = ?1)",
                    [id],
                )?;
                let mailboxes: Vec<MailboxId> = {
                    let mut s = c.prepare("SELECT id FROM mailboxes WHERE account = ?1")?;
                    s.query_map([id], |r| r.get(0))?.collect::<Result<_>>()?
                };
                c.execute("DELETE FROM messages WHERE mailbox IN (SELECT id FROM mailboxes WHERE account = ?1)", [id])?;
                c.execute("DELETE FROM acl WHERE identifier = (SELECT login FROM accounts WHERE id = ?1)", [id])?;
                c.execute("DELETE FROM accounts WHERE id = ?1", [id])?;
                let files = collect_garbage(c)?;
                let mut changes: Vec<Change> =
                    mailboxes.into_iter().map(|m| Change::MailboxDeleted { account: id, mailbox: m }).collect();
                changes.push(Change::DirectoryChanged);
                Ok((files, changes))
            })
            .await?;
        remove_blob_files(&blobs, &files);
        Ok(())
    }

    async fn set_password(&self, login: &str, hash: &str, scram: &str) -> Result<()> {
        let privileged = crate::replicating();
        let login = login.to_ascii_lowercase();
        let (hash, scram) = (hash.to_string(), scram.to_string());
        self.write(move |c| {
            replica_guard(c, privileged, &[login.as_str()])?;
            // A new password makes any NT hash stale: NTLM stays on, waiting for the
            // hash of the new password (kept by whoever knows it, or at the next login).
            let n = c.execute(
                "UPDATE accounts SET password_hash = ?1, scram = ?2, changed = ?4,
                     ntlm = CASE WHEN ntlm IS NULL THEN NULL ELSE '' END
                 WHERE login = ?3",
                params![hash, scram, login, now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {login}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn set_totp(&self, login: &str, secret: Option<&str>) -> Result<()> {
        let (login, secret) = (login.to_ascii_lowercase(), secret.unwrap_or("").to_string());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE accounts SET totp = ?1, totp_step = 0, changed = ?3 WHERE login = ?2",
                params![secret, login, now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {login}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn totp(&self, account: AccountId) -> Result<Option<(String, i64)>> {
        self.lookup(move |c| {
            Ok(c.prepare_cached("SELECT totp, totp_step FROM accounts WHERE id = ?1")?
                .query_row([account], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .optional()?
                .filter(|(secret, _)| !secret.is_empty()))
        })
        .await
    }

    async fn use_totp_step(&self, account: AccountId, step: i64) -> Result<bool> {
        self.write(move |c| {
            let n = c.execute(
                "UPDATE accounts SET totp_step = ?2 WHERE id = ?1 AND totp_step < ?2 AND totp != ''",
                params![account, step],
            )?;
            Ok((n == 1, Vec::new()))
        })
        .await
    }

    async fn set_ntlm(&self, login: &str, state: Option<&str>) -> Result<()> {
        let (login, state) = (login.to_ascii_lowercase(), state.map(str::to_string));
        self.write(move |c| {
            let n = c.execute(
                "UPDATE accounts SET ntlm = ?1, changed = ?3 WHERE login = ?2",
                params![state.clone(), login, now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {login}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn ntlm(&self, account: AccountId) -> Result<Option<String>> {
        self.lookup(move |c| {
            Ok(c.prepare_cached("SELECT ntlm FROM accounts WHERE id = ?1")?
                .query_row([account], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten())
        })
        .await
    }

    async fn set_quota(&self, login: &str, quota: u64) -> Result<()> {
        let login = login.to_ascii_lowercase();
        self.write(move |c| {
            let n = c.execute(
                "UPDATE accounts SET quota = ?1, changed = ?3 WHERE login = ?2",
                params![quota.min(i64::MAX as u64) as i64, login, now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {login}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn add_account_address(&self, login: &str, address: &str) -> Result<()> {
        let privileged = crate::replicating();
        let login = login.to_ascii_lowercase();
        let address = address.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[login.as_str(), address.as_str()])?;
            let id: AccountId = c
                .query_row("SELECT id FROM accounts WHERE login = ?1", [&login], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("user {login}")))?;
            claim_address(c, &address, "account", Some(id))?;
            c.execute("UPDATE accounts SET changed = ?1 WHERE id = ?2", params![now(), id])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn add_alias(&self, address: &str, target: &str) -> Result<()> {
        let privileged = crate::replicating();
        let address = address.to_ascii_lowercase();
        let target = target.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[address.as_str()])?;
            match address_kind(c, &address)? {
                None => claim_address(c, &address, "alias", None)?,
                Some((kind, _)) if kind == "alias" => {}
                Some((kind, _)) => {
                    return Err(StoreError::Exists(format!("address {address} (a {kind})")));
                }
            }
            let n = c.execute(
                "INSERT INTO alias_targets (address, target) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![address, target],
            )?;
            if n == 0 {
                return Err(StoreError::Exists(format!("alias {address} -> {target}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn remove_alias(&self, address: &str) -> Result<()> {
        let privileged = crate::replicating();
        let address = address.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[address.as_str()])?;
            let n = c.execute("DELETE FROM addresses WHERE address = ?1 AND kind = 'alias'", [&address])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {address}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn create_group(&self, address: &str, display_name: &str) -> Result<()> {
        let privileged = crate::replicating();
        let address = address.to_ascii_lowercase();
        let display_name = display_name.to_string();
        self.write(move |c| {
            replica_guard(c, privileged, &[address.as_str()])?;
            claim_address(c, &address, "group", None)?;
            c.execute(
                "INSERT INTO groups (address, display_name, uuid, created, changed)
                 VALUES (?1, ?2, ?4, ?3, ?3)",
                params![address, display_name, now(), random_uuid()],
            )?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn remove_group(&self, address: &str) -> Result<()> {
        let privileged = crate::replicating();
        let address = address.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[address.as_str()])?;
            let n = c.execute("DELETE FROM addresses WHERE address = ?1 AND kind = 'group'", [&address])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("group {address}")));
            }
            c.execute("DELETE FROM acl WHERE identifier = ?1", [&address])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn add_group_member(&self, group: &str, member: &str) -> Result<()> {
        let privileged = crate::replicating();
        let group = group.to_ascii_lowercase();
        let member = member.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[group.as_str()])?;
            match address_kind(c, &group)? {
                Some((k, _)) if k == "group" => {}
                _ => return Err(StoreError::NotFound(format!("group {group}"))),
            }
            let n = c.execute(
                "INSERT INTO group_members (grp, member) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![group, member],
            )?;
            if n == 0 {
                return Err(StoreError::Exists(format!("member {member} of {group}")));
            }
            c.execute("UPDATE groups SET changed = ?1 WHERE address = ?2", params![now(), group])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn remove_group_member(&self, group: &str, member: &str) -> Result<()> {
        let privileged = crate::replicating();
        let group = group.to_ascii_lowercase();
        let member = member.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[group.as_str()])?;
            let n = c.execute("DELETE FROM group_members WHERE grp = ?1 AND member = ?2", params![group, member])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("member {member} of {group}")));
            }
            c.execute("UPDATE groups SET changed = ?1 WHERE address = ?2", params![now(), group])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn groups(&self) -> Result<Vec<Group>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("SELECT {GROUP_COLS} FROM groups ORDER BY address"))?;
            let mut out = stmt.query_map((), group_from_row)?.collect::<Result<Vec<_>>>()?;
            for g in &mut out {
                g.members = group_members(c, &g.address)?;
            }
            Ok(out)
        })
        .await
    }

    async fn update_account(&self, login: &str, update: AccountUpdate) -> Result<()> {
        let privileged = crate::replicating();
        let login = login.to_ascii_lowercase();
        self.write(move |c| {
            // A role is this server's own (not replicated): it may change on a replica.
            if update.display_name.is_some() || update.profile.is_some() {
                replica_guard(c, privileged, &[login.as_str()])?;
            }
            let n = c.execute(
                "UPDATE accounts SET display_name = coalesce(?2, display_name), profile = coalesce(?3, profile),
                        role = coalesce(?4, role), changed = ?5
                 WHERE login = ?1",
                params![
                    login,
                    update.display_name,
                    update.profile.as_ref().map(|p| p.to_json()),
                    update.role.map(|r| r.as_str()),
                    now()
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {login}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn rename_account(&self, login: &str, new_login: &str) -> Result<()> {
        let privileged = crate::replicating();
        let login = login.to_ascii_lowercase();
        let new = new_login.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[login.as_str(), new.as_str()])?;
            let id: AccountId = c
                .query_row("SELECT id FROM accounts WHERE login = ?1", [&login], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("user {login}")))?;
            if new == login {
                return Ok(((), Vec::new()));
            }
            let domain = domain_of(&new)?.to_string();
            match address_kind(c, &new)? {
                // One of its own extra addresses becomes the login.
                Some((k, Some(owner))) if k == "account" && owner == id => {
                    c.execute("DELETE FROM addresses WHERE address = ?1", [&new])?;
                }
                Some(_) => return Err(StoreError::Exists(format!("address {new}"))),
                None => {}
            }
            claim_address(c, &new, "account", Some(id))?;
            c.execute("DELETE FROM addresses WHERE address = ?1", [&login])?;
            c.execute(
                "UPDATE accounts SET login = ?1, domain = ?2, changed = ?3 WHERE id = ?4",
                params![new, domain, now(), id],
            )?;
            c.execute(
                "DELETE FROM group_members WHERE member = ?2 AND grp IN (SELECT grp FROM group_members WHERE member = ?1)",
                params![new, login],
            )?;
            c.execute("UPDATE group_members SET member = ?1 WHERE member = ?2", params![new, login])?;
            c.execute(
                "DELETE FROM alias_targets WHERE target = ?2 AND address IN (SELECT address FROM alias_targets WHERE target = ?1)",
                params![new, login],
            )?;
            c.execute("UPDATE alias_targets SET target = ?1 WHERE target = ?2", params![new, login])?;
            c.execute(
                "DELETE FROM acl WHERE identifier = ?2 AND mailbox IN (SELECT mailbox FROM acl WHERE identifier = ?1)",
                params![new, login],
            )?;
            c.execute("UPDATE acl SET identifier = ?1 WHERE identifier = ?2", params![new, login])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn remove_account_address(&self, login: &str, address: &str) -> Result<()> {
        let privileged = crate::replicating();
        let login = login.to_ascii_lowercase();
        let address = address.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[login.as_str(), address.as_str()])?;
            if address == login {
                return Err(StoreError::Invalid(format!("{address} is the login of the account; rename it instead")));
            }
            let n = c.execute(
                "DELETE FROM addresses WHERE address = ?1 AND kind = 'account'
                   AND account = (SELECT id FROM accounts WHERE login = ?2)",
                params![address, login],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("address {address} of {login}")));
            }
            c.execute("UPDATE accounts SET changed = ?1 WHERE login = ?2", params![now(), login])?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn aliases(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT address, target FROM alias_targets ORDER BY address, target")?;
            let rows = stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            for row in rows {
                let (address, target) = row?;
                match out.last_mut() {
                    Some((a, targets)) if *a == address => targets.push(target),
                    _ => out.push((address, vec![target])),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn update_group(&self, address: &str, display_name: Option<String>, profile: Option<Profile>) -> Result<()> {
        let privileged = crate::replicating();
        let address = address.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[address.as_str()])?;
            let n = c.execute(
                "UPDATE groups SET display_name = coalesce(?2, display_name), profile = coalesce(?3, profile),
                        changed = ?4
                 WHERE address = ?1",
                params![address, display_name, profile.as_ref().map(|p| p.to_json()), now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("group {address}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn add_contact(&self, contact: Contact) -> Result<Contact> {
        let privileged = crate::replicating();
        self.write(move |c| {
            replica_guard(c, privileged, &[contact.domain.as_str()])?;
            let address = contact.address.to_ascii_lowercase();
            let domain = contact.domain.to_ascii_lowercase();
            domain_of(&address)?;
            require_domain(c, &domain)?;
            if address_kind(c, &address)?.is_some() {
                return Err(StoreError::Exists(format!("address {address} is served here; a contact is external")));
            }
            let n = c.execute(
                "INSERT INTO contacts (address, domain, display_name, profile, uuid, created, changed)
                 VALUES (?1, ?2, ?3, ?4, ?6, ?5, ?5) ON CONFLICT DO NOTHING",
                params![address, domain, contact.display_name, contact.profile.to_json(), now(), random_uuid()],
            )?;
            if n == 0 {
                return Err(StoreError::Exists(format!("contact {address}")));
            }
            let sql = format!("SELECT {CONTACT_COLS} FROM contacts WHERE address = ?1");
            let stored = c.query_row(&sql, [&address], contact_from_row)?;
            Ok((stored, vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn update_contact(
        &self,
        address: &str,
        display_name: Option<String>,
        profile: Option<Profile>,
    ) -> Result<()> {
        let privileged = crate::replicating();
        let address = address.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[contact_domain(c, &address)?.as_str()])?;
            let n = c.execute(
                "UPDATE contacts SET display_name = coalesce(?2, display_name), profile = coalesce(?3, profile),
                        changed = ?4
                 WHERE address = ?1",
                params![address, display_name, profile.as_ref().map(|p| p.to_json()), now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("contact {address}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn remove_contact(&self, address: &str) -> Result<()> {
        let privileged = crate::replicating();
        let address = address.to_ascii_lowercase();
        self.write(move |c| {
            replica_guard(c, privileged, &[contact_domain(c, &address)?.as_str()])?;
            if c.execute("DELETE FROM contacts WHERE address = ?1", [&address])? == 0 {
                return Err(StoreError::NotFound(format!("contact {address}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn contacts(&self, domain: Option<&str>) -> Result<Vec<Contact>> {
        let domain = domain.map(|d| d.to_ascii_lowercase());
        self.read(move |c| {
            let sql = format!(
                "SELECT {CONTACT_COLS} FROM contacts WHERE CAST(?1 AS TEXT) IS NULL OR domain = ?1 ORDER BY address"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([domain], contact_from_row)?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn add_dns_record(&self, rec: DnsRecord) -> Result<()> {
        self.write(move |c| {
            let domain = rec.domain.to_ascii_lowercase();
            require_domain(c, &domain)?;
            let n = c.execute(
                "INSERT INTO dns_records (domain, name, rtype, value, ttl) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![domain, rec.name.to_ascii_lowercase(), rec.rtype.to_ascii_uppercase(), rec.value, rec.ttl],
            )?;
            if n == 0 {
                return Err(StoreError::Exists(format!("{} {} {}", rec.name, rec.rtype, rec.value)));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn remove_dns_records(&self, domain: &str, name: &str, rtype: &str, value: Option<&str>) -> Result<usize> {
        let (domain, name, rtype) =
            (domain.to_ascii_lowercase(), name.to_ascii_lowercase(), rtype.to_ascii_uppercase());
        let value = value.map(str::to_string);
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM dns_records WHERE domain = ?1 AND name = ?2 AND rtype = ?3 AND (CAST(?4 AS TEXT) IS NULL OR value = ?4)",
                params![domain, name, rtype, value],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("{name} {rtype} record")));
            }
            Ok((n, vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn dns_records(&self, domain: &str) -> Result<Vec<DnsRecord>> {
        let domain = domain.to_ascii_lowercase();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT domain, name, rtype, value, ttl FROM dns_records WHERE domain = ?1 ORDER BY name, rtype, id",
            )?;
            let rows = stmt.query_map([domain], |r| {
                Ok(DnsRecord { domain: r.get(0)?, name: r.get(1)?, rtype: r.get(2)?, value: r.get(3)?, ttl: r.get(4)? })
            })?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn add_dnssec_key(&self, k: DnssecKey) -> Result<i64> {
        self.write(move |c| {
            let domain = k.domain.to_ascii_lowercase();
            require_domain(c, &domain)?;
            let id = c.query_row(
                "INSERT INTO dnssec_keys (domain, ksk, algorithm, private_key, created, state, since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                params![domain, k.ksk, k.algorithm, k.private_key, k.created, k.state.as_str(), k.since],
                |r| r.get(0),
            )?;
            Ok((id, vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn dnssec_keys(&self, domain: &str) -> Result<Vec<DnssecKey>> {
        let domain = domain.to_ascii_lowercase();
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT id, domain, ksk, algorithm, private_key, created, state, since FROM dnssec_keys
                 WHERE domain = ?1 ORDER BY id",
            )?;
            let rows = s.query_map([domain], |r| {
                Ok(DnssecKey {
                    id: r.get(0)?,
                    domain: r.get(1)?,
                    ksk: r.get(2)?,
                    algorithm: r.get(3)?,
                    private_key: r.get(4)?,
                    created: r.get(5)?,
                    state: DnssecKeyState::parse(&r.get::<_, String>(6)?),
                    since: r.get(7)?,
                })
            })?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn set_dnssec_key_state(&self, id: i64, state: Option<DnssecKeyState>) -> Result<()> {
        self.write(move |c| {
            let n = match state {
                Some(st) => c.execute(
                    "UPDATE dnssec_keys SET state = ?2, since = ?3 WHERE id = ?1",
                    params![id, st.as_str(), crate::now()],
                )?,
                None => c.execute("DELETE FROM dnssec_keys WHERE id = ?1", [id])?,
            };
            if n == 0 {
                return Err(StoreError::NotFound(format!("DNSSEC key {id}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn sync_log(&self) -> Result<Vec<SyncRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT uuid, dn, csn, hash, deleted FROM sync_log")?;
            let rows = stmt.query_map((), |r| {
                let blob16 = |i: usize| -> Result<[u8; 16]> {
                    let v: Vec<u8> = r.get(i)?;
                    Ok(v.try_into().unwrap_or([0; 16]))
                };
                Ok(SyncRecord {
                    uuid: blob16(0)?,
                    dn: r.get(1)?,
                    csn: r.get(2)?,
                    hash: blob16(3)?,
                    deleted: r.get::<_, i64>(4)? != 0,
                })
            })?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn record_sync(&self, changes: Vec<SyncRecord>, horizon: Option<String>) -> Result<()> {
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO sync_log (uuid, dn, csn, hash, deleted) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (uuid) DO UPDATE SET dn = ?2, csn = ?3, hash = ?4, deleted = ?5",
            )?;
            for r in &changes {
                stmt.execute(params![&r.uuid[..], r.dn, r.csn, &r.hash[..], r.deleted as i64])?;
            }
            if let Some(h) = &horizon {
                c.execute(
                    "INSERT INTO sync_values (key, value) VALUES ('horizon', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = greatest(sync_values.value, ?1)",
                    [&h],
                )?;
                c.execute("DELETE FROM sync_log WHERE deleted = 1 AND csn < (SELECT value FROM sync_values WHERE key = 'horizon')", ())?;
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn sync_values(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let prefix = prefix.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT key, value FROM sync_values WHERE substr(key, 1, length(CAST(?1 AS TEXT))) = ?1 ORDER BY key",
            )?;
            let rows = stmt.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn set_sync_value(&self, key: &str, value: Option<String>) -> Result<()> {
        let key = key.to_string();
        self.write(move |c| {
            match &value {
                Some(v) => c.execute(
                    "INSERT INTO sync_values (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                    params![key, v],
                )?,
                None => c.execute("DELETE FROM sync_values WHERE key = ?1", [&key])?,
            };
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn lookup_address(&self, address: &str) -> Result<AddressEntry> {
        let address = address.to_ascii_lowercase();
        self.lookup(move |c| {
            let Some((kind, account)) = address_kind(c, &address)? else {
                return Ok(AddressEntry::None);
            };
            Ok(match kind.as_str() {
                "account" => match account {
                    Some(id) => query_account(c, "id = ?1", &id)?.map_or(AddressEntry::None, AddressEntry::Account),
                    None => AddressEntry::None,
                },
                "alias" => {
                    let mut s =
                        c.prepare_cached("SELECT target FROM alias_targets WHERE address = ?1 ORDER BY target")?;
                    let targets = s.query_map([&address], |r| r.get(0))?.collect::<Result<_>>()?;
                    AddressEntry::Alias(targets)
                }
                _ => {
                    let sql = format!("SELECT {GROUP_COLS} FROM groups WHERE address = ?1");
                    let mut g = c.prepare_cached(&sql)?.query_row([&address], group_from_row)?;
                    g.members = group_members(c, &address)?;
                    AddressEntry::Group(g)
                }
            })
        })
        .await
    }

    async fn add_dkim_keys(&self, keys: Vec<DkimKey>) -> Result<()> {
        self.write(move |c| {
            for k in &keys {
                c.execute(
                    "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key, created, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (domain, selector) DO UPDATE SET algorithm = excluded.algorithm,
                         private_key = excluded.private_key, public_key = excluded.public_key,
                         created = excluded.created, state = excluded.state",
                    params![
                        k.domain.to_ascii_lowercase(),
                        k.selector,
                        k.algorithm,
                        k.private_key,
                        k.public_key,
                        k.created,
                        k.state.as_str()
                    ],
                )?;
            }
            // Keys are directory data: the published zone follows them.
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn dkim_keys(&self, domain: &str) -> Result<Vec<DkimKey>> {
        let domain = domain.to_ascii_lowercase();
        self.lookup(move |c| {
            let mut s = c.prepare_cached(
                "SELECT domain, selector, algorithm, private_key, public_key, created, state FROM dkim_keys
                 WHERE domain = ?1 ORDER BY created DESC, selector DESC",
            )?;
            let rows = s.query_map([domain], |r| {
                Ok(DkimKey {
                    domain: r.get(0)?,
                    selector: r.get(1)?,
                    algorithm: r.get(2)?,
                    private_key: r.get(3)?,
                    public_key: r.get(4)?,
                    created: r.get(5)?,
                    state: DkimState::parse(&r.get::<_, String>(6)?),
                })
            })?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn activate_dkim_keys(&self, domain: &str) -> Result<usize> {
        let domain = domain.to_ascii_lowercase();
        self.write(move |c| {
            // Keys of an algorithm that gets a new one stop signing; the new ones start.
            c.execute(
                "UPDATE dkim_keys SET state = 'retired' WHERE domain = ?1 AND state = 'active' AND algorithm IN
                 (SELECT algorithm FROM dkim_keys WHERE domain = ?1 AND state = 'pending')",
                [&domain],
            )?;
            let n =
                c.execute("UPDATE dkim_keys SET state = 'active' WHERE domain = ?1 AND state = 'pending'", [&domain])?;
            Ok((n, if n > 0 { vec![Change::DirectoryChanged] } else { Vec::new() }))
        })
        .await
    }

    async fn remove_retired_dkim_keys(&self, domain: &str) -> Result<usize> {
        let domain = domain.to_ascii_lowercase();
        self.write(move |c| {
            let n = c.execute("DELETE FROM dkim_keys WHERE domain = ?1 AND state = 'retired'", [&domain])?;
            Ok((n, if n > 0 { vec![Change::DirectoryChanged] } else { Vec::new() }))
        })
        .await
    }

    fn directory_version(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::Ordering::SeqCst;
        let v = &self.version;
        let now = v.epoch.elapsed().as_millis() as u64 + 1;
        let read = v.read_ms.load(SeqCst);
        let stamp = match &self.engine {
            Engine::Lite(l) => &l.stamp,
            // Other nodes' changes arrive by NOTIFY, counted as they come.
            Engine::Pg(p) => {
                return p.remote_directory.load(SeqCst).wrapping_mul(0xD6E8_FEB8_6659_FD93)
                    ^ v.local.load(SeqCst).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
        };
        let file = if read != 0 && now.saturating_sub(read) < STAMP_RECHECK {
            v.file.load(SeqCst)
        } else {
            let mut buf = [0u8; 16];
            let f = match stamp.read_at(&mut buf, 0) {
                Ok(16) => std::str::from_utf8(&buf).ok().and_then(|s| u64::from_str_radix(s, 16).ok()).unwrap_or(0),
                _ => 0,
            };
            v.file.store(f, SeqCst);
            v.read_ms.store(now, SeqCst);
            f
        };
        // Equal versions mean nothing changed: mixing in our own count makes this
        // process's changes show however recent the file's reading.
        file ^ v.local.load(SeqCst).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

#[async_trait]
impl MailboxStore for Arc<SqlStore> {
    async fn mailboxes(&self, account: AccountId) -> Result<Vec<Mailbox>> {
        self.read(move |c| {
            let sql = format!("SELECT {MAILBOX_COLS} FROM mailboxes WHERE account = ?1 ORDER BY name");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([account], mailbox_from_row)?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn mailbox(&self, account: AccountId, name: &str) -> Result<Option<Mailbox>> {
        let name = canonical_mailbox_name(name);
        self.lookup(move |c| query_mailbox(c, account, &name)).await
    }

    async fn create_mailbox(&self, account: AccountId, name: &str, special_use: Option<SpecialUse>) -> Result<Mailbox> {
        let name = canonical_mailbox_name(name);
        if name.is_empty() || name.len() > 1024 || name.contains(['\0', '\r', '\n']) {
            return Err(StoreError::Invalid("mailbox name is empty, too long or has control characters".into()));
        }
        self.write(move |c| {
            let mb = insert_mailbox(c, account, &name, special_use)?;
            let id = mb.id;
            Ok((mb, vec![Change::MailboxCreated { account, mailbox: id }]))
        })
        .await
    }

    async fn mailbox_by_id(&self, id: MailboxId) -> Result<Option<Mailbox>> {
        self.lookup(move |c| {
            let sql = format!("SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = ?1");
            c.prepare_cached(&sql)?.query_row([id], mailbox_from_row).optional()
        })
        .await
    }

    async fn delete_mailbox(&self, account: AccountId, name: &str) -> Result<()> {
        let name = canonical_mailbox_name(name);
        if name == "INBOX" {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        let blobs = self.blobs.clone();
        let files = self
            .write(move |c| {
                let mb =
                    query_mailbox(c, account, &name)?.ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))?;
                let files = delete_mailbox_rows(c, account, mb.id)?;
                Ok((files, vec![Change::MailboxDeleted { account, mailbox: mb.id }]))
            })
            .await?;
        remove_blob_files(&blobs, &files);
        Ok(())
    }

    async fn rename_mailbox(&self, account: AccountId, from: &str, to: &str) -> Result<()> {
        let from = canonical_mailbox_name(from);
        let to = canonical_mailbox_name(to);
        if to == "INBOX" || to.is_empty() || to.len() > 1024 || to.contains(['\0', '\r', '\n']) {
            return Err(StoreError::Invalid(format!("cannot rename to {to}")));
        }
        self.write(move |c| {
            let src = query_mailbox(c, account, &from)?.ok_or_else(|| StoreError::NotFound(format!("mailbox {from}")))?;
            if query_mailbox(c, account, &to)?.is_some() {
                return Err(StoreError::Exists(format!("mailbox {to}")));
            }
            if from == "INBOX" {
                let dst = insert_mailbox(c, account, &to, None)?;
                let n: i64 = c.query_row("SELECT count(*) FROM messages WHERE mailbox = ?1", [src.id], |r| r.get(0))?;
                // For QRESYNC, the messages leave INBOX as expunges.
                c.execute(
                    "INSERT INTO expunged (mailbox, uid, modseq) SELECT ?1, uid, ?2 FROM messages WHERE mailbox = ?1
                     ON CONFLICT (mailbox, uid) DO UPDATE SET modseq = excluded.modseq",
                    params![src.id, src.highestmodseq as i64 + 1],
                )?;
                // The moved messages keep their order; they get UIDs 1..n in the new mailbox.
                c.execute(
                    "UPDATE messages SET mailbox = ?2, uid = uid + 4294967296 WHERE mailbox = ?1",
                    params![src.id, dst.id],
                )?;
                c.execute(
                    "UPDATE messages SET uid = (SELECT count(*) FROM messages m2 WHERE m2.mailbox = ?1 AND m2.uid <= messages.uid)
                     WHERE mailbox = ?1",
                    [dst.id],
                )?;
                // Its HIGHESTMODSEQ covers the MODSEQs the messages bring along.
                c.execute(
                    "UPDATE mailboxes SET uidnext = ?2 + 1, messages = ?2,
                        highestmodseq = greatest(highestmodseq + 1, (SELECT coalesce(max(modseq), 0) FROM messages WHERE mailbox = ?1))
                     WHERE id = ?1",
                    params![dst.id, n],
                )?;
                c.execute("UPDATE mailboxes SET messages = 0, highestmodseq = highestmodseq + 1 WHERE id = ?1", [src.id])?;
                return Ok(((), vec![Change::MailboxCreated { account, mailbox: dst.id }]));
            }
            c.execute("UPDATE mailboxes SET name = ?3 WHERE account = ?1 AND name = ?2", params![account, from, to])?;
            // Subscriptions follow the mailboxes they name.
            // A subscription already under a new name gives way (as REPLACE would).
            let moved = params![account, from, to, from.chars().count() as i64 + 1];
            c.execute(
                "DELETE FROM subscriptions WHERE account = ?1 AND name IN (SELECT ?3 || substr(name, ?4) FROM subscriptions
                 WHERE account = ?1 AND (name = ?2 OR substr(name, 1, ?4) = ?2 || '/'))",
                moved,
            )?;
            c.execute(
                "UPDATE subscriptions SET name = ?3 || substr(name, ?4) WHERE account = ?1 AND (name = ?2 OR substr(name, 1, ?4) = ?2 || '/')",
                moved,
            )?;
            // Mailboxes below it move along ("a/b" -> "c/b").
            let prefix = format!("{from}/");
            let below: Vec<(MailboxId, String)> = {
                let mut s = c.prepare("SELECT id, name FROM mailboxes WHERE account = ?1 AND substr(name, 1, ?3) = ?2")?;
                s.query_map(params![account, prefix, prefix.chars().count() as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_>>()?
            };
            for (id, name) in below {
                let new = format!("{to}/{}", &name[prefix.len()..]);
                c.execute("UPDATE mailboxes SET name = ?2 WHERE id = ?1", params![id, new])?;
            }
            Ok(((), vec![Change::MailboxCreated { account, mailbox: src.id }]))
        })
        .await
    }

    async fn claim_recent(&self, mailbox: MailboxId) -> Result<u32> {
        self.write_locked(move |c| {
            let (prev, uidnext): (i64, i64) = c
                .query_row("SELECT recent_uid, uidnext FROM mailboxes WHERE id = ?1 FOR UPDATE", [mailbox], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?
                .ok_or_else(|| StoreError::NotFound("mailbox".into()))?;
            if uidnext - 1 > prev {
                c.execute("UPDATE mailboxes SET recent_uid = ?2 WHERE id = ?1", params![mailbox, uidnext - 1])?;
            }
            Ok((prev as u32, Vec::new()))
        })
        .await
    }

    async fn set_subscribed(&self, account: AccountId, name: &str, subscribed: bool) -> Result<()> {
        let name = canonical_mailbox_name(name);
        if name.is_empty() || name.len() > 1024 || name.contains(['\0', '\r', '\n']) {
            return Err(StoreError::Invalid("mailbox name is empty, too long or has control characters".into()));
        }
        self.write(move |c| {
            if subscribed {
                c.execute(
                    "INSERT INTO subscriptions (account, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![account, name],
                )?;
            } else {
                c.execute("DELETE FROM subscriptions WHERE account = ?1 AND name = ?2", params![account, name])?;
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn public_folders(&self) -> Result<Vec<PublicFolder>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {PUBLIC_COLS} FROM public_folders p JOIN mailboxes m ON m.id = p.mailbox ORDER BY m.name"
            );
            let mut s = c.prepare_cached(&sql)?;
            let rows = s.query_map((), public_from_row)?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn add_public_folder(&self, folder: PublicFolder) -> Result<PublicFolder> {
        let path = public_folder_path(&folder.path)?;
        if is_queue_path(&path) {
            return Err(StoreError::Invalid(format!("{:?} is the name of moderation queues", crate::MODERATION_QUEUE)));
        }
        let address = folder.address.map(|a| a.to_ascii_lowercase());
        let newsgroup = folder.newsgroup.map(|n| n.to_ascii_lowercase());
        self.write(move |c| {
            let owner = public_owner(c)?;
            let parent = match path.rsplit_once('/') {
                Some((parent, _)) => {
                    Some(query_public(c, parent)?.ok_or_else(|| StoreError::NotFound(format!("public folder {parent}")))?)
                }
                None => None,
            };
            if let Some(a) = &address {
                let taken: i64 = c.query_row("SELECT count(*) FROM addresses WHERE address = ?1", [a], |r| r.get(0))?;
                if taken > 0 {
                    return Err(StoreError::Exists(format!("address {a}")));
                }
            }
            if let Some(n) = &newsgroup {
                let taken: i64 =
                    c.query_row("SELECT count(*) FROM public_folders WHERE newsgroup = ?1", [n], |r| r.get(0))?;
                if taken > 0 {
                    return Err(StoreError::Exists(format!("newsgroup {n}")));
                }
            }
            let mb = insert_mailbox(c, owner, &path, None)?;
            c.execute(
                "INSERT INTO public_folders (mailbox, newsgroup, address, moderated, anonymous_mail, expire_days, expire_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    mb.id,
                    newsgroup,
                    address,
                    folder.moderated,
                    folder.anonymous_mail,
                    folder.expire_days,
                    folder.expire_count
                ],
            )
            .map_err(|e| constraint(e, "newsgroup or address"))?;
            // A subfolder starts with its parent's permissions.
            if let Some(parent) = parent {
                c.execute(
                    "INSERT INTO acl (mailbox, identifier, rights) SELECT ?1, identifier, rights FROM acl WHERE mailbox = ?2",
                    params![mb.id, parent.mailbox],
                )?;
            }
            let made = query_public(c, &path)?.ok_or_else(|| StoreError::NotFound(format!("public folder {path}")))?;
            let mut changes = vec![Change::MailboxCreated { account: owner, mailbox: mb.id }, Change::DirectoryChanged];
            if made.moderated
                && let Some(q) = ensure_queue(c, owner, &made)?
            {
                changes.push(Change::MailboxCreated { account: owner, mailbox: q });
            }
            Ok((made, changes))
        })
        .await
    }

    async fn public_folder_by_address(&self, address: &str) -> Result<Option<(AccountId, PublicFolder)>> {
        let address = address.to_ascii_lowercase();
        self.lookup(move |c| {
            let sql = format!(
                "SELECT {PUBLIC_COLS}, m.account FROM public_folders p JOIN mailboxes m ON m.id = p.mailbox
                 WHERE p.address = ?1"
            );
            c.prepare_cached(&sql)?
                .query_row([&address], |r| Ok((r.get::<_, AccountId>(8)?, public_from_row(r)?)))
                .optional()
        })
        .await
    }

    async fn remove_public_folder(&self, path: &str) -> Result<()> {
        let path = public_folder_path(path)?;
        let blobs = self.blobs.clone();
        let files = self
            .write(move |c| {
                let folder =
                    query_public(c, &path)?.ok_or_else(|| StoreError::NotFound(format!("public folder {path}")))?;
                if let Some(parent) = path.strip_suffix(&format!("/{}", crate::MODERATION_QUEUE))
                    && query_public(c, parent)?.is_some_and(|p| p.moderated)
                {
                    return Err(StoreError::Invalid(format!(
                        "{path} is the moderation queue of {parent}: end moderation there first"
                    )));
                }
                let owner = public_owner(c)?;
                // The folder's own moderation queue goes with it.
                let queue = folder.queue_path();
                let below: i64 = c.query_row(
                    "SELECT count(*) FROM mailboxes WHERE account = ?1 AND substr(name, 1, ?2) = ?3 AND name != ?4",
                    params![owner, path.len() as i64 + 1, format!("{path}/"), queue],
                    |r| r.get(0),
                )?;
                if below > 0 {
                    return Err(StoreError::Invalid(format!("public folder {path} has subfolders; remove them first")));
                }
                let mut changes = Vec::new();
                let mut files = Vec::new();
                if let Some(q) = query_mailbox(c, owner, &queue)? {
                    files.extend(delete_mailbox_rows(c, owner, q.id)?);
                    changes.push(Change::MailboxDeleted { account: owner, mailbox: q.id });
                }
                files.extend(delete_mailbox_rows(c, owner, folder.mailbox)?);
                changes.push(Change::MailboxDeleted { account: owner, mailbox: folder.mailbox });
                changes.push(Change::DirectoryChanged);
                Ok((files, changes))
            })
            .await?;
        remove_blob_files(&blobs, &files);
        Ok(())
    }

    async fn rename_public_folder(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (public_folder_path(from)?, public_folder_path(to)?);
        if is_queue_path(&from) || is_queue_path(&to) {
            return Err(StoreError::Invalid("a moderation queue moves only with its folder".into()));
        }
        self.write(move |c| {
            query_public(c, &from)?.ok_or_else(|| StoreError::NotFound(format!("public folder {from}")))?;
            if let Some((parent, _)) = to.rsplit_once('/')
                && query_public(c, parent)?.is_none()
            {
                return Err(StoreError::NotFound(format!("public folder {parent}")));
            }
            if to == from || to.starts_with(&format!("{from}/")) {
                return Err(StoreError::Invalid(format!("cannot move {from} into itself")));
            }
            let owner = public_owner(c)?;
            if query_mailbox(c, owner, &to)?.is_some() {
                return Err(StoreError::Exists(format!("public folder {to}")));
            }
            c.execute(
                "UPDATE mailboxes SET name = ?3 || substr(name, ?4) WHERE account = ?1 AND (name = ?2 OR substr(name, 1, ?4) = ?2 || '/')",
                params![owner, from, to, from.len() as i64 + 1],
            )?;
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn update_public_folder(&self, path: &str, update: PublicFolderUpdate) -> Result<PublicFolder> {
        let path = public_folder_path(path)?;
        self.write(move |c| {
            let folder =
                query_public(c, &path)?.ok_or_else(|| StoreError::NotFound(format!("public folder {path}")))?;
            let owner = public_owner(c)?;
            if let Some(newsgroup) = update.newsgroup.clone() {
                let newsgroup = newsgroup.map(|n| n.to_ascii_lowercase());
                c.execute(
                    "UPDATE public_folders SET newsgroup = ?2 WHERE mailbox = ?1",
                    params![folder.mailbox, newsgroup],
                )
                .map_err(|e| constraint(e, "newsgroup"))?;
            }
            if let Some(address) = update.address.clone() {
                let address = address.map(|a| a.to_ascii_lowercase());
                if let Some(a) = &address {
                    let taken: i64 =
                        c.query_row("SELECT count(*) FROM addresses WHERE address = ?1", [a], |r| r.get(0))?;
                    if taken > 0 {
                        return Err(StoreError::Exists(format!("address {a}")));
                    }
                }
                c.execute(
                    "UPDATE public_folders SET address = ?2 WHERE mailbox = ?1",
                    params![folder.mailbox, address],
                )
                .map_err(|e| constraint(e, "address"))?;
            }
            if update.moderated == Some(false)
                && folder.moderated
                && let Some(q) = query_mailbox(c, owner, &folder.queue_path())?
                && q.messages > 0
            {
                return Err(StoreError::Invalid(format!(
                    "{} posts wait in the moderation queue of {path}: approve or reject them first",
                    q.messages
                )));
            }
            for (column, value) in [
                ("moderated", update.moderated.map(i64::from)),
                ("anonymous_mail", update.anonymous_mail.map(i64::from)),
                ("expire_days", update.expire_days.map(i64::from)),
                ("expire_count", update.expire_count.map(i64::from)),
            ] {
                if let Some(v) = value {
                    c.execute(
                        &format!("UPDATE public_folders SET {column} = ?2 WHERE mailbox = ?1"),
                        params![folder.mailbox, v],
                    )?;
                }
            }
            let made = query_public(c, &path)?.ok_or_else(|| StoreError::NotFound(format!("public folder {path}")))?;
            let mut changes = vec![Change::DirectoryChanged];
            if made.moderated {
                if let Some(q) = ensure_queue(c, owner, &made)? {
                    changes.push(Change::MailboxCreated { account: owner, mailbox: q });
                }
            } else if let Some(q) = query_mailbox(c, owner, &made.queue_path())?
                && q.messages == 0
            {
                delete_mailbox_rows(c, owner, q.id)?;
                changes.push(Change::MailboxDeleted { account: owner, mailbox: q.id });
            }
            Ok((made, changes))
        })
        .await
    }

    async fn news_groups(&self) -> Result<Vec<NewsGroup>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {PUBLIC_COLS}, m.uidvalidity, m.uidnext, m.messages,
                        (SELECT min(uid) FROM messages x WHERE x.mailbox = m.id)
                 FROM public_folders p JOIN mailboxes m ON m.id = p.mailbox
                 WHERE p.newsgroup IS NOT NULL ORDER BY p.newsgroup"
            );
            let mut s = c.prepare_cached(&sql)?;
            let rows = s.query_map((), |r| {
                let folder = public_from_row(r)?;
                let uidnext = r.get::<_, i64>(9)? as u32;
                Ok(NewsGroup {
                    name: folder.newsgroup.clone().unwrap_or_default(),
                    folder,
                    created: r.get(8)?,
                    count: r.get::<_, i64>(10)? as u32,
                    low: r.get::<_, Option<i64>>(11)?.map_or(uidnext, |l| l as u32),
                    high: uidnext.saturating_sub(1),
                    acl: Vec::new(),
                })
            })?;
            let mut groups: Vec<NewsGroup> = rows.collect::<Result<_>>()?;
            let mut s = c.prepare_cached(
                "SELECT acl.mailbox, acl.identifier, acl.rights FROM acl JOIN public_folders p ON p.mailbox = acl.mailbox
                 WHERE p.newsgroup IS NOT NULL",
            )?;
            let rows = s.query_map((), |r| Ok((r.get::<_, MailboxId>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
            for row in rows {
                let (mailbox, who, rights) = row?;
                if let Some(g) = groups.iter_mut().find(|g| g.folder.mailbox == mailbox) {
                    g.acl.push((who, rights));
                }
            }
            Ok(groups)
        })
        .await
    }

    async fn overview(&self, mailbox: MailboxId, uids: RangeInclusive<u32>, limit: usize) -> Result<Vec<Overview>> {
        let point = uids.start() == uids.end() || limit == 1;
        let query = move |c: &Db| -> Result<Vec<Overview>> {
            // The summary's JSON is read by each engine's own JSON functions.
            let mut s = c.prepare_cached(if c.is_pg() {
                "SELECT m.uid, j #>> '{envelope,subject}', j #>> '{envelope,from}', j #>> '{envelope,date}',
                        j #>> '{envelope,message_id}', j #>> '{envelope,references}', m.size,
                        coalesce(nullif((j ->> 'body_lines')::BIGINT, 0), (j #>> '{root,lines}')::BIGINT, 0), m.blob
                 FROM messages m JOIN blobs b ON b.hash = m.blob,
                      LATERAL (SELECT replace(b.summary, '\\u0000', '')::jsonb AS j) s
                 WHERE m.mailbox = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid LIMIT ?4"
            } else {
                "SELECT m.uid, json_extract(b.summary, '$.envelope.subject'), json_extract(b.summary, '$.envelope.from'),
                        json_extract(b.summary, '$.envelope.date'), json_extract(b.summary, '$.envelope.message_id'),
                        json_extract(b.summary, '$.envelope.references'), m.size,
                        coalesce(nullif(json_extract(b.summary, '$.body_lines'), 0), json_extract(b.summary, '$.root.lines'), 0),
                        m.blob
                 FROM messages m JOIN blobs b ON b.hash = m.blob
                 WHERE m.mailbox = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid LIMIT ?4"
            })?;
            let text =
                |r: &Row<'_>, i: usize| -> Result<String> { Ok(r.get::<_, Option<String>>(i)?.unwrap_or_default()) };
            let rows = s.query_map(params![mailbox, uids.start(), uids.end(), limit as i64], |r| {
                Ok(Overview {
                    uid: r.get::<_, i64>(0)? as u32,
                    subject: text(r, 1)?,
                    from: text(r, 2)?,
                    date: text(r, 3)?,
                    message_id: text(r, 4)?,
                    references: text(r, 5)?,
                    bytes: r.get::<_, i64>(6)? as u64,
                    lines: r.get::<_, i64>(7)? as u32,
                    blob: r.get(8)?,
                })
            })?;
            rows.collect::<Result<_>>()
        };
        // One article (ARTICLE, NEXT) is a point query: inline; ranges on the blocking pool.
        if point { self.lookup(query).await } else { self.read(query).await }
    }

    async fn news_ref(&self, mailbox: MailboxId, uid: u32) -> Result<Option<(String, String)>> {
        self.lookup(move |c| {
            let row: Option<(Option<String>, String)> = c
                .prepare_cached(
                    "SELECT n.message_id, m.blob FROM messages m
                     LEFT JOIN news_articles n ON n.mailbox = m.mailbox AND n.uid = m.uid
                     WHERE m.mailbox = ?1 AND m.uid = ?2",
                )?
                .query_row(params![mailbox, uid], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.map(|(id, blob)| (id.unwrap_or_default(), blob)))
        })
        .await
    }

    async fn news_article(&self, message_id: &str) -> Result<Vec<(MailboxId, u32)>> {
        let id = message_id.to_string();
        self.lookup(move |c| {
            let mut s = c.prepare_cached(
                "SELECT n.mailbox, n.uid FROM news_articles n JOIN public_folders p ON p.mailbox = n.mailbox
                 WHERE n.message_id = ?1 AND p.newsgroup IS NOT NULL ORDER BY n.seq",
            )?;
            let rows = s.query_map([&id], |r| Ok((r.get::<_, MailboxId>(0)?, r.get::<_, i64>(1)? as u32)))?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn news_seen(&self, message_id: &str) -> Result<bool> {
        let id = message_id.to_string();
        self.lookup(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM news_history WHERE message_id = ?1)
                     OR EXISTS (SELECT 1 FROM news_articles WHERE message_id = ?1)",
            )?
            .query_row([&id], |r| r.get(0))
        })
        .await
    }

    async fn remember_news(&self, message_ids: Vec<String>, now: i64) -> Result<()> {
        self.write(move |c| {
            for id in &message_ids {
                c.prepare_cached("INSERT INTO news_history (message_id, seen) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                    .execute(params![id, now])?;
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn news_since(&self, since: i64) -> Result<Vec<(MailboxId, String)>> {
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT n.mailbox, n.message_id FROM news_articles n JOIN public_folders p ON p.mailbox = n.mailbox
                 WHERE n.arrived >= ?1 AND p.newsgroup IS NOT NULL ORDER BY n.seq LIMIT 500000",
            )?;
            let rows = s.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn news_feed_start(&self, peer: &str) -> Result<()> {
        let peer = peer.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO news_peers (peer, cursor) SELECT CAST(?1 AS TEXT), coalesce(max(seq), 0) FROM news_articles
                 WHERE true ON CONFLICT DO NOTHING",
                [&peer],
            )?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn news_feed_next(&self, peer: &str, limit: usize) -> Result<Vec<FeedArticle>> {
        let peer = peer.to_string();
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT n.seq, n.message_id, n.mailbox, m.blob
                 FROM news_articles n JOIN public_folders p ON p.mailbox = n.mailbox
                 JOIN messages m ON m.mailbox = n.mailbox AND m.uid = n.uid
                 WHERE n.seq > (SELECT cursor FROM news_peers WHERE peer = ?1) AND p.newsgroup IS NOT NULL
                 ORDER BY n.seq LIMIT ?2",
            )?;
            let rows = s.query_map(params![peer, limit as i64], |r| {
                Ok(FeedArticle { seq: r.get(0)?, message_id: r.get(1)?, mailbox: r.get(2)?, blob: r.get(3)? })
            })?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn news_feed_advance(&self, peer: &str, seq: i64) -> Result<()> {
        let peer = peer.to_string();
        self.write(move |c| {
            c.execute("UPDATE news_peers SET cursor = greatest(cursor, ?2) WHERE peer = ?1", params![peer, seq])?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn forget_news_history(&self, before: i64) -> Result<usize> {
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM news_history WHERE seen < ?1
                 AND NOT EXISTS (SELECT 1 FROM news_articles n WHERE n.message_id = news_history.message_id)",
                [before],
            )?;
            Ok((n, Vec::new()))
        })
        .await
    }

    async fn set_acl(&self, mailbox: MailboxId, identifier: &str, rights: Option<&str>) -> Result<()> {
        let (identifier, rights) = (identifier.to_string(), rights.map(str::to_string));
        self.write(move |c| {
            match rights.clone().filter(|r| !r.is_empty()) {
                Some(r) => c.execute(
                    "INSERT INTO acl (mailbox, identifier, rights) VALUES (?1, ?2, ?3)
                     ON CONFLICT(mailbox, identifier) DO UPDATE SET rights = excluded.rights",
                    params![mailbox, identifier, r],
                )?,
                None => {
                    c.execute("DELETE FROM acl WHERE mailbox = ?1 AND identifier = ?2", params![mailbox, identifier])?
                }
            };
            // A moderated folder's queue is open to exactly its moderators.
            if let Some(queue) = queue_of(c, mailbox)? {
                c.execute("DELETE FROM acl WHERE mailbox = ?1 AND identifier = ?2", params![queue, identifier])?;
                c.execute(
                    "INSERT INTO acl (mailbox, identifier, rights)
                     SELECT ?1, identifier, rights FROM acl WHERE mailbox = ?2 AND identifier = ?3 AND rights LIKE '%x%'",
                    params![queue, mailbox, identifier],
                )?;
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn acl(&self, mailbox: MailboxId) -> Result<Vec<(String, String)>> {
        self.read(move |c| {
            let mut s =
                c.prepare_cached("SELECT identifier, rights FROM acl WHERE mailbox = ?1 ORDER BY identifier")?;
            let rows = s.query_map([mailbox], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn shared_with(&self, account: AccountId, identifiers: &[String]) -> Result<Vec<SharedMailbox>> {
        let identifiers = identifiers.to_vec();
        self.read(move |c| acl_mailboxes(c, Some(account), &identifiers)).await
    }

    async fn public_with(&self, identifiers: &[String]) -> Result<Vec<SharedMailbox>> {
        let identifiers = identifiers.to_vec();
        self.read(move |c| acl_mailboxes(c, None, &identifiers)).await
    }

    async fn private_seen(&self, mailbox: MailboxId, account: AccountId) -> Result<Vec<u32>> {
        self.read(move |c| {
            let mut s =
                c.prepare_cached("SELECT uid FROM private_seen WHERE mailbox = ?1 AND account = ?2 ORDER BY uid")?;
            let rows = s.query_map(params![mailbox, account], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(|u| u as u32)).collect::<Result<Vec<_>>>()
        })
        .await
    }

    async fn set_private_seen(&self, mailbox: MailboxId, account: AccountId, uids: &[u32], seen: bool) -> Result<()> {
        let uids = uids.to_vec();
        self.write_locked(move |c| {
            // A reader's own \Seen changes the message's MODSEQ and is announced like
            // any flag change, so that reader's other sessions see it (each session
            // lays its own reader's \Seen over the flags).
            let Some((owner, mut modseq)): Option<(AccountId, i64)> = c
                .query_row("SELECT account, highestmodseq FROM mailboxes WHERE id = ?1 FOR UPDATE", [mailbox], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?
            else {
                return Ok(((), Vec::new()));
            };
            let mut changes = Vec::new();
            for &uid in &uids {
                let n = if seen {
                    c.prepare_cached(
                        "INSERT INTO private_seen (mailbox, account, uid)
                         SELECT ?1, CAST(?2 AS BIGINT), ?3 WHERE EXISTS (SELECT 1 FROM messages WHERE mailbox = ?1 AND uid = ?3)
                         ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![mailbox, account, uid])?
                } else {
                    c.prepare_cached("DELETE FROM private_seen WHERE mailbox = ?1 AND account = ?2 AND uid = ?3")?
                        .execute(params![mailbox, account, uid])?
                };
                if n == 0 {
                    continue;
                }
                modseq += 1;
                c.prepare_cached("UPDATE messages SET modseq = ?3 WHERE mailbox = ?1 AND uid = ?2")?
                    .execute(params![mailbox, uid, modseq])?;
                changes.push(Change::FlagsChanged { account: owner, mailbox, uid, modseq: modseq as u64 });
            }
            if !changes.is_empty() {
                c.execute("UPDATE mailboxes SET highestmodseq = ?2 WHERE id = ?1", params![mailbox, modseq])?;
            }
            Ok(((), changes))
        })
        .await
    }

    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT name FROM subscriptions WHERE account = ?1 ORDER BY name")?;
            let rows = stmt.query_map([account], |r| r.get(0))?;
            rows.collect::<Result<Vec<String>>>()
        })
        .await
    }

    async fn copy_messages(&self, from: MailboxId, uids: &[u32], to: MailboxId) -> Result<(u32, Vec<(u32, u32)>)> {
        let mut uids = uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        self.write_locked(move |c| {
            let (account, uidvalidity, mut uidnext, mut modseq): (AccountId, i64, i64, i64) = c
                .query_row("SELECT account, uidvalidity, uidnext, highestmodseq FROM mailboxes WHERE id = ?1 FOR UPDATE", [to], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?
                .ok_or_else(|| StoreError::NotFound("target mailbox".into()))?;
            // COPY is all or nothing, quota included (RFC 9208 §4.1).
            let mut adding = 0i64;
            for &uid in &uids {
                let size: Option<i64> = c
                    .prepare_cached("SELECT size FROM messages WHERE mailbox = ?1 AND uid = ?2")?
                    .query_row(params![from, uid], |r| r.get(0))
                    .optional()?;
                adding += size.unwrap_or(0);
            }
            check_quota(c, account, adding)?;
            let mut pairs = Vec::new();
            let mut changes = Vec::new();
            for &uid in &uids {
                let row: Option<(i64, String, i64, i64, String, Option<i64>)> = c
                    .prepare_cached(
                        "SELECT flags, keywords, internal_date, size, blob, delivery FROM messages WHERE mailbox = ?1 AND uid = ?2",
                    )?
                    .query_row(params![from, uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                    .optional()?;
                let Some((flags, keywords, internal_date, size, blob, delivery)) = row else { continue };
                if uidnext >= i64::from(u32::MAX) {
                    return Err(StoreError::Invalid("target mailbox has run out of UIDs".into()));
                }
                modseq += 1;
                c.prepare_cached(
                    "INSERT INTO messages (mailbox, uid, modseq, flags, keywords, internal_date, size, blob, delivery, saved)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![to, uidnext, modseq, flags, keywords, internal_date, size, blob, delivery, now()])?;
                c.prepare_cached("UPDATE blobs SET refs = refs + 1 WHERE hash = ?1")?.execute([&blob])?;
                c.prepare_cached("UPDATE accounts SET used = used + ?2 WHERE id = ?1")?.execute(params![account, size])?;
                pairs.push((uid, uidnext as u32));
                changes.push(Change::Appended { account, mailbox: to, uid: uidnext as u32, modseq: modseq as u64 });
                uidnext += 1;
            }
            c.execute(
                "UPDATE mailboxes SET uidnext = ?2, highestmodseq = ?3, messages = messages + ?4 WHERE id = ?1",
                params![to, uidnext, modseq, pairs.len() as i64],
            )?;
            Ok(((uidvalidity as u32, pairs), changes))
        })
        .await
    }

    async fn unseen_counts(&self, account: AccountId) -> Result<Vec<(MailboxId, u32)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT id, unseen FROM mailboxes WHERE account = ?1 ORDER BY id")?;
            let rows = stmt.query_map([account], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u32)))?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn message_list(&self, mailbox: MailboxId) -> Result<Vec<MessageRef>> {
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {REF_COLS} FROM messages WHERE mailbox = ?1 ORDER BY uid"))?;
            let rows = stmt.query_map([mailbox], ref_from_row)?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn changes_since(&self, mailbox: MailboxId, modseq: u64) -> Result<MailboxChanges> {
        self.read(move |c| {
            // One read transaction: the three answers come from the same snapshot.
            c.snapshot(|tx| {
                let highest: i64 = tx
                    .prepare_cached("SELECT highestmodseq FROM mailboxes WHERE id = ?1")?
                    .query_row([mailbox], |r| r.get(0))?;
                let changed = tx
                    .prepare_cached(&format!(
                        "SELECT {REF_COLS} FROM messages WHERE mailbox = ?1 AND modseq > ?2 ORDER BY uid"
                    ))?
                    .query_map(params![mailbox, modseq as i64], ref_from_row)?
                    .collect::<Result<Vec<_>>>()?;
                let expunged = tx
                    .prepare_cached("SELECT uid FROM expunged WHERE mailbox = ?1 AND modseq > ?2 ORDER BY uid")?
                    .query_map(params![mailbox, modseq as i64], |r| r.get::<_, i64>(0))?
                    .map(|r| r.map(|u| u as u32))
                    .collect::<Result<Vec<_>>>()?;
                Ok(MailboxChanges { highest_modseq: highest as u64, changed, expunged })
            })
        })
        .await
    }

    async fn messages(&self, mailbox: MailboxId, uids: RangeInclusive<u32>) -> Result<Vec<MessageMeta>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {META_COLS} FROM messages m JOIN blobs b ON b.hash = m.blob
                 WHERE m.mailbox = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid"
            ))?;
            let rows = stmt.query_map(params![mailbox, uids.start(), uids.end()], meta_row)?;
            rows.map(|r| meta_from_row(mailbox, r?)).collect()
        })
        .await
    }

    async fn messages_with(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<MessageMeta>> {
        let mut uids = uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {META_COLS} FROM messages m JOIN blobs b ON b.hash = m.blob
                 WHERE m.mailbox = ?1 AND m.uid = ?2"
            ))?;
            let mut out = Vec::with_capacity(uids.len());
            for uid in uids {
                if let Some(row) = stmt.query_row(params![mailbox, uid], meta_row).optional()? {
                    out.push(meta_from_row(mailbox, row)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn neighbours(&self, mailbox: MailboxId, uid: u32) -> Result<(Option<u32>, Option<u32>)> {
        self.read(move |c| {
            let below: Option<i64> = c
                .prepare_cached("SELECT max(uid) FROM messages WHERE mailbox = ?1 AND uid < ?2")?
                .query_row(params![mailbox, uid], |r| r.get(0))?;
            let above: Option<i64> = c
                .prepare_cached("SELECT min(uid) FROM messages WHERE mailbox = ?1 AND uid > ?2")?
                .query_row(params![mailbox, uid], |r| r.get(0))?;
            Ok((below.map(|u| u as u32), above.map(|u| u as u32)))
        })
        .await
    }

    async fn message_page(
        &self,
        mailbox: MailboxId,
        order: crate::PageOrder,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<MessageMeta>> {
        let by = match order {
            crate::PageOrder::Arrival => "uid DESC",
            crate::PageOrder::Received => "internal_date DESC, uid DESC",
            crate::PageOrder::Size => "size DESC, uid DESC",
        };
        self.read(move |c| {
            // The page's UIDs first, from the messages alone: rows skipped by the offset
            // never join their summaries.
            let mut stmt = c.prepare_cached(&format!(
                "WITH page AS (SELECT uid, internal_date, size FROM messages WHERE mailbox = ?1
                               ORDER BY {by} LIMIT ?2 OFFSET ?3)
                 SELECT {META_COLS} FROM page p JOIN messages m ON m.mailbox = ?1 AND m.uid = p.uid
                 JOIN blobs b ON b.hash = m.blob ORDER BY {}",
                by.replace("uid", "p.uid").replace("internal_date", "p.internal_date").replace("size", "p.size")
            ))?;
            let rows = stmt.query_map(params![mailbox, limit, offset], meta_row)?;
            rows.map(|r| meta_from_row(mailbox, r?)).collect()
        })
        .await
    }

    async fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagsStored> {
        let uids = uids.to_vec();
        let keywords = keywords.to_vec();
        self.write_locked(move |c| {
            let (account, mut modseq): (AccountId, i64) =
                c.query_row("SELECT account, highestmodseq FROM mailboxes WHERE id = ?1 FOR UPDATE", [mailbox], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let mut changed = Vec::new();
            let mut modified = Vec::new();
            let mut changes = Vec::new();
            for &uid in &uids {
                let cur: Option<(i64, String, i64)> = c
                    .prepare_cached("SELECT flags, keywords, modseq FROM messages WHERE mailbox = ?1 AND uid = ?2")?
                    .query_row(params![mailbox, uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((old_flags, old_kw, old_modseq)) = cur else { continue };
                if unchanged_since.is_some_and(|u| old_modseq as u64 > u) {
                    modified.push(uid);
                    continue;
                }
                let old_flags = Flags(old_flags as u8);
                let old_kw = keywords_from_text(&old_kw);
                let (new_flags, new_kw) = match op {
                    FlagOp::Set => (flags, keywords.clone()),
                    FlagOp::SetExcept(keep) => {
                        (flags.difference(keep).union(old_flags.intersection(keep)), keywords.clone())
                    }
                    FlagOp::Add => {
                        let mut k = old_kw.clone();
                        for kw in &keywords {
                            if !k.iter().any(|x| x.eq_ignore_ascii_case(kw)) {
                                k.push(kw.clone());
                            }
                        }
                        (old_flags.union(flags), k)
                    }
                    FlagOp::Remove => (
                        old_flags.difference(flags),
                        old_kw
                            .iter()
                            .filter(|x| !keywords.iter().any(|k| k.eq_ignore_ascii_case(x)))
                            .cloned()
                            .collect(),
                    ),
                };
                if new_flags == old_flags && new_kw == old_kw {
                    continue;
                }
                modseq += 1;
                c.prepare_cached(
                    "UPDATE messages SET flags = ?3, keywords = ?4, modseq = ?5 WHERE mailbox = ?1 AND uid = ?2",
                )?
                .execute(params![
                    mailbox,
                    uid,
                    i64::from(new_flags.0),
                    keywords_to_text(&new_kw),
                    modseq
                ])?;
                changed.push((uid, modseq as u64));
                changes.push(Change::FlagsChanged { account, mailbox, uid, modseq: modseq as u64 });
            }
            c.execute("UPDATE mailboxes SET highestmodseq = ?2 WHERE id = ?1", params![mailbox, modseq])?;
            Ok((FlagsStored { changed, modified }, changes))
        })
        .await
    }

    async fn expunge(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>> {
        // Nothing to remove (a POP3 QUIT with no DELE): no transaction, no fsync.
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let uids = uids.to_vec();
        let blobs = self.blobs.clone();
        let (removed, files) = self
            .write_locked(move |c| {
                let (account, mut modseq): (AccountId, i64) = c.query_row(
                    "SELECT account, highestmodseq FROM mailboxes WHERE id = ?1 FOR UPDATE",
                    [mailbox],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let mut removed = Vec::new();
                let mut changes = Vec::new();
                for &uid in &uids {
                    let row: Option<(String, i64)> = c
                        .prepare_cached("DELETE FROM messages WHERE mailbox = ?1 AND uid = ?2 RETURNING blob, size")?
                        .query_row(params![mailbox, uid], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    let Some((blob, size)) = row else { continue };
                    modseq += 1;
                    c.prepare_cached("UPDATE blobs SET refs = refs - 1 WHERE hash = ?1")?.execute([&blob])?;
                    c.prepare_cached("UPDATE accounts SET used = greatest(0, used - ?2) WHERE id = ?1")?
                        .execute(params![account, size])?;
                    c.prepare_cached(
                        "INSERT INTO expunged (mailbox, uid, modseq) VALUES (?1, ?2, ?3)
                         ON CONFLICT (mailbox, uid) DO UPDATE SET modseq = excluded.modseq",
                    )?
                    .execute(params![mailbox, uid, modseq])?;
                    c.prepare_cached("DELETE FROM private_seen WHERE mailbox = ?1 AND uid = ?2")?
                        .execute(params![mailbox, uid])?;
                    removed.push(uid);
                    changes.push(Change::Expunged { account, mailbox, uid, modseq: modseq as u64 });
                }
                c.execute(
                    "UPDATE mailboxes SET highestmodseq = ?2, messages = messages - ?3 WHERE id = ?1",
                    params![mailbox, modseq, removed.len() as i64],
                )?;
                let files = collect_garbage(c)?;
                Ok(((removed, files), changes))
            })
            .await?;
        remove_blob_files(&blobs, &files);
        Ok(removed)
    }

    async fn expunged_since(&self, mailbox: MailboxId, since: u64) -> Result<Vec<u32>> {
        self.read(move |c| {
            let mut s = c.prepare_cached("SELECT uid FROM expunged WHERE mailbox = ?1 AND modseq > ?2 ORDER BY uid")?;
            let rows = s.query_map(params![mailbox, since as i64], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(|u| u as u32)).collect::<Result<_>>()
        })
        .await
    }

    async fn envelope_of(&self, mailbox: MailboxId, uid: u32) -> Result<Option<Envelope>> {
        self.read(move |c| {
            let env: Option<String> = c
                .query_row(
                    "SELECT d.envelope FROM messages m JOIN deliveries d ON d.id = m.delivery
                     WHERE m.mailbox = ?1 AND m.uid = ?2",
                    params![mailbox, uid],
                    |r| r.get(0),
                )
                .optional()?;
            env.map(|e| serde_json::from_str(&e).map_err(|e| StoreError::Corrupt(format!("envelope: {e}")))).transpose()
        })
        .await
    }
}

#[async_trait]
impl DeliveryStore for Arc<SqlStore> {
    async fn stage(&self, body: Vec<u8>) -> Result<StagedBlob> {
        let Some(blobs) = self.blobs.clone() else {
            // PostgreSQL keeps every body in the database: nothing is written yet.
            if body.len() <= crate::blob::INLINE_MAX {
                return Ok(crate::blob::stage_in_memory(body));
            }
            return tokio::task::spawn_blocking(move || crate::blob::stage_in_memory(body))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)));
        };
        if body.len() <= crate::blob::INLINE_MAX {
            // Hashing and parsing a small body costs less than a thread hand-off.
            return blobs.stage(body).map_err(StoreError::from);
        }
        tokio::task::spawn_blocking(move || blobs.stage(body))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
            .map_err(StoreError::from)
    }

    async fn deliver(&self, d: Delivery) -> Result<Vec<Delivered>> {
        if d.targets.is_empty() && d.relay.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = prepare_delivery(d)?;
        self.write_locked(move |c| deliver_in(c, &prepared)).await
    }

    async fn deliver_all(&self, deliveries: Vec<Delivery>) -> Result<Vec<Vec<Delivered>>> {
        let prepared = deliveries.into_iter().map(prepare_delivery).collect::<Result<Vec<_>>>()?;
        self.write_locked(move |c| {
            let mut all = Vec::with_capacity(prepared.len());
            let mut changes = Vec::new();
            for p in &prepared {
                let (d, ch) = deliver_in(c, p)?;
                all.push(d);
                changes.extend(ch);
            }
            Ok((all, changes))
        })
        .await
    }

    async fn queued(&self) -> Result<Vec<Queued>> {
        self.read(|c| {
            let sql = format!("SELECT {QUEUE_COLS} FROM outbound ORDER BY id");
            let mut s = c.prepare_cached(&sql)?;
            let rows = s.query_map((), queued_from_row)?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn tls_outcome(&self, o: TlsOutcome) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO tls_outcomes (day, domain, policy_type, policy, mx, ip, result, count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)
                 ON CONFLICT (day, domain, policy_type, policy, mx, ip, result) DO UPDATE SET count = tls_outcomes.count + 1",
            )?
            .execute(params![o.day, o.domain, o.policy_type, o.policy, o.mx, o.ip, o.result])?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn tls_outcomes(&self, day: &str) -> Result<Vec<(TlsOutcome, u64)>> {
        let day = day.to_string();
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT day, domain, policy_type, policy, mx, ip, result, count FROM tls_outcomes
                 WHERE day = ?1 ORDER BY domain, policy_type, policy, mx, ip, result",
            )?;
            let rows = s.query_map([&day], |r| {
                Ok((
                    TlsOutcome {
                        day: r.get(0)?,
                        domain: r.get(1)?,
                        policy_type: r.get(2)?,
                        policy: r.get(3)?,
                        mx: r.get(4)?,
                        ip: r.get(5)?,
                        result: r.get(6)?,
                    },
                    r.get::<_, i64>(7)? as u64,
                ))
            })?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn forget_tls_outcomes(&self, through_day: &str) -> Result<()> {
        let day = through_day.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM tls_outcomes WHERE day <= ?1", [&day])?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn add_tls_report(&self, r: TlsReport) -> Result<bool> {
        self.write(move |c| {
            let n = c.execute(
                "INSERT INTO tls_reports
                 (received, organization, report_id, domains, start, \"end\", successes, failures, details)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                params![
                    r.received,
                    r.organization,
                    r.report_id,
                    r.domains,
                    r.start,
                    r.end,
                    r.successes as i64,
                    r.failures as i64,
                    r.details
                ],
            )?;
            Ok((n == 1, Vec::new()))
        })
        .await
    }

    async fn tls_reports(&self) -> Result<Vec<TlsReport>> {
        self.read(|c| {
            let mut s = c.prepare_cached(
                "SELECT received, organization, report_id, domains, start, \"end\", successes, failures, details
                 FROM tls_reports ORDER BY received, id",
            )?;
            let rows = s.query_map((), |r| {
                Ok(TlsReport {
                    received: r.get(0)?,
                    organization: r.get(1)?,
                    report_id: r.get(2)?,
                    domains: r.get(3)?,
                    start: r.get(4)?,
                    end: r.get(5)?,
                    successes: r.get::<_, i64>(6)? as u64,
                    failures: r.get::<_, i64>(7)? as u64,
                    details: r.get(8)?,
                })
            })?;
            rows.collect::<Result<_>>()
        })
        .await
    }

    async fn queue_stats(&self) -> Result<(u64, Option<i64>)> {
        self.read(|c| {
            let mut s = c.prepare_cached("SELECT count(*), min(created) FROM outbound")?;
            s.query_row((), |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        })
        .await
    }

    async fn queue_due(&self, now: i64, limit: usize) -> Result<Vec<Queued>> {
        let holder = self.holder.clone();
        // Cheap look first: most passes find nothing due, and a claim is a write.
        let due = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT 1 FROM outbound WHERE held = 0 AND next_attempt <= ?1 AND claim_until < ?1 LIMIT 1",
                )?
                .query_row([now], |_| Ok(()))
                .optional()
            })
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut claimed = self
            .write(move |c| {
                let sql = format!(
                    "UPDATE outbound SET claimed_by = ?3, claim_until = ?4 WHERE id IN (SELECT id FROM outbound
                     WHERE held = 0 AND next_attempt <= ?1 AND claim_until < ?1 ORDER BY next_attempt, id LIMIT ?2)
                     RETURNING {QUEUE_COLS}"
                );
                let rows = c
                    .prepare_cached(&sql)?
                    .query_map(params![now, limit as i64, holder, now + crate::HEARTBEAT_TTL], queued_from_row)?;
                Ok((rows.collect::<Result<Vec<_>>>()?, Vec::new()))
            })
            .await?;
        claimed.sort_by_key(|q| (q.next_attempt, q.id));
        Ok(claimed)
    }

    async fn queue_update(&self, id: i64, outcome: QueueOutcome) -> Result<()> {
        let blobs = self.blobs.clone();
        let files = self
            .write(move |c| {
                match outcome.clone() {
                    QueueOutcome::Retry { at, error } => {
                        c.execute(
                            "UPDATE outbound SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3,
                             claimed_by = NULL, claim_until = 0 WHERE id = ?1",
                            params![id, at, error],
                        )?;
                    }
                    QueueOutcome::Warned => {
                        c.execute("UPDATE outbound SET warned = 1 WHERE id = ?1", [id])?;
                    }
                    QueueOutcome::Hold(held) => {
                        c.execute("UPDATE outbound SET held = ?2 WHERE id = ?1", params![id, held])?;
                    }
                    QueueOutcome::RetryNow => {
                        c.execute("UPDATE outbound SET held = 0, next_attempt = ?2 WHERE id = ?1", params![id, now()])?;
                    }
                    QueueOutcome::Done => {
                        let blob: Option<String> = c
                            .query_row("DELETE FROM outbound WHERE id = ?1 RETURNING blob", [id], |r| r.get(0))
                            .optional()?;
                        if let Some(b) = blob {
                            c.execute("UPDATE blobs SET refs = refs - 1 WHERE hash = ?1", [b])?;
                        }
                    }
                }
                Ok((collect_garbage(c)?, Vec::new()))
            })
            .await?;
        remove_blob_files(&blobs, &files);
        Ok(())
    }

    async fn read_blob(&self, hash: &str) -> Result<Vec<u8>> {
        // The index lookup (and a small body stored with it) is a point query: inline.
        let key = hash.to_string();
        let row: Option<Option<Vec<u8>>> = self
            .lookup(move |c| {
                c.prepare_cached("SELECT data FROM blobs WHERE hash = ?1")?.query_row([&key], |r| r.get(0)).optional()
            })
            .await?;
        match row {
            None => Err(StoreError::NotFound(format!("blob {hash}"))),
            Some(Some(data)) => Ok(data),
            Some(None) => {
                let Some(blobs) = self.blobs.clone() else {
                    return Err(StoreError::Corrupt(format!("body {hash} is neither in the database nor a file")));
                };
                let hash = hash.to_string();
                tokio::task::spawn_blocking(move || blobs.read(&hash))
                    .await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
                    .map_err(StoreError::from)
            }
        }
    }

    async fn read_blob_for_search(&self, hash: &str) -> Result<(Vec<u8>, Option<String>)> {
        let key = hash.to_string();
        let row: Option<(Option<Vec<u8>>, Option<String>)> = self
            .lookup(move |c| {
                c.prepare_cached("SELECT data, text FROM blobs WHERE hash = ?1")?
                    .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .await?;
        match row {
            None => Err(StoreError::NotFound(format!("blob {hash}"))),
            Some((Some(data), text)) => Ok((data, text)),
            Some((None, text)) => Ok((self.read_blob(hash).await?, text)),
        }
    }

    async fn delivery_envelope(&self, delivery: i64) -> Result<Option<Envelope>> {
        self.read(move |c| {
            let env: Option<String> =
                c.query_row("SELECT envelope FROM deliveries WHERE id = ?1", [delivery], |r| r.get(0)).optional()?;
            env.map(|e| serde_json::from_str(&e).map_err(|e| StoreError::Corrupt(format!("envelope: {e}")))).transpose()
        })
        .await
    }
}

#[async_trait]
impl ClusterStore for Arc<SqlStore> {
    async fn heartbeat(&self, node: NodeInfo) -> Result<()> {
        let holder = self.holder.clone();
        self.write_locked(move |c| {
            let t = now();
            c.execute(
                "INSERT INTO nodes (name, address, role, started, heartbeat, version, holder, tls_pin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, role = excluded.role,
                     started = excluded.started, heartbeat = excluded.heartbeat, version = excluded.version,
                     holder = excluded.holder, tls_pin = excluded.tls_pin",
                params![node.name, node.address, node.role, node.started, t, node.version, holder, node.tls_pin],
            )?;
            let until = t + crate::HEARTBEAT_TTL;
            c.execute(
                "UPDATE outbound SET claim_until = ?2 WHERE claimed_by = ?1 AND claim_until > 0",
                params![holder, until],
            )?;
            c.execute("UPDATE leases SET until = ?2 WHERE holder = ?1", params![holder, until])?;
            c.execute("DELETE FROM leases WHERE until < ?1", [t])?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.read(|c| {
            let mut s = c.prepare_cached(
                "SELECT name, address, role, started, heartbeat, version, tls_pin FROM nodes ORDER BY name",
            )?;
            let rows = s.query_map((), |r| {
                Ok(NodeInfo {
                    name: r.get(0)?,
                    address: r.get(1)?,
                    role: r.get(2)?,
                    started: r.get(3)?,
                    heartbeat: r.get(4)?,
                    version: r.get(5)?,
                    tls_pin: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn remove_node(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            if c.execute("DELETE FROM nodes WHERE name = ?1", [&name])? == 0 {
                return Err(StoreError::NotFound(format!("node {name}")));
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn take_lease(&self, kind: &str, account: AccountId, max: usize) -> Result<Option<i64>> {
        let holder = self.holder.clone();
        let kind = kind.to_string();
        self.write_locked(move |c| {
            let t = now();
            // The account's row first: takers of the same account count one after another.
            c.query_row("SELECT 1 FROM accounts WHERE id = ?1 FOR UPDATE", [account], |_| Ok(())).optional()?;
            let out: i64 = c.query_row(
                "SELECT count(*) FROM leases WHERE kind = ?1 AND account = ?2 AND until >= ?3",
                params![kind, account, t],
                |r| r.get(0),
            )?;
            if out as usize >= max {
                return Ok((None, Vec::new()));
            }
            let id = c.query_row(
                "INSERT INTO leases (kind, account, holder, until) VALUES (?1, ?2, ?3, ?4) RETURNING id",
                params![kind, account, holder, t + crate::HEARTBEAT_TTL],
                |r| r.get(0),
            )?;
            Ok((Some(id), Vec::new()))
        })
        .await
    }

    async fn cluster_secret(&self) -> Result<String> {
        let fresh = crate::blob::hex(&[random_uuid(), random_uuid()].concat());
        self.write(move |c| {
            c.execute("INSERT INTO meta (key, value) VALUES ('cluster.secret', ?1) ON CONFLICT DO NOTHING", [&fresh])?;
            let s = c.query_row("SELECT value FROM meta WHERE key = 'cluster.secret'", (), |r| r.get(0))?;
            Ok((s, Vec::new()))
        })
        .await
    }

    async fn routing_table(&self) -> Result<Option<String>> {
        self.lookup(move |c| {
            c.prepare_cached("SELECT value FROM meta WHERE key = 'routing.table'")?
                .query_row((), |r| r.get::<_, String>(0))
                .optional()
        })
        .await
    }

    async fn replace_routing_table(&self, expected: Option<String>, table: String) -> Result<bool> {
        self.write(move |c| {
            let now: Option<String> =
                c.query_row("SELECT value FROM meta WHERE key = 'routing.table'", (), |r| r.get(0)).optional()?;
            if now != expected {
                return Ok((false, Vec::new()));
            }
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('routing.table', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&table],
            )?;
            Ok((true, vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn set_account_home(&self, login: &str, home: Option<&str>) -> Result<()> {
        let login = login.to_ascii_lowercase();
        let home = home.map(str::to_string);
        self.write(move |c| {
            if let Some(h) = &home
                && c.query_row("SELECT 1 FROM nodes WHERE name = ?1", [h], |_| Ok(())).optional()?.is_none()
            {
                return Err(StoreError::NotFound(format!("node {h}")));
            }
            let n = c.execute("UPDATE accounts SET home = ?2 WHERE login = ?1", params![login, home])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {login}")));
            }
            Ok(((), vec![Change::DirectoryChanged]))
        })
        .await
    }

    async fn drop_lease(&self, id: i64) -> Result<()> {
        self.write_locked(move |c| {
            c.execute("DELETE FROM leases WHERE id = ?1", [id])?;
            Ok(((), Vec::new()))
        })
        .await
    }
}

#[async_trait]
impl Store for Arc<SqlStore> {
    fn is_shared(&self) -> bool {
        matches!(self.engine, Engine::Pg(_))
    }
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.bus.subscribe()
    }

    fn subscribe_mailbox(&self, mailbox: MailboxId) -> broadcast::Receiver<Change> {
        // A few slots per mailbox: 10,000 idle sessions must stay small, and a lagged
        // receiver simply reads the store.
        const SLOTS: usize = 16;
        let mut per = self.mailbox_buses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        per.entry(mailbox).or_insert_with(|| broadcast::channel(SLOTS).0).subscribe()
    }

    async fn flush(&self) -> Result<()> {
        // Jobs run in order, so an empty job returns once all earlier ones are durable.
        // The WAL is checkpointed when the writer stops (`close`).
        self.write(|_| Ok(((), Vec::new()))).await
    }
}

/// Inserts an account with its default mailboxes (inside the caller's transaction).
fn insert_account(c: &Db, new: NewAccount) -> Result<(Account, Vec<Change>)> {
    let login = new.login.to_ascii_lowercase();
    let domain = domain_of(&login)?.to_string();
    require_domain(c, &domain)?;
    if address_kind(c, &login)?.is_some() {
        return Err(StoreError::Exists(format!("address {login}")));
    }
    let id: AccountId = c.query_row(
        "INSERT INTO accounts (login, domain, display_name, password_hash, quota, role, created, scram,
                               profile, uuid, changed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?7) RETURNING id",
        params![
            login,
            domain,
            new.display_name,
            new.password_hash,
            new.quota.min(i64::MAX as u64) as i64,
            new.role.as_str(),
            now(),
            new.scram,
            new.profile.to_json(),
            random_uuid(),
        ],
        |r| r.get(0),
    )?;
    claim_address(c, &login, "account", Some(id))?;
    for extra in &new.addresses {
        let extra = extra.to_ascii_lowercase();
        if extra != login {
            claim_address(c, &extra, "account", Some(id))?;
        }
    }
    let mut changes = vec![Change::DirectoryChanged];
    for (name, su) in DEFAULT_MAILBOXES {
        let mb = insert_mailbox(c, id, name, *su)?;
        c.execute(
            "INSERT INTO subscriptions (account, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![id, name],
        )?;
        changes.push(Change::MailboxCreated { account: id, mailbox: mb.id });
    }
    let account = query_account(c, "id = ?1", &id)?.ok_or_else(|| StoreError::NotFound(format!("account {login}")))?;
    Ok((account, changes))
}

const GROUP_COLS: &str = "address, display_name, profile, uuid, created, changed";

/// A group without its members (the caller reads them).
fn group_from_row(r: &Row<'_>) -> Result<Group> {
    Ok(Group {
        address: r.get(0)?,
        display_name: r.get(1)?,
        members: Vec::new(),
        profile: Profile::from_json(&r.get::<_, String>(2)?),
        uuid: uuid_of(r.get(3)?),
        created: r.get(4)?,
        changed: r.get(5)?,
    })
}

const CONTACT_COLS: &str = "address, domain, display_name, profile, uuid, created, changed";

fn contact_from_row(r: &Row<'_>) -> Result<Contact> {
    Ok(Contact {
        address: r.get(0)?,
        domain: r.get(1)?,
        display_name: r.get(2)?,
        profile: Profile::from_json(&r.get::<_, String>(3)?),
        uuid: uuid_of(r.get(4)?),
        created: r.get(5)?,
        changed: r.get(6)?,
    })
}

fn group_members(c: &Db, address: &str) -> Result<Vec<String>> {
    let mut s = c.prepare_cached("SELECT member FROM group_members WHERE grp = ?1 ORDER BY member")?;
    s.query_map([address], |r| r.get(0))?.collect::<Result<_>>()
}

/// INBOX is case-insensitive (RFC 9051 §5.1); every other name is kept as given.
pub fn canonical_mailbox_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("inbox") { "INBOX".to_string() } else { name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance_battery() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(dir.path()).unwrap();
        crate::conformance::run_all(&store).await;
        store.close();
    }

    /// Two nodes on one PostgreSQL database: UIDs and MODSEQs stay right with both
    /// delivering into one mailbox at once, each hears the other's changes and
    /// directory writes, and queue claims and leases hold across them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_nodes_share_postgres() {
        let pg = crate::pgtest::TestPostgres::start().expect("PostgreSQL for the test");
        let url = pg.database().await.unwrap();
        let a = SqlStore::open_url(&url).await.unwrap();
        let b = SqlStore::open_url(&url).await.unwrap();
        assert!(a.is_shared() && b.is_shared());
        let version = b.directory_version();
        a.add_domain("example.org").await.unwrap();
        let acc = a.create_account(crate::conformance::new_account("u@example.org")).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while b.directory_version() == version {
            assert!(std::time::Instant::now() < deadline, "b hears a's directory change");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let inbox = b.mailbox(acc.id, "INBOX").await.unwrap().expect("b reads a's account");
        let mut heard = b.subscribe();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..60 {
            for s in [&a, &b] {
                let s = Arc::clone(s);
                tasks.spawn(async move {
                    crate::conformance::deliver_one(&s, acc.id, format!("Subject: {i}\r\n\r\n{i}\r\n").as_bytes()).await
                });
            }
        }
        let mut uids = Vec::new();
        let mut modseqs = Vec::new();
        while let Some(d) = tasks.join_next().await {
            let d = d.unwrap();
            uids.push(d.uid);
            modseqs.push(d.modseq);
        }
        uids.sort_unstable();
        modseqs.sort_unstable();
        modseqs.dedup();
        assert_eq!(uids, (1..=120).collect::<Vec<u32>>(), "every UID once, none skipped");
        assert_eq!(modseqs.len(), 120, "every MODSEQ its own");
        let mb = a.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
        assert_eq!((mb.uidnext, mb.messages), (121, 120));
        let mut appended = 0;
        while appended < 120 {
            match tokio::time::timeout(std::time::Duration::from_secs(2), heard.recv()).await {
                Ok(Ok(Change::Appended { mailbox, .. })) if mailbox == inbox.id => appended += 1,
                Ok(Ok(_)) => {}
                other => panic!("b heard {appended} of 120 appends, then {other:?}"),
            }
        }

        // The queue: what one node claimed the other does not get.
        let staged = a.stage(b"Subject: out\r\n\r\nx\r\n".to_vec()).await.unwrap();
        a.deliver(Delivery {
            body: staged,
            internal_date: 0,
            envelope: None,
            flags: Flags::default(),
            keywords: Vec::new(),
            targets: Vec::new(),
            relay: vec!["r1@elsewhere.test".into(), "r2@elsewhere.test".into()],
            enforce_quota: false,
        })
        .await
        .unwrap();
        let (ca, cb) = tokio::join!(a.queue_due(now() + 1, 1), b.queue_due(now() + 1, 1));
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        assert_eq!((ca.len(), cb.len()), (1, 1), "each node claims one of the two");
        assert_ne!(ca[0].id, cb[0].id, "never the same one");
        assert!(a.queue_due(now() + 1, 10).await.unwrap().is_empty());
        // A node that stops renewing loses its claims when they run out.
        let later = now() + crate::HEARTBEAT_TTL + 5;
        assert_eq!(b.queue_due(later, 10).await.unwrap().len(), 2, "claims that ran out go to a live node");

        // Leases across nodes: the maildrop lock holds on the other node too.
        let lock = a.take_lease("pop3", acc.id, 1).await.unwrap().expect("free");
        assert!(b.take_lease("pop3", acc.id, 1).await.unwrap().is_none(), "locked on the other node");
        a.drop_lease(lock).await.unwrap();
        assert!(b.take_lease("pop3", acc.id, 1).await.unwrap().is_some());
        a.close();
        b.close();
    }

    /// TLS to PostgreSQL: the server's certificate checked against the CA given, one
    /// not from it refused with a word on what to do, `sslmode=disable` without TLS.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_over_tls() {
        let (pg, ca) = crate::pgtest::TestPostgres::start_with_tls().expect("PostgreSQL with TLS for the test");
        let url = pg.database().await.unwrap();
        let required = format!("{url}?sslmode=require");
        let store = SqlStore::open_postgres_with(&required, None, Some(&ca)).await.expect("TLS with the CA");
        store.add_domain("tls.test").await.unwrap();
        let on: bool = store
            .read(|c| c.query_row("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", (), |r| r.get(0)))
            .await
            .unwrap();
        assert!(on, "the connection is encrypted");
        store.close();
        let untrusted = SqlStore::open_postgres_with(&required, None, None).await;
        let err = untrusted.map(|_| ()).expect_err("a certificate from no trusted CA is refused").to_string();
        assert!(err.contains("ca_file"), "{err}");
        let plain = SqlStore::open_postgres_with(&format!("{url}?sslmode=disable"), None, None).await.unwrap();
        let on: bool = plain
            .read(|c| c.query_row("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", (), |r| r.get(0)))
            .await
            .unwrap();
        assert!(!on);
        plain.close();
    }

    /// The same battery on PostgreSQL, started for the test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_battery_postgres() {
        let pg = crate::pgtest::TestPostgres::start().expect("PostgreSQL for the test");
        let store = SqlStore::open_url(&pg.database().await.unwrap()).await.unwrap();
        assert_eq!(store.engine(), "postgres");
        crate::conformance::run_all(&store).await;
        store.close();
    }

    /// How long reading 2,000 messages' metadata takes with and without parsed
    /// summaries kept (`cargo test -p agora-store --release summaries_kept -- --ignored --nocapture`).
    #[tokio::test]
    #[ignore]
    async fn summaries_kept_timing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(dir.path()).unwrap();
        store.add_domain("t.test").await.unwrap();
        let acc = store.create_account(NewAccount { login: "u@t.test".into(), ..Default::default() }).await.unwrap();
        for i in 0..2000 {
            let m = format!(
                "From: A <a@x.test>\r\nTo: B <b@t.test>, C <c@t.test>\r\nSubject: message {i}\r\nMessage-ID: <{i}@x>\r\n\
                 Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi {i}\r\n\
                 --b\r\nContent-Type: application/pdf; name=x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n"
            );
            let body = store.stage(m.into_bytes()).await.unwrap();
            store
                .deliver(Delivery {
                    body,
                    internal_date: 0,
                    envelope: None,
                    flags: Flags::default(),
                    keywords: Vec::new(),
                    targets: vec![crate::DeliveryTarget { account: acc.id, mailbox: "INBOX".into() }],
                    relay: Vec::new(),
                    enforce_quota: false,
                })
                .await
                .unwrap();
        }
        let inbox = store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
        for round in ["first read (parsed)", "second read (kept)"] {
            let t = std::time::Instant::now();
            let all = store.messages(inbox.id, 1..=u32::MAX).await.unwrap();
            println!("summaries: {round}: {} messages in {:?}", all.len(), t.elapsed());
        }
        store.close();
    }

    /// Under writes that never pause the background checkpoint never reaches the end of
    /// the log; the writer finishes it, so the log starts over instead of growing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(dir.path()).unwrap();
        store.add_domain("t.test").await.unwrap();
        let acc = store.create_account(NewAccount { login: "u@t.test".into(), ..Default::default() }).await.unwrap();
        let wal = dir.path().join("agora.db-wal");
        let largest = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (store, wal, largest) = (Arc::clone(&store), wal.clone(), Arc::clone(&largest));
            tasks.push(tokio::spawn(async move {
                for i in 0..800 {
                    let m = format!("Subject: {t} {i}\r\n\r\n{}\r\n", "x".repeat(3000));
                    let body = store.stage(m.into_bytes()).await.unwrap();
                    let target = crate::DeliveryTarget { account: acc.id, mailbox: "INBOX".into() };
                    let d = Delivery {
                        body,
                        internal_date: 0,
                        envelope: None,
                        flags: Flags::default(),
                        keywords: Vec::new(),
                        targets: vec![target],
                        relay: Vec::new(),
                        enforce_quota: false,
                    };
                    store.deliver(d).await.unwrap();
                    let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                    largest.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let written: i64 =
            store.read(|c| c.query_row("SELECT count(*) FROM messages", (), |r| r.get(0))).await.unwrap();
        assert_eq!(written, 6400);
        // 6,400 messages of 3 KB put about 110 MiB through the log; it restarts at
        // 16 MiB, plus what comes before the writer sees that.
        let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
        assert!(largest < 64 << 20, "the log grew to {largest} bytes");
        store.close();
    }

    #[tokio::test]
    async fn the_public_folders_account_moves_when_its_domain_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(dir.path()).unwrap();
        assert!(store.add_public_folder(PublicFolder { path: "X".into(), ..Default::default() }).await.is_err());
        store.add_domain("a.test").await.unwrap();
        store.add_public_folder(PublicFolder { path: "X".into(), ..Default::default() }).await.unwrap();
        store.add_domain("b.test").await.unwrap();
        store.remove_domain("a.test").await.unwrap();
        let owner = store.account_by_login(PUBLIC_OWNER).await.unwrap().unwrap();
        assert_eq!(owner.login, PUBLIC_OWNER);
        let domain: String = store
            .read(|c| c.query_row("SELECT domain FROM accounts WHERE role = 'system'", (), |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(domain, "b.test");
        let last = store.remove_domain("b.test").await.unwrap_err().to_string();
        assert!(last.contains("public folders need a domain"), "{last}");
        assert_eq!(store.public_folders().await.unwrap().len(), 1);
        store.close();
    }

    #[tokio::test]
    async fn a_mailbox_bus_hears_only_its_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(dir.path()).unwrap();
        store.add_domain("example.org").await.unwrap();
        let a = store.create_account(crate::conformance::new_account("alice@example.org")).await.unwrap();
        let inbox = store.mailbox(a.id, "INBOX").await.unwrap().unwrap();
        let mut bus = store.subscribe_mailbox(inbox.id);
        store.create_mailbox(a.id, "Other", None).await.unwrap();
        let d = crate::conformance::deliver_one(&store, a.id, b"Subject: x\r\n\r\nx\r\n").await;
        let heard = bus.recv().await.unwrap();
        assert!(matches!(heard, Change::Appended { mailbox, uid, .. } if mailbox == inbox.id && uid == d.uid));
        assert!(bus.try_recv().is_err(), "Other's creation is not INBOX's business");
        // Nobody listens any more: the next change drops the mailbox's bus.
        drop(bus);
        crate::conformance::deliver_one(&store, a.id, b"Subject: y\r\n\r\ny\r\n").await;
        assert!(store.mailbox_buses.lock().unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn old_schema_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A version-1 store: accounts without the scram column, subscriptions as a
            // mailbox column.
            let c = Connection::open(dir.path().join("agora.db")).unwrap();
            let subs = SCHEMA.find("CREATE TABLE IF NOT EXISTS subscriptions").unwrap();
            let subs_end = subs + SCHEMA[subs..].find("WITHOUT ROWID;\n").unwrap() + "WITHOUT ROWID;\n".len();
            // DNSSEC keys came with version 13 (their table is made by the base schema).
            let keys = SCHEMA.find("-- DNSSEC signing keys").unwrap();
            let keys_end = keys + SCHEMA[keys..].find(");\n").unwrap() + ");\n".len();
            // TLS reporting came with version 15 (its tables too).
            let tls = SCHEMA.find("CREATE TABLE IF NOT EXISTS tls_outcomes").unwrap();
            let tls_end = SCHEMA.find("-- Public folders").unwrap();
            // Public folders came with version 16, news with 17.
            let public = tls_end;
            let public_end = SCHEMA.find("INSERT OR IGNORE INTO meta").unwrap();
            let sync = SCHEMA.find("-- Directory replication (RFC 4533)").unwrap();
            let sync_end = SCHEMA.find("CREATE TABLE IF NOT EXISTS domains").unwrap();
            let v1 = [&SCHEMA[..subs], &SCHEMA[subs_end..]]
                .concat()
                .replace(&SCHEMA[keys..keys_end], "")
                .replace(&SCHEMA[tls..tls_end], "")
                .replace(&SCHEMA[public..public_end], "")
                .replace(&SCHEMA[sync..sync_end], "")
                .replace("    scram TEXT NOT NULL DEFAULT '',\n", "")
                .replace("    recent_uid INTEGER NOT NULL DEFAULT 0,\n", "    subscribed INTEGER NOT NULL DEFAULT 1,\n")
                .replace("    saved INTEGER NOT NULL DEFAULT 0,\n", "")
                .replace("    last_error TEXT NOT NULL DEFAULT '',\n    held INTEGER NOT NULL DEFAULT 0,\n    warned INTEGER NOT NULL DEFAULT 0\n", "")
                .replace("    attempts INTEGER NOT NULL DEFAULT 0,\n", "    attempts INTEGER NOT NULL DEFAULT 0\n")
                .replace("    state TEXT NOT NULL DEFAULT 'active',\n", "")
                .replace("    created INTEGER NOT NULL,\n    profile TEXT NOT NULL DEFAULT '{}',\n    uuid BLOB,\n    changed INTEGER NOT NULL DEFAULT 0\n", "    created INTEGER NOT NULL\n")
                .replace("    display_name TEXT NOT NULL,\n    profile TEXT NOT NULL DEFAULT '{}',\n    uuid BLOB,\n    created INTEGER NOT NULL DEFAULT 0,\n    changed INTEGER NOT NULL DEFAULT 0\n", "    display_name TEXT NOT NULL\n")
                .replace("    created INTEGER NOT NULL,\n    mta_sts_mode TEXT NOT NULL DEFAULT 'testing'\n", "    created INTEGER NOT NULL\n")
                .replace("'schema', '17'", "'schema', '1'");
            assert!(!v1.contains("scram") && !v1.contains("recent_uid") && v1.contains("'schema', '1'"));
            assert!(
                !v1.contains("subscriptions")
                    && !v1.contains("state TEXT")
                    && !v1.contains("tls_")
                    && !v1.contains("public_folders")
            );
            assert_eq!(v1.matches("uuid BLOB").count(), 1, "only the contacts table has identities");
            c.execute_batch(&v1).unwrap();
            c.execute("INSERT INTO domains (name, created) VALUES ('example.org', 0)", ()).unwrap();
            c.execute(
                "INSERT INTO accounts (login, domain, display_name, password_hash, role, created)
                 VALUES ('a@example.org', 'example.org', '', 'h', 'user', 0)",
                [],
            )
            .unwrap();
            for (name, subscribed) in [("Old", 1), ("Quiet", 0)] {
                c.execute(
                    "INSERT INTO mailboxes (account, name, uidvalidity, uidnext, highestmodseq, subscribed)
                     VALUES (1, ?1, 1, 1, 1, ?2)",
                    rusqlite::params![name, subscribed],
                )
                .unwrap();
            }
        }
        let store = SqlStore::open(dir.path()).unwrap();
        let a = store.account_by_login("a@example.org").await.unwrap().unwrap();
        assert_eq!(a.scram, "");
        assert_ne!(a.uuid, [0; 16], "existing accounts get identities");
        let mb = store.create_mailbox(a.id, "Box", None).await.unwrap();
        assert_eq!(mb.recent_uid, 0);
        assert_eq!(store.subscriptions(a.id).await.unwrap(), ["Old"]);
        assert!(store.mailbox(a.id, "Old").await.unwrap().unwrap().subscribed);
        store.close();
    }

    #[tokio::test]
    async fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqlStore::open(dir.path()).unwrap();
            store.add_domain("example.org").await.unwrap();
            store.close();
        }
        let store = SqlStore::open(dir.path()).unwrap();
        assert_eq!(store.domains().await.unwrap().len(), 1);
        store.close();
    }
}
