//! `agora user import FILE`: people from LDIF (as OpenLDAP's slapcat or Active
//! Directory's ldifde export them) or CSV with a header row, committed in batches,
//! plain passwords hashed on every core, pre-hashed ones kept until the first login.
//! LDIF is read here (RFC 2849's content records: folding, base64, comments): no
//! maintained crate reads it, and only its add form matters for an import.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;

use agora_directory::{normalize_address, passwords};
use agora_store::{DirectoryStore, NewAccount, Profile, Role, StoreError};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::Cli;
use crate::admin::open_store;

/// Accounts per transaction: large enough that fsyncs do not dominate, small enough
/// that progress shows and memory stays flat.
const BATCH: usize = 500;
/// What marks an account without a password: no scheme matches it, so nobody logs in
/// until an administrator sets one.
const NO_PASSWORD: &str = "!";
const MAX_FILE: u64 = 1 << 30;

/// One record of the input: attribute names (lower case) with their values.
#[derive(Debug, Default)]
struct Record {
    line: usize,
    dn: Option<String>,
    attrs: HashMap<String, Vec<Vec<u8>>>,
}

impl Record {
    fn first(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| {
            self.attrs
                .get(*n)
                .and_then(|v| v.first())
                .and_then(|v| String::from_utf8(v.clone()).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.attrs.get(name).into_iter().flatten().filter_map(|v| String::from_utf8(v.clone()).ok()).collect()
    }

    fn push(&mut self, name: &str, value: Vec<u8>) {
        // Attribute options (userCertificate;binary) are kept apart from the type.
        let base = name.split(';').next().unwrap_or(name).trim().to_ascii_lowercase();
        self.attrs.entry(base).or_default().push(value);
    }
}

/// Why a record was not imported.
struct Rejected {
    line: usize,
    reason: String,
}

/// Reads LDIF content records (RFC 2849); a record that cannot be read is rejected
/// with its line, the rest go on.
fn read_ldif(text: &str) -> (Vec<Record>, Vec<Rejected>) {
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    // Unfold: a line starting with one space continues the previous one.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(cont) = l.strip_prefix(' ')
            && let Some(last) = lines.last_mut()
            && !last.1.is_empty()
        {
            last.1.push_str(cont);
            continue;
        }
        lines.push((n + 1, l.to_string()));
    }
    let mut cur: Option<Record> = None;
    let mut bad: Option<String> = None;
    let mut finish = |cur: &mut Option<Record>, bad: &mut Option<String>| {
        if let Some(r) = cur.take() {
            match bad.take() {
                Some(reason) => rejected.push(Rejected { line: r.line, reason }),
                None => records.push(r),
            }
        }
    };
    for (n, l) in lines {
        if l.is_empty() {
            finish(&mut cur, &mut bad);
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        let Some((name, rest)) = l.split_once(':') else {
            if cur.is_some() {
                bad.get_or_insert(format!("line {n} is not `attribute: value`"));
            }
            continue;
        };
        let value: Vec<u8> = if let Some(b64) = rest.strip_prefix(':') {
            match B64.decode(b64.trim()) {
                Ok(v) => v,
                Err(_) => {
                    bad.get_or_insert(format!("line {n}: bad base64 value of {name}"));
                    Vec::new()
                }
            }
        } else if rest.starts_with('<') {
            bad.get_or_insert(format!("line {n}: values from URLs (`{name}:<`) are not read"));
            Vec::new()
        } else {
            rest.trim_start().as_bytes().to_vec()
        };
        let lname = name.trim().to_ascii_lowercase();
        if cur.is_none() {
            if lname == "version" {
                continue;
            }
            if lname != "dn" {
                // slapcat output starts each record with dn:; a record without one is
                // still read (CSV-like exports), the line it starts on names it.
                cur = Some(Record { line: n, ..Record::default() });
            } else {
                cur = Some(Record {
                    line: n,
                    dn: Some(String::from_utf8_lossy(&value).trim().to_string()),
                    ..Record::default()
                });
                continue;
            }
        }
        let r = cur.as_mut().expect("set above");
        match lname.as_str() {
            "changetype" => {
                if !value.eq_ignore_ascii_case(b"add") {
                    bad.get_or_insert(format!(
                        "changetype {} is not an entry to import",
                        String::from_utf8_lossy(&value)
                    ));
                }
            }
            "control" => {
                bad.get_or_insert("change records with controls are not imported".into());
            }
            _ => r.push(&lname, value),
        }
    }
    finish(&mut cur, &mut bad);
    (records, rejected)
}

fn read_csv(text: &str) -> Result<(Vec<Record>, Vec<Rejected>)> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> =
        reader.headers().context("reading the CSV header row")?.iter().map(|h| h.to_ascii_lowercase()).collect();
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    for row in reader.records() {
        match row {
            Ok(row) => {
                let line = row.position().map_or(0, |p| p.line() as usize);
                let mut r = Record { line, ..Record::default() };
                for (h, v) in headers.iter().zip(row.iter()) {
                    if !v.is_empty() {
                        // Multi-valued columns (proxyAddresses, mail) separate values with ';'.
                        if matches!(h.as_str(), "proxyaddresses" | "addresses") {
                            for part in v.split(';').filter(|p| !p.trim().is_empty()) {
                                r.push(h, part.trim().as_bytes().to_vec());
                            }
                        } else {
                            r.push(h, v.as_bytes().to_vec());
                        }
                    }
                }
                records.push(r);
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                rejected.push(Rejected { line, reason: format!("unreadable CSV row: {e}") });
            }
        }
    }
    Ok((records, rejected))
}

/// What a record becomes.
struct Person {
    line: usize,
    dn: Option<String>,
    new: NewAccount,
    password: Option<String>,
    manager: Option<String>,
}

fn is_person(r: &Record, csv: bool) -> bool {
    if csv {
        return true;
    }
    let classes: Vec<String> = r.all("objectclass").iter().map(|c| c.to_ascii_lowercase()).collect();
    classes.iter().any(|c| matches!(c.as_str(), "person" | "inetorgperson" | "organizationalperson" | "user"))
        && !classes.iter().any(|c| c == "computer")
}

/// The domain a DN's `dc=` components name.
fn dn_domain(dn: &str) -> Option<String> {
    let d = agora_ldap::dn::Dn::parse(dn).ok()?;
    let labels: Vec<String> = d
        .rdns
        .iter()
        .flatten()
        .filter(|a| a.attr.eq_ignore_ascii_case("dc"))
        .map(|a| a.value.to_ascii_lowercase())
        .collect();
    (!labels.is_empty()).then(|| labels.join("."))
}

fn to_person(r: &Record, domains: &[String]) -> Result<Person, String> {
    let login = match r.first(&["mail", "login", "email", "address", "userprincipalname"]) {
        Some(m) => m,
        None => {
            let from_dn = || Some(agora_ldap::dn::Dn::parse(r.dn.as_deref()?).ok()?.rdn_value("uid")?.to_string());
            let uid = r
                .first(&["uid", "samaccountname"])
                .or_else(from_dn)
                .ok_or("no mail, userPrincipalName or uid to make a login from")?;
            let domain =
                r.dn.as_deref().and_then(dn_domain).ok_or("a uid without a domain (no dc= in the DN) and no mail")?;
            format!("{uid}@{domain}")
        }
    };
    let login = normalize_address(&login).map_err(|_| format!("{login} is not a valid address"))?;
    let domain = login.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
    if !domains.contains(&domain) {
        return Err(format!("domain {domain} is not hosted here (agora domain add {domain})"));
    }
    let mut profile = Profile {
        given_name: r.first(&["givenname", "given_name", "gn"]).unwrap_or_default(),
        surname: r.first(&["sn", "surname"]).unwrap_or_default(),
        initials: r.first(&["initials"]).unwrap_or_default(),
        title: r.first(&["title"]).unwrap_or_default(),
        department: r.first(&["department", "departmentnumber", "ou"]).unwrap_or_default(),
        company: r.first(&["company", "o"]).unwrap_or_default(),
        office: r.first(&["physicaldeliveryofficename", "office", "roomnumber"]).unwrap_or_default(),
        postal_address: r.first(&["postaladdress"]).unwrap_or_default(),
        phone: r.first(&["telephonenumber", "phone"]).unwrap_or_default(),
        mobile: r.first(&["mobile"]).unwrap_or_default(),
        description: r.first(&["description"]).unwrap_or_default(),
        ..Profile::default()
    };
    if let Some(photo) = r.attrs.get("jpegphoto").or_else(|| r.attrs.get("thumbnailphoto")).and_then(|v| v.first())
        && photo.starts_with(&[0xff, 0xd8])
        && photo.len() <= 100 * 1024
    {
        profile.photo = photo.clone();
    }
    profile.certificates = r.attrs.get("usercertificate").cloned().unwrap_or_default();
    profile.hidden = r
        .first(&["msexchhidefromaddresslists", "hidden"])
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1"));
    let display = r
        .first(&["displayname", "name", "cn"])
        .or_else(|| {
            let n = format!("{} {}", profile.given_name, profile.surname);
            (!n.trim().is_empty()).then(|| n.trim().to_string())
        })
        .unwrap_or_else(|| login.split('@').next().unwrap_or_default().to_string());
    agora_directory::derive_names(&display, &mut profile);
    // Other addresses: further mail values and smtp: proxyAddresses.
    let mut addresses = Vec::new();
    for m in r.all("mail").iter().skip(1).chain(r.all("addresses").iter()) {
        if let Ok(a) = normalize_address(m) {
            addresses.push(a);
        }
    }
    for p in r.all("proxyaddresses") {
        if let Some((kind, a)) = p.split_once(':')
            && kind.eq_ignore_ascii_case("smtp")
            && let Ok(a) = normalize_address(a)
        {
            addresses.push(a);
        }
    }
    addresses.retain(|a| a != &login && a.rsplit_once('@').is_some_and(|(_, d)| domains.iter().any(|x| x == d)));
    addresses.sort();
    addresses.dedup();
    let (password_hash, password) = match r.first(&["userpassword", "password_hash", "password"]) {
        None => (NO_PASSWORD.to_string(), None),
        Some(p) if p.starts_with('{') || p.starts_with("$argon2") => {
            if !passwords::known(&p) {
                let scheme = p.split('}').next().unwrap_or_default();
                return Err(format!(
                    "password scheme {scheme}}} is not supported (ARGON2, SSHA, SHA, SSHA256, SSHA512, CRYPT $5$/$6$ are)"
                ));
            }
            (p, None)
        }
        Some(p) => (String::new(), Some(p)),
    };
    let quota = match r.first(&["quota"]) {
        Some(q) => q.parse().map_err(|_| format!("quota {q} is not a number of bytes"))?,
        None => 0,
    };
    let role =
        if r.first(&["role"]).is_some_and(|v| v.eq_ignore_ascii_case("admin")) { Role::Admin } else { Role::User };
    Ok(Person {
        line: r.line,
        dn: r.dn.clone(),
        manager: r.first(&["manager"]),
        new: NewAccount {
            login,
            display_name: display,
            password_hash,
            scram: String::new(),
            quota,
            role,
            profile,
            addresses,
        },
        password,
    })
}

/// Hashes plain passwords on every core (argon2id and the SCRAM verifier).
fn hash_all(people: &mut [Person], progress: &indicatif::ProgressBar) -> Vec<(usize, String)> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = people.len().div_ceil(cores).max(1);
    let mut failures = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = people
            .chunks_mut(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for p in part.iter_mut() {
                        if let Some(pw) = p.password.take() {
                            match agora_directory::credentials(&pw) {
                                Ok((hash, scram)) => {
                                    p.new.password_hash = hash;
                                    p.new.scram = scram;
                                }
                                Err(e) => bad.push((p.line, e.to_string())),
                            }
                            progress.inc(1);
                        }
                    }
                    bad
                })
            })
            .collect();
        for h in handles {
            failures.extend(h.join().unwrap_or_default());
        }
    });
    failures
}

