//! Authoritative DNS with dig: the zone of a hosted domain from the server's own state,
//! over UDP and TCP, negative answers, refusals, and changes without a restart.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, DOMAIN, have, run};

fn dig(a: &Agora, args: &[&str]) -> String {
    let server = format!("@{}", a.ip);
    let mut all = vec![server.as_str(), "-p", "10053", "+norec", "+time=5", "+tries=1"];
    all.extend_from_slice(args);
    let (ok, out) = run("dig", &all, "");
    assert!(ok, "dig {args:?}: {out}");
    out
}

/// The answer lines of a `+noall +answer` dig.
fn answers(a: &Agora, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+noall", "+answer"];
    all.extend_from_slice(args);
    dig(a, &all)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn dig_sees_the_zone_the_server_state_makes() {
    if !have("dig") {
        return;
    }
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[dns]\naddresses = [\"192.0.2.25\"]\ndmarc_policy = \"reject\"\n")
            .unwrap();
    });
    let d = DOMAIN;
    assert_eq!(answers(&a, &[d, "MX"]), [format!("{d}. 3600 IN MX 10 mx.{d}.")]);
    assert_eq!(answers(&a, &[&format!("mx.{d}"), "A"]), [format!("mx.{d}. 3600 IN A 192.0.2.25")]);
    assert_eq!(answers(&a, &[d, "TXT"]), [format!("{d}. 3600 IN TXT \"v=spf1 mx -all\"")]);
    let dmarc = answers(&a, &[&format!("_dmarc.{d}"), "TXT"]);
    assert!(dmarc[0].contains("v=DMARC1; p=reject;"), "{dmarc:?}");
    // SRV locators name the listeners' real ports (here moved by --port-offset).
    let srv = answers(&a, &["+tcp", &format!("_submission._tcp.{d}"), "SRV"]);
    assert_eq!(srv, [format!("_submission._tcp.{d}. 3600 IN SRV 0 1 10587 mx.{d}.")]);
    // The DKIM keys the server signs with.
    let keys = a.cli_ok(&["domain", "dkim", d], None);
    let selector = keys.lines().find_map(|l| l.split_once("._domainkey.")).map(|(s, _)| s.to_string()).unwrap();
    let txt = answers(&a, &[&format!("{selector}._domainkey.{d}"), "TXT"]);
    assert!(txt.len() == 1 && txt[0].contains("v=DKIM1;"), "{txt:?}");
    // Authoritative, negative answers with the SOA, refusal outside the zones.
    let out = dig(&a, &[&format!("nothing.{d}"), "A"]);
    assert!(out.contains("status: NXDOMAIN") && out.contains(" aa") && out.contains("AUTHORITY SECTION"), "{out}");
    let out = dig(&a, &[d, "AAAA"]);
    assert!(out.contains("status: NOERROR") && out.contains("ANSWER: 0") && out.contains("IN\tSOA"), "{out}");
    let out = dig(&a, &["example.com", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    let out = dig(&a, &["+tcp", d, "AXFR"]);
    assert!(out.contains("Transfer failed") || out.contains("REFUSED"), "{out}");
    // Changes show at once: a new domain, a key rotation (the serial moves).
    let serial = |a: &Agora| answers(a, &[d, "SOA"])[0].split(' ').nth(6).unwrap().parse::<u64>().unwrap();
    let before = serial(&a);
    a.cli_ok(&["domain", "add", "other.test"], None);
    assert_eq!(answers(&a, &["other.test", "MX"]), ["other.test. 3600 IN MX 10 mx.example.org."]);
    a.cli_ok(&["domain", "dkim", d, "--rotate"], None);
    let after = serial(&a);
    assert!(after > before, "serial {before} -> {after}");
    let keys = a.cli_ok(&["domain", "dkim", d], None);
    let pending = keys
        .lines()
        .zip(keys.lines().skip(1))
        .find_map(|(comment, rec)| {
            comment.contains("pending").then(|| rec.split_once("._domainkey.").map(|(s, _)| s.to_string())).flatten()
        })
        .unwrap();
    let txt = answers(&a, &[&format!("{pending}._domainkey.{d}"), "TXT"]);
    assert_eq!(txt.len(), 1, "the pending key is published before it signs");
    // The same zone in zone-file form, for DNS hosted elsewhere.
    let zone = a.cli_ok(&["dns", "show", d, "--hostname", &format!("mx.{d}"), "--port-offset", "10000"], None);
    assert!(zone.contains(&format!("{d}.\t3600\tIN\tMX\t10 mx.{d}.")), "{zone}");
    assert!(zone.contains(&format!("_submission._tcp.{d}.\t3600\tIN\tSRV\t0 1 10587 mx.{d}.")), "{zone}");
    assert!(zone.contains(&format!("{pending}._domainkey.{d}.")), "{zone}");
    assert!(!a.cli(&["dns", "show", "nowhere.test"], None).status.success());

    // Extra records, checked, live at once.
    let host = format!("mx.{d}");
    let add = |args: &[&str]| {
        let mut all = vec!["dns", "record", "add", d];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--hostname", &host, "--port-offset", "10000"]);
        a.cli(&all, None)
    };
    assert!(add(&["www", "CNAME", &format!("{host}.")]).status.success());
    assert!(add(&["@", "CAA", "0 issue letsencrypt.org"]).status.success());
    assert!(add(&["_25._tcp.mx", "TLSA", "3 1 1 0123abcd"]).status.success());
    assert!(add(&["*.wild", "TXT", "\"wildcard\""]).status.success());
    for (args, why) in [
        (&["www", "TXT", "x"][..], "alone at its name"),
        (&["@", "CNAME", "elsewhere.test."][..], "apex"),
        (&["x", "A", "300.0.0.1"][..], "not an IPv4 address"),
        (&["x", "HINFO", "a b"][..], "not supported"),
    ] {
        let out = add(args);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(why), "{args:?}: {out:?}");
    }
    let chased = answers(&a, &[&format!("www.{d}"), "A"]);
    assert_eq!(chased, [format!("www.{d}. 3600 IN CNAME mx.{d}."), format!("mx.{d}. 3600 IN A 192.0.2.25")]);
    assert_eq!(answers(&a, &[d, "CAA"]), [format!("{d}. 3600 IN CAA 0 issue \"letsencrypt.org\"")]);
    assert_eq!(
        answers(&a, &[&format!("_25._tcp.mx.{d}"), "TLSA"]),
        [format!("_25._tcp.mx.{d}. 3600 IN TLSA 3 1 1 0123ABCD")]
    );
    assert_eq!(answers(&a, &[&format!("Any.Wild.{d}"), "TXT"]), [format!("Any.Wild.{d}. 3600 IN TXT \"wildcard\"")]);
    let list = a.cli_ok(&["dns", "record", "list", d], None);
    assert_eq!(list.lines().count(), 4, "{list}");
    a.cli_ok(&["dns", "record", "remove", d, "www", "CNAME"], None);
    let out = dig(&a, &[&format!("www.{d}"), "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
}

#[test]
fn answers_over_udp_are_rate_limited_per_client_network() {
    if !have("dig") {
        return;
    }
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[dns]\nrate_limit = 5\nrate_limit_exempt = []\n").unwrap();
    });
    // 60 queries at once from one address: 5 answers, about half the rest slipped
    // (empty, TC set), the others dropped.
    let script = format!(
        r#"
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)
q = lambda i: struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\x07example\x03org\x00" + struct.pack(">HH", 15, 1)
for i in range(60): s.sendto(q(i), ("{ip}", 10053))
full = slipped = 0
try:
    while True:
        d, _ = s.recvfrom(4096)
        an = struct.unpack(">H", d[6:8])[0]
        if d[2] & 0x02: slipped += 1
        elif an: full += 1
except socket.timeout: pass
assert full == 5, (full, slipped)
assert 20 <= slipped <= 30, (full, slipped)
print("ok", full, slipped)
"#,
        ip = a.ip
    );
    common::python_ok(&script);
    // TCP is not limited (its source cannot be forged), and dig falls back to it on TC.
    let out = dig(&a, &["+tcp", DOMAIN, "MX"]);
    assert!(out.contains("status: NOERROR") && out.contains("IN\tMX"), "{out}");
}

