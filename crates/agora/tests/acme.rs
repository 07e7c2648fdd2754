//! ACME end to end against Pebble (the ACME test CA), which resolves the server's
//! names through Agora's own DNS: a challenge that cannot succeed is retried with
//! backoff and reported by `agora cert status`; HTTP-01 issues certificates for the
//! host name and the domain's web names, served by IMAPS, SMTP STARTTLS and HTTPS
//! (SNI) and renewed without a restart; TLS-ALPN-01 issues them with port 80 off.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agora, DOMAIN, have, issue, private_ca, run, unique_ip};

struct Pebble(Child);

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// The leaf certificate (SHA-256 of its DER and of its key, issuer) served on IMAPS and on SMTP after
/// STARTTLS, each asked for with SNI `mx.example.org`, and on IMAPS without SNI.
fn served(ip: &str) -> Vec<(String, String, String)> {
    let script = r#"
import hashlib, smtplib, socket, ssl, sys
ip = sys.argv[1]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def show(der):
    import subprocess
    issuer = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-issuer"], input=der, capture_output=True).stdout.decode().strip()
    pub = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-pubkey"], input=der, capture_output=True).stdout
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True).stdout
    print(hashlib.sha256(der).hexdigest(), hashlib.sha256(spki).hexdigest(), issuer)
with socket.create_connection((ip, 10993), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname="mx.example.org") as t:
        show(t.getpeercert(binary_form=True))
with socket.create_connection((ip, 10993), timeout=10) as s:
    with ctx.wrap_socket(s) as t:
        show(t.getpeercert(binary_form=True))
m = smtplib.SMTP(ip, 10025, timeout=10)
m._host = "mx.example.org"
m.starttls(context=ctx)
show(m.sock.getpeercert(binary_form=True))
m.quit()
"#;
    let (ok, out) = run("python3", &["-c", script, ip], "");
    assert!(ok, "{out}");
    out.lines()
        .map(|l| {
            let mut w = l.splitn(3, ' ');
            (w.next().unwrap().to_string(), w.next().unwrap().to_string(), w.next().unwrap_or_default().to_string())
        })
        .collect()
}

/// The TLSA 3 1 1 data Agora's DNS publishes for its SMTP listener, lower-case hex.
fn tlsa(ip: &str) -> Vec<String> {
    let (ok, out) = run("dig", &[&format!("@{ip}"), "-p", "10053", "+short", "_10025._tcp.mx.example.org", "TLSA"], "");
    assert!(ok, "{out}");
    out.lines().filter_map(|l| l.strip_prefix("3 1 1 ")).map(|h| h.replace(' ', "").to_ascii_lowercase()).collect()
}

fn write_config(data: &Path, agora_ip: &str, pebble_ip: &str, ca: &Path, extra: &str) {
    let text = format!(
        "[dns]\naddresses = [\"{agora_ip}\"]\nttl = 2\n[tls]\nacme = {{ directory = \"https://{pebble_ip}:14000/dir\", contact = \"mailto:postmaster@{DOMAIN}\", ca = \"{}\", retry_secs = 2{extra} }}\n",
        ca.display()
    );
    let path = data.join("agora.toml");
    // Keep what the harness added (its quiet DNS server for the transport).
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let rest: String = old.split("[transport]").nth(1).map(|t| format!("[transport]{t}")).unwrap_or_default();
    std::fs::write(&path, format!("{text}{rest}")).unwrap();
}

