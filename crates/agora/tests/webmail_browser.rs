//! The webmail in headless Chromium (Debian's), driven by playwright-core
//! (`tests/browser/scenarios.mjs`): the scenarios people go through, a hostile HTML
//! message, and the admin console. Screenshots of each main view are kept in
//! `target/browser-screenshots/` as the run's artefacts. What the browser sent is then
//! read over IMAP by another account, attachment and all.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, have, python_ok};

#[test]
fn the_webmail_in_a_real_browser() {
    if !have("node") || !have("chromium") || !have("python3") {
        return;
    }
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        assert!(
            std::env::var_os("AGORA_REQUIRE_PEERS").is_none(),
            "playwright-core is not installed (scripts/install-test-deps installs it)"
        );
        eprintln!("skipping: playwright-core not installed (run scripts/test)");
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "web@example.org", "--password-stdin"], Some("web-secret\n"));
    a.cli_ok(&["user", "add", "other@example.org", "--password-stdin"], Some("other-secret\n"));
    a.cli_ok(&["user", "add", "boss@example.org", "--password-stdin", "--admin"], Some("boss-secret\n"));
    python_ok(&format!(
        r#"
import smtplib
s = smtplib.SMTP({ip:?}, 10025, timeout=20)
s.sendmail("friend@remote.test", ["web@example.org"],
    b"From: Friend <friend@remote.test>\r\nTo: web@example.org\r\nSubject: Welcome aboard\r\nMessage-ID: <w1@remote.test>\r\n\r\nGlad to have you.\r\n")
s.sendmail("evil@remote.test", ["web@example.org"],
    b"From: evil@remote.test\r\nTo: web@example.org\r\nSubject: Totally harmless\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>Hello there</p><script>parent.pwned = true; alert('script')</script>"
    b"<img src=\"https://tracker.remote.test/pixel.gif\" onerror=\"alert('onerror')\">"
    b"<img src=x onerror=\"alert('handler')\"><a href=\"javascript:alert('link')\">link</a>"
    b"<iframe src=\"https://evil.remote.test/\"></iframe><form action=\"https://evil.remote.test/\"><input name=p></form>\r\n")
s.quit()
print("ok")
"#,
        ip = a.ip
    ));
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    let out = std::process::Command::new("node")
        .arg(browser_dir.join("scenarios.mjs"))
        .arg(&a.ip)
        .arg(&shots)
        .output()
        .expect("node runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser scenarios failed:\n{said}");
    for view in
        ["sign-in", "list", "message", "compose", "html-message", "settings", "admin", "admin-users", "phone-dark"]
    {
        let png = shots.join(format!("{view}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "a screenshot of {view}: {} ({len} bytes)", png.display());
    }
    // The reply sent in the browser arrived, its attachment intact.
    python_ok(&format!(
        r#"
import email, email.policy, imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL({ip:?}, 10993, ssl_context=ctx, timeout=20)
m.login("other@example.org", "other-secret")
m.select("INBOX")
typ, data = m.search(None, "SUBJECT", '"Re: Welcome aboard"')
assert len(data[0].split()) == 1, data
typ, data = m.fetch(data[0].split()[0], "(BODY.PEEK[])")
got = email.message_from_bytes(data[0][1], policy=email.policy.default)
files = {{p.get_filename(): p.get_payload(decode=True) for p in got.iter_attachments()}}
assert files == {{"plan.txt": b"step 1\nstep 2\n"}}, files
assert got["In-Reply-To"] == "<w1@remote.test>", got["In-Reply-To"]
assert "Thanks! The plan is attached." in got.get_body(("plain",)).get_content()
print("ok")
"#,
        ip = a.ip
    ));
}
