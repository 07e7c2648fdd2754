//! Directory replication on 379 (RFC 4533) with a real peer: OpenLDAP's slapd as a
//! consumer of Agora (refreshAndPersist, restarted with its cookie), and OpenLDAP's
//! ldapsearch asking for refreshes with good, stale and forged cookies.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agora, have, unique_ip};

const BASE: &str = "dc=example,dc=org";
const REPL_PW: &str = "replicate-me-please";

/// Runs an OpenLDAP tool (the server's own self-signed certificate is not verified).
fn tool(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env("LDAPTLS_REQCERT", "never")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Entries of an LDIF answer, each as its DN and sorted attribute lines (values in
/// order-free form), so two servers' answers compare.
fn entries(ldif: &str) -> Vec<(String, Vec<String>)> {
    let unfolded = ldif.replace("\n ", "");
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for block in unfolded.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(dn) = lines.next().and_then(|l| l.strip_prefix("dn: ")) else { continue };
        let mut attrs: Vec<String> = lines.map(str::to_string).collect();
        attrs.sort();
        out.push((dn.to_ascii_lowercase(), attrs));
    }
    out.sort();
    out
}

struct Slapd {
    dir: PathBuf,
    url: String,
    child: Option<Child>,
}

impl Slapd {
    /// A slapd with Agora's schema, replicating `BASE` from `provider` over StartTLS.
    fn consumer(work: &Path, agora: &Agora, provider: &str) -> Slapd {
        let dir = work.join("slapd");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let schema = agora.cli_ok(&["ldap", "schema", "--format", "openldap"], None);
        std::fs::write(dir.join("agora.schema"), schema).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {d}/agora.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             database mdb\nsuffix \"{BASE}\"\nrootdn \"cn=admin,{BASE}\"\nrootpw secret\n\
             directory {d}/db\nindex objectClass,entryUUID,entryCSN eq\n\
             syncrepl rid=001 provider={provider} type=refreshAndPersist retry=\"1 +\" \
             searchbase=\"{BASE}\" bindmethod=simple binddn=\"uid=repl,ou=people,{BASE}\" \
             credentials={REPL_PW} starttls=critical tls_reqcert=never\n",
            d = dir.display()
        );
        std::fs::write(dir.join("slapd.conf"), conf).unwrap();
        let url = format!("ldap://{}:3890", unique_ip());
        let mut s = Slapd { dir, url, child: None };
        s.start();
        s
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("slapd.log")).unwrap();
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .args(["-h", &format!("{}/", self.url), "-d", "sync"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.search("(objectClass=*)", &["1.1"]).0 {
            assert!(Instant::now() < deadline, "slapd did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }

    fn search(&self, filter: &str, attrs: &[&str]) -> (bool, String) {
        let mut args = vec!["-LLL", "-x", "-H", &self.url, "-D", "cn=admin,dc=example,dc=org", "-w", "secret"];
        args.extend(["-b", BASE, filter]);
        args.extend(attrs);
        tool("ldapsearch", &args)
    }

    /// Waits until `filter` finds exactly `want` entries on the replica; how long it took.
    fn wait_for(&self, filter: &str, want: usize) -> Duration {
        let started = Instant::now();
        loop {
            let (_, out) = self.search(filter, &["1.1"]);
            if entries(&out).len() == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{filter} never found {want} entries on slapd:\n{out}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn agora_search(a: &Agora, filter: &str, attrs: &[&str]) -> String {
    let pw = a.admin_password.clone().unwrap();
    let url = format!("ldap://{}:10389", a.ip);
    let admin = format!("admin@{}", a.domain);
    let mut args = vec!["-LLL", "-x", "-ZZ", "-H", &url, "-D", &admin, "-w", &pw, "-b", BASE, filter];
    args.extend(attrs);
    let (ok, out) = tool("ldapsearch", &args);
    assert!(ok, "{out}");
    out
}

/// A sync search by the replicator on 379: (succeeded, output with the cookie lines).
fn sync_search(a: &Agora, who: (&str, &str), mode: &str, attrs: &[&str]) -> (bool, String) {
    let url = format!("ldap://{}:10379", a.ip);
    let sync = format!("sync={mode}");
    let mut args = vec!["-x", "-ZZ", "-H", &url, "-D", who.0, "-w", who.1, "-b", BASE, "-E", &sync, "(objectClass=*)"];
    args.extend(attrs);
    tool("ldapsearch", &args)
}

fn cookie_of(out: &str) -> String {
    out.lines()
        .filter_map(|l| l.strip_prefix("# cookie: ").map(|c| c.trim().to_string()))
        .next_back()
        .unwrap_or_else(|| panic!("no cookie in:\n{out}"))
}

fn add_user(a: &Agora, login: &str, name: &str) {
    a.cli_ok(&["user", "add", login, "--name", name, "--password-stdin"], Some("a-long-password\n"));
}

#[test]
fn slapd_keeps_a_live_copy_of_the_directory() {
    if !have("ldapsearch") || !Path::new("/usr/sbin/slapd").exists() {
        eprintln!("slapd or ldap-utils missing: skipped");
        return;
    }
    let a = Agora::start();
    a.cli_ok(
        &["user", "add", "repl@example.org", "--role", "replicator", "--password-stdin"],
        Some(&format!("{REPL_PW}\n")),
    );
    add_user(&a, "ann@example.org", "Ann Lee");
    add_user(&a, "bob@example.org", "Bob Stone");
    a.cli_ok(&["group", "add", "team@example.org"], None);
    a.cli_ok(&["group", "member", "add", "team@example.org", "ann@example.org"], None);
    a.cli_ok(&["alias", "add", "sales@example.org", "bob@example.org"], None);

    let work = tempfile::tempdir().unwrap();
    let provider = format!("ldap://{}:10379", a.ip);
    let mut slapd = Slapd::consumer(work.path(), &a, &provider);

    // After the refresh the copy answers as the original does.
    let attrs = ["cn", "sn", "uid", "mail", "proxyAddresses", "member", "displayName", "objectClass"];
    slapd.wait_for("(objectClass=*)", entries(&agora_search(&a, "(objectClass=*)", &["1.1"])).len());
    for filter in ["(objectClass=inetOrgPerson)", "(proxyAddresses=smtp:sales@example.org)", "(cn=team)"] {
        let theirs = entries(&slapd.search(filter, &attrs).1);
        assert!(!theirs.is_empty(), "{filter} found nothing on slapd");
        assert_eq!(theirs, entries(&agora_search(&a, filter, &attrs)), "{filter}");
    }
    // Secrets never reach a replica that is not Agora.
    let (_, out) = slapd.search("(uid=ann)", &["userPassword", "authPassword"]);
    assert!(!out.contains("userPassword") && !out.contains("authPassword"), "{out}");

    // A user added, changed, renamed and deleted on Agora shows on slapd.
    add_user(&a, "carol@example.org", "Carol King");
    let t = slapd.wait_for("(&(uid=carol)(cn=Carol King))", 1);
    eprintln!("add seen by slapd after {t:?}");
    a.cli_ok(&["user", "set", "carol@example.org", "--name", "Carol Queen"], None);
    let t = slapd.wait_for("(&(uid=carol)(cn=Carol Queen))", 1);
    eprintln!("change seen by slapd after {t:?}");
    let pw = a.admin_password.clone().unwrap();
    let url = format!("ldap://{}:10389", a.ip);
    let (ok, out) = tool(
        "ldapmodrdn",
        &[
            "-x",
            "-ZZ",
            "-H",
            &url,
            "-D",
            "admin@example.org",
            "-w",
            &pw,
            "-r",
            &format!("uid=carol,ou=people,{BASE}"),
            "uid=caroline",
        ],
    );
    assert!(ok, "{out}");
    let t = slapd.wait_for("(&(uid=caroline)(mail=caroline@example.org))", 1);
    slapd.wait_for("(uid=carol)", 0);
    eprintln!("rename seen by slapd after {t:?}");
    a.cli_ok(&["user", "remove", "caroline@example.org"], None);
    let t = slapd.wait_for("(uid=caroline)", 0);
    eprintln!("delete seen by slapd after {t:?}");
    // Membership follows.
    a.cli_ok(&["group", "member", "add", "team@example.org", "bob@example.org"], None);
    slapd.wait_for(&format!("(member=uid=bob,ou=people,{BASE})"), 1);

    // slapd stopped, the directory changes, slapd comes back with its cookie and gets
    // only what changed, deletes included.
    slapd.stop();
    add_user(&a, "dave@example.org", "Dave Hill");
    a.cli_ok(&["user", "remove", "bob@example.org"], None);
    std::thread::sleep(Duration::from_millis(1500));
    slapd.start();
    slapd.wait_for("(uid=dave)", 1);
    slapd.wait_for("(uid=bob)", 0);
    let status = a.cli_ok(&["replication", "status"], None);
    let line = status.lines().find(|l| l.contains("repl@example.org.rid001")).unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains("refreshAndPersist, connected"), "{status}");
    assert!(line.contains("(since its cookie)") && line.contains("1 deleted"), "not an incremental refresh:\n{status}");
    let theirs = entries(&slapd.search("(objectClass=*)", &attrs).1);
    assert_eq!(theirs, entries(&agora_search(&a, "(objectClass=*)", &attrs)), "the copies differ after catching up");
}

#[test]
fn cookies_bring_changes_only_and_forged_ones_a_full_refresh() {
    if !have("ldapsearch") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(
        &["user", "add", "repl@example.org", "--role", "replicator", "--password-stdin"],
        Some(&format!("{REPL_PW}\n")),
    );
    add_user(&a, "ann@example.org", "Ann Lee");
    let repl = (format!("uid=repl,ou=people,{BASE}"), REPL_PW.to_string());
    let who = (repl.0.as_str(), repl.1.as_str());
    let total = entries(&agora_search(&a, "(objectClass=*)", &["1.1"])).len();

    let (ok, out) = sync_search(&a, who, "ro", &["*", "+"]);
    assert!(ok, "{out}");
    assert_eq!(entries(&out).len(), total, "a first refresh sends every entry");
    assert!(out.contains("entryCSN: ") && out.contains("entryUUID: "), "{out}");
    assert!(!out.contains("memberOf") && !out.contains("userPassword"), "{out}");
    let cookie = cookie_of(&out);
    assert!(cookie.starts_with("csn=") || cookie.contains(",csn="), "{cookie}");

    // Nothing changed: nothing sent.
    let (ok, out) = sync_search(&a, who, &format!("ro/{cookie}"), &["*"]);
    assert!(ok, "{out}");
    assert_eq!(entries(&out).len(), 0, "{out}");

    // One change: one entry.
    add_user(&a, "bob@example.org", "Bob Stone");
    std::thread::sleep(Duration::from_millis(1200));
    let (ok, out) = sync_search(&a, who, &format!("ro/{cookie}"), &["*"]);
    assert!(ok, "{out}");
    let got = entries(&out);
    assert_eq!(got.len(), 1, "{out}");
    assert_eq!(got[0].0, format!("uid=bob,ou=people,{BASE}"));
    // Password hashes go only to replicators that ask by name over TLS, in RFC forms.
    let (_, out) = sync_search(&a, who, "ro", &["*", "userPassword"]);
    assert!(out.contains("userPassword:: ") || out.contains("userPassword: {ARGON2}"), "{out}");

    // Garbage, a CSN this server never issued, and one from its future: full refresh.
    for forged in [
        "rid=001,csn=garbage".to_string(),
        "rid=001,csn=19990101000000.000000Z#000000#000#000000".to_string(),
        "rid=001,csn=29990101000000.000000Z#000000#000#000000".to_string(),
        "\u{1}\u{2}not a cookie at all".to_string(),
    ] {
        let (ok, out) = sync_search(&a, who, &format!("ro/{forged}"), &["*"]);
        assert!(ok, "{forged}: {out}");
        assert_eq!(entries(&out).len(), total + 1, "{forged}:\n{out}");
        assert_eq!(out.matches(" added\n").count(), total + 1, "{forged}: not sent in full:\n{out}");
    }

    // Only replicators and administrators may replicate.
    let ann = (format!("uid=ann,ou=people,{BASE}"), "a-long-password".to_string());
    let (ok, out) = sync_search(&a, (&ann.0, &ann.1), "ro", &["*"]);
    assert!(!ok && out.contains("Insufficient access"), "{out}");
    // A replicator cannot write.
    let url = format!("ldap://{}:10389", a.ip);
    let (ok, out) =
        tool("ldapdelete", &["-x", "-ZZ", "-H", &url, "-D", who.0, "-w", who.1, &format!("uid=ann,ou=people,{BASE}")]);
    assert!(!ok && out.contains("Insufficient access"), "{out}");
}
