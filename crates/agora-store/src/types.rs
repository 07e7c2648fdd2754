//! Domain types held by the store: directory entries, mailboxes, messages, changes.

use serde::{Deserialize, Serialize};

use crate::summary::MessageSummary;

pub type AccountId = i64;
pub type MailboxId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub created: i64,
    /// The MTA-STS policy mode published for the domain (RFC 8461): testing, enforce
    /// or none.
    pub mta_sts_mode: String,
    /// The domain's X.400 O/R address space (`/C=…/ADMD=…/PRMD=…/O=…/`; empty: none):
    /// its users receive X.400 mail at the O/R addresses it maps.
    pub x400: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
    /// Reads the whole directory for replication (a sync search); writes nothing.
    Replicator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Replicator => "replicator",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "replicator" => Some(Role::Replicator),
            _ => None,
        }
    }
}

/// A signed-in webmail session. The cookie carries a random token and the store keeps
/// only its hash, so a copy of the store signs nobody in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    /// SHA-256 of the session's token, in hex.
    pub id: String,
    pub account: AccountId,
    /// The session's own token that its forms carry back (CSRF).
    pub csrf: String,
    pub created: i64,
    /// The last request seen, to the minute.
    pub seen: i64,
    /// Where and in what browser it signed in, for the session list.
    pub address: String,
    pub agent: String,
}

/// One of an account's Sieve scripts as a listing shows it (ManageSieve's LISTSCRIPTS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SieveScriptInfo {
    pub name: String,
    /// Whether it is the account's active script, the one run at delivery (at most one
    /// per account).
    pub active: bool,
    /// Its length in octets (UTF-8).
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// The login is the account's primary address, lower-cased.
    pub login: String,
    pub display_name: String,
    /// Extra addresses that deliver to this account (the primary is not repeated here).
    pub addresses: Vec<String>,
    /// PHC-format argon2id hash. Never leaves the server over any protocol.
    pub password_hash: String,
    /// SCRAM-SHA-256 verifier (`iterations:salt:stored_key:server_key`, base64), empty
    /// if none. As secret as the hash.
    pub scram: String,
    /// Quota in bytes; 0 means unlimited.
    pub quota: u64,
    /// Bytes of mail stored, for quota checks.
    pub used: u64,
    pub role: Role,
    pub created: i64,
    /// Address-book attributes (the LDAP directory serves them; every service sees them).
    pub profile: Profile,
    /// Stable identity for directory clients (entryUUID / objectGUID).
    pub uuid: [u8; 16],
    /// Last change of any attribute, seconds since the epoch.
    pub changed: i64,
    /// The node (back-end) whose sessions serve the account; None: any.
    pub home: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub login: String,
    pub display_name: String,
    pub password_hash: String,
    pub scram: String,
    pub quota: u64,
    pub role: Role,
    pub profile: Profile,
    /// Extra addresses that deliver to the account.
    pub addresses: Vec<String>,
}

/// What an address book shows of a person, group or contact besides its name and
/// addresses. Empty strings are absent attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    pub given_name: String,
    pub surname: String,
    pub initials: String,
    pub title: String,
    pub department: String,
    pub company: String,
    /// physicalDeliveryOfficeName.
    pub office: String,
    pub postal_address: String,
    pub phone: String,
    pub mobile: String,
    pub description: String,
    /// The manager's address (a person of the directory).
    pub manager: String,
    /// JPEG bytes (jpegPhoto / thumbnailPhoto).
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub photo: Vec<u8>,
    /// DER X.509 certificates for S/MIME (userCertificate;binary).
    #[serde(with = "b64_list", skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Vec<u8>>,
    /// Hidden from address lists (still receives mail).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl Profile {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// A stored profile; an unreadable one reads as empty rather than hiding the entry.
    pub fn from_json(s: &str) -> Profile {
        serde_json::from_str(s).unwrap_or_default()
    }
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod b64_list {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&STANDARD.encode(item))?;
        }
        seq.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub address: String,
    pub display_name: String,
    pub members: Vec<String>,
    pub profile: Profile,
    pub uuid: [u8; 16],
    pub created: i64,
    pub changed: i64,
}

/// One directory entry in the replication log (RFC 4533): known by its entryUUID, with
/// its DN, the CSN of its last change, a hash of what a replica receives of it, and
/// whether it was deleted (kept so that replicas learn of the delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub uuid: [u8; 16],
    pub dn: String,
    pub csn: String,
    pub hash: [u8; 16],
    pub deleted: bool,
}