/// `delv` against the server with the DS that `agora dns ds` prints as its only trust
/// anchor; returns its output.
fn delv(a: &Agora, anchors: &std::path::Path, name: &str, rtype: &str) -> String {
    let server = format!("@{}", a.ip);
    let anchor_file = anchors.to_str().unwrap();
    let (_, out) = run("delv", &[&server, "-p", "10053", "-a", anchor_file, "+root=example.org", name, rtype], "");
    out
}

/// Writes the DS lines of `agora dns ds` as delv's trust anchors (every DS printed).
fn write_anchors(a: &Agora, path: &std::path::Path, only: Option<&str>) -> Vec<String> {
    let out = a.cli_ok(&["dns", "ds", DOMAIN], None);
    let ds: Vec<Vec<String>> = out
        .lines()
        .filter(|l| l.contains(" IN DS "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .filter(|f: &Vec<String>| only.is_none_or(|t| f[3] == t))
        .collect();
    let body: String =
        ds.iter().map(|f| format!("{} static-ds {} {} {} \"{}\";\n", f[0], f[3], f[4], f[5], f[6])).collect();
    std::fs::write(path, format!("trust-anchors {{\n{body}}};\n")).unwrap();
    ds.iter().map(|f| f[3].clone()).collect()
}

fn key_lines(a: &Agora) -> Vec<String> {
    a.cli_ok(&["dns", "key", "list", DOMAIN], None).lines().skip(1).map(str::to_string).collect()
}

#[test]
fn signed_answers_validate_before_during_and_after_rollovers() {
    if !have("delv") {
        return;
    }
    // One-second TTLs: a rollover's waits (two TTLs) pass in seconds.
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[dns]\naddresses = [\"192.0.2.25\"]\nttl = 1\n").unwrap();
    });
    let work = tempfile::tempdir().unwrap();
    let anchors = work.path().join("anchors.conf");
    let first = write_anchors(&a, &anchors, None);
    assert_eq!(first.len(), 1, "one key-signing key");
    let validated = |name: &str, t: &str| {
        let out = delv(&a, &anchors, name, t);
        assert!(out.contains("fully validated"), "{name} {t}: {out}");
        out
    };
    let out = validated(DOMAIN, "MX");
    assert!(out.contains("RRSIG\tMX 13 2"), "ECDSA P-256: {out}");
    // Denial of existence, signed: no such name, no such type, an empty non-terminal.
    let out = validated(&format!("nothing.{DOMAIN}"), "A");
    assert!(out.contains("negative response") && out.contains("NXDOMAIN"), "{out}");
    let out = validated(DOMAIN, "AAAA");
    assert!(out.contains("negative response") && out.contains("NXRRSET"), "{out}");
    validated(&format!("_tcp.{DOMAIN}"), "TXT");
    validated(&format!("_submission._tcp.{DOMAIN}"), "SRV");
    // A zone-signing key rollover: published first, signing after two TTLs, the old
    // key gone two TTLs later; every answer validates all along.
    let rotated = a.cli_ok(&["dns", "key", "rotate", DOMAIN], None);
    assert!(rotated.contains("published"), "{rotated}");
    assert!(key_lines(&a).iter().any(|l| l.contains("ZSK") && l.contains("published")));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        validated(DOMAIN, "MX");
        validated(&format!("gone.{DOMAIN}"), "TXT");
        let keys = key_lines(&a);
        if keys.iter().filter(|l| l.contains("ZSK")).count() == 1 && keys.iter().all(|l| l.contains("active")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rollover did not finish: {keys:?}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // A key-signing key rollover: the new key signs the DNSKEY set beside the old one,
    // so either DS validates; the old one retired, only the new DS is left.
    a.cli_ok(&["dns", "key", "rotate", DOMAIN, "--ksk"], None);
    let both = write_anchors(&a, &anchors, None);
    assert_eq!(both.len(), 2);
    let new = both.iter().find(|t| **t != first[0]).unwrap().clone();
    write_anchors(&a, &anchors, Some(&new));
    validated(DOMAIN, "MX");
    write_anchors(&a, &anchors, Some(&first[0]));
    validated(DOMAIN, "MX");
    let refused = a.cli(&["dns", "key", "retire", DOMAIN, "1"], None);
    assert!(!refused.status.success());
    a.cli_ok(&["dns", "key", "retire", DOMAIN, &first[0]], None);
    assert_eq!(write_anchors(&a, &anchors, None), [new]);
    validated(DOMAIN, "MX");
    // A trust anchor that matches no key fails validation (the check is real).
    std::fs::write(&anchors, format!("trust-anchors {{ {DOMAIN}. static-ds 1 13 2 \"{}\"; }};\n", "AB".repeat(32)))
        .unwrap();
    let out = delv(&a, &anchors, DOMAIN, "MX");
    assert!(!out.contains("fully validated"), "{out}");
}

/// Knot DNS as a secondary of the server: its configuration and process.
struct Knot {
    child: std::process::Child,
    ip: String,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Knot {
    fn start(primary: &str, ip: &str, secret: &str) -> Knot {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = format!(
            "server:\n    rundir: {d}\n    listen: {ip}@10053\nlog:\n  - target: stderr\n    any: info\n\
             database:\n    storage: {d}\nkey:\n  - id: xfr\n    algorithm: hmac-sha256\n    secret: {secret}\n\
             remote:\n  - id: agora\n    address: {primary}@10053\n    via: {ip}\n    key: xfr\n\
             acl:\n  - id: from_agora\n    address: {primary}\n    key: xfr\n    action: notify\n\
             template:\n  - id: default\n    storage: {d}\n\
             zone:\n  - domain: {DOMAIN}\n    master: agora\n    acl: from_agora\n"
        );
        let path = dir.path().join("knot.conf");
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("knot.log")).unwrap();
        let child = std::process::Command::new("knotd")
            .arg("-c")
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Knot { child, ip: ip.to_string(), _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("knot.log")).unwrap_or_default()
    }

    /// `dig +short` against Knot.
    fn short(&self, name: &str, rtype: &str) -> String {
        let server = format!("@{}", self.ip);
        run("dig", &[&server, "-p", "10053", "+norec", "+short", "+time=2", "+tries=1", name, rtype], "").1
    }
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn knot_secondary_follows_by_notify_and_signed_transfers() {
    if !have("knotd") || !have("dig") {
        return;
    }
    let (_, secret) = run("openssl", &["rand", "-base64", "32"], "");
    let secret = secret.trim().to_string();
    let knot_ip = common::unique_ip();
    let a = Agora::start_with(|data| {
        let cfg = format!(
            "[dns]\naddresses = [\"192.0.2.25\"]\nsecondaries = [\"{knot_ip}:10053\"]\ntsig_name = \"xfr\"\n\
             tsig_secret = \"{secret}\"\n"
        );
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
    });
    let knot = Knot::start(&a.ip, &knot_ip, &secret);
    // The first transfer (Knot bootstraps at start): the same records, signatures and keys.
    eventually("Knot's first transfer", || knot.short(DOMAIN, "SOA").contains(&format!("mx.{DOMAIN}.")));
    // RRsets compared as sets: servers may order records differently.
    let sorted = |s: String| {
        let mut l: Vec<String> = s.lines().map(str::to_string).collect();
        l.sort();
        l
    };
    let ours = |name: &str, t: &str| {
        let server = format!("@{}", a.ip);
        sorted(run("dig", &[&server, "-p", "10053", "+norec", "+short", "+dnssec", name, t], "").1)
    };
    for (name, t) in
        [(DOMAIN, "MX"), (DOMAIN, "DNSKEY"), (DOMAIN, "TXT"), (&format!("_submission._tcp.{DOMAIN}")[..], "SRV")]
    {
        let server = format!("@{}", knot.ip);
        let theirs = sorted(run("dig", &[&server, "-p", "10053", "+norec", "+short", "+dnssec", name, t], "").1);
        assert!(!theirs.is_empty() && theirs == ours(name, t), "{name} {t}: {theirs:?} vs {:?}", ours(name, t));
    }
    // A change reaches the secondary through NOTIFY (its SOA refresh is an hour away).
    a.cli_ok(&["dns", "record", "add", DOMAIN, "www", "A", "192.0.2.80", "--hostname", &format!("mx.{DOMAIN}")], None);
    eventually("the new record at Knot", || knot.short(&format!("www.{DOMAIN}"), "A").trim() == "192.0.2.80");
    assert!(knot.log().contains("notify, incoming"), "{}", knot.log());
    // Transfers: only the secondary's address, and only signed with the key.
    let axfr = |source: &str, key: Option<&str>| {
        let server = format!("@{}", a.ip);
        let mut args = vec![server.as_str(), "-p", "10053", "-b", source];
        let y;
        if let Some(k) = key {
            y = format!("hmac-sha256:xfr:{k}");
            args.extend_from_slice(&["-y", &y]);
        }
        args.extend_from_slice(&[DOMAIN, "AXFR"]);
        run("dig", &args, "").1
    };
    let good = axfr(&knot_ip, Some(&secret));
    assert!(good.contains("XFR size") && good.contains("RRSIG") && good.contains("www.example.org."), "{good}");
    let stranger = common::unique_ip();
    assert!(axfr(&stranger, Some(&secret)).contains("Transfer failed"), "an address not configured");
    assert!(axfr(&knot_ip, None).contains("Transfer failed"), "unsigned");
    let (_, other) = run("openssl", &["rand", "-base64", "32"], "");
    assert!(axfr(&knot_ip, Some(other.trim())).contains("Transfer failed"), "another key");
}

/// SHA-256 of the public key the server presents on its SMTP port (STARTTLS), hex.
fn served_key(a: &Agora) -> String {
    let connect = format!("{}:10025", a.ip);
    let script = format!(
        "openssl s_client -starttls smtp -connect {connect} </dev/null 2>/dev/null | openssl x509 -pubkey -noout \
         | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1"
    );
    let (ok, out) = run("sh", &["-c", &script], "");
    assert!(ok && out.trim().len() == 64, "{out}");
    out.trim().to_ascii_uppercase()
}

#[test]
fn dane_follows_the_served_key_and_check_compares_resolvers() {
    if !have("dig") || !have("delv") || !have("openssl") {
        return;
    }
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[dns]\naddresses = [\"192.0.2.25\"]\nttl = 1\n").unwrap();
    });
    let tlsa_name = format!("_10025._tcp.mx.{DOMAIN}");
    let tlsa = || -> Vec<String> {
        let mut v: Vec<String> = answers(&a, &[&tlsa_name, "TLSA"])
            .iter()
            .map(|l| l.split(' ').skip(7).collect::<Vec<_>>().join(""))
            .collect();
        v.sort();
        v
    };
    // The record is the key the SMTP listener really serves, and it validates.
    let first = served_key(&a);
    assert_eq!(tlsa(), std::slice::from_ref(&first));
    assert!(answers(&a, &[&tlsa_name, "TLSA"])[0].contains("IN TLSA 3 1 1 "));
    let work = tempfile::tempdir().unwrap();
    let anchors = work.path().join("anchors.conf");
    write_anchors(&a, &anchors, None);
    let out = delv(&a, &anchors, &tlsa_name, "TLSA");
    assert!(out.contains("fully validated"), "{out}");
    // A certificate with a new key: its record is published first, the key served only
    // after the hold (two TTLs and a round), the old record gone after another.
    let tls = a.data().join("tls");
    let (ok, out) = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=mx.example.org",
            "-keyout",
            tls.join("key.pem").to_str().unwrap(),
            "-out",
            tls.join("cert.pem").to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "{out}");
    a.signal("HUP");
    eventually("the new key's TLSA beside the old", || tlsa().len() == 2);
    assert_eq!(served_key(&a), first, "the old key is still served while the new record spreads");
    let published = tlsa();
    eventually("the new key served", || served_key(&a) != first);
    let second = served_key(&a);
    assert!(published.contains(&second), "the key served was published before: {published:?}");
    eventually("the old key's record gone", || tlsa() == [second.clone()]);

    // `agora dns check`: against this server itself, everything matches.
    let host = format!("mx.{DOMAIN}");
    let me = format!("{}:10053", a.ip);
    let out = a.cli(&["dns", "check", DOMAIN, "--resolver", &me, "--hostname", &host, "--port-offset", "10000"], None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("ok       {DOMAIN} MX")) && !text.contains("DIFFERS"), "{text}");
    // Against DNS that drifted: the MX differs, the SPF matches, DMARC is missing.
    let zone = work.path().join("drifted.json");
    std::fs::write(
        &zone,
        format!(r#"{{"{DOMAIN}/MX": ["20 mx.elsewhere.test"], "{DOMAIN}/TXT": ["v=spf1 mx -all"]}}"#),
    )
    .unwrap();
    let (_dns, ip) = common::dns_server(&zone);
    let other = format!("{ip}:10053");
    let out =
        a.cli(&["dns", "check", DOMAIN, "--resolver", &other, "--hostname", &host, "--port-offset", "10000"], None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("DIFFERS  {DOMAIN} MX: publish 10 mx.example.org.; it sees 20 mx.elsewhere.test.")),
        "{text}"
    );
    assert!(text.contains(&format!("ok       {DOMAIN} TXT")), "{text}");
    assert!(text.contains(&format!("DIFFERS  _dmarc.{DOMAIN} TXT")) && text.contains("it sees nothing"), "{text}");
}

