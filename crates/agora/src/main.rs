//! The `agora` binary: command line, first-run setup, service wiring, signals.

mod admin;
mod config;
mod doctor;
mod firewall;
mod import;
mod node;
mod ops;
mod registry;
mod replication;
mod routing;
mod serve;
mod systemd;
mod x400;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// mimalloc: many long-lived sessions, each with small buffers from short-lived large
/// ones (TLS handshakes); glibc's arenas kept twice the memory per idle session.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "agora", version, about = "Agora: mail, news, directory and DNS in one server")]
pub struct Cli {
    /// Data directory: information store, blobs, configuration, TLS files.
    #[arg(long, global = true, env = "AGORA_DATA", default_value = "./agora-data")]
    pub data: PathBuf,
    /// Configuration file (default: DATA/agora.toml).
    #[arg(long, global = true, env = "AGORA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Information store: `postgres://USER@HOST/DB` for PostgreSQL (several nodes on one
    /// database), `sqlite:DIR`; default: `[store] url`, else the data directory's SQLite.
    #[arg(long, global = true, env = "AGORA_STORE")]
    pub store: Option<String>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, clap::Args, Clone)]
pub struct ListenArgs {
    /// Add N to every default port (e.g. 10000: SMTP on 10025), to run without root.
    #[arg(long)]
    pub port_offset: Option<u16>,
    /// Address for every listener without its own; repeat for several (default: every
    /// IPv4 and IPv6 address).
    #[arg(long)]
    pub bind: Vec<IpAddr>,
}

