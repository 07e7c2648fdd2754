//! HTTP and HTTPS with curl: the redirect to HTTPS, HTTP/1.1 and HTTP/2, the MTA-STS
//! policy (its id the one DNS publishes), Thunderbird autoconfiguration from the
//! listeners that are on, and the limits on what a client sends.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, DOMAIN, have, issue, private_ca, run};

/// The private CA the server's certificate comes from (the tests check it).
static CA: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// `curl -s` against the server with every name resolved to it and its certificate
/// checked against the private CA; returns the output.
fn curl(a: &Agora, args: &[&str]) -> String {
    let ca = CA.get().unwrap().to_str().unwrap().to_string();
    let mut all: Vec<String> = vec!["-s".into(), "--cacert".into(), ca, "--max-time".into(), "10".into()];
    for n in ["mta-sts", "autoconfig", "autodiscover"] {
        all.push("--resolve".into());
        all.push(format!("{n}.{DOMAIN}:10443:{}", a.ip));
    }
    for port in ["10443", "10080"] {
        all.extend(["--resolve".into(), format!("{DOMAIN}:{port}:{}", a.ip)]);
        all.extend(["--resolve".into(), format!("elsewhere.test:{port}:{}", a.ip)]);
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let (ok, out) = run("curl", &refs, "");
    let shown: Vec<String> = args.iter().map(|a| a.chars().take(80).collect()).collect();
    assert!(ok, "curl {shown:?}: {out}");
    out
}

#[test]
fn https_serves_policy_and_autoconfig_and_http_redirects() {
    if !have("curl") || !have("dig") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    private_ca(pki.path());
    // Every name HTTPS answers for, and one it does not serve (421 after a good handshake).
    let names = ["mx.example.org", DOMAIN, "mta-sts.example.org", "autoconfig.example.org", "autodiscover.example.org"];
    let (cert, key) = issue(pki.path(), "web", &[&names[..], &["elsewhere.test"]].concat());
    CA.set(pki.path().join("ca.pem")).unwrap();
    let a = Agora::start_with(|data| {
        let cfg = format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [http]\nheader_timeout_secs = 2\n[listeners.pop3]\nenabled = false\n[listeners.pop3s]\nenabled = false\n",
            pki.path().join(&cert).display(),
            pki.path().join(&key).display()
        );
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
    });
    let policy_url = format!("https://mta-sts.{DOMAIN}:10443/.well-known/mta-sts.txt");
    // HTTP/2 by ALPN, and HTTP/1.1; HSTS on both.
    let h2 = curl(&a, &["--http2", "-D", "-", &policy_url]);
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    assert!(h2.contains("strict-transport-security: max-age=31536000"), "{h2}");
    assert!(h2.contains("version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 604800\n"), "{h2}");
    let h1 = curl(&a, &["--http1.1", "-D", "-", &policy_url]);
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(!h1.to_ascii_lowercase().contains("\nserver:"), "no version banner: {h1}");
    // The policy's id in DNS is the hash of the text served; a new mode, a new id.
    let id = |a: &Agora| {
        let server = format!("@{}", a.ip);
        run("dig", &[&server, "-p", "10053", "+short", &format!("_mta-sts.{DOMAIN}"), "TXT"], "").1
    };
    let served_id = |a: &Agora| {
        let body = curl(a, &[&policy_url]);
        let script = "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:20])";
        run("python3", &["-c", script], &body).1.trim().to_string()
    };
    let before = id(&a);
    assert!(before.contains(&format!("v=STSv1; id={}", served_id(&a))), "{before}");
    a.cli_ok(&["domain", "mta-sts", DOMAIN, "enforce"], None);
    assert!(curl(&a, &[&policy_url]).contains("mode: enforce\n"));
    let after = id(&a);
    assert!(after != before && after.contains(&served_id(&a)), "{before} -> {after}");
    // Thunderbird's autoconfiguration: the servers that are on, in both places.
    for url in [
        format!("https://autoconfig.{DOMAIN}:10443/mail/config-v1.1.xml?emailaddress=ann%40{DOMAIN}"),
        format!("https://{DOMAIN}:10443/.well-known/autoconfig/mail/config-v1.1.xml"),
    ] {
        let xml = curl(&a, &[&url]);
        let script = r#"
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
p = root.find("emailProvider")
got = [(s.get("type"), s.findtext("port"), s.findtext("socketType"), s.findtext("hostname"))
       for s in list(p.findall("incomingServer")) + list(p.findall("outgoingServer"))]
want = [("imap", "10993", "SSL", "mx.example.org"), ("imap", "10143", "STARTTLS", "mx.example.org"),
        ("smtp", "10465", "SSL", "mx.example.org"), ("smtp", "10587", "STARTTLS", "mx.example.org")]
assert got == want, got
assert p.findtext("domain") == "example.org"
print("ok")
"#;
        let (ok, out) = run("python3", &["-c", script], &xml);
        assert!(ok && out.contains("ok"), "{url}: {out}\n{xml}");
    }
    let status = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        curl(&a, &all)
    };
    // Outlook's Autodiscover: POX settings for an address of a hosted domain, the same
    // shape whether the mailbox exists or not; an error for other domains; the v2 JSON.
    a.cli_ok(&["user", "add", &format!("ann@{DOMAIN}"), "--password-stdin"], Some("pw\n"));
    let pox = |address: &str| {
        let body = format!(
            "<?xml version=\"1.0\"?><Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>"
        );
        let url = format!("https://autodiscover.{DOMAIN}:10443/autodiscover/autodiscover.xml");
        curl(&a, &["-X", "POST", "-H", "Content-Type: text/xml", "--data-binary", &body, &url])
    };
    let known = pox(&format!("ann@{DOMAIN}"));
    for want in [
        "<Action>settings</Action>",
        "<Type>IMAP</Type>",
        "<Port>10993</Port>",
        "<Type>SMTP</Type>",
        "<Port>10465</Port>",
    ] {
        assert!(known.contains(want), "{want}: {known}");
    }
    assert!(known.contains(&format!("<LoginName>ann@{DOMAIN}</LoginName>")) && !known.contains("POP3"), "{known}");
    let unknown = pox(&format!("nobody@{DOMAIN}"));
    assert_eq!(unknown.replace("nobody@", "ann@"), known, "no account probing");
    assert!(pox("ann@elsewhere.test").contains("<ErrorCode>600</ErrorCode>"));
    let json = curl(
        &a,
        &[&format!(
            "https://autodiscover.{DOMAIN}:10443/autodiscover/autodiscover.json/v1.0/ann@{DOMAIN}?Protocol=AutodiscoverV1"
        )],
    );
    assert_eq!(
        json,
        format!(
            "{{\"Protocol\":\"AutodiscoverV1\",\"Url\":\"https://autodiscover.{DOMAIN}:10443/autodiscover/autodiscover.xml\"}}"
        )
    );
    let huge = "x".repeat(20_000);
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "--data-binary",
            &huge,
            &format!("https://autodiscover.{DOMAIN}:10443/autodiscover/autodiscover.xml")
        ]),
        "413"
    );
    // Health for supervisors on the administration listener (loopback only).
    let admin = |path: &str| curl(&a, &["-w", " %{http_code}", &format!("http://{}:19025{path}", a.ip)]);
    assert_eq!(admin("/healthz"), "ok\n 200");
    assert_eq!(admin("/readyz"), "ready\n 200");
    assert!(admin("/metrics").contains("# TYPE agora_sessions_open gauge"));
    // Port 80: everything to HTTPS with a 308, path and query kept.
    let redirect = curl(&a, &["-D", "-", "-o", "/dev/null", &format!("http://{DOMAIN}:10080/x/y?z=1")]);
    assert!(redirect.starts_with("HTTP/1.1 308"), "{redirect}");
    assert!(redirect.contains(&format!("location: https://{DOMAIN}:10443/x/y?z=1")), "{redirect}");
    // Names not served here, unknown paths, other methods.
    assert_eq!(status(&["https://elsewhere.test:10443/"]), "421");
    assert_eq!(status(&["http://elsewhere.test:10080/"]), "421", "no redirect for names not served here");
    assert_eq!(status(&[&format!("https://mta-sts.{DOMAIN}:10443/nothing")]), "404");
    assert_eq!(status(&["-X", "POST", &policy_url]), "405");
    // A request head too large, and one that never ends.
    let big = format!("X-Big: {}", "a".repeat(40_000));
    assert_eq!(status(&["--http1.1", "-H", &big, &policy_url]), "431");
    let script = format!(
        r#"
import socket, time
s = socket.create_connection(("{ip}", 10080)); s.settimeout(10)
s.sendall(b"GET / HTTP/1.1\r\nHost: example.org\r\n")
t = time.time()
while s.recv(4096): pass
assert time.time() - t < 6, time.time() - t
print("ok")
"#,
        ip = a.ip
    );
    common::python_ok(&script);
}
