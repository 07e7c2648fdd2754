//! The information store: the `Store` traits every protocol reads and writes through
//! (by concern: directory, mailboxes, delivery and queue, life cycle), the embedded
//! SQLite backend, content-addressed blobs and the change bus.

pub mod address;
pub mod backup;
pub mod blob;
pub mod check;
pub(crate) mod db;
// Behaviour every backend must show: test code, run by each backend's tests.
#[cfg(test)]
mod conformance;
mod error;
pub mod migrate;
pub(crate) mod pg;
pub mod pgtest;
mod pgtls;
pub mod search;
pub mod section;
pub mod sort;
pub mod sql;
pub mod summary;
pub mod text;
pub mod thread;
pub mod time;
mod types;
pub mod urlauth;

use std::ops::RangeInclusive;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use blob::StagedBlob;
pub use error::{Result, StoreError};
pub use summary::{BodyText, EnvelopeFields, MessageSummary, Part};
pub use types::*;

tokio::task_local! {
    static REPLICATING: bool;
}

/// Runs `fut` as directory replication: in a domain a replica copies (its
/// `replica.domain.DOMAIN` value names the provider) only such writes change accounts,
/// groups, aliases, contacts and the domain itself.
pub async fn as_replication<F: std::future::Future>(fut: F) -> F::Output {
    REPLICATING.scope(true, fut).await
}

pub(crate) fn replicating() -> bool {
    REPLICATING.try_with(|v| *v).unwrap_or(false)
}

