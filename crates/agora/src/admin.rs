//! Administration commands: domains, users, aliases, groups. They open the same store
//! the running server uses, so changes take effect at once, without a restart.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use agora_directory::{Directory, normalize_address, normalize_domain};
use agora_store::ClusterStore;
use agora_store::sql::SqlStore;
use agora_store::{
    AccountUpdate, Contact, DeliveryStore, DirectoryStore, DkimState, MailboxStore, Profile, Role, Store,
};
use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::Cli;

#[derive(Debug, Subcommand)]
pub enum PublicCmd {
    /// Add a public folder (its parent must exist; it starts with the parent's
    /// permissions). It is a newsgroup named after its path unless --newsgroup names it.
    Add {
        path: String,
        #[arg(long, conflicts_with = "no_newsgroup")]
        newsgroup: Option<String>,
        /// Keep it out of news.
        #[arg(long)]
        no_newsgroup: bool,
        /// Receive mail at this address (from users with the author role or above).
        #[arg(long)]
        address: Option<String>,
        /// Also take mail at that address from senders who are not logged in (the internet).
        #[arg(long, requires = "address")]
        anonymous_mail: bool,
        /// Posts by anyone but its moderators wait for their approval.
        #[arg(long)]
        moderated: bool,
        /// Expire articles older than this many days (0: never).
        #[arg(long, default_value_t = 0)]
        expire_days: u32,
        /// Keep only the newest this many articles (0: all).
        #[arg(long, default_value_t = 0)]
        expire_count: u32,
    },
    /// Change a public folder's newsgroup, address, moderation or expiry.
    Set {
        path: String,
        #[arg(long, conflicts_with = "no_newsgroup")]
        newsgroup: Option<String>,
        /// Keep it out of news.
        #[arg(long)]
        no_newsgroup: bool,
        #[arg(long, conflicts_with = "no_address")]
        address: Option<String>,
        /// Stop receiving mail.
        #[arg(long)]
        no_address: bool,
        /// yes or no.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        anonymous_mail: Option<bool>,
        /// yes or no: posts by non-moderators wait in the folder's moderation queue.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        moderated: Option<bool>,
        /// Expire articles older than this many days (0: never).
        #[arg(long)]
        expire_days: Option<u32>,
        /// Keep only the newest this many articles (0: all).
        #[arg(long)]
        expire_count: Option<u32>,
    },
    /// List the posts waiting in a moderated folder's queue.
    Pending { path: String },
    /// Let waiting posts (by their numbers in `pending`) into the folder.
    Approve {
        path: String,
        #[arg(required = true)]
        uids: Vec<u32>,
    },
    /// Throw waiting posts away.
    Reject {
        path: String,
        #[arg(required = true)]
        uids: Vec<u32>,
    },
    /// List public folders with their newsgroups, addresses and permissions.
    List,
    /// Remove a public folder and its messages (it must have no subfolders).
    Remove { path: String },
    /// Move a public folder (and its subfolders).
    Rename { from: String, to: String },
    /// Give WHO (an account, a group, `authenticated` or `anyone`) a role on a folder:
    /// reader, author, editor, moderator, owner, or none to take it away.
    Permission { path: String, who: String, rights: String },
}

