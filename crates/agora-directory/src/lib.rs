//! The directory: validation of names, administration of domains, accounts, aliases and
//! groups, recipient resolution (alias and group expansion with loop detection), and
//! password authentication with argon2id.

pub mod passwords;
pub mod sasl;
pub mod throttle;
pub mod totp;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_store::{Account, AddressEntry, NewAccount, Profile, Role, Store, StoreError};
use argon2::{Argon2, PasswordHasher};

/// Expansion stops past this many addresses visited: a bound on hostile or mistaken groups.
pub const MAX_EXPANSION: usize = 1000;
use passwords::MAX_PASSWORD;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = DirectoryError> = std::result::Result<T, E>;

/// Where mail for one envelope recipient goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Local accounts, each once.
    pub accounts: Vec<Account>,
    /// A mail-enabled public folder the address belongs to: its owning account and
    /// the folder.
    pub folder: Option<(agora_store::AccountId, agora_store::PublicFolder)>,
    /// Addresses outside the hosted domains that groups or aliases point to.
    pub external: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A hosted address, with what it expands to.
    Local(Resolution),
    /// A hosted domain, but no such address.
    Unknown,
    /// Not a hosted domain.
    Remote,
}

#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn Store>,
    cache: Arc<LookupCache>,
    verified: Arc<VerifiedLogins>,
    /// The cluster's secret, read once from a shared store.
    secret: Arc<tokio::sync::OnceCell<String>>,
}

/// The identity a front-end logs in to a user's home back-end with: SASL PLAIN with the
/// user as authorization identity, this as authentication identity and the cluster's
/// secret as password (over TLS). The user's own password never travels onwards.
pub const FRONT_END: &str = "agora-front-end";

/// How long a checked password is remembered. Mail clients log in again and again (POP3
/// polls, IMAP opens several connections); argon2id on each would cost tens of ms of CPU.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// Recently verified passwords, as a keyed hash (the key is random per process, so the
/// entries are useless outside it), bound to the password hash they were checked against:
/// a password change invalidates them at once.
struct VerifiedLogins {
    key: [u8; 32],
    /// login -> (when, password hash checked against, keyed hash of the password)
    entries: Mutex<HashMap<String, Verified>>,
}

type Verified = (Instant, String, [u8; 32]);

impl VerifiedLogins {
    fn new() -> VerifiedLogins {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // Without randomness the cache stays unused: see `tag`.
            key = [0; 32];
        }
        VerifiedLogins { key, entries: Mutex::new(HashMap::new()) }
    }

    fn tag(&self, password: &str) -> Option<[u8; 32]> {
        use hmac::Mac;
        if self.key == [0; 32] {
            return None;
        }
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        m.update(password.as_bytes());
        Some(m.finalize().into_bytes().into())
    }

    fn hit(&self, login: &str, hash: &str, password: &str) -> bool {
        let Some(tag) = self.tag(password) else { return false };
        let Ok(map) = self.entries.lock() else { return false };
        map.get(login).is_some_and(|(at, h, t)| at.elapsed() < VERIFIED_TTL && h == hash && *t == tag)
    }

    fn insert(&self, login: &str, hash: &str, password: &str) {
        let Some(tag) = self.tag(password) else { return };
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= CACHE_MAX {
                map.retain(|_, (at, _, _)| at.elapsed() < VERIFIED_TTL);
            }
            map.insert(login.to_string(), (Instant::now(), hash.to_string(), tag));
        }
    }
}

/// Lookup answers are also dropped after this long, in case the database is edited
/// behind the store's back.
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;

/// Recent address and domain lookups. Reading SQLite right after a commit costs a
/// page-cache refill; a burst of mail to the same recipients should not pay it each time.
/// Every directory change, from this process or the CLI, changes the store's
/// `directory_version`, which empties the cache before the next lookup.
struct LookupCache {
    /// The store's directory version the entries belong to, and the entries.
    entries: Mutex<(u64, CacheMap)>,
}