/// Domains, accounts, addresses, aliases, groups and DKIM keys.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    async fn add_domain(&self, name: &str) -> Result<Domain>;

    /// Refuses while accounts, aliases or groups of the domain remain.
    async fn remove_domain(&self, name: &str) -> Result<()>;

    async fn domains(&self) -> Result<Vec<Domain>>;

    async fn domain(&self, name: &str) -> Result<Option<Domain>>;

    /// Sets a domain's MTA-STS mode: testing, enforce or none.
    async fn set_mta_sts_mode(&self, domain: &str, mode: &str) -> Result<()>;

    /// Sets a domain's X.400 O/R address space (empty: none).
    async fn set_domain_x400(&self, domain: &str, space: &str) -> Result<()>;

    /// Stores DKIM keys (replacing any of the same domain and selector).
    async fn add_dkim_keys(&self, keys: Vec<DkimKey>) -> Result<()>;

    /// Every key of the domain, newest first, whatever its state.
    async fn dkim_keys(&self, domain: &str) -> Result<Vec<DkimKey>>;

    /// Pending keys start signing; the active keys of their algorithms retire.
    async fn activate_dkim_keys(&self, domain: &str) -> Result<usize>;

    /// Forgets retired keys (once their DNS records are gone).
    async fn remove_retired_dkim_keys(&self, domain: &str) -> Result<usize>;

    /// Turns an account's second factor on (a TOTP secret in base32) or off (None).
    async fn set_totp(&self, login: &str, secret: Option<&str>) -> Result<()>;

    /// An account's TOTP secret and the last step a code was used for; None when it
    /// has no second factor. Read only for checking a code: no protocol shows it.
    async fn totp(&self, account: AccountId) -> Result<Option<(String, i64)>>;

    /// Records that a code of `step` signed in, if no code of this or a later step
    /// did: false means the code was used already (a replay).
    async fn use_totp_step(&self, account: AccountId, step: i64) -> Result<bool>;

    /// NTLM for an account (DCE/RPC): None turns it off and forgets the NT hash;
    /// `Some("")` turns it on, the hash to come with the password; `Some(hex)` keeps
    /// the hash. Off unless turned on: the NT hash is a weaker secret than argon2id.
    async fn set_ntlm(&self, login: &str, state: Option<&str>) -> Result<()>;

    /// An account's NTLM state as `set_ntlm` left it (None: off). Read only to check
    /// an NTLM login: no protocol shows it.
    async fn ntlm(&self, account: AccountId) -> Result<Option<String>>;

    /// A new webmail session.
    async fn add_web_session(&self, session: WebSession) -> Result<()>;

    /// The session whose token hashes to `id`, if it exists.
    async fn web_session(&self, id: &str) -> Result<Option<WebSession>>;

    /// Records a request of the session at `seen` (callers write at most once a minute).
    async fn touch_web_session(&self, id: &str, seen: i64) -> Result<()>;

    /// An account's sessions, oldest first (the session list).
    async fn web_sessions(&self, account: AccountId) -> Result<Vec<WebSession>>;

    /// Signs out one of the account's sessions (`only`) or all of them; how many went.
    async fn remove_web_sessions(&self, account: AccountId, only: Option<&str>) -> Result<usize>;

    /// Removes sessions idle since before `idle_before` or created before
    /// `created_before` (idle and absolute expiry); how many went.
    async fn expire_web_sessions(&self, idle_before: i64, created_before: i64) -> Result<usize>;

    /// An account's own settings (webmail preferences, vacation reply, forwarding), by
    /// name.
    async fn account_settings(&self, account: AccountId) -> Result<Vec<(String, String)>>;

    /// Sets one of an account's settings, or clears it (None).
    async fn set_account_setting(&self, account: AccountId, name: &str, value: Option<&str>) -> Result<()>;

    /// Every account's value of one setting (the mail core's forwarding and vacation).
    async fn settings_named(&self, name: &str) -> Result<Vec<(AccountId, String)>>;

    /// Records a vacation reply to `sender` at `now` unless one went within `period`
    /// seconds before: true when this reply may go (RFC 3834's once per period).
    async fn note_vacation_reply(&self, account: AccountId, sender: &str, now: i64, period: i64) -> Result<bool>;

    /// Whether `key` was noted (as by `note_vacation_reply`) after `since`, without
    /// noting anything (Sieve's duplicate test, noted only once a message is delivered).
    async fn noted_since(&self, account: AccountId, key: &str, since: i64) -> Result<bool>;

    /// IMAP METADATA (RFC 5464): an account's entries of a mailbox (0: the server's),
    /// by name (lower-cased, with their /private/ or /shared/ prefix).
    async fn metadata(&self, account: AccountId, mailbox: MailboxId) -> Result<Vec<(String, Vec<u8>)>>;

    /// Sets (Some) or removes (None) entries in one transaction; OverQuota, with nothing
    /// changed, when the mailbox would hold more than `max_entries`.
    async fn set_metadata(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        changes: Vec<(String, Option<Vec<u8>>)>,
        max_entries: usize,
    ) -> Result<()>;

    /// An account's Sieve scripts, by name.
    async fn sieve_scripts(&self, account: AccountId) -> Result<Vec<SieveScriptInfo>>;

    /// The text of one of an account's Sieve scripts; None when it has none of that name.
    async fn sieve_script(&self, account: AccountId, name: &str) -> Result<Option<String>>;

    /// Stores a Sieve script under `name`, replacing the text of one of that name (which
    /// stays active if it was). The caller has checked the text.
    async fn put_sieve_script(&self, account: AccountId, name: &str, script: &str) -> Result<()>;

    /// Renames a Sieve script (an active one stays active): `NotFound` when there is
    /// no `from`, `Exists` when `to` is taken.
    async fn rename_sieve_script(&self, account: AccountId, from: &str, to: &str) -> Result<()>;

    /// Deletes a Sieve script: `NotFound` when there is none of that name, `Invalid`
    /// when it is the active one (deactivate it first).
    async fn delete_sieve_script(&self, account: AccountId, name: &str) -> Result<()>;

    /// Makes `name` the account's one active Sieve script (`NotFound` when it has none
    /// of that name), or none (None); in one transaction, so at no moment are two active.
    async fn activate_sieve_script(&self, account: AccountId, name: Option<&str>) -> Result<()>;

    /// The account's active Sieve script, as (name, text); None when none is active.
    async fn active_sieve_script(&self, account: AccountId) -> Result<Option<(String, String)>>;

    /// Every account that has an active Sieve script (what the mail core compiles), in
    /// id order.
    async fn accounts_with_active_sieve(&self) -> Result<Vec<AccountId>>;

    /// Creates the account and its default mailboxes in one transaction.
    async fn create_account(&self, new: NewAccount) -> Result<Account>;

    /// Creates many accounts in one transaction (a bulk import's batch); each is
    /// created or refused on its own, in order.
    async fn create_accounts(&self, batch: Vec<NewAccount>) -> Result<Vec<Result<Account>>>;

    async fn account(&self, id: AccountId) -> Result<Option<Account>>;

    async fn account_by_login(&self, login: &str) -> Result<Option<Account>>;

    async fn accounts(&self, domain: Option<&str>) -> Result<Vec<Account>>;

    /// Removes the account with its mailboxes and messages.
    async fn remove_account(&self, login: &str) -> Result<()>;

    /// Replaces the password hash and SCRAM verifier together.
    async fn set_password(&self, login: &str, hash: &str, scram: &str) -> Result<()>;

    /// Storage quota in bytes; 0 for none.
    async fn set_quota(&self, login: &str, quota: u64) -> Result<()>;

    async fn add_account_address(&self, login: &str, address: &str) -> Result<()>;

    async fn add_alias(&self, address: &str, target: &str) -> Result<()>;

    async fn remove_alias(&self, address: &str) -> Result<()>;

    async fn create_group(&self, address: &str, display_name: &str) -> Result<()>;

    async fn remove_group(&self, address: &str) -> Result<()>;

    async fn add_group_member(&self, group: &str, member: &str) -> Result<()>;

    async fn remove_group_member(&self, group: &str, member: &str) -> Result<()>;

    async fn groups(&self) -> Result<Vec<Group>>;

    /// Changes an account's display name, profile or role (and its change time).
    async fn update_account(&self, login: &str, update: AccountUpdate) -> Result<()>;

    /// Gives an account a new login (its primary address); references to the old
    /// one (group members, alias targets, mailbox rights) follow. Mail stays.
    async fn rename_account(&self, login: &str, new_login: &str) -> Result<()>;

    /// Removes an extra address of an account (never its login).
    async fn remove_account_address(&self, login: &str, address: &str) -> Result<()>;

    /// Every alias with its targets, by address.
    async fn aliases(&self) -> Result<Vec<(String, Vec<String>)>>;

    /// Changes a group's display name or profile.
    async fn update_group(&self, address: &str, display_name: Option<String>, profile: Option<Profile>) -> Result<()>;

    /// Adds an external recipient to the address book of `contact.domain`.
    async fn add_contact(&self, contact: Contact) -> Result<Contact>;

    async fn update_contact(&self, address: &str, display_name: Option<String>, profile: Option<Profile>)
    -> Result<()>;

    async fn remove_contact(&self, address: &str) -> Result<()>;

    /// Contacts, by address; of one domain's address book or of all.
    async fn contacts(&self, domain: Option<&str>) -> Result<Vec<Contact>>;

    /// Adds a record to a hosted zone (besides the records the server makes itself).
    async fn add_dns_record(&self, rec: DnsRecord) -> Result<()>;

    /// Removes a zone's records of `name` and `rtype` (only the one with `value`, if given).
    async fn remove_dns_records(&self, domain: &str, name: &str, rtype: &str, value: Option<&str>) -> Result<usize>;

    async fn dns_records(&self, domain: &str) -> Result<Vec<DnsRecord>>;

    /// Stores a new DNSSEC key of a hosted zone; returns its id.
    async fn add_dnssec_key(&self, key: DnssecKey) -> Result<i64>;

    /// A zone's DNSSEC keys, oldest first, whatever their state.
    async fn dnssec_keys(&self, domain: &str) -> Result<Vec<DnssecKey>>;

    /// Moves a DNSSEC key to `state` (its `since` becomes now); None deletes it.
    async fn set_dnssec_key_state(&self, id: i64, state: Option<DnssecKeyState>) -> Result<()>;

    /// What `address` (lower-cased, full) names: an account, alias, group, or nothing.
    async fn lookup_address(&self, address: &str) -> Result<AddressEntry>;

    /// Gives the account, group or contact at `address` the identity `uuid` (a replica
    /// keeps its provider's entryUUIDs).
    async fn set_directory_uuid(&self, address: &str, uuid: [u8; 16]) -> Result<()>;

    /// The directory's replication log, every entry ever recorded (deleted ones too).
    async fn sync_log(&self) -> Result<Vec<SyncRecord>>;

    /// Records what changed in the directory since the last call, in one transaction
    /// (upserts by entryUUID), with the log's horizon (the `horizon` value: it only
    /// moves forward, and deleted entries below it are dropped). Not a directory change
    /// itself.
    async fn record_sync(&self, changes: Vec<SyncRecord>, horizon: Option<String>) -> Result<()>;

    /// Replication's named values (the log's horizon, a replica's cookie, the
    /// consumers a provider has seen).
    async fn sync_values(&self, prefix: &str) -> Result<Vec<(String, String)>>;

    /// Sets (or with None removes) one of replication's named values.
    async fn set_sync_value(&self, key: &str, value: Option<String>) -> Result<()>;

    /// Changes whenever any process commits a directory change to this store; cheap to
    /// read, so directory caches can check it on every lookup.
    fn directory_version(&self) -> u64;
}