#[derive(Debug, Subcommand)]
pub enum DomainCmd {
    /// Host a new mail domain.
    Add { name: String },
    /// List hosted domains.
    List,
    /// Stop hosting a domain (it must have no users, aliases or groups left).
    Remove { name: String },
    /// Show the DNS records that publish the domain's DKIM keys (and an SPF/DMARC start);
    /// rotate them: --rotate makes new keys to publish, --activate lets them sign once
    /// DNS shows them, --remove-retired forgets the old ones.
    Dkim {
        name: String,
        /// Make new keys (pending: they sign only after --activate).
        #[arg(long, conflicts_with_all = ["activate", "remove_retired"])]
        rotate: bool,
        /// Let the pending keys sign and retire the ones they replace.
        #[arg(long, conflicts_with = "remove_retired")]
        activate: bool,
        /// With --activate: do not check that DNS publishes the new keys.
        #[arg(long, requires = "activate")]
        force: bool,
        /// Forget retired keys (after their DNS records were removed).
        #[arg(long)]
        remove_retired: bool,
    },
    /// Show or set the domain's MTA-STS mode (RFC 8461): testing (the default for a new
    /// domain: failures are only reported), enforce, or none (to withdraw the policy).
    MtaSts {
        name: String,
        #[arg(value_parser = ["testing", "enforce", "none"])]
        mode: Option<String>,
    },
    /// Show or set the domain's X.400 O/R address space, e.g. "/C=GB/ADMD= /PRMD=Acme/O=Sales/":
    /// its users receive X.400 mail at the O/R addresses it maps (given.surname, or surname).
    X400 {
        name: String,
        space: Option<String>,
        /// Give the domain no O/R address space.
        #[arg(long, conflicts_with = "space")]
        off: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create an account; its login is its full address.
    Add {
        login: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Quota in bytes (0: none).
        #[arg(long, default_value_t = 0)]
        quota: u64,
        /// Make the account an administrator (the same as --role admin).
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// user, admin, or replicator (reads the whole directory for replication, no mail).
        #[arg(long, value_parser = ["user", "admin", "replicator"])]
        role: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The back-end node whose sessions serve this account (nodes sharing a store).
        #[arg(long, value_name = "NODE")]
        home: Option<String>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Change an account's display name and address-book attributes.
    Set {
        login: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// The back-end node whose sessions serve this account (as `agora user move`).
        #[arg(long, value_name = "NODE")]
        home: Option<String>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Hand an account over to another back-end node: front-ends send its new sessions
    /// there. Its mail is in the shared store, so none is copied or lost.
    Move {
        login: String,
        #[arg(long, value_name = "NODE")]
        home: String,
    },
    /// List accounts.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Show one account.
    Show { login: String },
    /// Delete an account with all its mail.
    Remove { login: String },
    /// Change a password.
    Passwd {
        login: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set the storage quota in bytes (0: none).
    Quota { login: String, bytes: u64 },
    /// Turn on a second factor for webmail sign-in: prints a new secret and the
    /// otpauth:// address for an authenticator app (replacing any earlier one).
    Totp {
        login: String,
        /// Turn the second factor off instead.
        #[arg(long)]
        off: bool,
    },
    /// Turn on NTLM logins (the address book over DCE/RPC) for an account. The NT
    /// hash NTLM checks against is a weaker secret than the password's argon2id hash,
    /// so it is kept only for accounts named here, from the next password change or
    /// login with the password (or from --password-stdin now).
    Ntlm {
        login: String,
        /// Turn NTLM off and forget the NT hash.
        #[arg(long, conflicts_with = "password_stdin")]
        off: bool,
        /// Read the password on standard input and keep its NT hash now.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create people from LDIF (slapcat, ldifde) or CSV with a header row.
    Import {
        file: std::path::PathBuf,
        /// ldif or csv (default: from the file name and content).
        #[arg(long)]
        format: Option<String>,
    },
}

/// Address-book attributes as options (an empty value clears one).
#[derive(Debug, Default, clap::Args)]
pub struct ProfileArgs {
    /// Given name (default: all but the last word of --name).
    #[arg(long)]
    given_name: Option<String>,
    /// Surname (default: the last word of --name).
    #[arg(long)]
    surname: Option<String>,
    #[arg(long)]
    initials: Option<String>,
    /// Job title.
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    department: Option<String>,
    #[arg(long)]
    company: Option<String>,
    /// Office (physicalDeliveryOfficeName).
    #[arg(long)]
    office: Option<String>,
    /// Telephone number.
    #[arg(long)]
    phone: Option<String>,
    /// Mobile number.
    #[arg(long)]
    mobile: Option<String>,
    /// The manager's address.
    #[arg(long)]
    manager: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// A JPEG photo file (jpegPhoto / thumbnailPhoto).
    #[arg(long, value_name = "FILE")]
    photo: Option<std::path::PathBuf>,
    /// Hide from address lists (mail is still delivered); `--hidden false` shows again.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    hidden: Option<bool>,
}

impl ProfileArgs {
    /// Applies the options given to `p`.
    fn apply(&self, p: &mut Profile) -> Result<()> {
        let fields: [(&Option<String>, &mut String); 11] = [
            (&self.given_name, &mut p.given_name),
            (&self.surname, &mut p.surname),
            (&self.initials, &mut p.initials),
            (&self.title, &mut p.title),
            (&self.department, &mut p.department),
            (&self.company, &mut p.company),
            (&self.office, &mut p.office),
            (&self.phone, &mut p.phone),
            (&self.mobile, &mut p.mobile),
            (&self.manager, &mut p.manager),
            (&self.description, &mut p.description),
        ];
        for (arg, field) in fields {
            if let Some(v) = arg {
                *field = v.trim().to_string();
            }
        }
        if let Some(m) = &self.manager
            && !m.trim().is_empty()
        {
            p.manager = normalize_address(m)?;
        }
        if let Some(path) = &self.photo {
            let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if data.len() > MAX_PHOTO {
                bail!("{} has {} bytes; a photo may have at most {MAX_PHOTO}", path.display(), data.len());
            }
            if !data.starts_with(&[0xff, 0xd8]) {
                bail!("{} is not a JPEG file", path.display());
            }
            p.photo = data;
        }
        if let Some(h) = self.hidden {
            p.hidden = h;
        }
        Ok(())
    }
}

/// Photos travel in every address-book answer: keep them thumbnail-sized.
const MAX_PHOTO: usize = 100 * 1024;

#[derive(Debug, Subcommand)]
pub enum ContactCmd {
    /// Add an external recipient to a domain's address book (no mailbox).
    Add {
        address: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Whose address book (default: the only hosted domain).
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Change a contact's display name and attributes.
    Set {
        address: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Remove a contact.
    Remove { address: String },
    /// List contacts.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AliasCmd {
    /// Deliver mail for ADDRESS to TARGET (repeat to add more targets).
    Add { address: String, target: String },
    /// Remove an alias with all its targets.
    Remove { address: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a distribution group.
    Add {
        address: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Delete a distribution group.
    Remove { address: String },
    /// List groups and their members.
    List,
    /// Group membership.
    #[command(subcommand)]
    Member(MemberCmd),
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Messages waiting for delivery to remote recipients, oldest first.
    List,
    /// One entry with its last error.
    Show { id: i64 },
    /// Try an entry again now (also releases a held one).
    Retry { id: i64 },
    /// Keep an entry from being tried until it is released.
    Hold { id: i64 },
    /// Let a held entry be tried again.
    Release { id: i64 },
    /// Drop an entry without telling the sender.
    Delete { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Add an account, group or external address to a group.
    Add { group: String, member: String },
    /// Remove a member from a group.
    Remove { group: String, member: String },
}

/// Refuses root on a data directory another user owns (the packaged server's): files
/// root made there (the database's journal) would lock that user out of its own store.
pub(crate) fn same_owner(data: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    let owner = std::fs::metadata(data).map(|m| m.uid()).unwrap_or(me);
    if me == 0 && owner != 0 {
        let name = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == owner.to_string())
            .map_or_else(|| owner.to_string(), |f| f[0].to_string());
        bail!(
            "{} belongs to {name}: run this as that user (sudo -u {name} agora ...), so the store stays its own",
            data.display()
        );
    }
    Ok(())
}

/// Opens the store of an existing data directory; never creates one by mistake.
pub(crate) async fn open_store(cli: &Cli) -> Result<(Arc<SqlStore>, Directory)> {
    open(cli).await
}

/// The route the routing table gives mail to an address from this server now, when
/// this server is in a routing organisation (None otherwise).
async fn route_teller(cli: &Cli, store: &Arc<SqlStore>) -> Result<impl Fn(&str) -> Option<String>> {
    let (node, me) = crate::routing::identity(cli)?;
    let table = match (me, store.routing_table().await?) {
        (Some(_), Some(text)) => agora_mail::routing::Table::decode(&text).ok(),
        _ => None,
    };
    Ok(move |address: &str| {
        let t = table.as_ref()?;
        let domain = address.rsplit_once('@')?.1;
        t.group_of(&node)?;
        let r = t.route(&node, domain, 0);
        Some(match r.hop {
            agora_mail::routing::Hop::Unreachable => "none is up (held until one is)".to_string(),
            agora_mail::routing::Hop::Here if r.connectors.is_empty() => "in this group".to_string(),
            _ => r.describe(),
        })
    })
}

/// Where the store is: `--store`, else `[store] url` (with its password file), else
/// None for the data directory's SQLite.
pub(crate) fn store_url(cli: &Cli) -> Result<Option<(String, Option<String>)>> {
    Ok(store_settings(cli)?.map(|(u, p, _)| (u, p)))
}

/// A store's URL, its password (read from `password_file`) and its CA file.
type StoreSettings = (String, Option<String>, Option<std::path::PathBuf>);

/// The store's URL, password and CA file (`store_url`'s, with the CA).
pub(crate) fn store_settings(cli: &Cli) -> Result<Option<StoreSettings>> {
    let cfg = crate::config::load_or_default(&crate::serve::config_path(cli))?.config.store;
    let Some(url) = cli.store.clone().or(cfg.url) else { return Ok(None) };
    let password = match &cfg.password_file {
        Some(f) => {
            let path = crate::serve::resolve(&cli.data, f);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            Some(text.trim_end_matches(['\r', '\n']).to_string())
        }
        None => None,
    };
    let ca = cfg.ca_file.as_deref().map(|f| crate::serve::resolve(&cli.data, f));
    Ok(Some((url, password, ca)))
}

/// Opens the store `store_url` names (a PostgreSQL one is created or upgraded).
pub(crate) async fn open_configured(cli: &Cli) -> Result<Option<Arc<SqlStore>>> {
    match store_settings(cli)? {
        Some((url, password, ca)) if agora_store::sql::is_postgres_url(&url) => {
            let store = SqlStore::open_postgres_with(&url, password.as_deref(), ca.as_deref())
                .await
                .with_context(|| format!("opening the store at {}", agora_store::sql::redact_url(&url)))?;
            Ok(Some(store))
        }
        Some((url, _, _)) => {
            let dir = agora_store::sql::sqlite_dir(&url);
            Ok(Some(SqlStore::open(&dir).with_context(|| format!("opening the store in {}", dir.display()))?))
        }
        None => Ok(None),
    }
}

async fn open(cli: &Cli) -> Result<(Arc<SqlStore>, Directory)> {
    if let Some(store) = open_configured(cli).await? {
        let dyn_store: Arc<dyn Store> = Arc::new(Arc::clone(&store));
        return Ok((store, Directory::new(dyn_store)));
    }
    if !cli.data.join("agora.db").exists() {
        bail!(
            "no information store in {}: run `agora serve` once to create it, or pass --data DIR",
            cli.data.display()
        );
    }
    same_owner(&cli.data)?;
    let store = SqlStore::open(&cli.data).with_context(|| format!("opening store in {}", cli.data.display()))?;
    let dyn_store: Arc<dyn Store> = Arc::new(Arc::clone(&store));
    Ok((store, Directory::new(dyn_store)))
}

/// Reads a password: one line from stdin with --password-stdin, else a silent prompt.
fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading password from standard input")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            bail!("empty password on standard input");
        }
        return Ok(pw);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for a password: use --password-stdin");
    }
    let first = prompt_hidden("Password: ")?;
    let second = prompt_hidden("Again: ")?;
    if first != second {
        bail!("the passwords differ");
    }
    if first.is_empty() {
        bail!("empty password");
    }
    Ok(first)
}

fn prompt_hidden(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let stty = |arg: &str| std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status();
    let hidden = stty("-echo").map(|s| s.success()).unwrap_or(false);
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        let _ = stty("echo");
    }
    eprintln!();
    read.context("reading password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn domain(cli: &Cli, cmd: &DomainCmd) -> Result<()> {
    let (store, dir) = open(cli).await?;
    let out = match cmd {
        DomainCmd::Add { name } => {
            dir.add_domain(name).await?;
            let name = normalize_domain(name)?;
            ensure_dkim_keys(&store, &name).await?;
            println!("domain {name} added; publish its DKIM keys: agora domain dkim {name}");
            Ok(())
        }
        DomainCmd::MtaSts { name, mode } => {
            let name = normalize_domain(name)?;
            if let Some(m) = mode {
                store.set_mta_sts_mode(&name, m).await?;
            }
            let d = store.domain(&name).await?.with_context(|| format!("domain {name} not found"))?;
            println!("{name}: MTA-STS mode {} (the policy and its DNS id follow at once)", d.mta_sts_mode);
            Ok(())
        }
        DomainCmd::X400 { name, space, off } => {
            let name = normalize_domain(name)?;
            if let Some(sp) = space {
                let or = agora_x400::oraddr::OrAddress::parse(sp).map_err(|e| anyhow::anyhow!("{sp}: {e}"))?;
                if !or.s.is_empty() || !or.g.is_empty() || !or.dda.is_empty() {
                    bail!("{sp}: an O/R address space names no person (C, ADMD, PRMD, O and OUs only)");
                }
                store.set_domain_x400(&name, &or.text()).await?;
            } else if *off {
                store.set_domain_x400(&name, "").await?;
            }
            let d = store.domain(&name).await?.with_context(|| format!("domain {name} not found"))?;
            if d.x400.is_empty() {
                println!("{name}: no X.400 O/R address space");
            } else {
                println!("{name}: X.400 O/R address space {} (ann@{name} is {}S=ann/)", d.x400, d.x400);
            }
            Ok(())
        }
        DomainCmd::Dkim { name, rotate, activate, force, remove_retired } => {
            let name = normalize_domain(name)?;
            if store.domain(&name).await?.is_none() {
                bail!("domain {name} not found");
            }
            ensure_dkim_keys(&store, &name).await?;
            if *rotate {
                let keys = store.dkim_keys(&name).await?;
                if keys.iter().any(|k| k.state == DkimState::Pending) {
                    bail!("{name} already has pending keys: publish them and run --activate first");
                }
                // Selectors carry the date; a second rotation the same day gets a number.
                let day = agora_store::time::rfc3339(agora_store::now())[..10].replace('-', "");
                let suffix = (1..)
                    .map(|n| if n == 1 { format!("-{day}") } else { format!("-{day}-{n}") })
                    .find(|sfx| !keys.iter().any(|k| k.selector.ends_with(sfx.as_str())))
                    .unwrap_or_default();
                let d = name.clone();
                let new = tokio::task::spawn_blocking(move || agora_mail::auth::rotation_keys(&d, &suffix))
                    .await?
                    .map_err(|e| anyhow::anyhow!("generating DKIM keys for {name}: {e}"))?;
                store.add_dkim_keys(new).await?;
                println!(
                    "new keys for {name}: publish the pending records below, then `agora domain dkim {name} --activate`"
                );
            } else if *activate {
                let keys = store.dkim_keys(&name).await?;
                let pending: Vec<_> = keys.into_iter().filter(|k| k.state == DkimState::Pending).collect();
                if pending.is_empty() {
                    bail!("{name} has no pending keys (make them with --rotate)");
                }
                if !*force {
                    let cfg = crate::config::load_or_default(&crate::serve::config_path(cli))?;
                    let missing = unpublished(&cfg.config.transport.nameservers, &pending).await;
                    if !missing.is_empty() {
                        bail!("DNS does not show {} yet; publish the records (or pass --force)", missing.join(", "));
                    }
                }
                let n = store.activate_dkim_keys(&name).await?;
                println!("{n} keys of {name} sign from now on; the keys they replace are retired");
            } else if *remove_retired {
                let n = store.remove_retired_dkim_keys(&name).await?;
                println!("{n} retired keys of {name} removed; their DNS records may go too");
            }
            let keys = store.dkim_keys(&name).await?;
            println!("; DKIM keys of {name} (publish each as one TXT record)");
            for k in &keys {
                let (owner, text) = agora_mail::auth::dns_records(std::slice::from_ref(k)).remove(0);
                println!(
                    "; {} {} key, {}",
                    k.algorithm,
                    k.state.as_str(),
                    match k.state {
                        DkimState::Active => "signing",
                        DkimState::Pending => "publish now; signs after --activate",
                        DkimState::Retired => "keep published a few days for mail in transit, then --remove-retired",
                    }
                );
                // TXT strings are at most 255 characters: longer values are split.
                let chunks: Vec<String> =
                    text.as_bytes().chunks(250).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
                println!("{owner}. IN TXT ( {} )", chunks.join(" "));
            }
            println!("; and, if not published yet:");
            println!("{name}. IN TXT \"v=spf1 mx -all\"");
            println!("_dmarc.{name}. IN TXT \"v=DMARC1; p=quarantine; adkim=r; aspf=r\"");
            Ok(())
        }
        DomainCmd::List => {
            for d in store.domains().await? {
                println!("{}", d.name);
            }
            Ok(())
        }
        DomainCmd::Remove { name } => {
            store.remove_domain(&normalize_domain(name)?).await?;
            println!("domain {} removed", normalize_domain(name)?);
            Ok(())
        }
    };
    store.close();
    out
}

pub async fn public(cli: &Cli, cmd: &PublicCmd) -> Result<()> {
    let (store, _dir) = open(cli).await?;
    let out = async {
        match cmd {
            PublicCmd::Add {
                path,
                newsgroup,
                no_newsgroup,
                address,
                anonymous_mail,
                moderated,
                expire_days,
                expire_count,
            } => {
                let newsgroup = match (newsgroup, no_newsgroup) {
                    (_, true) => None,
                    (Some(n), _) => Some(checked_newsgroup(n)?),
                    (None, false) => Some(
                        agora_store::newsgroup_name(path)
                            .with_context(|| format!("{path:?} gives no newsgroup name: name one with --newsgroup"))?,
                    ),
                };
                if let Some(a) = address {
                    checked_address(a)?;
                }
                let f = store
                    .add_public_folder(agora_store::PublicFolder {
                        path: path.clone(),
                        newsgroup,
                        address: address.clone(),
                        anonymous_mail: *anonymous_mail,
                        moderated: *moderated,
                        expire_days: *expire_days,
                        expire_count: *expire_count,
                        ..Default::default()
                    })
                    .await?;
                println!(
                    "public folder {} added{}{}",
                    f.path,
                    f.newsgroup.as_ref().map_or(String::new(), |n| format!(", newsgroup {n}")),
                    f.address.as_ref().map_or(String::new(), |a| format!(", address {a}"))
                );
                Ok(())
            }
            PublicCmd::List => {
                let all = store.public_folders().await?;
                if all.is_empty() {
                    println!("no public folders");
                }
                for f in all {
                    let acl = store.acl(f.mailbox).await?;
                    let who: Vec<String> =
                        acl.iter().map(|(w, r)| format!("{w}={}", agora_store::rights_role(r))).collect();
                    let mut extra = String::new();
                    if f.moderated {
                        extra.push_str("  moderated");
                    }
                    if f.expire_days > 0 {
                        extra.push_str(&format!("  expire after {} days", f.expire_days));
                    }
                    if f.expire_count > 0 {
                        extra.push_str(&format!("  keep newest {}", f.expire_count));
                    }
                    println!(
                        "{}  newsgroup {}  address {}{extra}  {}",
                        f.path,
                        f.newsgroup.as_deref().unwrap_or("-"),
                        f.address.as_deref().unwrap_or("-"),
                        if who.is_empty() {
                            "(no permissions: only administrators)".to_string()
                        } else {
                            who.join(" ")
                        }
                    );
                }
                Ok(())
            }
            PublicCmd::Set {
                path,
                newsgroup,
                no_newsgroup,
                address,
                no_address,
                anonymous_mail,
                moderated,
                expire_days,
                expire_count,
            } => {
                let update = agora_store::PublicFolderUpdate {
                    newsgroup: match (newsgroup, no_newsgroup) {
                        (_, true) => Some(None),
                        (Some(n), _) => Some(Some(checked_newsgroup(n)?)),
                        (None, false) => None,
                    },
                    address: match (address, no_address) {
                        (_, true) => Some(None),
                        (Some(a), _) => Some(Some(checked_address(a)?)),
                        (None, false) => None,
                    },
                    moderated: *moderated,
                    anonymous_mail: *anonymous_mail,
                    expire_days: *expire_days,
                    expire_count: *expire_count,
                };
                let f = store.update_public_folder(path, update).await?;
                println!(
                    "public folder {}: newsgroup {}, address {}{}{}, expiry {}",
                    f.path,
                    f.newsgroup.as_deref().unwrap_or("-"),
                    f.address.as_deref().unwrap_or("-"),
                    if f.anonymous_mail { " (anyone may mail it)" } else { "" },
                    if f.moderated { ", moderated" } else { "" },
                    match (f.expire_days, f.expire_count) {
                        (0, 0) => "never".to_string(),
                        (d, 0) => format!("after {d} days"),
                        (0, c) => format!("beyond the newest {c}"),
                        (d, c) => format!("after {d} days or beyond the newest {c}"),
                    }
                );
                Ok(())
            }
            PublicCmd::Pending { path } => {
                let (_, queue) = moderation_queue(&store, path).await?;
                let list = store.overview(queue, 1..=u32::MAX, usize::MAX).await?;
                if list.is_empty() {
                    println!("nothing waits for approval in {path}");
                }
                for o in list {
                    println!("{}  {}  {}  {}", o.uid, o.date, o.from, o.subject);
                }
                Ok(())
            }
            PublicCmd::Approve { path, uids } => {
                let (folder, queue) = moderation_queue(&store, path).await?;
                let (_, moved) = store.copy_messages(queue, uids, folder).await?;
                let done: Vec<u32> = moved.iter().map(|(from, _)| *from).collect();
                store.expunge(queue, &done).await?;
                for (from, to) in &moved {
                    println!("{from} approved: article {to} of {path}");
                }
                report_missing(uids, &done);
                Ok(())
            }
            PublicCmd::Reject { path, uids } => {
                let (_, queue) = moderation_queue(&store, path).await?;
                let done = store.expunge(queue, uids).await?;
                for u in &done {
                    println!("{u} rejected");
                }
                report_missing(uids, &done);
                Ok(())
            }
            PublicCmd::Remove { path } => {
                store.remove_public_folder(path).await?;
                println!("public folder {path} removed");
                Ok(())
            }
            PublicCmd::Rename { from, to } => {
                store.rename_public_folder(from, to).await?;
                println!("public folder {from} is now {to}");
                Ok(())
            }
            PublicCmd::Permission { path, who, rights } => {
                let letters = agora_store::role_rights(rights)
                    .with_context(|| format!("{rights:?}: say reader, author, editor, moderator, owner or none"))?;
                let who = who.to_ascii_lowercase();
                let known = who == "anyone"
                    || who == "authenticated"
                    || matches!(
                        store.lookup_address(&who).await?,
                        agora_store::AddressEntry::Account(_) | agora_store::AddressEntry::Group(_)
                    );
                if !known {
                    bail!("{who}: no such account or group (or say authenticated or anyone)");
                }
                let folder = store
                    .public_folders()
                    .await?
                    .into_iter()
                    .find(|f| f.path == path.trim_matches('/'))
                    .with_context(|| format!("public folder {path} not found"))?;
                store.set_acl(folder.mailbox, &who, (!letters.is_empty()).then_some(letters)).await?;
                println!(
                    "{who} on {}: {}",
                    folder.path,
                    if letters.is_empty() { "no rights" } else { rights.as_str() }
                );
                Ok(())
            }
        }
    }
    .await;
    store.close();
    out
}

fn checked_newsgroup(n: &str) -> Result<String> {
    if !agora_nntp::article::is_newsgroup(n) {
        bail!("{n:?} is not a newsgroup name (components of letters, digits, +, - and _ joined by dots)");
    }
    Ok(n.to_string())
}

fn checked_address(a: &str) -> Result<String> {
    normalize_address(a).map_err(|_| anyhow::anyhow!("{a:?} is not a mail address"))
}

/// A moderated folder's mailbox and its queue's.
async fn moderation_queue(
    store: &Arc<SqlStore>,
    path: &str,
) -> Result<(agora_store::MailboxId, agora_store::MailboxId)> {
    let all = store.public_folders().await?;
    let folder = all
        .iter()
        .find(|f| f.path == path.trim_matches('/'))
        .with_context(|| format!("public folder {path} not found"))?;
    if !folder.moderated {
        bail!("{path} is not moderated (agora public set {path} --moderated yes)");
    }
    let queue = all
        .iter()
        .find(|f| f.path == folder.queue_path())
        .with_context(|| format!("{path} has no moderation queue"))?;
    Ok((folder.mailbox, queue.mailbox))
}

fn report_missing(asked: &[u32], done: &[u32]) {
    for u in asked.iter().filter(|u| !done.contains(u)) {
        eprintln!("{u}: no such post waiting");
    }
}

pub async fn user(cli: &Cli, cmd: &UserCmd) -> Result<()> {
    if let UserCmd::Import { file, format } = cmd {
        return crate::import::import(cli, file, format.as_deref()).await;
    }
    let (store, dir) = open(cli).await?;
    let out = user_inner(&store, &dir, cmd).await;
    store.close();
    out
}

async fn user_inner(store: &Arc<SqlStore>, dir: &Directory, cmd: &UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add { login, name, quota, admin, role, password_stdin, home, profile } => {
            let login = normalize_address(login)?;
            let mut p = Profile::default();
            profile.apply(&mut p)?;
            let pw = read_password(*password_stdin)?;
            let role = match role.as_deref() {
                Some(r) => Role::parse(r).context("unknown role")?,
                None if *admin => Role::Admin,
                None => Role::User,
            };
            if let Some(h) = home {
                home_node(store, h).await?;
            }
            let acc = dir.add_user_with(&login, name, &pw, *quota, role, p).await?;
            if let Some(h) = home {
                store.set_account_home(&acc.login, Some(h)).await?;
            }
            println!("user {} added", acc.login);
        }
        UserCmd::Set { login, name, home, profile } => {
            let login = normalize_address(login)?;
            let a = store.account_by_login(&login).await?.with_context(|| format!("user {login} not found"))?;
            let mut p = a.profile.clone();
            if let Some(n) = name {
                // A new display name re-derives the names it gave, unless given too.
                let old = {
                    let mut o = Profile::default();
                    agora_directory::derive_names(&a.display_name, &mut o);
                    o
                };
                if p.given_name == old.given_name {
                    p.given_name.clear();
                }
                if p.surname == old.surname {
                    p.surname.clear();
                }
                agora_directory::derive_names(n, &mut p);
            }
            profile.apply(&mut p)?;
            let update = AccountUpdate { display_name: name.clone(), profile: Some(p), role: None };
            store.update_account(&login, update).await?;
            if let Some(h) = home {
                home_node(store, h).await?;
                store.set_account_home(&login, Some(h)).await?;
            }
            println!("user {login} changed");
        }
        UserCmd::Move { login, home } => {
            let login = normalize_address(login)?;
            let a = store.account_by_login(&login).await?.with_context(|| format!("user {login} not found"))?;
            home_node(store, home).await?;
            store.set_account_home(&login, Some(home)).await?;
            let from = a.home.as_deref().unwrap_or("any back-end");
            println!(
                "user {login} moved from {from} to {home}: new sessions go there; its mail is in the shared store"
            );
        }
        UserCmd::List { domain } => {
            let domain = domain.as_deref().map(normalize_domain).transpose()?;
            for a in store.accounts(domain.as_deref()).await? {
                println!("{}\t{}\t{}", a.login, a.role.as_str(), a.display_name);
            }
        }
        UserCmd::Show { login } => {
            let login = normalize_address(login)?;
            let a = store.account_by_login(&login).await?.with_context(|| format!("user {login} not found"))?;
            println!("login:        {}", a.login);
            println!("display name: {}", a.display_name);
            println!("role:         {}", a.role.as_str());
            if let Some(h) = &a.home {
                println!("home:         {h}");
            }
            println!("addresses:    {}", if a.addresses.is_empty() { "-".into() } else { a.addresses.join(", ") });
            for (label, v) in profile_lines(&a.profile) {
                println!("{label:<14}{v}");
            }
            let ntlm = match store.ntlm(a.id).await? {
                None => "off",
                Some(h) if h.is_empty() => "on, waiting for the password (next change or login)",
                Some(_) => "on",
            };
            println!("ntlm:         {ntlm}");
            println!("quota:        {}", if a.quota == 0 { "none".to_string() } else { format!("{} bytes", a.quota) });
            println!("used:         {} bytes", a.used);
            for m in store.mailboxes(a.id).await? {
                let su = m.special_use.map(|s| s.as_str()).unwrap_or("");
                println!("mailbox:      {} {} ({} messages)", m.name, su, m.messages);
            }
        }
        UserCmd::Remove { login } => {
            let login = normalize_address(login)?;
            store.remove_account(&login).await?;
            println!("user {login} removed");
        }
        UserCmd::Passwd { login, password_stdin } => {
            let login = normalize_address(login)?;
            if store.account_by_login(&login).await?.is_none() {
                bail!("user {login} not found");
            }
            let pw = read_password(*password_stdin)?;
            dir.set_password(&login, &pw).await?;
            println!("password of {login} changed");
        }
        UserCmd::Import { .. } => bail!("internal: import is handled before the store is opened"),
        UserCmd::Totp { login, off } => {
            let login = normalize_address(login)?;
            if *off {
                store.set_totp(&login, None).await?;
                println!("second factor of {login} turned off");
            } else {
                let secret = agora_directory::totp::new_secret()?;
                let text = agora_directory::totp::encode_secret(&secret);
                store.set_totp(&login, Some(&text)).await?;
                let issuer = login.rsplit_once('@').map_or("Agora", |(_, d)| d);
                println!("second factor of {login} turned on; add it to an authenticator app:");
                println!("secret: {text}");
                println!("{}", agora_directory::totp::provisioning_uri(&secret, &login, issuer));
            }
        }
        UserCmd::Ntlm { login, off, password_stdin } => {
            let login = normalize_address(login)?;
            if *off {
                dir.set_ntlm(&login, false).await?;
                println!("NTLM for {login} turned off; its NT hash is forgotten");
            } else if *password_stdin {
                let pw = read_password(true)?;
                if dir.authenticate(&login, &pw).await?.is_none() {
                    bail!("that is not the password of {login}");
                }
                dir.set_ntlm(&login, true).await?;
                dir.keep_nt_hash(&login, &pw, true).await?;
                println!("NTLM for {login} turned on");
            } else {
                dir.set_ntlm(&login, true).await?;
                println!(
                    "NTLM for {login} turned on: it works from the next password change or login with the password"
                );
            }
        }
        UserCmd::Quota { login, bytes } => {
            let login = normalize_address(login)?;
            store.set_quota(&login, *bytes).await?;
            if *bytes == 0 {
                println!("quota of {login} removed");
            } else {
                println!("quota of {login} set to {bytes} bytes");
            }
        }
    }
    Ok(())
}

/// The profile's set attributes as (label, value) lines for `show`.
fn profile_lines(p: &Profile) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = [
        ("given name:", &p.given_name),
        ("surname:", &p.surname),
        ("initials:", &p.initials),
        ("title:", &p.title),
        ("department:", &p.department),
        ("company:", &p.company),
        ("office:", &p.office),
        ("phone:", &p.phone),
        ("mobile:", &p.mobile),
        ("manager:", &p.manager),
        ("description:", &p.description),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(l, v)| (l, v.clone()))
    .collect();
    if !p.photo.is_empty() {
        out.push(("photo:", format!("{} bytes", p.photo.len())));
    }
    if !p.certificates.is_empty() {
        out.push(("certificates:", p.certificates.len().to_string()));
    }
    if p.hidden {
        out.push(("hidden:", "yes (not in address lists)".into()));
    }
    out
}

pub async fn contact(cli: &Cli, cmd: &ContactCmd) -> Result<()> {
    let (store, _dir) = open(cli).await?;
    let out = contact_inner(&store, cmd).await;
    store.close();
    out
}

async fn contact_inner(store: &Arc<SqlStore>, cmd: &ContactCmd) -> Result<()> {
    match cmd {
        ContactCmd::Add { address, name, domain, profile } => {
            let address = normalize_address(address)?;
            let domain = match domain {
                Some(d) => normalize_domain(d)?,
                None => {
                    let all = store.domains().await?;
                    match all.as_slice() {
                        [one] => one.name.clone(),
                        _ => bail!("this server hosts {} domains: say whose address book with --domain", all.len()),
                    }
                }
            };
            let mut p = Profile::default();
            agora_directory::derive_names(name, &mut p);
            profile.apply(&mut p)?;
            let c = Contact { address, domain, display_name: name.clone(), profile: p, ..Contact::default() };
            let c = store.add_contact(c).await?;
            println!("contact {} added to the address book of {}", c.address, c.domain);
        }
        ContactCmd::Set { address, name, profile } => {
            let address = normalize_address(address)?;
            let c = store
                .contacts(None)
                .await?
                .into_iter()
                .find(|c| c.address == address)
                .with_context(|| format!("contact {address} not found"))?;
            let mut p = c.profile.clone();
            profile.apply(&mut p)?;
            store.update_contact(&address, name.clone(), Some(p)).await?;
            println!("contact {address} changed");
        }
        ContactCmd::Remove { address } => {
            let address = normalize_address(address)?;
            store.remove_contact(&address).await?;
            println!("contact {address} removed");
        }
        ContactCmd::List { domain } => {
            let domain = domain.as_deref().map(normalize_domain).transpose()?;
            for c in store.contacts(domain.as_deref()).await? {
                println!("{}\t{}\t{}", c.address, c.domain, c.display_name);
            }
        }
    }
    Ok(())
}

pub async fn alias(cli: &Cli, cmd: &AliasCmd) -> Result<()> {
    let (store, dir) = open(cli).await?;
    let out = async {
        match cmd {
            AliasCmd::Add { address, target } => {
                dir.add_alias(address, target).await?;
                println!("alias {} -> {} added", normalize_address(address)?, normalize_address(target)?);
            }
            AliasCmd::Remove { address } => {
                let a = normalize_address(address)?;
                store.remove_alias(&a).await?;
                println!("alias {a} removed");
            }
        }
        Ok(())
    }
    .await;
    store.close();
    out
}

pub async fn group(cli: &Cli, cmd: &GroupCmd) -> Result<()> {
    let (store, dir) = open(cli).await?;
    let out = async {
        match cmd {
            GroupCmd::Add { address, name } => {
                dir.add_group(address, name).await?;
                println!("group {} added", normalize_address(address)?);
            }
            GroupCmd::Remove { address } => {
                let a = normalize_address(address)?;
                store.remove_group(&a).await?;
                println!("group {a} removed");
            }
            GroupCmd::List => {
                for g in store.groups().await? {
                    println!("{}\t{}\t{}", g.address, g.display_name, g.members.join(","));
                }
            }
            GroupCmd::Member(MemberCmd::Add { group, member }) => {
                dir.add_group_member(group, member).await?;
                println!("{} added to {}", normalize_address(member)?, normalize_address(group)?);
            }
            GroupCmd::Member(MemberCmd::Remove { group, member }) => {
                let (g, m) = (normalize_address(group)?, normalize_address(member)?);
                store.remove_group_member(&g, &m).await?;
                println!("{m} removed from {g}");
            }
        }
        Ok(())
    }
    .await;
    store.close();
    out
}

pub async fn queue(cli: &Cli, cmd: &QueueCmd) -> Result<()> {
    let (store, _dir) = open(cli).await?;
    let out = async {
        match cmd {
            QueueCmd::List => {
                let q = store.queued().await?;
                if q.is_empty() {
                    println!("queue is empty");
                }
                let route = route_teller(cli, &store).await?;
                for e in q {
                    println!(
                        "{:>6}  {}  from <{}> to <{}>  attempts {}{}{}",
                        e.id,
                        agora_store::time::rfc3339(e.created),
                        e.mail_from,
                        e.recipient,
                        e.attempts,
                        if e.held { "  (held)" } else { "" },
                        route(&e.recipient).map(|r| format!("  route {r}")).unwrap_or_default()
                    );
                }
            }
            QueueCmd::Show { id } => {
                let Some(e) = store.queued().await?.into_iter().find(|e| e.id == *id) else {
                    bail!("no queue entry {id}");
                };
                if let Some(r) = route_teller(cli, &store).await?(&e.recipient) {
                    println!("route:        {r}");
                }
                println!("id:           {}", e.id);
                println!("from:         <{}>", e.mail_from);
                println!("to:           <{}>", e.recipient);
                println!("queued:       {}", agora_store::time::rfc3339(e.created));
                println!("attempts:     {}", e.attempts);
                println!("next attempt: {}", agora_store::time::rfc3339(e.next_attempt));
                println!("held:         {}", if e.held { "yes" } else { "no" });
                println!("last error:   {}", if e.last_error.is_empty() { "-" } else { &e.last_error });
            }
            QueueCmd::Retry { id } | QueueCmd::Release { id } | QueueCmd::Hold { id } | QueueCmd::Delete { id } => {
                if !store.queued().await?.iter().any(|e| e.id == *id) {
                    bail!("no queue entry {id}");
                }
                let (outcome, what) = match cmd {
                    QueueCmd::Hold { .. } => (agora_store::QueueOutcome::Hold(true), "held"),
                    QueueCmd::Delete { .. } => (agora_store::QueueOutcome::Done, "deleted"),
                    _ => (agora_store::QueueOutcome::RetryNow, "due now"),
                };
                store.queue_update(*id, outcome).await?;
                println!("queue entry {id} {what}");
            }
        }
        Ok(())
    }
    .await;
    store.close();
    out
}

/// Prints the tracking log's events that match, oldest first.
pub async fn tls_reports(cli: &Cli) -> Result<()> {
    let (store, _dir) = open(cli).await?;
    let reports = store.tls_reports().await?;
    if reports.is_empty() {
        println!("no TLS reports received");
    }
    for r in reports {
        println!(
            "{}  from {} for {}  {} .. {}  successful {}  failed {}  ({})",
            agora_store::time::rfc3339(r.received),
            r.organization,
            r.domains,
            r.start,
            r.end,
            r.successes,
            r.failures,
            r.report_id
        );
        for d in r.details.lines() {
            println!("    {d}");
        }
    }
    Ok(())
}

pub fn track(cli: &Cli, sender: Option<&str>, recipient: Option<&str>, id: Option<&str>) -> Result<()> {
    let events = agora_mail::tracking::search(&cli.data.join("tracking.log"), sender, recipient, id)?;
    if events.is_empty() {
        println!("no matching events");
    }
    for e in events {
        let mut line = format!(
            "{}  {:<9} {}  <{}> -> {}",
            agora_store::time::rfc3339(e.time),
            e.event,
            e.id,
            e.sender,
            e.recipients.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(", ")
        );
        if e.size > 0 {
            line.push_str(&format!("  size {}", e.size));
        }
        if !e.remote.is_empty() {
            line.push_str(&format!("  via {}", e.remote));
        }
        if !e.message_id.is_empty() {
            line.push_str(&format!("  {}", e.message_id));
        }
        if !e.reply.is_empty() {
            line.push_str(&format!("  \"{}\"", e.reply));
        }
        println!("{line}");
    }
    Ok(())
}

/// The owners of the keys whose record DNS does not publish (with the same key).
async fn unpublished(nameservers: &[std::net::SocketAddr], keys: &[agora_store::DkimKey]) -> Vec<String> {
    let resolver = agora_mail::auth::resolver(nameservers);
    let mut missing = Vec::new();
    for (owner, text) in agora_mail::auth::dns_records(keys) {
        let published = match &resolver {
            Some(r) => r.txt_lookup(format!("{owner}.")).await.ok().is_some_and(|txt| {
                let want = text.split("p=").nth(1).unwrap_or_default().to_string();
                txt.answers().iter().any(|rr| match &rr.data {
                    agora_mail::auth::RData::TXT(t) => {
                        let got: String = t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect();
                        got.split("p=").nth(1).is_some_and(|p| p.replace(' ', "") == want)
                    }
                    _ => false,
                })
            }),
            None => false,
        };
        if !published {
            missing.push(owner);
        }
    }
    missing
}

/// Makes DKIM keys for a domain that has none (RSA-2048 and Ed25519).
pub async fn ensure_dkim_keys(store: &Arc<SqlStore>, domain: &str) -> Result<()> {
    if !store.dkim_keys(domain).await?.is_empty() {
        return Ok(());
    }
    let d = domain.to_string();
    let keys = tokio::task::spawn_blocking(move || agora_mail::auth::generate_keys(&d))
        .await?
        .map_err(|e| anyhow::anyhow!("generating DKIM keys for {domain}: {e}"))?;
    store.add_dkim_keys(keys).await?;
    Ok(())
}

/// A node that can be an account's home: registered, and not a front-end.
async fn home_node(store: &Arc<SqlStore>, name: &str) -> Result<()> {
    let nodes = store.nodes().await?;
    match nodes.iter().find(|n| n.name == name) {
        None => {
            let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "no node {name} has registered with this store (known: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        }
        Some(n) if n.role == "front-end" => bail!("{name} is a front-end: it keeps no mailboxes"),
        Some(_) => Ok(()),
    }
}