/// An external recipient in the address book: no mailbox, no login, shown in the
/// naming context of `domain`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    pub address: String,
    pub domain: String,
    pub display_name: String,
    pub profile: Profile,
    pub uuid: [u8; 16],
    pub created: i64,
    pub changed: i64,
}

/// A record an administrator added to a hosted zone: owner name (fully qualified, lower
/// case), type and value in zone-file syntax, TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub domain: String,
    pub name: String,
    pub rtype: String,
    pub value: String,
    pub ttl: u32,
}

/// A DNSSEC signing key of a hosted zone.
#[derive(Clone)]
pub struct DnssecKey {
    pub id: i64,
    pub domain: String,
    /// Signs the DNSKEY set (its DS goes to the parent zone); else signs the rest.
    pub ksk: bool,
    /// DNSSEC algorithm number: 13 (ECDSA P-256) or 15 (Ed25519).
    pub algorithm: u8,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
    pub created: i64,
    pub state: DnssecKeyState,
    /// When it entered its state.
    pub since: i64,
}

impl std::fmt::Debug for DnssecKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnssecKey").field("id", &self.id).field("domain", &self.domain).field("ksk", &self.ksk).finish()
    }
}

/// Where a DNSSEC key is in a rollover: published before it signs (so resolvers
/// have it cached), signing, then published a while after (for signatures still
/// cached), then deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnssecKeyState {
    Published,
    Active,
    Retired,
}

impl DnssecKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            DnssecKeyState::Published => "published",
            DnssecKeyState::Active => "active",
            DnssecKeyState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> DnssecKeyState {
        match s {
            "published" => DnssecKeyState::Published,
            "retired" => DnssecKeyState::Retired,
            _ => DnssecKeyState::Active,
        }
    }
}

/// Changes to an account's names and profile; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    pub display_name: Option<String>,
    pub profile: Option<Profile>,
    pub role: Option<Role>,
}

/// What an address names in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressEntry {
    Account(Account),
    Alias(Vec<String>),
    Group(Group),
    None,
}

/// IMAP special-use attributes (RFC 6154) of the default mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    Drafts,
    Sent,
    Trash,
    Junk,
    Archive,
    All,
    Flagged,
}

impl SpecialUse {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::All => "\\All",
            SpecialUse::Flagged => "\\Flagged",
        }
    }
    pub fn parse(s: &str) -> Option<SpecialUse> {
        Some(match s.to_ascii_lowercase().as_str() {
            "\\drafts" => SpecialUse::Drafts,
            "\\sent" => SpecialUse::Sent,
            "\\trash" => SpecialUse::Trash,
            "\\junk" => SpecialUse::Junk,
            "\\archive" => SpecialUse::Archive,
            "\\all" => SpecialUse::All,
            "\\flagged" => SpecialUse::Flagged,
            _ => return None,
        })
    }
}

/// Mailboxes every new account gets, in order.
pub const DEFAULT_MAILBOXES: &[(&str, Option<SpecialUse>)] = &[
    ("INBOX", None),
    ("Drafts", Some(SpecialUse::Drafts)),
    ("Sent", Some(SpecialUse::Sent)),
    ("Trash", Some(SpecialUse::Trash)),
    ("Junk", Some(SpecialUse::Junk)),
    ("Archive", Some(SpecialUse::Archive)),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub id: MailboxId,
    pub account: AccountId,
    pub name: String,
    pub special_use: Option<SpecialUse>,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub subscribed: bool,
    pub messages: u32,
    /// Highest UID a session has already claimed as \Recent (RFC 3501 §2.3.2).
    pub recent_uid: u32,
}

/// IMAP system flags as a bitmask; keywords are kept separately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const ANSWERED: Flags = Flags(2);
    pub const FLAGGED: Flags = Flags(4);
    pub const DELETED: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);
    pub const RECENT: Flags = Flags(32);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub fn intersection(self, other: Flags) -> Flags {
        Flags(self.0 & other.0)
    }

    pub fn difference(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

/// How a flag update combines with the flags a message already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Set,
    Add,
    Remove,
    /// Set, but the flags in the mask keep their current value (a shared mailbox's
    /// owner's \Seen when another user replaces flags).
    SetExcept(Flags),
}