/// Mailboxes and the messages in them, with IMAP semantics (UIDs, MODSEQ, flags,
/// expunge log), subscriptions, ACLs and per-reader \Seen.
#[async_trait]
pub trait MailboxStore: Send + Sync {
    async fn mailboxes(&self, account: AccountId) -> Result<Vec<Mailbox>>;

    async fn mailbox(&self, account: AccountId, name: &str) -> Result<Option<Mailbox>>;

    async fn create_mailbox(&self, account: AccountId, name: &str, special_use: Option<SpecialUse>) -> Result<Mailbox>;

    async fn mailbox_by_id(&self, id: MailboxId) -> Result<Option<Mailbox>>;

    /// Deletes a mailbox and its messages (never INBOX).
    async fn delete_mailbox(&self, account: AccountId, name: &str) -> Result<()>;

    /// Renames a mailbox and those below it (`name/...`). Renaming INBOX moves its
    /// messages into a new mailbox and leaves INBOX empty (RFC 9051 §6.3.6).
    async fn rename_mailbox(&self, account: AccountId, from: &str, to: &str) -> Result<()>;

    /// Subscriptions are names, kept whether or not the mailbox exists.
    async fn set_subscribed(&self, account: AccountId, name: &str, subscribed: bool) -> Result<()>;

    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>>;