#[test]
fn certificates_from_pebble_over_http01_and_tls_alpn01_renewed_in_place() {
    if !have("pebble") || !have("openssl") || !have("curl") {
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "pebble, openssl or curl is missing");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (agora_ip, pebble_ip) = (unique_ip(), unique_ip());
    private_ca(work.path());
    let (cert, key) = issue(work.path(), "pebble", &[&pebble_ip]);
    let ca = work.path().join("ca.pem");
    std::fs::write(
        work.path().join("pebble.json"),
        format!(
            r#"{{"pebble": {{"listenAddress": "{pebble_ip}:14000", "managementListenAddress": "{pebble_ip}:15000",
               "certificate": "{}", "privateKey": "{}", "httpPort": 10080, "tlsPort": 10443,
               "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            work.path().join(&cert).display(),
            work.path().join(&key).display()
        ),
    )
    .unwrap();
    // Pebble looks the names up in Agora's own zone (mx A, web names CNAME to it).
    let _pebble = Pebble(
        Command::new("pebble")
            .args(["-config", "pebble.json", "-dnsserver", &format!("{agora_ip}:10053")])
            .current_dir(work.path())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order proves every name again (no authorization carried over).
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Port 80 off while HTTP-01 is asked for: the challenge fails, is retried with
    // backoff, and the status says why.
    let mut a = Agora::start_on(agora_ip.clone(), DOMAIN, |data| {
        write_config(data, &agora_ip, &pebble_ip, &ca, ", challenge = \"http-01\"");
        let mut text = std::fs::read_to_string(data.join("agora.toml")).unwrap();
        text.push_str("[listeners.http]\nenabled = false\n");
        std::fs::write(data.join("agora.toml"), text).unwrap();
    });
    wait_until("two failed attempts", 60, || {
        let status = a.cli_ok(&["cert", "status"], None);
        let failed = status.lines().find(|l| l.contains("failed attempt(s)")).ok_or(status.clone())?;
        let n: u32 = failed.split_whitespace().next().unwrap().parse().unwrap();
        if n >= 2 && failed.contains(DOMAIN) { Ok(()) } else { Err(status) }
    });
    let before = served(&a.ip);
    assert!(before.iter().all(|(_, _, issuer)| !issuer.contains("Pebble")), "{before:?}");

    // Port 80 on: HTTP-01 succeeds for every name set.
    a.stop();
    write_config(&a.data(), &agora_ip, &pebble_ip, &ca, ", challenge = \"http-01\", renew_before_days = 36500");
    a.spawn();
    let mut first = Vec::new();
    wait_until("Pebble's certificate on IMAPS and SMTP", 60, || {
        first = served(&a.ip);
        // Due again at once (renew_before_days), it may be renewed between two of the
        // three connections: read again until one reading sees one certificate.
        if first.iter().all(|(_, _, i)| i.contains("Pebble")) && first.iter().all(|c| c.0 == first[0].0) {
            Ok(())
        } else {
            Err(format!("{first:?}\n{}", a.cli_ok(&["cert", "status"], None)))
        }
    });
    assert!(
        first.iter().all(|c| c.0 == first[0].0),
        "one certificate for the host name, with or without SNI: {first:?}"
    );
    // DANE: the new key was served only once its TLSA record was out.
    assert!(tlsa(&a.ip).contains(&first[0].1), "{:?} lacks {}", tlsa(&a.ip), first[0].1);
    let status = a.cli_ok(&["cert", "status"], None);
    for name in ["mx.example.org", "autoconfig.example.org,autodiscover.example.org,mta-sts.example.org"] {
        assert!(status.lines().any(|l| l.starts_with(name) && l.contains("Pebble Intermediate")), "{name}: {status}");
    }
    // The web names' certificate chains to Pebble's root and is chosen by SNI.
    let (ok, root) = run("curl", &["-sk", &format!("https://{pebble_ip}:15000/roots/0")], "");
    assert!(ok && root.contains("BEGIN CERTIFICATE"), "{root}");
    std::fs::write(work.path().join("root.pem"), &root).unwrap();
    let root_path = work.path().join("root.pem");
    let policy = |ip: &str| {
        run(
            "curl",
            &[
                "-s",
                "--cacert",
                root_path.to_str().unwrap(),
                "--resolve",
                &format!("mta-sts.{DOMAIN}:10443:{ip}"),
                &format!("https://mta-sts.{DOMAIN}:10443/.well-known/mta-sts.txt"),
            ],
            "",
        )
    };
    let (ok, body) = policy(&a.ip);
    assert!(ok && body.starts_with("version: STSv1"), "verified HTTPS for mta-sts.{DOMAIN}: {body}");
    // Renewal (forced by a renewal window longer than the lifetime): a new certificate
    // on the same key, served by the running listeners.
    wait_until("a renewed certificate", 60, || {
        let now = served(&a.ip);
        if now.iter().all(|(h, _, i)| *h != first[0].0 && i.contains("Pebble")) {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
    // The renewal kept the key, so the TLSA record stays true; the self-signed key's
    // record goes once its hold is over.
    wait_until("the old key's TLSA record gone", 30, || {
        let now = served(&a.ip);
        let published = tlsa(&a.ip);
        if now.iter().all(|c| c.1 == first[0].1) && published == vec![first[0].1.clone()] {
            Ok(())
        } else {
            Err(format!("{now:?} {published:?}"))
        }
    });

    // TLS-ALPN-01 with port 80 off: new certificates from scratch.
    a.stop();
    for set in ["mx.example.org", "autoconfig.example.org"] {
        std::fs::remove_file(a.data().join("acme").join(set).join("cert.pem")).unwrap();
    }
    std::fs::remove_file(a.data().join("acme/status.json")).unwrap();
    write_config(&a.data(), &agora_ip, &pebble_ip, &ca, ", challenge = \"tls-alpn-01\"");
    let mut text = std::fs::read_to_string(a.data().join("agora.toml")).unwrap();
    text.push_str("[listeners.http]\nenabled = false\n");
    std::fs::write(a.data().join("agora.toml"), text).unwrap();
    a.spawn();
    wait_until("certificates over TLS-ALPN-01", 60, || {
        let status = a.cli_ok(&["cert", "status"], None);
        let issued = status.lines().filter(|l| l.contains("Pebble") && !l.contains("configured pair")).count();
        if issued == 2 { Ok(()) } else { Err(status) }
    });
    wait_until("IMAPS serving it", 20, || {
        let now = served(&a.ip);
        if now.iter().all(|(_, _, i)| i.contains("Pebble")) { Ok(()) } else { Err(format!("{now:?}")) }
    });
    let (ok, body) = policy(&a.ip);
    assert!(ok && body.starts_with("version: STSv1"), "{body}");
}