/// A DKIM signing key of a hosted domain (the private half never leaves the store
/// except to sign).
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// "rsa" or "ed25519".
    pub algorithm: String,
    /// RSA: PKCS#1 DER; Ed25519: PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// As published in the p= tag.
    pub public_key: Vec<u8>,
    pub created: i64,
    pub state: DkimState,
}

/// Where a DKIM key is in its life: published first, then signing, then kept
/// published a while for mail still in transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimState {
    /// Made by a rotation: to be published before it signs.
    Pending,
    /// Signs outgoing mail.
    Active,
    /// Replaced; its record may go once mail signed with it has been delivered.
    Retired,
}

impl DkimState {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimState::Pending => "pending",
            DkimState::Active => "active",
            DkimState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> DkimState {
        match s {
            "pending" => DkimState::Pending,
            "retired" => DkimState::Retired,
            _ => DkimState::Active,
        }
    }
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey").field("domain", &self.domain).field("selector", &self.selector).finish()
    }
}

/// A mailbox of another account that an ACL entry opens to someone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMailbox {
    pub mailbox: Mailbox,
    /// The owner's login.
    pub owner: String,
    /// The rights granted, joined over every matching identifier (RFC 4314 letters).
    pub rights: String,
}

/// Per-message metadata: everything IMAP needs without reading the body.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageMeta {
    pub mailbox: MailboxId,
    pub uid: u32,
    pub modseq: u64,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// Seconds since the Unix epoch.
    pub internal_date: i64,
    pub size: u64,
    /// Content address (SHA-256, hex) of the body in the blob store.
    pub blob: String,
    /// Shared: the summary of a body never changes, and one parse serves every reader.
    pub summary: std::sync::Arc<MessageSummary>,
    /// When it was saved in this mailbox (seconds; 0 if unknown).
    pub saved: i64,
}

/// The orders a page of a mailbox can be read in from the index alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOrder {
    /// By UID: the order messages arrived in the mailbox.
    Arrival,
    /// By internal date (when the server received the message).
    Received,
    Size,
}

/// A message's index entry without its parsed summary: what listing a mailbox needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub uid: u32,
    pub modseq: u64,
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub internal_date: i64,
    pub size: u64,
    pub blob: String,
    /// When it was saved in this mailbox (seconds; 0 if unknown).
    pub saved: i64,
}

/// What changed in a mailbox after a MODSEQ, read in one snapshot (CONDSTORE/QRESYNC
/// and session resynchronisation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxChanges {
    pub highest_modseq: u64,
    /// Messages whose MODSEQ is above the given one (new or changed), in UID order.
    pub changed: Vec<MessageRef>,
    /// UIDs expunged with a MODSEQ above the given one, ascending.
    pub expunged: Vec<u32>,
}

/// The outcome of a flag change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagsStored {
    /// Messages whose flags changed, with their new MODSEQ.
    pub changed: Vec<(u32, u64)>,
    /// Messages left alone because their MODSEQ was above UNCHANGEDSINCE (RFC 7162).
    pub modified: Vec<u32>,
}

/// SMTP envelope kept with a delivery, including the DSN parameters (RFC 3461).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub mail_from: String,
    pub helo: String,
    pub client_ip: String,
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub recipients: Vec<EnvelopeRecipient>,
    pub authenticated_as: Option<String>,
    pub tls: bool,
    /// The id given in the 250 reply and the tracking log.
    #[serde(default)]
    pub queue_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeRecipient {
    pub address: String,
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

/// Where one copy of a delivered message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTarget {
    pub account: AccountId,
    /// Mailbox name; INBOX for ordinary delivery.
    pub mailbox: String,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: crate::blob::StagedBlob,
    pub internal_date: i64,
    pub envelope: Option<Envelope>,
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub targets: Vec<DeliveryTarget>,
    /// Addresses outside the hosted domains: queued for the outbound transport.
    pub relay: Vec<String>,
    /// Refuse (OverQuota) rather than let a target account exceed its quota: IMAP
    /// APPEND does; SMTP checks at RCPT and never drops a message it accepted.
    pub enforce_quota: bool,
}

/// A node of the installation, as it registers itself in the shared store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// `--node NAME` (default: the host name).
    pub name: String,
    /// Where other nodes reach it (front-ends proxy to it there).
    pub address: String,
    /// single, back-end or front-end.
    pub role: String,
    pub started: i64,
    /// When it last said it was alive (Unix seconds).
    pub heartbeat: i64,
    /// The Agora version it runs.
    pub version: String,
    /// SHA-256 of its TLS certificate (hex): what front-ends connecting to it expect.
    pub tls_pin: String,
}

