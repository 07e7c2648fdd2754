//! `agora backup`, `agora restore` and `agora store check`: a consistent copy of a
//! running server with a manifest of counts and hashes, its verified restore, and the
//! store's invariants checked (and repaired).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agora_store::check::{self, Counts};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::Cli;

/// The backup's table of contents, written last: a directory with it is a whole backup.
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub agora: String,
    /// When the copy was taken (RFC 3339).
    pub created: String,
    pub hostname: String,
    /// The data directory it was taken from.
    pub source: String,
    pub schema: u32,
    pub counts: Counts,
    pub body_files: u64,
    pub body_file_bytes: u64,
    /// SHA-256 of every file but the bodies (those are named by their SHA-256).
    pub files: BTreeMap<String, String>,
    /// Files the configuration names outside the data directory, not in the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<String>,
}

/// What stays out of the generic copy of the data directory: the store (copied as a
/// snapshot), the directory stamp (made anew) and the tracking logs.
fn skipped(name: &str) -> bool {
    matches!(name, "agora.db" | "agora.db-wal" | "agora.db-shm" | "blobs" | "directory.version" | "agora.toml")
        || name.starts_with("tracking.log")
        || name == MANIFEST
}

/// Runs `work` with a progress bar on a terminal (`import`'s), cleared when done.
fn with_bar<T>(what: &str, work: impl FnOnce(&dyn Fn(u64, u64)) -> T) -> T {
    let b = crate::import::bar(0, what);
    let out = work(&|done, total| {
        b.set_length(total);
        b.set_position(done);
    });
    b.finish_and_clear();
    out
}

/// A new directory, or an empty one, for a backup or a restore; owner only.
fn fresh_dir(dir: &Path, what: &str) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty: give {what} a new directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Copies a file durably, keeping its permissions; returns its SHA-256.
fn copy_file(src: &Path, dst: &Path) -> Result<String> {
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    std::fs::File::open(dst)?.sync_all()?;
    Ok(check::hash_file(dst)?)
}

/// Copies a directory tree's regular files (`rel` under the roots), recording hashes.
fn copy_tree(src: &Path, dst: &Path, rel: &Path, files: &mut BTreeMap<String, String>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(src.join(rel))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let r = rel.join(&name);
        if rel.as_os_str().is_empty() && skipped(&name.to_string_lossy()) {
            continue;
        }
        let t = e.file_type()?;
        if t.is_dir() {
            std::fs::create_dir_all(dst.join(&r))?;
            std::fs::set_permissions(dst.join(&r), e.metadata()?.permissions())?;
            copy_tree(src, dst, &r, files)?;
        } else if t.is_file() {
            let hash = copy_file(&e.path(), &dst.join(&r))?;
            files.insert(r.to_string_lossy().into_owned(), hash);
        }
    }
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

