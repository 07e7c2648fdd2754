//! The directory over LDAP with real clients: OpenLDAP's tools (with StartTLS and
//! ldaps), Cyrus SASL's SCRAM-SHA-256, Python's ldap3 (paged results), and the mail
//! services seeing every change at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Agora, DOMAIN, SmtpClient, have, run};

/// Runs an OpenLDAP tool against the test server (certificate not verified: it is the
/// server's own self-signed one, and the test connects by address).
fn ldap(tool: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(tool)
        .args(args)
        .env("LDAPTLS_REQCERT", "never")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn ok(tool: &str, args: &[&str], input: &str) -> String {
    let (good, out) = ldap(tool, args, input);
    assert!(good, "{tool} {args:?} failed:\n{out}");
    out
}

/// The DNs an ldapsearch printed, sorted.
fn dns(out: &str) -> Vec<String> {
    let mut d: Vec<String> = out.lines().filter_map(|l| l.strip_prefix("dn: ")).map(str::to_string).collect();
    d.sort();
    d
}

struct Urls {
    ldap: String,
    ldaps: String,
    gc: String,
}

fn urls(a: &Agora) -> Urls {
    Urls {
        ldap: format!("ldap://{}:10389", a.ip),
        ldaps: format!("ldaps://{}:10636", a.ip),
        gc: format!("ldap://{}:13268", a.ip),
    }
}

const BASE: &str = "dc=example,dc=org";

fn deliver(a: &Agora, to: &str) {
    let (mut c, _) = SmtpClient::connect(&a.smtp()).unwrap();
    c.cmd("EHLO t.test").unwrap();
    let r = c.send_message("s@remote.test", &[to], "Subject: hi\r\n\r\nhello\r\n").unwrap();
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn openldap_tools_manage_the_directory_the_mail_services_use() {
    if !have("ldapsearch") {
        return;
    }
    let a = Agora::start();
    let u = urls(&a);
    let admin = format!("admin@{DOMAIN}");
    let pw = a.admin_password.clone().unwrap();
    // Who am I, over StartTLS and over ldaps; by address and by DN.
    let out = ok("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &admin, "-w", &pw], "");
    assert!(out.contains(&format!("u:{admin}")), "{out}");
    let admin_dn = format!("uid=admin,ou=people,{BASE}");
    let out = ok("ldapwhoami", &["-x", "-H", &u.ldaps, "-D", &admin_dn, "-w", &pw], "");
    assert!(out.contains(&format!("u:{admin}")), "{out}");
    // Passwords in clear text are refused without TLS.
    let (good, out) = ldap("ldapwhoami", &["-x", "-H", &u.ldap, "-D", &admin, "-w", &pw], "");
    assert!(!good && out.contains("Confidentiality required"), "{out}");
    // Anonymous clients read the root DSE, nothing else.
    let out = ok("ldapsearch", &["-x", "-LLL", "-H", &u.ldap, "-b", "", "-s", "base", "+"], "");
    assert!(
        out.contains(&format!("namingContexts: {BASE}")) && out.contains("supportedSASLMechanisms: SCRAM-SHA-256"),
        "{out}"
    );
    let (good, out) = ldap("ldapsearch", &["-x", "-LLL", "-H", &u.ldap, "-b", BASE, "(objectClass=*)"], "");
    assert!(!good && out.contains("Insufficient access"), "{out}");

    // ldapadd: a person who can log in to IMAP and receive mail at once.
    let ldif = format!(
        "dn: uid=ann,ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: Ann Lee\nsn: Lee\ngivenName: Ann\n\
         title: Engineer\ntelephoneNumber: +1 555 0100\nuserPassword: ann-secret\n\n\
         dn: uid=bob,ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: Bob Annis\nsn: Annis\nuserPassword: bob-secret\n\n\
         dn: uid=carl,ou=people,{BASE}\nobjectClass: inetOrgPerson\ncn: Carl Jones\nsn: Jones\n\n\
         dn: cn=team,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: team\ncn: The Team\n\
         member: uid=ann,ou=people,{BASE}\nmember: uid=bob,ou=people,{BASE}\n\n\
         dn: mail=anne@partner.test,ou=contacts,{BASE}\nobjectClass: inetOrgPerson\ncn: Anne Partner\nsn: Partner\n"
    );
    ok("ldapadd", &["-x", "-ZZ", "-H", &u.ldap, "-D", &admin, "-w", &pw], &ldif);
    deliver(&a, &format!("ann@{DOMAIN}"));
    deliver(&a, &format!("team@{DOMAIN}"));
    assert_eq!(a.inbox_count(&format!("ann@{DOMAIN}")), 2, "direct and through the group");
    assert_eq!(a.inbox_count(&format!("bob@{DOMAIN}")), 1);
    common::python_ok(&format!(
        "import imaplib, ssl\nc = imaplib.IMAP4('{ip}', 10143)\nc.starttls(ssl._create_unverified_context())\n\
         c.login('ann@{DOMAIN}', 'ann-secret')\nprint('ok' if c.select('INBOX')[1] == [b'2'] else 'wrong count')",
        ip = a.ip
    ));

    // The address book query a mail client sends as you type, bound as a user.
    let ann = format!("ann@{DOMAIN}");
    let book = "(|(cn=ann*)(mail=ann*)(sn=ann*)(givenName=ann*))";
    let out = ok(
        "ldapsearch",
        &["-x", "-LLL", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-secret", "-b", BASE, book, "cn", "mail"],
        "",
    );
    assert_eq!(
        dns(&out),
        [
            format!("mail=anne@partner.test,ou=contacts,{BASE}"),
            format!("uid=ann,ou=people,{BASE}"),
            format!("uid=bob,ou=people,{BASE}")
        ]
    );
    let out = ok(
        "ldapsearch",
        &[
            "-x",
            "-LLL",
            "-ZZ",
            "-H",
            &u.ldap,
            "-D",
            &ann,
            "-w",
            "ann-secret",
            "-b",
            BASE,
            "(uid=ann)",
            "memberOf",
            "userPassword",
        ],
        "",
    );
    assert!(out.contains(&format!("memberOf: cn=team,ou=groups,{BASE}")) && !out.contains("userPassword"), "{out}");

    // ldapmodify (a user's own phone), ldapcompare, ldappasswd, ldapmodrdn, ldapdelete.
    let me = format!("uid=ann,ou=people,{BASE}");
    ok(
        "ldapmodify",
        &["-x", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-secret"],
        &format!("dn: {me}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 0199\n"),
    );
    let (good, out) = ldap(
        "ldapmodify",
        &["-x", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-secret"],
        &format!("dn: {me}\nchangetype: modify\nreplace: title\ntitle: CEO\n"),
    );
    assert!(!good && out.contains("Insufficient access"), "{out}");
    // ldapcompare exits 6 for TRUE and 5 for FALSE.
    let (_, out) = ldap(
        "ldapcompare",
        &["-x", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-secret", &me, "telephoneNumber:+15550199"],
        "",
    );
    assert_eq!(out.trim(), "TRUE");
    let (_, out) =
        ldap("ldapcompare", &["-x", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-secret", &me, "title:Manager"], "");
    assert_eq!(out.trim(), "FALSE");
    ok(
        "ldappasswd",
        &["-x", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-secret", "-a", "ann-secret", "-s", "ann-new"],
        "",
    );
    ok("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-new"], "");
    let out = ok(
        "ldappasswd",
        &["-x", "-ZZ", "-H", &u.ldap, "-D", &admin, "-w", &pw, &format!("uid=carl,ou=people,{BASE}")],
        "",
    );
    let generated =
        out.lines().find_map(|l| l.strip_prefix("New password: ")).expect("a generated password").to_string();
    ok("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &format!("carl@{DOMAIN}"), "-w", &generated], "");
    ok(
        "ldapmodrdn",
        &[
            "-x",
            "-ZZ",
            "-H",
            &u.ldap,
            "-D",
            &admin,
            "-w",
            &pw,
            "-r",
            &format!("uid=carl,ou=people,{BASE}"),
            "uid=carlos",
        ],
        "",
    );
    ok("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &format!("carlos@{DOMAIN}"), "-w", &generated], "");
    ok(
        "ldapdelete",
        &["-x", "-ZZ", "-H", &u.ldap, "-D", &admin, "-w", &pw, &format!("uid=carlos,ou=people,{BASE}")],
        "",
    );
    let (good, _) =
        ldap("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &format!("carlos@{DOMAIN}"), "-w", &generated], "");
    assert!(!good, "a deleted account no longer logs in");

    // SASL SCRAM-SHA-256 through Cyrus SASL, as the shared SASL code speaks it.
    let out = ok("ldapwhoami", &["-ZZ", "-H", &u.ldap, "-Y", "SCRAM-SHA-256", "-U", &ann, "-w", "ann-new"], "");
    assert!(out.contains(&format!("u:{ann}")), "{out}");
    let out = ok("ldapwhoami", &["-ZZ", "-H", &u.ldap, "-Y", "PLAIN", "-U", &ann, "-w", "ann-new"], "");
    assert!(out.contains(&format!("u:{ann}")), "{out}");
}

#[test]
fn hidden_people_and_the_global_catalog() {
    if !have("ldapsearch") {
        return;
    }
    let a = Agora::start();
    let u = urls(&a);
    let admin = format!("admin@{DOMAIN}");
    let pw = a.admin_password.clone().unwrap();
    a.cli_ok(&["domain", "add", "other.test"], None);
    a.cli_ok(
        &["user", "add", &format!("ann@{DOMAIN}"), "--name", "Ann Lee", "--title", "Engineer", "--password-stdin"],
        Some("ann-pw\n"),
    );
    a.cli_ok(
        &["user", "add", &format!("annie@{DOMAIN}"), "--name", "Annie Secret", "--hidden", "--password-stdin"],
        Some("x-pw\n"),
    );
    a.cli_ok(&["user", "add", "anna@other.test", "--name", "Anna Other", "--password-stdin"], Some("o-pw\n"));
    let show = a.cli_ok(&["user", "show", &format!("ann@{DOMAIN}")], None);
    assert!(show.contains("surname:") && show.contains("Lee") && show.contains("Engineer"), "{show}");
    a.cli_ok(&["contact", "add", "ext@partner.test", "--name", "Anne External", "--domain", DOMAIN], None);
    assert!(a.cli_ok(&["contact", "list"], None).contains("ext@partner.test"));

    let ann = format!("ann@{DOMAIN}");
    let book = "(|(cn=ann*)(mail=ann*)(sn=ann*)(givenName=ann*))";
    // On 389 the search stays in the bound naming context, even from the root.
    let out =
        ok("ldapsearch", &["-x", "-LLL", "-ZZ", "-H", &u.ldap, "-D", &ann, "-w", "ann-pw", "-b", "", book, "1.1"], "");
    assert_eq!(
        dns(&out),
        [format!("mail=ext@partner.test,ou=contacts,{BASE}"), format!("uid=ann,ou=people,{BASE}")],
        "hidden annie absent"
    );
    // The hidden user still receives mail.
    deliver(&a, &format!("annie@{DOMAIN}"));
    assert_eq!(a.inbox_count(&format!("annie@{DOMAIN}")), 1);
    // The Global Catalog spans both domains from the root.
    let out =
        ok("ldapsearch", &["-x", "-LLL", "-ZZ", "-H", &u.gc, "-D", &ann, "-w", "ann-pw", "-b", "", book, "cn"], "");
    assert_eq!(dns(&out).len(), 3, "{out}");
    assert!(out.contains("dn: uid=anna,ou=people,dc=other,dc=test"), "{out}");
    // ...and is read-only, for administrators too.
    let (good, out) = ldap(
        "ldapmodify",
        &["-x", "-ZZ", "-H", &u.gc, "-D", &admin, "-w", &pw],
        &format!("dn: uid=ann,ou=people,{BASE}\nchangetype: modify\nreplace: title\ntitle: X\n"),
    );
    assert!(!good && out.contains("Server is unwilling to perform (53)"), "{out}");
    // Administrators see hidden entries (they manage them).
    let out = ok(
        "ldapsearch",
        &[
            "-x",
            "-LLL",
            "-ZZ",
            "-H",
            &u.ldap,
            "-D",
            &admin,
            "-w",
            &pw,
            "-b",
            BASE,
            "(msExchHideFromAddressLists=TRUE)",
            "1.1",
        ],
        "",
    );
    assert_eq!(dns(&out), [format!("uid=annie,ou=people,{BASE}")]);
    // A change by the CLI shows over LDAP at once.
    a.cli_ok(&["user", "set", &ann, "--department", "Research"], None);
    let out = ok(
        "ldapsearch",
        &[
            "-x",
            "-LLL",
            "-ZZ",
            "-H",
            &u.ldap,
            "-D",
            &ann,
            "-w",
            "ann-pw",
            "-b",
            BASE,
            "(department=research)",
            "department",
        ],
        "",
    );
    assert!(out.contains("department: Research"), "{out}");

    // Python's ldap3: a paged search over ldaps, the schema it reads, compare.
    let script = format!(
        r#"
import ldap3, ssl
tls = ldap3.Tls(validate=ssl.CERT_NONE)
s = ldap3.Server('{ip}', port=10636, use_ssl=True, tls=tls, get_info=ldap3.ALL)
c = ldap3.Connection(s, user='{admin}', password='{pw}', auto_bind=True)
assert 'dc=example,dc=org' in s.info.naming_contexts, s.info.naming_contexts
assert s.schema is not None and 'inetOrgPerson' in s.schema.object_classes
entries = c.extend.standard.paged_search('dc=example,dc=org', '(objectClass=inetOrgPerson)', attributes=['cn', 'mail'], paged_size=1, generator=False)
names = sorted(e['attributes']['cn'][0] for e in entries if e['type'] == 'searchResEntry')
assert len(names) == 4 and {{'Ann Lee', 'Anne External', 'Annie Secret'}} <= set(names), names
assert c.compare('uid=ann,ou=people,dc=example,dc=org', 'title', 'engineer')
print('ok')
"#,
        ip = a.ip
    );
    let (good, out) = run("/usr/bin/python3", &["-c", &script], "");
    assert!(good && out.contains("ok"), "{out}");
}

#[test]
fn bulk_import_from_ldif_and_csv_with_prehashed_passwords_upgraded_at_login() {
    if !have("ldapwhoami") {
        return;
    }
    let a = Agora::start();
    let u = urls(&a);
    // 2,000 people as slapcat writes them, with {SSHA} passwords, and records to skip
    // or reject.
    let script = r#"
import base64, hashlib, sys
out = ["version: 1", "", "dn: dc=example,dc=org", "objectClass: dcObject", "objectClass: organization", "o: example", "dc: example", ""]
for i in range(2000):
    salt = b"s%04d" % i
    ssha = base64.b64encode(hashlib.sha1(b"pw%d" % i + salt).digest() + salt).decode()
    out += ["dn: uid=user%d,ou=people,dc=example,dc=org" % i, "objectClass: inetOrgPerson", "uid: user%d" % i,
            "cn: User Number%d" % i, "sn: Number%d" % i, "mail: user%d@example.org" % i,
            "userPassword:: " + base64.b64encode(("{SSHA}" + ssha).encode()).decode(),
            "manager: uid=user0,ou=people,dc=example,dc=org", ""]
out += ["dn: uid=far,ou=people,dc=elsewhere,dc=test", "objectClass: person", "cn: Far Away", "sn: Away", ""]
sys.stdout.write("\n".join(out))
"#;
    let (good, ldif) = run("/usr/bin/python3", &["-c", script], "");
    assert!(good, "{ldif}");
    let file = a.dir.path().join("people.ldif");
    std::fs::write(&file, ldif).unwrap();
    let started = std::time::Instant::now();
    let out = a.cli(&["user", "import", file.to_str().unwrap()], None);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "one record is rejected");
    assert!(stdout.contains("imported 2000 people") && stdout.contains("skipped 1"), "{stdout}");
    assert!(stderr.contains("people.ldif:") && stderr.contains("elsewhere.test is not hosted"), "{stderr}");
    assert!(took < std::time::Duration::from_secs(60), "2,000 pre-hashed people took {took:?}");
    // The imported {SSHA} password works, and the first login replaces it: SCRAM then works too.
    let who = format!("user7@{DOMAIN}");
    let (good, out) = ldap("ldapwhoami", &["-ZZ", "-H", &u.ldap, "-Y", "SCRAM-SHA-256", "-U", &who, "-w", "pw7"], "");
    assert!(!good, "no SCRAM verifier before the first login: {out}");
    ok("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &format!("uid=user7,ou=people,{BASE}"), "-w", "pw7"], "");
    ok("ldapwhoami", &["-ZZ", "-H", &u.ldap, "-Y", "SCRAM-SHA-256", "-U", &who, "-w", "pw7"], "");
    let (good, _) = ldap("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &who, "-w", "pw8"], "");
    assert!(!good);
    // Managers named by DN were resolved.
    let out = ok(
        "ldapsearch",
        &["-x", "-LLL", "-ZZ", "-H", &u.ldap, "-D", &who, "-w", "pw7", "-b", BASE, "(uid=user5)", "manager"],
        "",
    );
    assert!(out.contains(&format!("manager: uid=user0,ou=people,{BASE}")), "{out}");
    // CSV with a header row and plain passwords, hashed on every core.
    let csv = a.dir.path().join("more.csv");
    std::fs::write(&csv, "mail,displayName,title,password,hidden\nzoe@example.org,\"Zoe, the Second\",Chef,zoe-pw,\nyan@example.org,Yan,,yan-pw,yes\n").unwrap();
    let out = a.cli_ok(&["user", "import", csv.to_str().unwrap()], None);
    assert!(out.contains("imported 2 people (2 with passwords hashed now"), "{out}");
    ok("ldapwhoami", &["-x", "-ZZ", "-H", &u.ldap, "-D", &format!("zoe@{DOMAIN}"), "-w", "zoe-pw"], "");
    let out = ok(
        "ldapsearch",
        &[
            "-x",
            "-LLL",
            "-ZZ",
            "-H",
            &u.ldap,
            "-D",
            &format!("zoe@{DOMAIN}"),
            "-w",
            "zoe-pw",
            "-b",
            BASE,
            "(|(uid=yan)(uid=zoe))",
            "title",
            "cn",
        ],
        "",
    );
    assert_eq!(dns(&out), [format!("uid=zoe,ou=people,{BASE}")], "hidden yan is not listed");
    assert!(out.contains("cn: Zoe, the Second") && out.contains("title: Chef"), "{out}");
}

/// A private CA, and client certificates from it naming `emails` (subjectAltName).
fn client_certs(dir: &std::path::Path, people: &[(&str, &str)]) {
    let sh = |cmd: String| {
        let (good, out) = run("sh", &["-c", &cmd], "");
        assert!(good, "{cmd}: {out}");
    };
    let d = dir.display();
    sh(format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -subj '/CN=Agora test CA' \
         -days 2 -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' 2>&1"
    ));
    for (name, email) in people {
        sh(format!(
            "cd {d} && openssl req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj '/CN={name}' 2>&1 && \
             printf 'subjectAltName=email:{email}\\nextendedKeyUsage=clientAuth\\nbasicConstraints=CA:FALSE\\n' > {name}.ext && \
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext 2>&1"
        ));
    }
}

#[test]
fn sasl_external_with_a_client_certificate() {
    if !have("ldapwhoami") || !have("openssl") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    client_certs(certs.path(), &[("ann", "Ann@example.org"), ("stranger", "nobody@elsewhere.test")]);
    let ca = certs.path().join("ca.pem");
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), format!("[tls]\nclient_ca = \"{}\"\n", ca.display())).unwrap();
    });
    let u = urls(&a);
    a.cli_ok(&["user", "add", &format!("ann@{DOMAIN}"), "--name", "Ann Lee", "--password-stdin"], Some("ann-pw\n"));
    let with_cert = |name: &str, args: &[&str]| {
        let dir = certs.path();
        let mut c = Command::new("ldapwhoami");
        c.args(args)
            .env("LDAPTLS_REQCERT", "never")
            .env("LDAPTLS_CERT", dir.join(format!("{name}.pem")))
            .env("LDAPTLS_KEY", dir.join(format!("{name}.key")));
        let out = c.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let out = ok("ldapsearch", &["-x", "-LLL", "-H", &u.ldap, "-b", "", "-s", "base", "supportedSASLMechanisms"], "");
    assert!(out.contains("supportedSASLMechanisms: EXTERNAL"), "{out}");
    // Over ldaps and over StartTLS, the certificate is the login.
    let (good, out) = with_cert("ann", &["-H", &u.ldaps, "-Y", "EXTERNAL"]);
    assert!(good && out.contains(&format!("u:ann@{DOMAIN}")), "{out}");
    let (good, out) = with_cert("ann", &["-ZZ", "-H", &u.ldap, "-Y", "EXTERNAL"]);
    assert!(good && out.contains(&format!("u:ann@{DOMAIN}")), "{out}");
    // A certificate naming no account, or no certificate at all, logs nobody in.
    let (good, out) = with_cert("stranger", &["-H", &u.ldaps, "-Y", "EXTERNAL"]);
    assert!(!good && out.contains("Invalid credentials"), "{out}");
    // (Without a certificate libldap does not even try; the server's answer to such a
    // bind, inappropriateAuthentication, is checked in the session tests.)
    let (good, _) = ldap("ldapwhoami", &["-H", &u.ldaps, "-Y", "EXTERNAL"], "");
    assert!(!good);
    // Passwords still work for everyone else on the same TLS listeners.
    ok("ldapwhoami", &["-x", "-H", &u.ldaps, "-D", &format!("ann@{DOMAIN}"), "-w", "ann-pw"], "");
}