#[test]
fn two_servers_find_each_other_through_their_own_dns() {
    if !have("dig") {
        return;
    }
    // Each resolves through the other's DNS: MX, the MX host's address (on the test's
    // SMTP port) and the DKIM keys all come from the zones the servers publish themselves.
    let mut a = Agora::start();
    let mut b = Agora::start_for("b.test", |_| {});
    a.stop();
    b.stop();
    let config = |own: &str, other: &str| {
        format!(
            "[auth]\nplaintext_without_tls = true\n[dns]\naddresses = [\"{own}\"]\n\
             [transport]\nnameservers = [\"{other}:10053\"]\nmx_port = 10025\npoll_secs = 1\n"
        )
    };
    std::fs::write(a.data().join("agora.toml"), config(&a.ip, &b.ip)).unwrap();
    std::fs::write(b.data().join("agora.toml"), config(&b.ip, &a.ip)).unwrap();
    a.spawn();
    b.spawn();
    a.cli_ok(&["user", "add", "alice@example.org", "--password-stdin"], Some("alice-pw\n"));
    b.cli_ok(&["user", "add", "bob@b.test", "--password-stdin"], Some("bob-pw\n"));
    a.submit(
        "alice@example.org",
        "alice-pw",
        &["bob@b.test"],
        "From: Alice <alice@example.org>\r\nTo: bob@b.test\r\nSubject: found by DNS\r\n\r\nhello\r\n",
    );
    eventually("delivery to b.test by its MX", || b.inbox_count("bob@b.test") == 1);
    common::python_ok(&format!(
        r#"
import imaplib, ssl, email
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("bob@b.test", "bob-pw"); m.select("INBOX")
typ, data = m.fetch("1", "(BODY.PEEK[HEADER])")
h = email.message_from_bytes(data[0][1])
ar = " ".join(h.get_all("Authentication-Results"))
# DKIM keys found through A's own DNS. (DMARC's tree walk also asks `_dmarc.org`,
# outside every hosted zone: an authoritative server refuses it, a resolver would not.)
for want in ("dkim=pass header.d=example.org header.s=agora-rsa", "dkim=pass header.d=example.org header.s=agora-ed"):
    assert want in ar, (want, ar)
print("ok")
"#,
        ip = b.ip
    ));
}

