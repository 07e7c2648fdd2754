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
    tool_with(program, args, "")
}

/// The same with `input` on its standard input.
fn tool_with(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut all = vec!["LDAPTLS_REQCERT=never", program];
    all.extend(args);
    common::run("env", &all, input)
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
        while !tool("ldapsearch", &["-x", "-H", &self.url, "-b", "", "-s", "base", "(objectClass=*)", "1.1"]).0 {
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

/// A provider with its replicator account and Ann.
fn provider() -> Agora {
    let a = Agora::start();
    a.cli_ok(
        &["user", "add", "repl@example.org", "--role", "replicator", "--password-stdin"],
        Some(&format!("{REPL_PW}\n")),
    );
    add_user(&a, "ann@example.org", "Ann Lee");
    a
}

fn add_user(a: &Agora, login: &str, name: &str) {
    a.cli_ok(&["user", "add", login, "--name", name, "--password-stdin"], Some("a-long-password\n"));
}

#[test]
fn slapd_keeps_a_live_copy_of_the_directory() {
    if !have("ldapsearch") || !have("/usr/sbin/slapd") {
        return;
    }
    let a = provider();
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
    let a = provider();
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

/// An IMAP login over TLS: did the server take the password?
fn imap_login(ip: &str, login: &str, password: &str) -> bool {
    let script = r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL(sys.argv[1], 10993, ssl_context=ctx, timeout=20)
try:
    m.login(sys.argv[2], sys.argv[3]); print("in")
except imaplib.IMAP4.error:
    print("refused")
"#;
    let (_, out) = common::run("python3", &["-c", script, ip, login, password], "");
    out.contains("in")
}

/// Waits until `check` holds; how long it took.
fn within(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

fn users(a: &Agora) -> Vec<String> {
    let out = a.cli_ok(&["user", "list"], None);
    let mut v: Vec<String> = out.lines().filter_map(|l| l.split('\t').next()).map(str::to_string).collect();
    v.sort();
    v
}

/// A replica configured for `provider`, trusting its certificate.
fn replica_of(provider: &Agora, extra: &str) -> Agora {
    let cert = std::fs::read(provider.data().join("tls/cert.pem")).unwrap();
    let url = format!("ldap://{}:10379", provider.ip);
    Agora::start_with(move |data| {
        std::fs::write(data.join("provider.pem"), &cert).unwrap();
        std::fs::write(data.join("repl.secret"), format!("{REPL_PW}\n")).unwrap();
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[replication]\nprovider = \"{url}\"\nbind_dn = \"uid=repl,ou=people,{BASE}\"\n\
                 password_file = \"repl.secret\"\nca_file = \"provider.pem\"\ntls_name = \"mx.example.org\"\n\
                 retry_max_secs = 2\n{extra}"
            ),
        )
        .unwrap();
    })
}

#[test]
fn an_agora_replica_serves_the_providers_users_and_keeps_serving_when_cut_off() {
    let mut hub = provider();
    hub.cli_ok(&["group", "add", "team@example.org"], None);
    hub.cli_ok(&["group", "member", "add", "team@example.org", "ann@example.org"], None);
    let site = replica_of(&hub, "");
    within("the first copy", || users(&site) == users(&hub));
    assert!(imap_login(&site.ip, "ann@example.org", "a-long-password"), "the hash came with the user");

    // A user made on the provider logs in on the replica.
    hub.cli_ok(&["user", "add", "bob@example.org", "--name", "Bob", "--password-stdin"], Some("bobs-password\n"));
    let t = within("bob on the replica", || imap_login(&site.ip, "bob@example.org", "bobs-password"));
    eprintln!("a new user logged in on the replica after {t:?}");
    hub.cli_ok(&["user", "passwd", "bob@example.org", "--password-stdin"], Some("bobs-new-password\n"));
    within("the new password on the replica", || imap_login(&site.ip, "bob@example.org", "bobs-new-password"));
    assert!(!imap_login(&site.ip, "bob@example.org", "bobs-password"));

    // The replica's directory is read-only: the CLI says where to write, LDAP refers.
    let out = site.cli(&["user", "add", "local@example.org", "--password-stdin"], Some("x-long-password\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("read-only replica of ldap://"), "{err}");
    // A domain it does not copy stays its own.
    site.cli_ok(&["domain", "add", "site.test"], None);
    site.cli_ok(&["user", "add", "local@site.test", "--password-stdin"], Some("x-long-password\n"));
    let url = format!("ldap://{}:10389", site.ip);
    let ldif =
        format!("dn: uid=bob,ou=people,{BASE}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: 555\n");
    let (_, text) =
        tool_with("ldapmodify", &["-x", "-ZZ", "-H", &url, "-D", "bob@example.org", "-w", "bobs-new-password"], &ldif);
    assert!(text.contains("Referral") && text.contains(&format!("ldap://{}:10379", hub.ip)), "{text}");

    // The link cut: the replica still takes mail for its users and lets them in.
    hub.stop();
    let (mut c, _) = common::SmtpClient::connect(&site.smtp()).unwrap();
    c.cmd("EHLO t.test").unwrap();
    let r = c.send_message("s@remote.test", &["ann@example.org"], "Subject: cut off\r\n\r\nstill here\r\n").unwrap();
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(site.inbox_count("ann@example.org"), 1);
    assert!(imap_login(&site.ip, "ann@example.org", "a-long-password"));
    let status = site.cli_ok(&["replication", "status"], None);
    assert!(status.contains("replica of:") && status.contains("disconnected"), "{status}");
    assert!(status.contains("read-only:    example.org") && !status.contains("site.test"), "{status}");

    // Healed, it converges: what changed on the provider reaches it, deletes included.
    hub.spawn();
    add_user(&hub, "carl@example.org", "Carl");
    hub.cli_ok(&["user", "remove", "bob@example.org"], None);
    hub.cli_ok(&["group", "member", "add", "team@example.org", "carl@example.org"], None);
    let copied = || users(&site).into_iter().filter(|u| !u.ends_with("@site.test")).collect::<Vec<_>>();
    let t = within("convergence", || copied() == users(&hub));
    eprintln!("converged after the link healed in {t:?}");
    let groups = site.cli_ok(&["group", "list"], None);
    assert!(groups.contains("carl@example.org") && groups.contains("ann@example.org"), "{groups}");
    let status = hub.cli_ok(&["replication", "status"], None);
    assert!(status.contains("repl@example.org") && status.contains("refreshAndPersist, connected"), "{status}");
}

#[test]
fn agora_keeps_a_copy_of_an_openldap_directory() {
    if !have("ldapsearch") || !have("/usr/sbin/slapd") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("provider");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let conf = format!(
        "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload syncprov\n\
         pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
         database mdb\nsuffix \"{BASE}\"\nrootdn \"cn=admin,{BASE}\"\nrootpw secret\n\
         directory {d}/db\nindex objectClass,entryUUID,entryCSN eq\n\
         overlay syncprov\nsyncprov-checkpoint 10 1\n",
        d = dir.display()
    );
    std::fs::write(dir.join("slapd.conf"), conf).unwrap();
    let mut slapd = Slapd { dir, url: format!("ldap://{}:3890", unique_ip()), child: None };
    slapd.start();
    let modify = |ldif: &str, add: bool| {
        let mut args = vec!["-x", "-H", &slapd.url, "-D", "cn=admin,dc=example,dc=org", "-w", "secret"];
        if add {
            args.push("-a");
        }
        let (ok, out) = tool_with("ldapmodify", &args, ldif);
        assert!(ok, "{ldif}\n{out}");
    };
    // {SSHA} of "ann-password", as slappasswd makes them.
    let (_, ssha) = common::run("slappasswd", &["-s", "ann-password", "-h", "{SSHA}"], "");
    modify(
        &format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: uid=ann,ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: Ann Lee\nsn: Lee\nmail: ann@example.org\n\
             userPassword: {}\n\n\
             dn: uid=bob,ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: Bob Stone\nsn: Stone\ntitle: Engineer\nmail: bob@example.org\n\n\
             dn: cn=team,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: team\nmember: uid=ann,ou=people,{BASE}\n",
            ssha.trim()
        ),
        true,
    );
    let provider = slapd.url.clone();
    let mut site = Agora::start_with(move |data| {
        std::fs::write(
            data.join("agora.toml"),
            format!(
                "[replication]\nprovider = \"{provider}\"\nbind_dn = \"cn=admin,{BASE}\"\npassword = \"secret\"\n\
                 starttls = false\nretry_max_secs = 2\n"
            ),
        )
        .unwrap();
    });
    let site_url = format!("ldap://{}:10389", site.ip);
    let ann_search = |filter: &str, attrs: &[&str]| {
        let url = site_url.clone();
        let mut args =
            vec!["-LLL", "-x", "-ZZ", "-H", &url, "-D", "ann@example.org", "-w", "ann-password", "-b", BASE, filter];
        args.extend(attrs);
        tool("ldapsearch", &args).1
    };
    within("the first copy", || users(&site) == ["ann@example.org", "bob@example.org"]);
    // Ann's SSHA hash came along: she logs in, and the copy answers as slapd does (every
    // person here has an address: the entries compared carry theirs).
    assert!(imap_login(&site.ip, "ann@example.org", "ann-password"));
    // (A group has an address here, which OpenLDAP's groupOfNames cannot hold.)
    let compared: [(&str, &[&str]); 2] =
        [("(objectClass=inetOrgPerson)", &["cn", "sn", "mail", "title"]), ("(cn=team)", &["cn", "member"])];
    for (filter, attrs) in compared {
        assert_eq!(entries(&ann_search(filter, attrs)), entries(&slapd.search(filter, attrs).1), "{filter}");
    }

    // Added, changed, renamed, deleted on slapd: the same on Agora.
    modify(&format!("dn: uid=carol,ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: Carol King\nsn: King\n"), true);
    let t = within("carol added", || users(&site).contains(&"carol@example.org".to_string()));
    eprintln!("add seen by Agora after {t:?}");
    modify(&format!("dn: uid=carol,ou=people,{BASE}\nchangetype: modify\nreplace: title\ntitle: Director\n"), false);
    within("carol changed", || ann_search("(uid=carol)", &["title"]).contains("title: Director"));
    modify(
        &format!("dn: uid=carol,ou=people,{BASE}\nchangetype: modrdn\nnewrdn: uid=caroline\ndeleteoldrdn: 1\n"),
        false,
    );
    within("carol renamed", || {
        let u = users(&site);
        u.contains(&"caroline@example.org".to_string()) && !u.contains(&"carol@example.org".to_string())
    });
    modify(
        &format!("dn: cn=team,ou=groups,{BASE}\nchangetype: modify\nadd: member\nmember: uid=bob,ou=people,{BASE}\n"),
        false,
    );
    within("bob in the team", || site.cli_ok(&["group", "list"], None).contains("bob@example.org"));
    modify(&format!("dn: uid=caroline,ou=people,{BASE}\nchangetype: delete\n"), false);
    within("caroline deleted", || !users(&site).contains(&"caroline@example.org".to_string()));

    // Agora down while slapd changes, deletes included: it catches up when back.
    site.stop();
    modify(
        &format!(
            "dn: cn=team,ou=groups,{BASE}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,{BASE}\n"
        ),
        false,
    );
    modify(&format!("dn: uid=bob,ou=people,{BASE}\nchangetype: delete\n"), false);
    modify(
        &format!(
            "dn: uid=dave,ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: Dave Hill\nsn: Hill\nmail: dave@example.org\n"
        ),
        true,
    );
    site.spawn();
    within("caught up", || users(&site) == ["ann@example.org", "dave@example.org"]);
    for (filter, attrs) in compared {
        within(filter, || entries(&ann_search(filter, attrs)) == entries(&slapd.search(filter, attrs).1));
    }
}

fn routing_digest(a: &Agora) -> String {
    let v: serde_json::Value = serde_json::from_str(&a.cli_ok(&["routing", "show", "--json"], None)).unwrap();
    v["digest"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_routing_topology_replicates_with_the_directory() {
    let hub = provider();
    let ok = |args: &[&str]| hub.cli_ok(&[&["routing"], args].concat(), None);
    ok(&["org", "acme"]);
    ok(&["group", "add", "A", "--domain", "example.org"]);
    ok(&["group", "add", "B"]);
    ok(&["group", "member", "A", "a1", "--host", "127.0.0.11"]);
    ok(&["group", "member", "B", "b1", "--host", "127.0.0.12"]);
    ok(&["connector", "add", "ab", "--from", "A", "--to", "B", "--cost", "3"]);
    let site = replica_of(&hub, "");
    let want = routing_digest(&hub);
    within("the topology on the replica", || routing_digest(&site) == want);
    let show = site.cli_ok(&["routing", "show"], None);
    assert!(show.contains("connector ab") && show.contains("cost 3"), "{show}");

    // A change on the provider travels in the persist phase.
    ok(&["connector", "set", "ab", "--cost", "7"]);
    let want = routing_digest(&hub);
    let t = within("the changed connector on the replica", || routing_digest(&site) == want);
    eprintln!("a topology change reached the replica in {t:?}");
    assert!(site.cli_ok(&["routing", "show"], None).contains("cost 7"));

    if !have("ldapsearch") {
        return;
    }
    // Over LDAP the table is an entry administrators and replicators read, nobody writes.
    let url = format!("ldap://{}:10389", hub.ip);
    let dn = format!("cn=routing,{BASE}");
    let search = |who: &str, pw: &str| {
        tool(
            "ldapsearch",
            &["-x", "-ZZ", "-LLL", "-o", "ldif-wrap=no", "-H", &url, "-D", who, "-w", pw, "-b", &dn, "-s", "base", "*"],
        )
        .1
    };
    let seen = search(&format!("uid=repl,ou=people,{BASE}"), REPL_PW);
    assert!(seen.contains("agoraRoutingDigest: ") && seen.contains(&want), "{seen}");
    assert!(seen.contains("objectClass: agoraRoutingOrganization"), "{seen}");
    let user = search("ann@example.org", "a-long-password");
    assert!(!user.contains("agoraRoutingTable"), "{user}");
    hub.cli_ok(&["user", "add", "boss@example.org", "--role", "admin", "--password-stdin"], Some("bosses-password\n"));
    let ldif = format!("dn: {dn}\nchangetype: modify\nreplace: description\ndescription: x\n");
    let (_, text) =
        tool_with("ldapmodify", &["-x", "-ZZ", "-H", &url, "-D", "boss@example.org", "-w", "bosses-password"], &ldif);
    assert!(text.contains("unwilling to perform") && text.contains("agora routing"), "{text}");
}