    /// Access control (RFC 4314): sets an identifier's rights on a mailbox; None (or
    /// empty) removes the entry.
    async fn set_acl(&self, mailbox: MailboxId, identifier: &str, rights: Option<&str>) -> Result<()>;

    async fn acl(&self, mailbox: MailboxId) -> Result<Vec<(String, String)>>;

    /// The public folders, by path.
    async fn public_folders(&self) -> Result<Vec<PublicFolder>>;

    /// Adds a public folder at `path` (its parent must exist; it starts with the
    /// parent's permissions). Newsgroup names and addresses are unique.
    async fn add_public_folder(&self, folder: PublicFolder) -> Result<PublicFolder>;

    /// Changes a public folder's news, mail, moderation and expiry settings. Making it
    /// moderated makes its moderation queue (a subfolder hidden from news that only its
    /// moderators may see); ending moderation removes the queue if it is empty.
    async fn update_public_folder(&self, path: &str, update: PublicFolderUpdate) -> Result<PublicFolder>;

    /// The public folders served as newsgroups (by name), with counts and permissions.
    async fn news_groups(&self) -> Result<Vec<NewsGroup>>;

    /// Overview data of a folder's articles numbered within `uids`, at most `limit`,
    /// from the summaries kept at delivery (no body is read).
    async fn overview(&self, mailbox: MailboxId, uids: RangeInclusive<u32>, limit: usize) -> Result<Vec<Overview>>;