type CacheMap = HashMap<String, (Instant, CachedAnswer)>;

#[derive(Clone)]
enum CachedAnswer {
    Address(Box<AddressEntry>),
    Domain(bool),
}

impl LookupCache {
    fn get(&self, version: u64, key: &str) -> Option<CachedAnswer> {
        let mut guard = self.entries.lock().ok()?;
        let (seen, map) = &mut *guard;
        if *seen != version {
            map.clear();
            *seen = version;
            return None;
        }
        match map.get(key) {
            Some((at, v)) if at.elapsed() < CACHE_TTL => Some(v.clone()),
            _ => None,
        }
    }

    fn put(&self, version: u64, key: String, v: CachedAnswer) {
        let Ok(mut guard) = self.entries.lock() else { return };
        let (seen, map) = &mut *guard;
        if *seen != version {
            return;
        }
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(key, (Instant::now(), v));
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Directory")
    }
}

/// Lower-cases and checks a domain name (RFC 1035 letters, digits, hyphens; IDNs in A-label form).
pub fn normalize_domain(domain: &str) -> Result<String> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok { Ok(d) } else { Err(DirectoryError::Invalid(format!("'{domain}' is not a valid domain name"))) }
}

/// Lower-cases and checks a full address `local@domain`.
pub fn normalize_address(address: &str) -> Result<String> {
    let a = address.trim();
    let bad = || DirectoryError::Invalid(format!("'{address}' is not a valid address (expected local@domain)"));
    let (local, domain) = a.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local.chars().all(|c| c.is_alphanumeric() || (c.is_ascii_punctuation() && !"\"(),:;<>@[\\]".contains(c)))
    {
        return Err(bad());
    }
    let domain = normalize_domain(domain).map_err(|_| bad())?;
    let full = format!("{}@{domain}", local.to_lowercase());
    if full.len() > 254 {
        return Err(bad());
    }
    Ok(full)
}

/// Fills an empty given name and surname from a display name: the last word is the
/// surname, the words before it the given name ("Ann Marie Lee": "Ann Marie", "Lee").
pub fn derive_names(display_name: &str, profile: &mut Profile) {
    let name = display_name.trim();
    let (given, surname) = match name.rsplit_once(char::is_whitespace) {
        Some((g, s)) => (g.trim(), s.trim()),
        None => ("", name),
    };
    if profile.surname.is_empty() {
        profile.surname = surname.to_string();
    }
    if profile.given_name.is_empty() {
        profile.given_name = given.to_string();
    }
}

/// A random password of 20 characters from an unambiguous alphabet (~115 bits).
pub fn generate_password() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf).map_err(|e| DirectoryError::Invalid(format!("no randomness: {e}")))?;
        for b in buf {
            // Rejection sampling keeps the choice uniform.
            if (b as usize) < 256 - 256 % ALPHABET.len() && out.len() < 20 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

pub fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(DirectoryError::Invalid(format!("a password must have 1 to {MAX_PASSWORD} bytes")));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| DirectoryError::Invalid(format!("hashing password: {e}")))
}

/// The argon2id hash and SCRAM-SHA-256 verifier of a password (CPU-bound: tens of
/// milliseconds; bulk imports run it on every core).
pub fn credentials(password: &str) -> Result<(String, String)> {
    let hash = hash_password(password)?;
    Ok((hash, sasl::ScramVerifier::new(password)?.encode()))
}

/// Checks a password against a stored value: argon2id, or a scheme an import brought.
pub fn verify_password(password: &str, hash: &str) -> bool {
    passwords::verify(password, hash)
}