/// A message waiting in the outbound queue for one remote recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: i64,
    pub blob: String,
    pub mail_from: String,
    pub recipient: String,
    pub created: i64,
    pub attempts: u32,
    pub next_attempt: i64,
    /// The last temporary failure, as the remote side said it.
    pub last_error: String,
    pub held: bool,
    /// The SMTP delivery it came with (its envelope has the DSN parameters).
    pub delivery: Option<i64>,
    /// The sender has been told of the delay.
    pub warned: bool,
}

/// What became of a delivery attempt, or what an administrator decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOutcome {
    /// Delivered, or given up on (after any DSN was queued): the entry goes.
    Done,
    /// Try again at `at` (seconds); `error` is kept for `agora queue`.
    Retry {
        at: i64,
        error: String,
    },
    Hold(bool),
    RetryNow,
    /// A delay warning went to the sender.
    Warned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub account: AccountId,
    pub mailbox: MailboxId,
    pub uidvalidity: u32,
    pub uid: u32,
    pub modseq: u64,
}

/// A committed change, published on the change bus after its transaction is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Appended { account: AccountId, mailbox: MailboxId, uid: u32, modseq: u64 },
    FlagsChanged { account: AccountId, mailbox: MailboxId, uid: u32, modseq: u64 },
    Expunged { account: AccountId, mailbox: MailboxId, uid: u32, modseq: u64 },
    MailboxCreated { account: AccountId, mailbox: MailboxId },
    MailboxDeleted { account: AccountId, mailbox: MailboxId },
    DirectoryChanged,
}

impl Change {
    pub fn account(&self) -> Option<AccountId> {
        match self {
            Change::Appended { account, .. }
            | Change::FlagsChanged { account, .. }
            | Change::Expunged { account, .. }
            | Change::MailboxCreated { account, .. }
            | Change::MailboxDeleted { account, .. } => Some(*account),
            Change::DirectoryChanged => None,
        }
    }

    pub fn mailbox(&self) -> Option<MailboxId> {
        match self {
            Change::Appended { mailbox, .. }
            | Change::FlagsChanged { mailbox, .. }
            | Change::Expunged { mailbox, .. }
            | Change::MailboxCreated { mailbox, .. }
            | Change::MailboxDeleted { mailbox, .. } => Some(*mailbox),
            Change::DirectoryChanged => None,
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// One outbound TLS session's outcome, as a TLS report counts it (RFC 8460).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOutcome {
    /// UTC day, YYYY-MM-DD.
    pub day: String,
    /// The policy domain (the recipient domain).
    pub domain: String,
    /// `sts`, `tlsa` or `no-policy-found`.
    pub policy_type: String,
    /// The policy's text, one line per policy string.
    pub policy: String,
    pub mx: String,
    pub ip: String,
    /// Empty for success, else the failure's result type.
    pub result: String,
}

/// A TLS report another organisation sent about a hosted domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsReport {
    pub received: i64,
    pub organization: String,
    pub report_id: String,
    /// The policy domains it covers, comma-separated.
    pub domains: String,
    pub start: String,
    pub end: String,
    pub successes: u64,
    pub failures: u64,
    /// One line per failure detail: result type, MX, address, count.
    pub details: String,
}

/// The login of the account that owns the public folders: not an address, so no user
/// can take it, and no password opens it.
pub const PUBLIC_OWNER: &str = "public-folders";

/// The newsgroup name a public folder's path gives: components joined by dots,
/// spaces as `-`, lower case, only the characters a newsgroup component may have
/// (RFC 5536 §3.1.4: letters, digits, `+`, `-`, `_`); empty components dropped.
/// None when nothing is left.
pub fn newsgroup_name(path: &str) -> Option<String> {
    let parts: Vec<String> = path
        .split('/')
        .map(|c| {
            c.chars()
                .map(|ch| if ch == ' ' { '-' } else { ch.to_ascii_lowercase() })
                .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '+' | '-' | '_'))
                .collect::<String>()
        })
        .filter(|c| !c.is_empty())
        .collect();
    let name = parts.join(".");
    (!name.is_empty() && name.len() <= 497).then_some(name)
}