fn show_counts(c: &Counts) -> String {
    format!(
        "{} domain(s), {} account(s), {} mailbox(es), {} message(s), {} bodies ({}), {} queued",
        c.domains,
        c.accounts,
        c.mailboxes,
        c.messages,
        c.bodies,
        human(c.body_bytes),
        c.queued
    )
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

/// `agora backup DIR`: a consistent copy of the (running or stopped) server.
/// Refuses what works on the data directory's SQLite store when the store is PostgreSQL.
fn sqlite_only(cli: &Cli, what: &str, instead: &str) -> Result<()> {
    if let Some((url, _)) = crate::admin::store_url(cli)?
        && agora_store::sql::is_postgres_url(&url)
    {
        bail!("{what} works on the data directory's SQLite store; this server's store is PostgreSQL: {instead}");
    }
    Ok(())
}

pub fn backup(cli: &Cli, dir: &Path, link: bool) -> Result<()> {
    sqlite_only(
        cli,
        "agora backup",
        "back it up with pg_dump (bodies included) and copy the data directory's configuration and keys",
    )?;
    let data = &cli.data;
    if !data.join("agora.db").exists() {
        bail!("no information store in {}: pass --data DIR", data.display());
    }
    crate::admin::same_owner(data)?;
    // A backup inside the data directory would copy itself into itself.
    let inside = |d: &Path| {
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let full = std::fs::canonicalize(parent).ok()?.join(d.file_name()?);
        Some(full.starts_with(std::fs::canonicalize(data).ok()?))
    };
    if inside(dir) == Some(true) {
        bail!("{} is inside the data directory {}: give the backup a place outside it", dir.display(), data.display());
    }
    fresh_dir(dir, "the backup")?;
    let copied = with_bar("bodies", |progress| agora_store::backup::copy_store(data, dir, link, progress))
        .with_context(|| format!("copying the store into {}", dir.display()))?;
    let mut files = BTreeMap::new();
    files.insert("agora.db".to_string(), check::hash_file(&dir.join("agora.db"))?);
    let config = crate::serve::config_path(cli);
    if config.exists() {
        files.insert("agora.toml".to_string(), copy_file(&config, &dir.join("agora.toml"))?);
    }
    copy_tree(data, dir, Path::new(""), &mut files)?;
    let outside = outside_files(cli, &config);
    let manifest = Manifest {
        format: 1,
        agora: env!("CARGO_PKG_VERSION").into(),
        created: agora_store::time::rfc3339(agora_store::now()),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string(),
        source: std::fs::canonicalize(data).unwrap_or(data.clone()).display().to_string(),
        schema: copied.schema,
        counts: copied.counts.clone(),
        body_files: copied.files,
        body_file_bytes: copied.file_bytes,
        files,
        outside: outside.clone(),
    };
    write_durably(&dir.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
    println!("backup in {}: {}", dir.display(), show_counts(&copied.counts));
    println!(
        "  {} body file(s) {} ({}); {} other file(s); manifest {}",
        copied.files,
        if link { "linked or copied" } else { "copied" },
        human(copied.file_bytes),
        manifest.files.len(),
        dir.join(MANIFEST).display()
    );
    for o in &outside {
        println!("  not in the backup (outside the data directory): {o}");
    }
    Ok(())
}

/// Files the configuration names by an absolute path outside the data directory.
fn outside_files(cli: &Cli, config: &Path) -> Vec<String> {
    let Ok(loaded) = crate::config::load_or_default(config) else { return Vec::new() };
    let tls = &loaded.config.tls;
    let data = std::fs::canonicalize(&cli.data).unwrap_or(cli.data.clone());
    [&tls.cert, &tls.key, &tls.client_ca]
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && !p.starts_with(&data))
        .map(|p| p.display().to_string())
        .collect()
}

/// `agora restore DIR --data NEW`: verifies the backup, copies it into a new data
/// directory, and checks the result against the manifest.
pub async fn restore(cli: &Cli, dir: &Path, link: bool) -> Result<()> {
    let text = std::fs::read(dir.join(MANIFEST))
        .with_context(|| format!("{} has no {MANIFEST}: not a complete backup", dir.display()))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).with_context(|| format!("reading {}", dir.join(MANIFEST).display()))?;
    if manifest.format != 1 {
        bail!("backup format {} is newer than this agora reads (1)", manifest.format);
    }
    // Every file as it was written, before anything is restored.
    let mut bad = Vec::new();
    for (rel, want) in &manifest.files {
        match check::hash_file(&dir.join(rel)) {
            Ok(h) if &h == want => {}
            Ok(_) => bad.push(format!("{rel} (changed)")),
            Err(e) => bad.push(format!("{rel} ({e})")),
        }
    }
    if !bad.is_empty() {
        bail!("the backup does not match its manifest: {}", bad.join(", "));
    }
    let new = &cli.data;
    fresh_dir(new, "the restore (--data)")?;
    let copied = with_bar("bodies", |progress| agora_store::backup::copy_store(dir, new, link, progress))
        .context("copying the store")?;
    for rel in manifest.files.keys().filter(|r| r.as_str() != "agora.db") {
        copy_file(&dir.join(rel), &new.join(rel))?;
        let mode = std::fs::metadata(dir.join(rel))?.permissions();
        std::fs::set_permissions(new.join(rel), mode)?;
    }
    if copied.counts != manifest.counts || copied.files != manifest.body_files {
        bail!(
            "the restored store differs from the manifest: it has {} and {} body file(s); the backup had {} and {}",
            show_counts(&copied.counts),
            copied.files,
            show_counts(&manifest.counts),
            manifest.body_files
        );
    }
    // Opened once: an older backup is brought to this version's schema.
    let (store, _) = crate::admin::open_store(cli).await?;
    store.close();
    // Every body read against its hash; counts the copy carried wrong are set from its
    // rows (as `agora store check --repair` would), nothing else is changed.
    let opts = check::Options { hashes: true, repair: true, ..Default::default() };
    let report = with_bar("verified", |progress| check::check(new, &opts, progress))?;
    for f in &report.findings {
        match &f.repaired {
            Some(done) => println!("✓ repaired: {}: {done}", f.problem),
            None => println!("✗ {}", f.problem),
        }
    }
    if report.unrepaired() > 0 {
        bail!(
            "the restored store in {} has {} problem(s) left: see above, and agora store check",
            new.display(),
            report.unrepaired()
        );
    }
    println!("restored {} (taken {} from {}) into {}", dir.display(), manifest.created, manifest.source, new.display());
    println!("  {}; every body and file verified", show_counts(&report.counts));
    for o in &manifest.outside {
        println!("  put back by hand (it was outside the data directory): {o}");
    }
    println!("  start it with: agora --data {} serve", new.display());
    Ok(())
}