impl Directory {
    pub fn new(store: Arc<dyn Store>) -> Directory {
        Directory {
            store,
            cache: Arc::new(LookupCache { entries: Mutex::new((0, HashMap::new())) }),
            verified: Arc::new(VerifiedLogins::new()),
            secret: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The secret front-ends and back-ends sharing this store prove themselves with.
    pub async fn cluster_secret(&self) -> Result<String> {
        let s = self.secret.get_or_try_init(|| async { self.store.cluster_secret().await }).await?;
        Ok(s.clone())
    }

    /// A front-end logging in for `login` with the cluster's secret: the account, or
    /// None (wrong secret, unknown login, or a store no other node shares).
    pub async fn front_end_login(&self, login: &str, secret: &str) -> Result<Option<Account>> {
        if !self.store.is_shared() {
            return Ok(None);
        }
        let real = self.cluster_secret().await?;
        if !sasl::constant_time_eq(real.as_bytes(), secret.as_bytes()) {
            return Ok(None);
        }
        match normalize_address(login) {
            Ok(l) => Ok(self.store.account_by_login(&l).await?),
            Err(_) => Ok(None),
        }
    }

    /// `Store::lookup_address` through the cache.
    async fn lookup(&self, address: &str) -> Result<AddressEntry> {
        let version = self.store.directory_version();
        if let Some(CachedAnswer::Address(e)) = self.cache.get(version, address) {
            let e = *e;
            return Ok(e);
        }
        let e = self.store.lookup_address(address).await?;
        self.cache.put(version, address.to_string(), CachedAnswer::Address(Box::new(e.clone())));
        Ok(e)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn add_domain(&self, domain: &str) -> Result<()> {
        let d = normalize_domain(domain)?;
        self.store.add_domain(&d).await?;
        Ok(())
    }

    pub async fn is_local_domain(&self, domain: &str) -> Result<bool> {
        let key = format!("@{}", domain.to_ascii_lowercase());
        let version = self.store.directory_version();
        if let Some(CachedAnswer::Domain(b)) = self.cache.get(version, &key) {
            return Ok(b);
        }
        let local = self.store.domain(&key[1..]).await?.is_some();
        self.cache.put(version, key, CachedAnswer::Domain(local));
        Ok(local)
    }

    pub async fn add_user(
        &self,
        login: &str,
        display_name: &str,
        password: &str,
        quota: u64,
        role: Role,
    ) -> Result<Account> {
        self.add_user_with(login, display_name, password, quota, role, Profile::default()).await
    }

    /// Creates an account with its address-book attributes; a missing given name or
    /// surname is derived from the display name.
    pub async fn add_user_with(
        &self,
        login: &str,
        display_name: &str,
        password: &str,
        quota: u64,
        role: Role,
        mut profile: Profile,
    ) -> Result<Account> {
        let login = normalize_address(login)?;
        derive_names(display_name, &mut profile);
        let (hash, scram) = hash_blocking(password.to_string()).await?;
        Ok(self
            .store
            .create_account(NewAccount {
                login,
                display_name: display_name.to_string(),
                password_hash: hash,
                scram,
                quota,
                role,
                profile,
                addresses: Vec::new(),
            })
            .await?)
    }

    pub async fn set_password(&self, login: &str, password: &str) -> Result<()> {
        let login = normalize_address(login)?;
        let (hash, scram) = hash_blocking(password.to_string()).await?;
        self.store.set_password(&login, &hash, &scram).await?;
        self.keep_nt_hash(&login, password, true).await
    }

    /// Turns NTLM (DCE/RPC logins) on or off for an account. On, the NT hash is kept
    /// from the next password set or login with the password.
    pub async fn set_ntlm(&self, login: &str, on: bool) -> Result<()> {
        let login = normalize_address(login)?;
        self.store.set_ntlm(&login, on.then_some("")).await?;
        Ok(())
    }

    /// Keeps the NT hash of `password` (checked already) for an account with NTLM on
    /// (`changed`: the password is new; otherwise only a missing hash is filled in).
    pub async fn keep_nt_hash(&self, login: &str, password: &str, changed: bool) -> Result<()> {
        let Some(account) = self.store.account_by_login(login).await? else { return Ok(()) };
        self.keep_nt_hash_of(&account, password, changed).await
    }

    async fn keep_nt_hash_of(&self, account: &Account, password: &str, changed: bool) -> Result<()> {
        match self.store.ntlm(account.id).await? {
            Some(h) if changed || h.is_empty() => {
                self.store.set_ntlm(&account.login, Some(&agora_store::blob::hex(&nt_hash(password)))).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A login with the password fills in the NT hash of an account whose NTLM was
    /// turned on since its last password change.
    async fn keep_missing_nt_hash(&self, a: &Account, password: &str) {
        if let Err(e) = self.keep_nt_hash_of(a, password, false).await {
            tracing::warn!("directory: keeping the NT hash of {}: {e}", a.login);
        }
    }

    /// The account an NTLM login names, with its NT hash, when NTLM is on for it.
    /// `user` is an address, or a local part under `domain` (a NetBIOS name matching a
    /// hosted domain's first label, or the domain itself).
    pub async fn ntlm_account(&self, user: &str, domain: &str) -> Result<Option<(Account, [u8; 16])>> {
        let login = if user.contains('@') {
            user.to_string()
        } else {
            let domains = self.store.domains().await?;
            let d = domain.to_ascii_lowercase();
            let Some(hosted) = domains
                .iter()
                .find(|x| x.name == d)
                .or_else(|| domains.iter().find(|x| x.name.split('.').next() == Some(d.as_str())))
            else {
                return Ok(None);
            };
            format!("{user}@{}", hosted.name)
        };
        let Ok(login) = normalize_address(&login) else { return Ok(None) };
        let Some(account) = self.store.account_by_login(&login).await? else { return Ok(None) };
        let hash = self.store.ntlm(account.id).await?.and_then(|h| agora_store::blob::unhex::<16>(&h));
        Ok(hash.map(|h| (account, h)))
    }

    pub async fn add_alias(&self, address: &str, target: &str) -> Result<()> {
        let address = normalize_address(address)?;
        let target = normalize_address(target)?;
        if address == target {
            return Err(DirectoryError::Invalid(format!("alias {address} cannot point to itself")));
        }
        self.store.add_alias(&address, &target).await?;
        Ok(())
    }

    pub async fn add_group(&self, address: &str, display_name: &str) -> Result<()> {
        let address = normalize_address(address)?;
        self.store.create_group(&address, display_name).await?;
        Ok(())
    }

    /// Adds `member` to `group`, refusing a member whose expansion leads back to the group.
    pub async fn add_group_member(&self, group: &str, member: &str) -> Result<()> {
        let group = normalize_address(group)?;
        let member = normalize_address(member)?;
        if self.reaches(&member, &group).await? {
            return Err(DirectoryError::Invalid(format!(
                "adding {member} to {group} would make a loop: {member} already leads to {group}"
            )));
        }
        self.store.add_group_member(&group, &member).await?;
        Ok(())
    }

    /// True when expanding `from` through aliases and groups reaches `to`.
    async fn reaches(&self, from: &str, to: &str) -> Result<bool> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([from.to_string()]);
        while let Some(a) = queue.pop_front() {
            if a == to {
                return Ok(true);
            }
            if !seen.insert(a.clone()) || seen.len() > MAX_EXPANSION {
                continue;
            }
            match self.store.lookup_address(&a).await? {
                AddressEntry::Alias(t) => queue.extend(t),
                AddressEntry::Group(g) => queue.extend(g.members),
                _ => {}
            }
        }
        Ok(false)
    }

    /// Finds where mail to `address` goes. Aliases and groups are expanded recursively;
    /// each account appears once; loops are cut. `user+tag@domain` falls back to `user@domain`.
    pub async fn resolve(&self, address: &str) -> Result<Recipient> {
        let Ok(address) = normalize_address(address) else {
            return Ok(Recipient::Remote);
        };
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Ok(Recipient::Remote);
        };
        if !self.is_local_domain(domain).await? {
            return Ok(Recipient::Remote);
        }
        // The first lookup (with the `+tag` fallback) is kept for the expansion below.
        let mut start = address.clone();
        let mut first = self.lookup(&start).await?;
        if matches!(first, AddressEntry::None) {
            if let Some(folder) = self.store.public_folder_by_address(&address).await? {
                return Ok(Recipient::Local(Resolution { folder: Some(folder), ..Resolution::default() }));
            }
            match local.split_once('+') {
                Some((base, _)) if !base.is_empty() => {
                    start = format!("{base}@{domain}");
                    first = self.lookup(&start).await?;
                }
                _ => return Ok(Recipient::Unknown),
            }
        }
        let mut prefetched = Some(first);
        let mut res = Resolution::default();
        let mut seen = HashSet::new();
        let mut accounts_seen = HashSet::new();
        let mut queue = VecDeque::from([start]);
        while let Some(a) = queue.pop_front() {
            if !seen.insert(a.clone()) {
                continue;
            }
            if seen.len() > MAX_EXPANSION {
                tracing::warn!("directory: expansion of {address} stopped at {MAX_EXPANSION} addresses");
                break;
            }
            let entry = match prefetched.take() {
                Some(e) => e,
                None => self.lookup(&a).await?,
            };
            match entry {
                AddressEntry::Account(acc) => {
                    if accounts_seen.insert(acc.id) {
                        res.accounts.push(acc);
                    }
                }
                AddressEntry::Alias(targets) => queue.extend(targets),
                AddressEntry::Group(g) => queue.extend(g.members),
                AddressEntry::None => {
                    let is_local = match a.rsplit_once('@') {
                        Some((_, d)) => self.is_local_domain(d).await?,
                        None => false,
                    };
                    if is_local {
                        tracing::warn!("directory: {address} expands to unknown local address {a}");
                    } else {
                        res.external.push(a);
                    }
                }
            }
        }
        if res.accounts.is_empty() && res.external.is_empty() {
            return Ok(Recipient::Unknown);
        }
        Ok(Recipient::Local(res))
    }

    /// The identifiers an account's rights come from in access control lists: its
    /// login, the groups it is in (nested groups included), `authenticated` and
    /// `anyone` (RFC 4314).
    pub async fn identifiers(&self, login: &str) -> Result<Vec<String>> {
        let groups = self.store.groups().await?;
        Ok(identifiers(login, &groups))
    }

    /// Checks a login and password. Unknown logins cost the same time as wrong passwords.
    pub async fn authenticate(&self, login: &str, password: &str) -> Result<Option<Account>> {
        let account = match normalize_address(login) {
            Ok(l) => self.store.account_by_login(&l).await?,
            Err(_) => None,
        };
        if let Some(a) = &account
            && self.verified.hit(&a.login, &a.password_hash, password)
        {
            self.keep_missing_nt_hash(a, password).await;
            return Ok(account);
        }
        // One argon2id run costs tens of MiB and milliseconds: only a few at a time, and a
        // login that waited may find its password verified meanwhile by a twin session.
        let _permit = hashing_permit().await;
        if let Some(a) = &account
            && self.verified.hit(&a.login, &a.password_hash, password)
        {
            return Ok(account);
        }
        let hash = account.as_ref().map(|a| a.password_hash.clone()).unwrap_or_else(dummy_hash);
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash)).await.unwrap_or(false);
        if ok && let Some(a) = &account {
            self.keep_missing_nt_hash(a, password).await;
            if passwords::is_current(&a.password_hash) {
                self.verified.insert(&a.login, &a.password_hash, password);
            } else {
                // An imported hash of another scheme: replaced by argon2id (and a SCRAM
                // verifier) now that the password is known.
                drop(_permit);
                match self.set_password(&a.login, password).await {
                    Ok(()) => tracing::info!("directory: {} password upgraded to argon2id", a.login),
                    Err(e) => tracing::warn!("directory: upgrading the password of {}: {e}", a.login),
                }
            }
        }
        Ok(if ok { account } else { None })
    }
}

/// MD4 of the password's UTF-16LE: the secret NTLM checks against.
pub fn nt_hash(password: &str) -> [u8; 16] {
    use md4::Digest;
    let units: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    md4::Md4::digest(&units).into()
}

/// A valid hash of an unguessable password, checked against when the login does not exist.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let pw = generate_password().unwrap_or_else(|_| "dummy-password-for-timing".into());
            hash_password(&pw).unwrap_or_default()
        })
        .clone()
}