#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// Print a hosted domain's zone in zone-file form (to publish it elsewhere).
    Show {
        domain: String,
        /// The server's host name, if `agora serve` is given one on its command line.
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Records added to a hosted zone besides the ones the server makes.
    #[command(subcommand)]
    Record(RecordCmd),
    /// Print the DS records that the parent zone publishes for a signed domain.
    Ds { domain: String },
    /// Ask resolvers what they see of a hosted domain and list every record that
    /// differs from what Agora publishes (exit 1 if any).
    Check {
        domain: String,
        /// Resolver to ask (address or address:port); repeat for several (default: the
        /// `[transport] nameservers`, else the system's).
        #[arg(long)]
        resolver: Vec<String>,
        /// The server's host name, if `agora serve` is given one on its command line.
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// A signed zone's DNSSEC keys and their rollovers.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// List the keys with their tags, roles and states.
    List { domain: String },
    /// Roll a key over without a gap: a new zone-signing key is published and signs
    /// after two TTLs; with --ksk a second key-signing key signs at once, and the old
    /// one is retired (`retire`) after the parent has the new DS.
    Rotate {
        domain: String,
        #[arg(long)]
        ksk: bool,
    },
    /// Stop signing with the key of this tag; it stays published two TTLs, then goes.
    Retire { domain: String, tag: u16 },
}

#[derive(Debug, Subcommand)]
pub enum RecordCmd {
    /// Add a record: NAME is relative to the domain (`@` for the apex, `x.` absolute);
    /// TYPE is A, AAAA, CNAME, MX, TXT, SRV, CAA, TLSA, NS or PTR; VALUE as in a zone file.
    Add {
        domain: String,
        name: String,
        #[arg(value_name = "TYPE")]
        rtype: String,
        value: String,
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
        /// The server's host name, if `agora serve` is given one on its command line.
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Remove the records of NAME and TYPE (only the one with VALUE, if given).
    Remove {
        domain: String,
        name: String,
        #[arg(value_name = "TYPE")]
        rtype: String,
        value: Option<String>,
    },
    /// List the records added to a zone.
    List { domain: String },
}

#[derive(Debug, Subcommand)]
pub enum TlsReportCmd {
    /// Each report received: who sent it, for which domains and period, sessions that
    /// succeeded and failed, and each failure.
    List,
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Each certificate's names, issuer, expiry and next renewal, and failed attempts.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Verify the store's invariants: SQLite's own check, body reference counts and
    /// hashes, UIDs below UIDNEXT, MODSEQ order, message, unseen and quota counts.
    Check {
        /// Fix what can be fixed without losing mail, saying what was done.
        #[arg(long)]
        repair: bool,
        /// With --repair: take missing or damaged bodies from this backup or copy of a
        /// data directory (each verified by its hash).
        #[arg(long, value_name = "DIR", requires = "repair")]
        from: Option<PathBuf>,
        /// With --repair: expunge messages whose bodies are gone and not in --from.
        #[arg(long, requires = "repair")]
        drop_lost: bool,
        /// Compare body sizes only, without reading every body to check its hash.
        #[arg(long)]
        quick: bool,
    },
    /// Copy a SQLite store (a running server's is read in one snapshot) into an empty
    /// PostgreSQL database with every UID, flag and body, then verify the copy (rows per
    /// table, each mailbox's messages, every body's hash).
    Migrate {
        /// The SQLite store: `sqlite:DIR` (a data directory).
        #[arg(long, value_name = "sqlite:DIR")]
        from: String,
        /// The PostgreSQL database: `postgres://USER@HOST:PORT/DB`.
        #[arg(long, value_name = "postgres://…")]
        to: String,
        /// A file holding the PostgreSQL password, if the URL has none.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// The CA (PEM) of the PostgreSQL server's certificate (default: the system's).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReplicationCmd {
    /// The change log (entries, remembered deletes, newest change), each consumer this
    /// server has served (its cookie, lag in changes and seconds) and, on a replica, its
    /// provider.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// The nodes sharing this store: name, address, role, version, last heartbeat, and
    /// whether each is alive.
    List {
        /// One JSON object a node.
        #[arg(long)]
        json: bool,
    },
    /// Forgets a node taken out of service (one still running registers again).
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum LdapCmd {
    /// Print the attribute types and object classes Agora adds to the standard ones, for
    /// an OpenLDAP replica: `openldap` (slapd.conf `include`) or `ldif` (cn=config).
    Schema {
        #[arg(long, default_value = "openldap", value_parser = ["openldap", "ldif"])]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the default configuration file, every setting commented with its default
    /// (`agora config default > /etc/agora/agora.toml`).
    Default {
        /// The host name to write in (default: left to the machine's, commented).
        #[arg(long)]
        hostname: Option<String>,
        /// The mail domain to write in (default: left to the first run, commented).
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the server (creates the data directory on first run).
    Serve {
        /// Mail domain to create on first run (default: the host name).
        #[arg(long)]
        domain: Option<String>,
        /// Host name for greetings and the certificate (default: the machine's).
        #[arg(long)]
        hostname: Option<String>,
        /// This node's name among the nodes sharing one store (default: `[cluster] node`,
        /// else the host name).
        #[arg(long)]
        node: Option<String>,
        /// single, back-end or front-end (default: `[cluster] role`, else single).
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Show the services, ports and TLS modes the configuration gives.
    Ports {
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Hosted mail domains.
    #[command(subcommand)]
    Domain(admin::DomainCmd),
    /// Mail accounts.
    #[command(subcommand)]
    User(admin::UserCmd),
    /// Address aliases.
    #[command(subcommand)]
    Alias(admin::AliasCmd),
    /// Distribution groups.
    #[command(subcommand)]
    Group(admin::GroupCmd),
    /// External recipients in the address book.
    #[command(subcommand)]
    Contact(admin::ContactCmd),
    /// The DNS zones this server publishes.
    #[command(subcommand)]
    Dns(DnsCmd),
    /// Public folders: the organisation's folders, served over IMAP and as newsgroups.
    #[command(subcommand)]
    Public(admin::PublicCmd),
    /// The outbound queue.
    #[command(subcommand)]
    Queue(admin::QueueCmd),
    /// TLS reports (RFC 8460) other organisations sent about the hosted domains.
    #[command(subcommand, name = "tls-report")]
    TlsReport(TlsReportCmd),
    /// TLS certificates: the configured pair and those obtained by ACME.
    #[command(subcommand)]
    Cert(CertCmd),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell):
    /// `agora completions bash > /etc/bash_completion.d/agora`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (agora.1 and one per command) into DIR.
    Manpages { dir: PathBuf },
    /// Copy the server (running or stopped) into a new directory DIR: one consistent
    /// snapshot of the store, its bodies, the configuration and keys, and a manifest of
    /// counts and hashes.
    Backup {
        dir: PathBuf,
        /// Hard-link body files instead of copying them (same file system only; bodies
        /// never change once written).
        #[arg(long)]
        link: bool,
    },
    /// Restore a backup DIR into a new data directory (`--data NEW`), verifying it
    /// against its manifest.
    Restore {
        dir: PathBuf,
        /// Hard-link body files from the backup instead of copying them.
        #[arg(long)]
        link: bool,
    },
    /// The information store.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Check the setup and say what to fix, a line a check: host name, domains, every
    /// listener, the certificate, each domain's DNS records against what Agora
    /// publishes, PTR, relaying, clock, disk, queue and store. Exit 1 when one fails.
    Doctor {
        /// Host name the server runs with (default: the configuration's, else the machine's).
        #[arg(long)]
        hostname: Option<String>,
        /// DNS resolver to ask (address or address:port; default: [transport]
        /// nameservers, else the system's).
        #[arg(long)]
        resolver: Option<String>,
        /// One JSON object with every check, for monitoring.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Directory replication (RFC 4533, port 379).
    #[command(subcommand)]
    Replication(ReplicationCmd),
    /// The nodes that share this store (PostgreSQL).
    #[command(subcommand)]
    Node(NodeCmd),
    /// Routing groups and connectors: the organisation's link-state routing.
    #[command(subcommand)]
    Routing(routing::RoutingCmd),
    /// The X.400 MTA's partners: list them, test a link layer by layer.
    #[command(subcommand)]
    X400(x400::X400Cmd),
    /// Print the packet filter a node of ROLE needs with the configuration in force:
    /// exactly its listeners' ports, from and to the nodes registered in the store and
    /// the database (internet → front-end, front-end → back-end, back-end → PostgreSQL,
    /// back-end ↔ back-end); everything else dropped.
    Firewall {
        /// single, front-end or back-end.
        #[arg(long)]
        role: String,
        /// nftables (for `nft -f`), iptables (for iptables-restore and ip6tables-restore)
        /// or table (to read).
        #[arg(long, default_value = "table")]
        format: String,
        /// A front-end's address, besides those registered in the store (repeatable).
        #[arg(long = "front-end", value_name = "ADDRESS")]
        front_end: Vec<String>,
        /// A back-end's address, besides those registered in the store (repeatable).
        #[arg(long = "back-end", value_name = "ADDRESS")]
        back_end: Vec<String>,
        /// The PostgreSQL server's ADDRESS[:PORT] (default: from the store URL).
        #[arg(long, value_name = "ADDRESS")]
        database: Option<String>,
    },
    /// The LDAP directory.
    #[command(subcommand)]
    Ldap(LdapCmd),
    /// Message tracking: what happened to mail, from the tracking log.
    Track {
        #[arg(long)]
        sender: Option<String>,
        #[arg(long)]
        recipient: Option<String>,
        /// The queue id from a 250 reply.
        #[arg(long)]
        id: Option<String>,
    },
}

/// Writes made text to standard output: a closed pipe (`| head`) is not a panic.
fn to_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    match std::io::Write::write_all(&mut std::io::stdout(), bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Where the Debian package keeps the server's data and configuration.
const PACKAGED_DATA: &str = "/var/lib/agora";
const PACKAGED_CONFIG: &str = "/etc/agora/agora.toml";

fn main() {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Administration commands without --data on a packaged install find its store, as
    // doveadm or postqueue do; `serve` keeps its default (the quick start's directory).
    let default_data = matches.value_source("data") == Some(clap::parser::ValueSource::DefaultValue);
    let packaged = Path::new(PACKAGED_DATA).join("agora.db").exists() && !cli.data.exists();
    if default_data && packaged && !matches!(cli.command, Cmd::Serve { .. } | Cmd::Restore { .. }) {
        cli.data = PathBuf::from(PACKAGED_DATA);
        if cli.config.is_none() && Path::new(PACKAGED_CONFIG).exists() {
            cli.config = Some(PathBuf::from(PACKAGED_CONFIG));
        }
    }
    // AGORA_LOG: error, warn, info (default), debug or trace.
    let level = std::env::var("AGORA_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    // AGORA_LOG_FORMAT=json: one JSON object a line, for log collectors.
    let json = std::env::var("AGORA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false);
    // Started by systemd with standard error to the journal: entries with their fields
    // and priorities (journalctl -u agora -p warning) instead of text lines.
    let journal = (!json && systemd::stderr_is_journal()).then(tracing_journald::layer).and_then(Result::ok);
    if let Some(layer) = journal {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry().with(layer.with_syslog_identifier("agora".into())).with(level).init();
    } else if json {
        logs.json().with_current_span(false).with_span_list(false).init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agora: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Serve { ref domain, ref hostname, ref node, ref role, ref listen } => {
                let node = serve::NodeArgs { name: node.clone(), role: role.clone() };
                serve::run(&cli, domain.clone(), hostname.clone(), node, listen.clone()).await
            }
            Cmd::Ports { ref listen } => serve::ports(&cli, listen),
            Cmd::Domain(ref c) => admin::domain(&cli, c).await,
            Cmd::User(ref c) => admin::user(&cli, c).await,
            Cmd::Alias(ref c) => admin::alias(&cli, c).await,
            Cmd::Group(ref c) => admin::group(&cli, c).await,
            Cmd::Contact(ref c) => admin::contact(&cli, c).await,
            Cmd::Dns(ref c) => serve::dns(&cli, c).await,
            Cmd::Public(ref c) => admin::public(&cli, c).await,
            Cmd::Queue(ref c) => admin::queue(&cli, c).await,
            Cmd::Cert(CertCmd::Status) => serve::cert_status(&cli),
            Cmd::TlsReport(TlsReportCmd::List) => admin::tls_reports(&cli).await,
            Cmd::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut cmd, "agora", &mut script);
                to_stdout(&script)
            }
            Cmd::Manpages { ref dir } => std::fs::create_dir_all(dir).map_err(anyhow::Error::from).and_then(|()| {
                let cmd = <Cli as clap::CommandFactory>::command();
                clap_mangen::generate_to(cmd, dir)?;
                println!("man pages written to {}", dir.display());
                Ok(())
            }),
            Cmd::Config(ConfigCmd::Default { ref hostname, ref domain }) => {
                to_stdout(config::template(hostname.as_deref(), domain.as_deref()).as_bytes())
            }
            Cmd::Doctor { ref hostname, ref resolver, json, ref listen } => {
                match doctor::doctor(&cli, hostname.clone(), listen, resolver.as_deref(), json).await {
                    Ok(true) => Ok(()),
                    Ok(false) => std::process::exit(1),
                    Err(e) => Err(e),
                }
            }
            Cmd::Backup { ref dir, link } => ops::backup(&cli, dir, link),
            Cmd::Restore { ref dir, link } => ops::restore(&cli, dir, link).await,
            Cmd::Store(StoreCmd::Check { repair, ref from, drop_lost, quick }) => {
                let opts = agora_store::check::Options { repair, hashes: !quick, from: from.clone(), drop_lost };
                match ops::store_check(&cli, opts).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(anyhow::anyhow!("the store has problems left (above)")),
                    Err(e) => Err(e),
                }
            }
            Cmd::Store(StoreCmd::Migrate { ref from, ref to, ref password_file, ref ca_file }) => {
                ops::store_migrate(from, to, password_file.as_deref(), ca_file.clone()).await
            }
            Cmd::Replication(ReplicationCmd::Status) => replication::status(&cli).await,
            Cmd::Node(ref c) => node::node(&cli, c).await,
            Cmd::Routing(ref c) => routing::routing(&cli, c).await,
            Cmd::X400(ref c) => x400::x400(&cli, c).await,
            Cmd::Firewall { ref role, ref format, ref front_end, ref back_end, ref database } => {
                let args = firewall::FirewallArgs {
                    role: role.clone(),
                    format: format.clone(),
                    front_ends: front_end.clone(),
                    back_ends: back_end.clone(),
                    database: database.clone(),
                };
                firewall::firewall(&cli, &args).await
            }
            Cmd::Ldap(LdapCmd::Schema { ref format }) => {
                let text = match format.as_str() {
                    "ldif" => agora_ldap::schema::openldap_ldif(),
                    _ => agora_ldap::schema::openldap_schema(),
                };
                to_stdout(text.as_bytes())
            }
            Cmd::Track { ref sender, ref recipient, ref id } => {
                admin::track(&cli, sender.as_deref(), recipient.as_deref(), id.as_deref())
            }
        }
    });
    if let Err(e) = result {
        // One line: the outermost context, then its causes.
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("agora: {}", msg.join(": "));
        std::process::exit(1);
    }
}