#[test]
fn dnspython_and_kdig_see_authoritative_behaviour() {
    if !have("kdig") || !std::path::Path::new("/usr/bin/python3").exists() {
        return;
    }
    let many: Vec<String> = (1..=40).map(|i| format!("\"2001:db8::{i}\"")).collect();
    let a = Agora::start_with(|data| {
        let cfg = format!("[dns]\naddresses = [\"192.0.2.25\", {}]\n", many.join(", "));
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
    });
    let host = format!("mx.{DOMAIN}");
    for (name, t, v) in [
        ("*.wild", "TXT", "\"from the wildcard\""),
        ("@", "CAA", "0 issue letsencrypt.org"),
        ("_25._tcp.mx", "TLSA", "3 1 1 0123abcd"),
        ("www", "CNAME", "mx.example.org."),
    ] {
        a.cli_ok(&["dns", "record", "add", DOMAIN, name, t, v, "--hostname", &host, "--port-offset", "10000"], None);
    }
    let script = format!(
        r#"
import dns.message, dns.query, dns.rcode, dns.rdatatype, dns.flags
ip, port = "{ip}", 10053
def ask(name, t, payload=1232, tcp=False):
    q = dns.message.make_query(name, t, use_edns=0, payload=payload)
    q.flags &= ~dns.flags.RD
    return (dns.query.tcp if tcp else dns.query.udp)(q, ip, port=port, timeout=5)
# NXDOMAIN and NODATA: the SOA in the authority section, AA set.
r = ask("nothing.example.org", "A")
assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA, r
assert r.authority and r.authority[0].rdtype == dns.rdatatype.SOA, r
r = ask("example.org", "AAAA")
assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority[0].rdtype == dns.rdatatype.SOA, r
# Wildcards (RFC 4592): synthesised under the name asked; the wildcard's parent is an
# empty non-terminal (NODATA), a name below an existing one is not matched.
r = ask("Anything.wild.example.org", "TXT")
assert r.answer and r.answer[0].name.to_text() == "Anything.wild.example.org.", r
assert b"from the wildcard" in r.answer[0][0].strings[0], r
r = ask("wild.example.org", "TXT")
assert r.rcode() == dns.rcode.NOERROR and not r.answer, r
r = ask("a.b.wild.example.org", "TXT")
assert r.answer, "a wildcard also covers deeper names with no closer encloser"
r = ask("anything.wild.example.org", "A")
assert r.rcode() == dns.rcode.NOERROR and not r.answer, "NODATA for a type the wildcard lacks"
# Truncation: 41 addresses do not fit 512 bytes; TC over UDP, whole over TCP.
r = ask("mx.example.org", "AAAA", payload=512)
assert r.flags & dns.flags.TC and not r.answer, r
assert len(ask("mx.example.org", "AAAA", tcp=True).answer[0]) == 40
assert len(ask("mx.example.org", "AAAA", payload=4096).answer[0]) == 40
# Outside the hosted zones: REFUSED, never recursion.
r = ask("example.com", "A")
assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.RA, r
# The CNAME followed within the zone.
r = ask("www.example.org", "A")
assert [x.rdtype for x in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A], r
print("ok")
"#,
        ip = a.ip
    );
    let (ok, out) = run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok && out.contains("ok"), "{out}");
    // kdig over UDP and TCP, signed, for every kind of record the zone has.
    let server = format!("@{}", a.ip);
    for (name, t) in [
        (DOMAIN.to_string(), "SOA"),
        (DOMAIN.to_string(), "NS"),
        (DOMAIN.to_string(), "MX"),
        (DOMAIN.to_string(), "TXT"),
        (DOMAIN.to_string(), "CAA"),
        (DOMAIN.to_string(), "DNSKEY"),
        (host.clone(), "A"),
        (host.clone(), "AAAA"),
        (format!("_dmarc.{DOMAIN}"), "TXT"),
        (format!("_smtp._tls.{DOMAIN}"), "TXT"),
        (format!("_imaps._tcp.{DOMAIN}"), "SRV"),
        (format!("_ldap._tcp.{DOMAIN}"), "SRV"),
        (format!("_25._tcp.mx.{DOMAIN}"), "TLSA"),
    ] {
        for transport in ["+notcp", "+tcp"] {
            let (ok, out) = run("kdig", &[&server, "-p", "10053", transport, "+dnssec", "+norec", &name, t], "");
            assert!(ok && out.contains("status: NOERROR") && out.contains("Flags: qr aa"), "{name} {t}: {out}");
            let rrsig = format!("RRSIG\t{t} 13");
            assert!(out.contains(&format!("\t{t}\t")) && out.contains(&rrsig), "{name} {t} {transport}: {out}");
        }
    }
}