    /// One article's Message-ID and body address (ARTICLE by number): a point query
    /// on the Message-ID index.
    async fn news_ref(&self, mailbox: MailboxId, uid: u32) -> Result<Option<(String, String)>>;

    /// Where the article with this Message-ID is, in newsgroups: (folder, number).
    async fn news_article(&self, message_id: &str) -> Result<Vec<(MailboxId, u32)>>;

    /// Whether a Message-ID was taken here: present in a public folder or remembered by
    /// the history.
    async fn news_seen(&self, message_id: &str) -> Result<bool>;

    /// Enters Message-IDs in the history (articles refused or not carried), so that
    /// peers' offers of them are declined.
    async fn remember_news(&self, message_ids: Vec<String>, now: i64) -> Result<()>;

    /// Message-IDs of the articles that arrived in public folders at or after `since`,
    /// with their folders.
    async fn news_since(&self, since: i64) -> Result<Vec<(MailboxId, String)>>;

    /// Forgets history entries from before `before` whose articles are gone.
    async fn forget_news_history(&self, before: i64) -> Result<usize>;

    /// Starts a news peer's outgoing feed at the present (only articles arriving from
    /// now on are offered to it), unless it has one already.
    async fn news_feed_start(&self, peer: &str) -> Result<()>;

    /// Arrivals in newsgroups after the peer's cursor, oldest first.
    async fn news_feed_next(&self, peer: &str, limit: usize) -> Result<Vec<FeedArticle>>;

    /// The peer has had everything up to `seq` offered.
    async fn news_feed_advance(&self, peer: &str, seq: i64) -> Result<()>;

    /// The mail-enabled public folder with this address, and the account owning it.
    async fn public_folder_by_address(&self, address: &str) -> Result<Option<(AccountId, PublicFolder)>>;

    /// Removes a public folder and its messages; refused while it has subfolders.
    async fn remove_public_folder(&self, path: &str) -> Result<()>;

    /// Moves a public folder (and its subfolders) to `to`, whose parent must exist.
    async fn rename_public_folder(&self, from: &str, to: &str) -> Result<()>;

    /// Other accounts' mailboxes with an ACL entry for any of `identifiers` (not the
    /// public folders).
    async fn shared_with(&self, account: AccountId, identifiers: &[String]) -> Result<Vec<SharedMailbox>>;

    /// The public folders with an ACL entry for any of `identifiers`.
    async fn public_with(&self, identifiers: &[String]) -> Result<Vec<SharedMailbox>>;

    /// A reader's own \Seen on another account's mailbox.
    async fn private_seen(&self, mailbox: MailboxId, account: AccountId) -> Result<Vec<u32>>;

    async fn set_private_seen(&self, mailbox: MailboxId, account: AccountId, uids: &[u32], seen: bool) -> Result<()>;

    /// Claims every message up to UIDNEXT-1 as \Recent for the calling session; returns
    /// the previous watermark (messages above it are recent for this session only).
    async fn claim_recent(&self, mailbox: MailboxId) -> Result<u32>;

    /// Copies messages (same body, flags, internal date) to `to`; returns the target's
    /// UIDVALIDITY and (source UID, new UID) pairs in source UID order.
    async fn copy_messages(&self, from: MailboxId, uids: &[u32], to: MailboxId) -> Result<(u32, Vec<(u32, u32)>)>;