/// A public folder: a mailbox the organisation owns (not a user), with what news and
/// mail make of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicFolder {
    pub mailbox: MailboxId,
    /// Its place in the hierarchy, `/`-separated (`Sales/EMEA`).
    pub path: String,
    /// The newsgroup it is served as; None: hidden from news.
    pub newsgroup: Option<String>,
    /// The address it receives mail at; None: not mail-enabled.
    pub address: Option<String>,
    /// Posts by non-moderators wait for approval.
    pub moderated: bool,
    /// Mail from senders who are not logged in (the internet) is accepted.
    pub anonymous_mail: bool,
    /// Articles older than this many days expire (0: never).
    pub expire_days: u32,
    /// Only the newest this many articles are kept (0: all).
    pub expire_count: u32,
}

/// Changes to a public folder's settings; None leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicFolderUpdate {
    /// Some(None): hidden from news.
    pub newsgroup: Option<Option<String>>,
    /// Some(None): no longer mail-enabled.
    pub address: Option<Option<String>>,
    pub moderated: Option<bool>,
    pub anonymous_mail: Option<bool>,
    pub expire_days: Option<u32>,
    pub expire_count: Option<u32>,
}

/// The roles of a public folder's permissions (`agora public permission`, the admin
/// console) as IMAP ACL letters (RFC 4314): readers read
/// and keep their \Seen; authors also post; editors also change and delete others'
/// posts; moderators also make and remove subfolders; owners also set permissions.
pub fn role_rights(role: &str) -> Option<&'static str> {
    Some(match role.to_ascii_lowercase().as_str() {
        "reader" => "lrs",
        "author" => "lrsip",
        "editor" => "lrswipte",
        "moderator" => "lrswipkxte",
        "owner" => "lrswipkxtea",
        "none" => "",
        _ => return None,
    })
}

/// The role a set of ACL letters amounts to, for listings.
pub fn rights_role(rights: &str) -> String {
    let set = |s: &str| s.chars().collect::<std::collections::BTreeSet<char>>();
    ["owner", "moderator", "editor", "author", "reader"]
        .into_iter()
        .find(|role| role_rights(role).is_some_and(|r| set(r) == set(rights)))
        .map_or_else(|| format!("rights {rights}"), str::to_string)
}

/// The subfolder where posts to a moderated folder wait for a moderator.
pub const MODERATION_QUEUE: &str = "Moderation Queue";

impl PublicFolder {
    /// The path of this folder's moderation queue.
    pub fn queue_path(&self) -> String {
        format!("{}/{MODERATION_QUEUE}", self.path)
    }

    /// Whether someone holding `rights` on this folder moderates it (the x right: the
    /// moderator and owner roles).
    pub fn moderates(rights: &str) -> bool {
        rights.contains('x')
    }

    /// Where a post by someone holding `rights` goes: the folder itself, or its queue
    /// when the folder is moderated and the poster does not moderate it.
    pub fn post_path(&self, rights: &str) -> String {
        if self.moderated && !Self::moderates(rights) { self.queue_path() } else { self.path.clone() }
    }
}

/// A public folder served as a newsgroup, with what GROUP and LIST report and the
/// permissions that decide who sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewsGroup {
    pub folder: PublicFolder,
    /// The newsgroup name (the folder's, always set here).
    pub name: String,
    pub count: u32,
    /// Lowest article number present (the next one when empty).
    pub low: u32,
    /// Highest article number given so far.
    pub high: u32,
    /// When the folder was made (Unix seconds).
    pub created: i64,
    pub acl: Vec<(String, String)>,
}

/// An article to offer a news peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedArticle {
    pub seq: i64,
    pub message_id: String,
    pub mailbox: MailboxId,
    pub blob: String,
}

/// One article's overview line (RFC 3977 §8.3), from the summary kept at delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Overview {
    pub uid: u32,
    pub subject: String,
    pub from: String,
    pub date: String,
    pub message_id: String,
    pub references: String,
    pub bytes: u64,
    pub lines: u32,
    pub blob: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newsgroup_names_from_paths() {
        assert_eq!(newsgroup_name("Sales/EMEA Team").as_deref(), Some("sales.emea-team"));
        assert_eq!(newsgroup_name("Support/Ünïcode & co").as_deref(), Some("support.ncode--co"));
        assert_eq!(newsgroup_name("//x//").as_deref(), Some("x"));
        assert_eq!(newsgroup_name("!!!"), None);
    }
}