/// Unbound as a validating resolver on loopback: example.org asked of `primary`,
/// trusted through the DS records `agora dns ds` printed.
struct Unbound {
    child: std::process::Child,
    ip: String,
    _dir: tempfile::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Unbound {
    fn start(primary: &str, ds: &[String]) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let ip = common::unique_ip();
        let anchors: String = ds.iter().map(|d| format!("    trust-anchor: \"{d}\"\n")).collect();
        let conf = format!(
            "server:\n    interface: {ip}\n    port: 10053\n    username: \"\"\n    chroot: \"\"\n\
             directory: \"{d}\"\n    pidfile: \"\"\n    use-syslog: no\n    logfile: \"\"\n\
             do-not-query-localhost: no\n    access-control: 127.0.0.0/8 allow\n\
             module-config: \"validator iterator\"\n    cache-max-ttl: 1\n    cache-max-negative-ttl: 1\n\
             {anchors}stub-zone:\n    name: \"{DOMAIN}\"\n    stub-addr: {primary}@10053\n",
            d = dir.path().display()
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let u = Unbound { child, ip, _dir: dir };
        let server = format!("@{}", u.ip);
        eventually("unbound to answer", || {
            run("dig", &[&server, "-p", "10053", "+time=1", "+tries=1", DOMAIN, "SOA"], "")
                .1
                .contains("status: NOERROR")
        });
        u
    }
}

#[test]
fn dane_decides_outbound_delivery_through_a_validating_resolver() {
    if !have("unbound") || !have("dig") || !have("openssl") {
        return;
    }
    // A publishes its TLSA record by hand here (its own is off), first a wrong one.
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[dns]\nttl = 1\ndane = false\n").unwrap();
    });
    a.cli_ok(&["user", "add", "bob@example.org", "--password-stdin"], Some("bob-pw\n"));
    let host = format!("mx.{DOMAIN}");
    let tlsa = |hex: &str| {
        let v = format!("3 1 1 {hex}");
        let args = ["dns", "record", "add", DOMAIN, "_10025._tcp.mx", "TLSA", &v, "--ttl", "1", "--hostname", &host];
        a.cli_ok(&[&args[..], &["--port-offset", "10000"]].concat(), None);
    };
    tlsa(&"00".repeat(32));
    // A's address is its own loopback one: the MX's A record must say so.
    a.cli_ok(&["dns", "record", "add", DOMAIN, "mx", "A", &a.ip, "--ttl", "1", "--hostname", &host], None);
    let ds: Vec<String> = a
        .cli_ok(&["dns", "ds", DOMAIN], None)
        .lines()
        .filter(|l| l.contains(" IN DS "))
        .map(|l| l.replace(" IN DS ", " DS "))
        .collect();
    let unbound = Unbound::start(&a.ip, &ds);
    let b = Agora::start_for("b.test", |data| {
        let cfg = format!(
            "[auth]\nplaintext_without_tls = true\n[transport]\nnameservers = [\"{}:10053\"]\nmx_port = 10025\n\
             poll_secs = 1\nretry_secs = 1\n",
            unbound.ip
        );
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
    });
    b.cli_ok(&["user", "add", "alice@b.test", "--password-stdin"], Some("alice-pw\n"));
    b.submit(
        "alice@b.test",
        "alice-pw",
        &["bob@example.org"],
        "From: alice@b.test\r\nTo: bob@example.org\r\nSubject: dane\r\n\r\nhello\r\n",
    );
    // The served certificate matches no authentic TLSA record: the mail waits.
    let entry = || b.cli_ok(&["queue", "list"], None).split_whitespace().next().unwrap_or("").to_string();
    eventually("a DANE deferral", || {
        let id = entry();
        id.parse::<i64>().is_ok() && b.cli_ok(&["queue", "show", &id], None).contains("matches no TLSA record")
    });
    assert_eq!(a.inbox_count("bob@example.org"), 0);
    // The right record: delivered at the next try.
    a.cli_ok(&["dns", "record", "remove", DOMAIN, "_10025._tcp.mx", "TLSA"], None);
    tlsa(&served_key(&a));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let id = entry();
    if id.parse::<i64>().is_ok() {
        let _ = b.cli(&["queue", "retry", &id], None);
    }
    eventually("delivery under DANE", || a.inbox_count("bob@example.org") == 1);
}
