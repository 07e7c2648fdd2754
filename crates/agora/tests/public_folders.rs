//! Public folders from the command line: the hierarchy, newsgroup names from paths,
//! addresses, permissions as roles that subfolders inherit, and what is refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::Agora;

#[test]
fn public_folders_are_managed_from_the_command_line() {
    let a = Agora::start();
    a.cli_ok(&["user", "add", "bob@example.org", "--password-stdin"], Some("pw\n"));
    let out = a.cli_ok(&["public", "add", "Sales"], None);
    assert!(out.contains("public folder Sales added, newsgroup sales"), "{out}");
    a.cli_ok(&["public", "permission", "Sales", "anyone", "reader"], None);
    let out = a.cli_ok(&["public", "add", "Sales/EMEA Team", "--address", "emea@example.org"], None);
    assert!(out.contains("newsgroup sales.emea-team, address emea@example.org"), "{out}");
    a.cli_ok(&["public", "permission", "Sales/EMEA Team", "bob@example.org", "author"], None);
    a.cli_ok(&["public", "add", "Internal", "--no-newsgroup"], None);
    a.cli_ok(&["public", "add", "Announcements", "--newsgroup", "example.announce"], None);

    let list = a.cli_ok(&["public", "list"], None);
    let line = |path: &str| list.lines().find(|l| l.starts_with(&format!("{path}  "))).unwrap().to_string();
    assert_eq!(line("Sales"), "Sales  newsgroup sales  address -  anyone=reader");
    // The subfolder kept what it inherited and got its own.
    let emea = line("Sales/EMEA Team");
    assert!(emea.contains("anyone=reader") && emea.contains("bob@example.org=author"), "{list}");
    assert!(line("Internal").contains("newsgroup -"), "{list}");
    assert!(line("Announcements").contains("newsgroup example.announce"), "{list}");

    // Refused, each with a reason.
    for (args, why) in [
        (vec!["public", "add", "Nowhere/Child"], "not found"),
        (vec!["public", "add", "Other", "--newsgroup", "sales"], "exists"),
        (vec!["public", "add", "Bad", "--newsgroup", "no..dots"], "not a newsgroup name"),
        (vec!["public", "permission", "Sales", "nobody@example.org", "reader"], "no such account"),
        (vec!["public", "permission", "Sales", "anyone", "king"], "say reader"),
        (vec!["public", "remove", "Sales"], "subfolders"),
    ] {
        let out = a.cli(&args, None);
        let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    }
    // A folder's address is taken: no account can have it.
    let out = a.cli(&["user", "add", "emea@example.org", "--password-stdin"], Some("pw\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("public folder"), "{err}");
    // The organisation's own account is not a user.
    assert!(!a.cli_ok(&["user", "list"], None).contains("public-folders"));

    a.cli_ok(&["public", "rename", "Sales", "Marketing"], None);
    a.cli_ok(&["public", "permission", "Marketing", "anyone", "none"], None);
    let list = a.cli_ok(&["public", "list"], None);
    assert!(list.contains("Marketing/EMEA Team  newsgroup sales.emea-team"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("Marketing  ") && l.contains("only administrators")), "{list}");
    a.cli_ok(&["public", "remove", "Marketing/EMEA Team"], None);
    a.cli_ok(&["public", "remove", "Marketing"], None);
    assert!(!a.cli_ok(&["public", "list"], None).contains("Marketing"));
}

#[test]
fn public_folders_over_imap_follow_their_permissions() {
    let a = Agora::start();
    for u in ["bob", "carol"] {
        a.cli_ok(&["user", "add", &format!("{u}@example.org"), "--password-stdin"], Some("pw\n"));
    }
    a.cli_ok(&["public", "add", "Sales"], None);
    a.cli_ok(&["public", "permission", "Sales", "authenticated", "reader"], None);
    a.cli_ok(&["public", "add", "Sales/EMEA Team"], None);
    a.cli_ok(&["public", "permission", "Sales/EMEA Team", "bob@example.org", "author"], None);
    a.cli_ok(&["public", "add", "Secret"], None);
    a.cli_ok(&["public", "permission", "Sales", "bob@example.org", "moderator"], None);
    common::python_ok(&format!(
        r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def login(who):
    m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
    m.login(who + "@example.org", "pw")
    return m
emea = '"Public Folders/Sales/EMEA Team"'
bob = login("bob")
names = [l.decode() for l in bob.list('""', '"*"')[1]]
assert any(n.endswith('"Public Folders/Sales"') for n in names), names
assert any(n.endswith('"Public Folders/Sales/EMEA Team"') for n in names), names
assert not any("Secret" in n for n in names), names
assert not any("Other Users" in n for n in names), names
typ, _ = bob.append(emea, None, None, b"From: bob@example.org\r\nSubject: kickoff\r\n\r\nhello\r\n")
assert typ == "OK", typ
typ, data = bob.select(emea)
assert typ == "OK" and data[0] == b"1", (typ, data)
bob.store("1", "+FLAGS", "\\Seen")
carol = login("carol")
typ, data = carol.append('"Public Folders/Sales"', None, None, b"Subject: no\r\n\r\nx\r\n")
assert typ == "NO" and b"NOPERM" in data[0], (typ, data)
typ, data = carol.select(emea)
assert typ == "OK" and data[0] == b"1", (typ, data)
typ, data = carol.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
flags = data[0][0].decode()
assert "\\Seen" not in flags, flags          # \Seen is each reader's own
assert b"kickoff" in data[0][1], data
typ, data = carol.status(emea, "(MESSAGES UNSEEN)")
assert b"MESSAGES 1" in data[0] and b"UNSEEN 1" in data[0], data
typ, data = carol.select('"Public Folders/Secret"')
assert typ == "NO", (typ, data)
# Folders made, moved and removed over IMAP, as the rights allow.
typ, data = carol.create('"Public Folders/Sales/Carol"')
assert typ == "NO" and b"NOPERM" in data[0], (typ, data)
typ, data = bob.create('"Public Folders/Top"')
assert typ == "NO" and b"NOPERM" in data[0], (typ, data)
typ, data = bob.create('"Public Folders/Sales/Projects"')
assert typ == "OK", (typ, data)
typ, data = carol.select('"Public Folders/Sales/Projects"')
assert typ == "OK", ("inherited reader", typ, data)
typ, data = bob.rename('"Public Folders/Sales/Projects"', '"Public Folders/Sales/Plans"')
assert typ == "OK", (typ, data)
typ, data = bob.delete('"Public Folders/Sales"')
assert typ == "NO" and b"HASCHILDREN" in data[0], (typ, data)
print("ok")
"#,
        ip = a.ip
    ));
    // Made over IMAP, named for news after its path, moved with its newsgroup name kept.
    let list = a.cli_ok(&["public", "list"], None);
    assert!(list.contains("Sales/Plans  newsgroup sales.projects"), "{list}");
}

#[test]
fn mail_to_a_folder_address_follows_its_permissions() {
    let a = Agora::start_with(|data| {
        std::fs::write(data.join("agora.toml"), "[auth]\nplaintext_without_tls = true\n").unwrap();
    });
    for u in ["bob", "carol"] {
        a.cli_ok(&["user", "add", &format!("{u}@example.org"), "--password-stdin"], Some("pw\n"));
    }
    a.cli_ok(&["public", "add", "Sales", "--address", "sales@example.org"], None);
    a.cli_ok(&["public", "permission", "Sales", "bob@example.org", "author"], None);
    a.cli_ok(&["public", "permission", "Sales", "carol@example.org", "reader"], None);
    a.cli_ok(&["public", "add", "Inbound", "--address", "inbound@example.org", "--anonymous-mail"], None);
    a.cli_ok(&["public", "permission", "Inbound", "carol@example.org", "reader"], None);
    // An author posts by mail; a reader may not.
    a.submit(
        "bob@example.org",
        "pw",
        &["sales@example.org"],
        "From: bob@example.org\r\nSubject: by mail\r\n\r\nhi\r\n",
    );
    let script = format!(
        r#"
import smtplib, sys
s = smtplib.SMTP("{ip}", 10587, timeout=20)
s.login("carol@example.org", "pw")
try:
    s.sendmail("carol@example.org", ["sales@example.org"], "Subject: no\r\n\r\nx\r\n")
    print("accepted")
except smtplib.SMTPRecipientsRefused as e:
    print("refused", e)
# From outside, without a login: only the folder that takes anonymous mail.
o = smtplib.SMTP("{ip}", 10025, timeout=20)
o.ehlo("outside.test")
for rcpt in ["sales@example.org", "inbound@example.org"]:
    code, _ = o.docmd("MAIL FROM:<someone@outside.test>")
    code, text = o.docmd("RCPT TO:<%s>" % rcpt)
    print(rcpt, code)
    o.docmd("RSET")
o.sendmail("someone@outside.test", ["inbound@example.org"], "From: someone@outside.test\r\nSubject: from outside\r\n\r\nhello\r\n")
o.quit()
"#,
        ip = a.ip
    );
    let (ok, out) = common::run("python3", &["-c", &script], "");
    assert!(ok, "{out}");
    assert!(out.contains("refused") && out.contains("5.7.1"), "a reader cannot post: {out}");
    assert!(out.contains("sales@example.org 550"), "{out}");
    assert!(out.contains("inbound@example.org 250"), "{out}");
    // What was posted is in the folders, as carol (a reader of both) sees over IMAP.
    common::python_ok(&format!(
        r#"
import imaplib, ssl, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("{ip}", 10993, ssl_context=ctx)
m.login("carol@example.org", "pw")
for box, subject in [('"Public Folders/Sales"', b"by mail"), ('"Public Folders/Inbound"', b"from outside")]:
    for _ in range(50):
        typ, data = m.select(box, readonly=True)
        if data[0] == b"1":
            break
        time.sleep(0.1)
    assert typ == "OK" and data[0] == b"1", (box, typ, data)
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert subject in data[0][1], data
print("ok")
"#,
        ip = a.ip
    ));
}