/// A turn to run argon2id: as many at once as there are cores, so a burst of logins
/// neither starves the server of CPU nor holds a hash's memory per waiting session.
async fn hashing_permit() -> Option<tokio::sync::SemaphorePermit<'static>> {
    static HASHING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    HASHING.get_or_init(|| tokio::sync::Semaphore::new(cores)).acquire().await.ok()
}

/// The argon2id hash and the SCRAM-SHA-256 verifier of a new password.
async fn hash_blocking(password: String) -> Result<(String, String)> {
    let _permit = hashing_permit().await;
    tokio::task::spawn_blocking(move || credentials(&password))
        .await
        .map_err(|e| DirectoryError::Invalid(format!("hashing password: {e}")))?
}

/// The rights letters an ACL gives to any of `identifiers` (RFC 4314: a user holds
/// the union of what each of their identifiers is given).
pub fn granted(acl: &[(String, String)], identifiers: &[String]) -> String {
    acl.iter().filter(|(who, _)| identifiers.contains(who)).map(|(_, rights)| rights.as_str()).collect()
}

/// The identifiers a user's rights come from: the login, the groups it is in (nested
/// groups included), `authenticated` and `anyone`.
pub fn identifiers(login: &str, groups: &[agora_store::Group]) -> Vec<String> {
    let mut ids = vec![login.to_ascii_lowercase()];
    loop {
        let before = ids.len();
        for g in groups {
            let address = g.address.to_ascii_lowercase();
            if !ids.contains(&address) && g.members.iter().any(|m| ids.contains(&m.to_ascii_lowercase())) {
                ids.push(address);
            }
        }
        if ids.len() == before {
            break;
        }
    }
    ids.push("authenticated".into());
    ids.push("anyone".into());
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_store::sql::SqlStore;

    async fn dir() -> (tempfile::TempDir, Directory) {
        let t = tempfile::tempdir().unwrap();
        let s = SqlStore::open(t.path()).unwrap();
        let d = Directory::new(Arc::new(s));
        d.add_domain("example.org").await.unwrap();
        (t, d)
    }

    #[test]
    fn address_validation() {
        assert_eq!(normalize_address("Alice@Example.ORG").unwrap(), "alice@example.org");
        for bad in ["", "a", "@x.org", "a@", "a b@x.org", "a@x..org", ".a@x.org", "a@-x.org"] {
            assert!(normalize_address(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn passwords_hash_and_verify() {
        let p = generate_password().unwrap();
        assert_eq!(p.len(), 20);
        let h = hash_password(&p).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&p, &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password(&p, "not a hash"));
    }

    #[tokio::test]
    async fn resolution_expands_groups_and_aliases_once() {
        let (_t, d) = dir().await;
        d.add_user("a@example.org", "A", "pw-a", 0, Role::User).await.unwrap();
        d.add_user("b@example.org", "B", "pw-b", 0, Role::User).await.unwrap();
        d.add_group("all@example.org", "All").await.unwrap();
        d.add_group("inner@example.org", "Inner").await.unwrap();
        d.add_group_member("all@example.org", "a@example.org").await.unwrap();
        d.add_group_member("all@example.org", "inner@example.org").await.unwrap();
        d.add_group_member("inner@example.org", "a@example.org").await.unwrap();
        d.add_group_member("inner@example.org", "b@example.org").await.unwrap();
        d.add_group_member("inner@example.org", "ext@else.test").await.unwrap();
        d.add_alias("boss@example.org", "all@example.org").await.unwrap();

        let Recipient::Local(r) = d.resolve("Boss@example.org").await.unwrap() else { panic!() };
        let mut logins: Vec<_> = r.accounts.iter().map(|a| a.login.as_str()).collect();
        logins.sort();
        assert_eq!(logins, ["a@example.org", "b@example.org"]);
        assert_eq!(r.external, ["ext@else.test"]);

        assert_eq!(d.resolve("nobody@example.org").await.unwrap(), Recipient::Unknown);
        assert_eq!(d.resolve("x@elsewhere.test").await.unwrap(), Recipient::Remote);
        let Recipient::Local(r) = d.resolve("a+lists@example.org").await.unwrap() else { panic!() };
        assert_eq!(r.accounts[0].login, "a@example.org");
    }

    #[tokio::test]
    async fn cached_lookups_see_changes_from_another_process_within_milliseconds() {
        let (t, server) = dir().await;
        // A second store on the same files stands for the CLI process; the server reads
        // the directory stamp again once its last reading is 2 ms old.
        let cli = Directory::new(Arc::new(SqlStore::open(t.path()).unwrap()));
        let stamp = std::time::Duration::from_millis(3);
        assert_eq!(server.resolve("new@example.org").await.unwrap(), Recipient::Unknown);
        assert_eq!(server.resolve("new@example.org").await.unwrap(), Recipient::Unknown, "cached");
        cli.add_user("new@example.org", "New", "pw", 0, Role::User).await.unwrap();
        tokio::time::sleep(stamp).await;
        assert!(matches!(server.resolve("new@example.org").await.unwrap(), Recipient::Local(_)));
        cli.store().remove_account("new@example.org").await.unwrap();
        tokio::time::sleep(stamp).await;
        assert_eq!(server.resolve("new@example.org").await.unwrap(), Recipient::Unknown);
        // The server's own changes show at once.
        server.add_user("own@example.org", "Own", "pw", 0, Role::User).await.unwrap();
        assert!(matches!(server.resolve("own@example.org").await.unwrap(), Recipient::Local(_)));
    }

    #[tokio::test]
    async fn group_loops_are_refused() {
        let (_t, d) = dir().await;
        d.add_group("g1@example.org", "").await.unwrap();
        d.add_group("g2@example.org", "").await.unwrap();
        d.add_group_member("g1@example.org", "g2@example.org").await.unwrap();
        let err = d.add_group_member("g2@example.org", "g1@example.org").await.unwrap_err();
        assert!(err.to_string().contains("loop"), "{err}");
        assert!(d.add_group_member("g1@example.org", "g1@example.org").await.is_err());
    }

    #[tokio::test]
    async fn authenticate_checks_password() {
        let (_t, d) = dir().await;
        d.add_user("a@example.org", "A", "secret-1", 0, Role::User).await.unwrap();
        assert!(d.authenticate("A@example.org", "secret-1").await.unwrap().is_some());
        assert!(d.authenticate("a@example.org", "secret-2").await.unwrap().is_none());
        // Remembered after a success, but only for that password and that hash.
        assert!(d.authenticate("a@example.org", "secret-1").await.unwrap().is_some());
        assert!(d.authenticate("a@example.org", "secret-2").await.unwrap().is_none());
        d.set_password("a@example.org", "secret-3").await.unwrap();
        assert!(d.authenticate("a@example.org", "secret-1").await.unwrap().is_none(), "old password after a change");
        assert!(d.authenticate("a@example.org", "secret-3").await.unwrap().is_some());
        assert!(d.authenticate("ghost@example.org", "secret-1").await.unwrap().is_none());
    }
}