/// `agora store check`: prints each problem and what was done; false when some remain.
pub async fn store_check(cli: &Cli, opts: check::Options) -> Result<bool> {
    sqlite_only(cli, "agora store check", "PostgreSQL keeps its own constraints; see its amcheck")?;
    // Opened once first: an older store is brought to this version's schema.
    let (store, _) = crate::admin::open_store(cli).await?;
    store.close();
    let report = with_bar("bodies", |progress| check::check(&cli.data, &opts, progress))?;
    println!("store in {}: {}", cli.data.display(), show_counts(&report.counts));
    for f in &report.findings {
        match (&f.repaired, &f.fix) {
            (Some(done), _) => println!("✓ repaired: {}: {done}", f.problem),
            (None, Some(fix)) => println!("✗ {}; fix: {fix}", f.problem),
            (None, None) => println!("✗ {}", f.problem),
        }
    }
    let left = report.unrepaired();
    if report.findings.is_empty() {
        println!(
            "✓ no problems ({})",
            if opts.hashes { "every body read and matched its hash" } else { "body sizes only: --hashes reads them" }
        );
    } else if left == 0 {
        println!("✓ all {} problem(s) repaired", report.findings.len());
    }
    Ok(left == 0)
}

/// `agora store migrate --from sqlite:DIR --to postgres://…`.
pub async fn store_migrate(
    from: &str,
    to: &str,
    password_file: Option<&Path>,
    ca_file: Option<std::path::PathBuf>,
) -> Result<()> {
    if !agora_store::sql::is_postgres_url(to) {
        bail!("--to {to}: give a PostgreSQL URL, postgres://USER@HOST:PORT/DB");
    }
    let dir = agora_store::sql::sqlite_dir(from);
    if !dir.join("agora.db").exists() {
        bail!("--from {from}: no SQLite store in {}", dir.display());
    }
    let password = match password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    // Opened once: an older store is brought to this version's schema first.
    let store =
        agora_store::sql::SqlStore::open(&dir).with_context(|| format!("opening the store in {}", dir.display()))?;
    store.close();
    let url = to.to_string();
    let report = tokio::task::spawn_blocking(move || {
        let bar = crate::import::bar(0, "copying");
        let out = agora_store::migrate::sqlite_to_postgres(
            &dir,
            &url,
            password.as_deref(),
            ca_file.as_deref(),
            &|step, done, total| {
                bar.set_message(step.to_string());
                bar.set_length(total);
                bar.set_position(done);
            },
        );
        bar.finish_and_clear();
        out
    })
    .await?
    .with_context(|| format!("migrating into {}", agora_store::sql::redact_url(to)))?;
    for (table, n) in &report.tables {
        if *n > 0 {
            println!("  {table:<18} {n} row(s)");
        }
    }
    println!(
        "copied and verified: {} mailbox(es) with {} message(s) (UIDs, MODSEQs, flags as they were), {} bod(ies), {} byte(s)",
        report.mailboxes, report.messages, report.bodies, report.body_bytes
    );
    println!(
        "next: set [store] url = \"{}\" in each node's agora.toml, then start it",
        agora_store::sql::redact_url(to)
    );
    Ok(())
}
