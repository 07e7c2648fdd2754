//! Mail in every language: each message of `tests/corpus/mime` (every charset the text
//! layer converts, in subjects, addresses and bodies; encoded words split across lines
//! and charsets; RFC 2231 file names; SMTPUTF8 headers; nested and broken structures)
//! is delivered over SMTP as mail from outside, then read with Python's imaplib: its
//! ENVELOPE, BODYSTRUCTURE and PREVIEW must be those in its `.expect` file, and each
//! SEARCH there (a UTF-8 word) must find it and only it.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agora, have, python_ok};

const CLIENT: &str = r#"
import imaplib, os, re, smtplib, ssl, sys
ip, corpus = sys.argv[1], sys.argv[2]
names = sorted(n[:-4] for n in os.listdir(corpus) if n.endswith(".eml"))
s = smtplib.SMTP(ip, 10025, timeout=20)
s.ehlo("sender.test")
for n in names:
    raw = open(os.path.join(corpus, n + ".eml"), "rb").read()
    opts = ["BODY=8BITMIME"] + (["SMTPUTF8"] if n.endswith("smtputf8") else [])
    s.sendmail("sender@sender.test", ["corpus@example.org"], raw, mail_options=opts)
s.quit()

ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL(ip, 10993, ssl_context=ctx, timeout=20)
m.login("corpus@example.org", "corpus-secret")
typ, data = m.select("INBOX"); assert typ == "OK" and int(data[0]) == len(names), data

def flat(data):
    # A FETCH answer as one string, each literal written as a quoted string.
    out = b""
    for d in data:
        if isinstance(d, tuple):
            head, lit = d
            out += re.sub(rb"\{\d+\}$", b"", head) + b'"' + lit.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        else:
            out += d
    return out.decode("utf-8", "replace")

def item(text, name):
    # The value of one FETCH item: a parenthesised list, a quoted string, or NIL.
    i = text.index(name + " ") + len(name) + 1
    if text.startswith("NIL", i):
        return "NIL"
    depth, quoted, esc, j = 0, False, False, i
    while True:
        c = text[j]
        if esc: esc = False
        elif quoted and c == "\\": esc = True
        elif c == '"': quoted = not quoted
        elif not quoted and c == "(": depth += 1
        elif not quoted and c == ")": depth -= 1
        j += 1
        if depth == 0 and not quoted:
            return text[i:j]

# AGORA_CORPUS_PRINT=1 shows what the server answers, to write a new message's
# expectations (read them through before keeping them).
printing = os.environ.get("AGORA_CORPUS_PRINT")
failures = []
shown = []
for uid, n in enumerate(names, 1):
    typ, data = m.uid("FETCH", str(uid), "(ENVELOPE BODYSTRUCTURE PREVIEW)")
    assert typ == "OK", data
    got = flat(data)
    lines = open(os.path.join(corpus, n + ".expect"), encoding="utf-8").read().splitlines() if not printing else []
    if printing:
        shown.append("== " + n)
        shown.extend(k + " " + item(got, k) for k in ("ENVELOPE", "BODYSTRUCTURE", "PREVIEW"))
    for line in lines:
        kind, _, want = line.partition(" ")
        if kind in ("ENVELOPE", "BODYSTRUCTURE", "PREVIEW"):
            if item(got, kind) != want:
                failures.append(f"{n} {kind}\n  want {want}\n  got  {item(got, kind)}")
        elif kind == "SEARCH":
            key, _, word = want.partition(" ")
            m.literal = word.encode()
            typ, data = m.uid("SEARCH", "CHARSET", "UTF-8", key)
            if typ != "OK" or data[0].split() != [str(uid).encode()]:
                failures.append(f"{n} SEARCH {key} {word}: {typ} {data}")
        elif line.strip():
            failures.append(f"{n}: unknown expectation {line}")
assert not printing, "\n".join(shown)
assert not failures, "\n".join(failures)
m.logout()
print("ok")
"#;

#[test]
fn every_charset_reads_and_is_found() {
    if !have("python3") {
        return;
    }
    let a = Agora::start();
    a.cli_ok(&["user", "add", "corpus@example.org", "--password-stdin"], Some("corpus-secret\n"));
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/mime");
    let script = format!("import sys; sys.argv = ['', {:?}, {:?}]\n{CLIENT}", a.ip, corpus);
    python_ok(&script);
}