pub(crate) fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what.to_string());
    b
}

pub async fn import(cli: &Cli, file: &Path, format: Option<&str>) -> Result<()> {
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    if meta.len() > MAX_FILE {
        bail!("{} is larger than 1 GiB; split it", file.display());
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", file.display()))?;
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let looks_ldif = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).is_some_and(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("dn:") || l.starts_with("version:")
    });
    let csv = match format.map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => true,
        Some("ldif") => false,
        Some(other) => bail!("--format {other}: say ldif or csv"),
        None => ext == "csv" || (ext != "ldif" && !looks_ldif),
    };
    let (records, mut rejected) = if csv { read_csv(&text)? } else { read_ldif(&text) };

    let (store, _dir) = open_store(cli).await?;
    let result = async {
        let domains: Vec<String> = store.domains().await?.into_iter().map(|d| d.name).collect();
        let mut people = Vec::new();
        let mut skipped = 0usize;
        for r in &records {
            if !is_person(r, csv) {
                skipped += 1;
                continue;
            }
            match to_person(r, &domains) {
                Ok(p) => people.push(p),
                Err(reason) => rejected.push(Rejected { line: r.line, reason }),
            }
        }
        // Managers named by DN point at people of this file (or already here).
        let by_dn: HashMap<String, String> = people
            .iter()
            .filter_map(|p| Some((agora_ldap::dn::normalize(p.dn.as_deref()?)?, p.new.login.clone())))
            .collect();
        for p in &mut people {
            if let Some(m) = p.manager.take() {
                let login = if m.contains('=') {
                    agora_ldap::dn::normalize(&m).and_then(|n| by_dn.get(&n).cloned()).or_else(|| {
                        let d = agora_ldap::dn::Dn::parse(&m).ok()?;
                        Some(format!("{}@{}", d.rdn_value("uid")?, dn_domain(&m)?))
                    })
                } else {
                    normalize_address(&m).ok()
                };
                p.new.profile.manager = login.unwrap_or_default();
            }
        }
        let plain = people.iter().filter(|p| p.password.is_some()).count();
        let prehashed = people.iter().filter(|p| p.new.password_hash != NO_PASSWORD && p.password.is_none()).count();
        let without = people.iter().filter(|p| p.new.password_hash == NO_PASSWORD).count();
        if plain > 0 {
            let b = bar(plain as u64, "hashing");
            for (line, reason) in hash_all(&mut people, &b) {
                rejected.push(Rejected { line, reason });
            }
            b.finish_and_clear();
        }
        let b = bar(people.len() as u64, "importing");
        let mut imported = 0usize;
        let mut iter = people.into_iter().filter(|p| p.password.is_none());
        loop {
            let batch: Vec<Person> = iter.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let lines: Vec<usize> = batch.iter().map(|p| p.line).collect();
            let results = store.create_accounts(batch.into_iter().map(|p| p.new).collect()).await?;
            for (line, r) in lines.into_iter().zip(results) {
                match r {
                    Ok(_) => imported += 1,
                    Err(StoreError::Exists(what)) => rejected.push(Rejected { line, reason: format!("{what} already exists") }),
                    Err(e) => rejected.push(Rejected { line, reason: e.to_string() }),
                }
                b.inc(1);
            }
        }
        b.finish_and_clear();
        rejected.sort_by_key(|r| r.line);
        println!(
            "imported {imported} people ({plain} with passwords hashed now, {prehashed} pre-hashed and upgraded at their first login, {without} without a password); skipped {skipped} entries that are not people; rejected {}",
            rejected.len()
        );
        for r in &rejected {
            eprintln!("{}:{}: {}", file.display(), r.line, r.reason);
        }
        anyhow::Ok(rejected.len())
    }
    .await;
    store.close();
    match result? {
        0 => Ok(()),
        n => bail!("{n} record(s) rejected (listed above); the others were imported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldif_folding_base64_and_rejections() {
        let text = "version: 1\n\n# people\ndn: uid=ann,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\ncn: Ann\n  Lee\nsn:: TGVl\nuserPassword:: e1NTSEF9YWJj\n\ndn: cn=x,dc=example,dc=org\nchangetype: delete\n\ndn: uid=b,dc=example,dc=org\njpegPhoto:< file:///etc/passwd\n";
        let (records, rejected) = read_ldif(text);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.first(&["cn"]).as_deref(), Some("Ann Lee"), "a folded line continues without its first space");
        assert_eq!(r.first(&["sn"]).as_deref(), Some("Lee"));
        assert_eq!(r.first(&["userpassword"]).as_deref(), Some("{SSHA}abc"));
        assert_eq!(rejected.iter().map(|r| r.line).collect::<Vec<_>>(), [11, 14]);
    }

    #[test]
    fn records_become_people() {
        let domains = vec!["example.org".to_string()];
        let (records, _) = read_ldif(
            "dn: uid=ann,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\ncn: Ann Lee\nuid: ann\ntelephoneNumber: 1\nproxyAddresses: smtp:al@example.org\nproxyAddresses: X400:c=us\nuserPassword: plain-pw\n\ndn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\n\ndn: uid=z,ou=people,dc=else,dc=test\nobjectClass: person\ncn: Z\n",
        );
        assert!(is_person(&records[0], false) && !is_person(&records[1], false));
        let p = to_person(&records[0], &domains).unwrap();
        assert_eq!((p.new.login.as_str(), p.new.profile.surname.as_str()), ("ann@example.org", "Lee"));
        assert_eq!(
            (p.new.addresses.clone(), p.password.as_deref()),
            (vec!["al@example.org".to_string()], Some("plain-pw"))
        );
        assert!(to_person(&records[2], &domains).err().unwrap().contains("not hosted"));
        let (csv, bad) = read_csv("login,name,title,password_hash,hidden\nbob@example.org,\"Bob, Jr. Smith\",Chef,{MD5}x,\ncat@example.org,Cat,,,yes\n").unwrap();
        assert!(bad.is_empty());
        assert!(to_person(&csv[0], &domains).err().unwrap().contains("{MD5}"));
        let cat = to_person(&csv[1], &domains).unwrap();
        assert!(cat.new.profile.hidden && cat.new.password_hash == NO_PASSWORD);
        assert_eq!(csv[1].line, 3);
    }
}