    /// Each of an account's mailboxes with how many of its messages are not \Seen, in
    /// one query (folder lists).
    async fn unseen_counts(&self, account: AccountId) -> Result<Vec<(MailboxId, u32)>>;

    /// Every message of a mailbox, in UID order, without summaries (cheap listing).
    async fn message_list(&self, mailbox: MailboxId) -> Result<Vec<MessageRef>>;

    /// Messages of a mailbox whose UIDs fall in `uids`, in UID order.
    async fn messages(&self, mailbox: MailboxId, uids: RangeInclusive<u32>) -> Result<Vec<MessageMeta>>;

    /// Messages of a mailbox with these UIDs (any order, at most a page's worth), in
    /// UID order; UIDs that are gone are left out.
    async fn messages_with(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<MessageMeta>>;

    /// The UIDs either side of `uid` in a mailbox: (the one below, the one above).
    async fn neighbours(&self, mailbox: MailboxId, uid: u32) -> Result<(Option<u32>, Option<u32>)>;

    /// One page of a mailbox as a person reads it: `limit` messages from `offset`, last
    /// first in `order` (newest, most recently received or largest first), with ties
    /// broken by UID. The index answers it, so a page costs the same in a folder of any size.
    async fn message_page(
        &self,
        mailbox: MailboxId,
        order: PageOrder,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<MessageMeta>>;

    /// Changes flags; messages whose MODSEQ is above `unchanged_since` are left alone
    /// and reported as modified. Returns the messages that changed with their new MODSEQ.
    async fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagsStored>;

    /// Everything that changed in `mailbox` after `modseq`, from one consistent snapshot.
    async fn changes_since(&self, mailbox: MailboxId, modseq: u64) -> Result<MailboxChanges>;

    /// Removes messages; records them in the expunge log. Returns the UIDs removed.
    async fn expunge(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>>;

    /// UIDs expunged from `mailbox` with a MODSEQ above `since` (for QRESYNC).
    async fn expunged_since(&self, mailbox: MailboxId, since: u64) -> Result<Vec<u32>>;

    /// SMTP envelope recorded with the delivery of a message, if any.
    async fn envelope_of(&self, mailbox: MailboxId, uid: u32) -> Result<Option<Envelope>>;
}

/// Bodies in (staged once, delivered to many mailboxes) and the outbound queue.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Hashes, parses and (for large bodies) durably writes a body before delivery.
    async fn stage(&self, body: Vec<u8>) -> Result<StagedBlob>;

    /// Adds one copy per target, all pointing at one stored body. Durable on return.
    async fn deliver(&self, delivery: Delivery) -> Result<Vec<Delivered>>;

    /// Several deliveries in one transaction: all or none (MULTIAPPEND).
    async fn deliver_all(&self, deliveries: Vec<Delivery>) -> Result<Vec<Vec<Delivered>>>;

    /// Outbound queue entries, oldest first.
    async fn queued(&self) -> Result<Vec<Queued>>;

    /// Counts one outbound TLS session's outcome for the day's TLS report (RFC 8460).
    async fn tls_outcome(&self, outcome: TlsOutcome) -> Result<()>;

    /// The outcomes counted on `day` (YYYY-MM-DD, UTC), with their counts.
    async fn tls_outcomes(&self, day: &str) -> Result<Vec<(TlsOutcome, u64)>>;

    /// Forgets the outcomes of `through_day` and every day before.
    async fn forget_tls_outcomes(&self, through_day: &str) -> Result<()>;

    /// Keeps a TLS report received for a hosted domain; false when it was already kept.
    async fn add_tls_report(&self, report: TlsReport) -> Result<bool>;

    /// The TLS reports received, oldest first.
    async fn tls_reports(&self) -> Result<Vec<TlsReport>>;

    /// How many entries the outbound queue holds, and when the oldest was queued
    /// (Unix seconds; none when empty): one cheap query for monitoring.
    async fn queue_stats(&self) -> Result<(u64, Option<i64>)>;

    /// Claims entries due for an attempt (not held, not claimed by a live process),
    /// soonest first, for this process: no other node's transport takes them until
    /// `queue_update` settles each or this process stops renewing its claims.
    async fn queue_due(&self, now: i64, limit: usize) -> Result<Vec<Queued>>;

    async fn queue_update(&self, id: i64, outcome: QueueOutcome) -> Result<()>;

    async fn read_blob(&self, hash: &str) -> Result<Vec<u8>>;

    /// A body and, for summaries marked `BodyText::Kept`, its text in search form
    /// (decoded and case-mapped at delivery); None for bodies whose raw text serves.
    /// One read, as SEARCH needs both.
    async fn read_blob_for_search(&self, hash: &str) -> Result<(Vec<u8>, Option<String>)>;

    /// The SMTP envelope of a delivery (DSN parameters for queue entries).
    async fn delivery_envelope(&self, delivery: i64) -> Result<Option<Envelope>>;
}

/// How long a heartbeat keeps claims and leases (and says a node is alive), in seconds.
pub const HEARTBEAT_TTL: i64 = 30;

/// What nodes sharing one store hold across processes: their registrations, leases
/// (the POP3 maildrop lock, sessions per user) and queue claims, all kept alive by the
/// holder's heartbeat.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Registers this node (or refreshes it) and renews this process's queue claims
    /// and leases for `HEARTBEAT_TTL` seconds; expired leases are cleared.
    async fn heartbeat(&self, node: NodeInfo) -> Result<()>;

    /// The nodes that ever registered, by name.
    async fn nodes(&self) -> Result<Vec<NodeInfo>>;

    /// Forgets a node's registration (one taken out of service).
    async fn remove_node(&self, name: &str) -> Result<()>;

    /// A lease of `kind` on `account` for this process, unless `max` live ones are out:
    /// its id, or None.
    async fn take_lease(&self, kind: &str, account: AccountId, max: usize) -> Result<Option<i64>>;

    async fn drop_lease(&self, id: i64) -> Result<()>;

    /// The secret front-ends prove themselves with to back-ends, made once per store.
    /// Read only by nodes; no protocol shows it.
    async fn cluster_secret(&self) -> Result<String>;

    /// Sets an account's home node (None: any back-end); the node must have registered.
    async fn set_account_home(&self, login: &str, home: Option<&str>) -> Result<()>;

    /// The organisation's routing table, in its canonical text, if there is one.
    async fn routing_table(&self) -> Result<Option<String>>;

    /// Replaces the routing table if it still is `expected` (None: there is none yet);
    /// false when another write came first (read it again and redo the change).
    async fn replace_routing_table(&self, expected: Option<String>, table: String) -> Result<bool>;
}

/// Everything Agora keeps, as one backend implements it. Writes return only once they
/// are durable (fsync'd); committed changes are then published on the change bus.
#[async_trait]
pub trait Store: DirectoryStore + MailboxStore + DeliveryStore + ClusterStore + Send + Sync + 'static {
    /// Whether other processes on other machines share this store (PostgreSQL): what
    /// one process holds must then be held in the store, not in memory.
    fn is_shared(&self) -> bool {
        false
    }

    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Only the changes of one mailbox: a session watching its selected mailbox is not
    /// woken by everybody else's mail. The receiver may lag (small buffer); a lagged
    /// receiver must read the store to catch up.
    fn subscribe_mailbox(&self, mailbox: MailboxId) -> broadcast::Receiver<Change> {
        let _ = mailbox;
        self.subscribe()
    }

    /// Waits until every write submitted so far is durable.
    async fn flush(&self) -> Result<()>;
}
