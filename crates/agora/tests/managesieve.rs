//! Real ManageSieve clients against the real binary: Debian's sieve-connect over
//! STARTTLS (upload, list, activate, download, checkscript, delete, deactivate), and a
//! Python client on a socket for what sieve-connect does not do (RENAMESCRIPT,
//! HAVESPACE, the response codes, SCRAM-SHA-256 without TLS, UNAUTHENTICATE).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Agora, have, python_ok, run};

const USER: &str = "sieve@example.org";
const PASSWORD: &str = "sieve-secret";
const VACATION: &str = "require [\"vacation\"];\r\nvacation :days 7 \"I am away.\";\r\n";
const REPORTS: &str =
    "require \"fileinto\";\r\nif header :contains \"subject\" \"report\" {\r\n  fileinto \"Reports\";\r\n}\r\n";

fn server() -> Agora {
    let a = Agora::start();
    a.cli_ok(&["user", "add", USER, "--password-stdin"], Some(&format!("{PASSWORD}\n")));
    a
}

/// Runs sieve-connect as the user over STARTTLS (refusing to go on without TLS; the
/// test's certificate is self-signed), the password on a descriptor of its own.
fn sieve_connect(a: &Agora, dir: &Path, args: &[&str]) -> (bool, String) {
    let password = dir.join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let mut all = vec![
        "-c",
        "exec sieve-connect \"$@\" 3<\"$0\"",
        password.to_str().unwrap(),
        "--server",
        &a.ip,
        "--port",
        "14190",
        "--nosrv",
        "--noclearchan",
        "--notlsverify",
        "--user",
        USER,
        "--authmech",
        "PLAIN",
        "--passwordfd",
        "3",
    ];
    all.extend_from_slice(args);
    run("sh", &all, "")
}

#[test]
fn sieve_connect_manages_scripts_over_starttls() {
    if !have("sieve-connect") {
        return;
    }
    let a = server();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let vacation = file("vacation.sieve", VACATION);
    let reports = file("reports.sieve", REPORTS);
    let broken = file("broken.sieve", "keep;\r\nif true {\r\n");
    let sc = |args: &[&str]| sieve_connect(&a, dir.path(), args);

    let (ok, out) = sc(&["--upload", "--localsieve", &vacation, "--remotesieve", "vacation"]);
    assert!(ok, "{out}");
    let (ok, out) = sc(&["--upload", "--localsieve", &reports, "--remotesieve", "reports"]);
    assert!(ok, "{out}");
    let (ok, out) = sc(&["--list"]);
    assert!(ok && out.lines().collect::<Vec<_>>() == ["\"reports\"", "\"vacation\""], "{out}");

    let (ok, out) = sc(&["--activate", "--remotesieve", "vacation"]);
    assert!(ok, "{out}");
    let (ok, out) = sc(&["--list"]);
    assert!(ok && out.contains("\"vacation\" ACTIVE") && !out.contains("\"reports\" ACTIVE"), "{out}");

    let (ok, out) = sc(&["--download", "--remotesieve", "vacation", "--localsieve", "-"]);
    assert!(ok && out == VACATION, "{out:?}");

    // CHECKSCRIPT: a sound script passes, a broken one is refused with its line.
    let (ok, out) = sc(&["--checkscript", "--localsieve", &reports]);
    assert!(ok, "{out}");
    let (ok, out) = sc(&["--checkscript", "--localsieve", &broken]);
    assert!(!ok && out.contains("CHECKSCRIPT failed: NO \"line "), "{out}");
    let (ok, out) = sc(&["--upload", "--localsieve", &broken, "--remotesieve", "broken"]);
    assert!(!ok && out.contains("NO \"line "), "{out}");

    // The active script stays until deactivated.
    let (ok, out) = sc(&["--delete", "--remotesieve", "vacation"]);
    assert!(!ok && out.contains("NO (ACTIVE)"), "{out}");
    let (ok, out) = sc(&["--delete", "--remotesieve", "reports"]);
    assert!(ok, "{out}");
    let (ok, out) = sc(&["--deactivate"]);
    assert!(ok, "{out}");
    let (ok, out) = sc(&["--delete", "--remotesieve", "vacation"]);
    assert!(ok, "{out}");
    let (ok, out) = sc(&["--list"]);
    assert!(ok && out.trim().is_empty(), "{out}");
}

#[test]
fn python_client_renames_checks_space_and_logs_in_every_way() {
    if !have("python3") {
        return;
    }
    let a = server();
    let script = format!(
        r#"
import base64, hashlib, hmac, os, re, socket, ssl
ip, user, password = "{ip}", "{user}", "{password}"
b64 = lambda b: base64.b64encode(b).decode()

class Client:
    def __init__(self):
        self.s = socket.create_connection((ip, 14190), timeout=20)
        self.f = self.s.makefile("rb")
        self.greeting = self.response()
    def starttls(self):
        assert self.cmd("STARTTLS")[-1].startswith("OK"), "STARTTLS"
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        self.s = ctx.wrap_socket(self.s, server_hostname="mx.example.org")
        self.f = self.s.makefile("rb")
        return self.response()  # the capabilities again, unasked
    def send(self, text):
        self.s.sendall(text.encode())
    def line(self):
        l = self.f.readline()
        assert l, "connection closed"
        m = re.search(rb"\{{(\d+)\}}\r\n$", l)
        if m:
            l += self.f.read(int(m.group(1))) + self.f.readline()
        return l.decode()
    def response(self):
        lines = []
        while True:
            lines.append(self.line())
            if re.match(r"(OK|NO|BYE)\b", lines[-1]):
                return lines
    def cmd(self, text):
        self.send(text + "\r\n")
        return self.response()
    def literal(self, text):
        return "{{%d+}}\r\n%s" % (len(text.encode()), text)

# Before TLS: STARTTLS offered, only SCRAM, PLAIN refused as needing encryption.
c = Client()
caps = "".join(c.greeting)
assert '"STARTTLS"' in caps and '"SASL" "SCRAM-SHA-256"\r\n' in caps, caps
assert '"IMPLEMENTATION" "Agora"' in caps and '"VERSION" "1.0"' in caps, caps
r = c.cmd('AUTHENTICATE "PLAIN" "%s"' % b64(("\0" + user + "\0" + password).encode()))
assert r[-1].startswith("NO (ENCRYPT-NEEDED)"), r

# SCRAM-SHA-256 in the clear: the password never crosses the wire.
cnonce = b64(os.urandom(12))
first_bare = "n=" + user + ",r=" + cnonce
c.send('AUTHENTICATE "SCRAM-SHA-256" "%s"\r\n' % b64(("n,," + first_bare).encode()))
server_first = base64.b64decode(c.line().strip().strip('"')).decode()
attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
assert attrs["r"].startswith(cnonce)
salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
stored = hashlib.sha256(client_key).digest()
without_proof = "c=biws,r=" + attrs["r"]
auth = ",".join([first_bare, server_first, without_proof]).encode()
proof = bytes(x ^ y for x, y in zip(client_key, hmac.new(stored, auth, "sha256").digest()))
final = without_proof + ",p=" + b64(proof)
c.send(c.literal(b64(final.encode())) + "\r\n")
server_final = base64.b64decode(c.line().strip().strip('"'))
server_sig = hmac.new(hmac.new(salted, b"Server Key", "sha256").digest(), auth, "sha256").digest()
assert server_final == b"v=" + base64.b64encode(server_sig), server_final
r = c.cmd('""')
assert r == ['OK "Logged in"\r\n'], r
caps = "".join(c.cmd("CAPABILITY"))
assert '"OWNER" "%s"' % user in caps and '"SASL"' not in caps, caps

# Scripts: put, space, rename (the active one stays active), get, the response codes.
r = c.cmd('PUTSCRIPT "Ärger" ' + c.literal({reports:?}))
assert r == ['OK "Putscript completed"\r\n'], r
assert c.cmd('PUTSCRIPT "other" "keep;"')[-1].startswith("OK")
assert c.cmd('HAVESPACE "next" 1000')[-1].startswith("OK")
assert c.cmd('HAVESPACE "next" 2000000')[-1].startswith("NO (QUOTA/MAXSIZE)")
assert c.cmd('SETACTIVE "Ärger"')[-1].startswith("OK")
assert c.cmd('RENAMESCRIPT "Ärger" "other"')[-1].startswith("NO (ALREADYEXISTS)")
assert c.cmd('RENAMESCRIPT "missing" "x"')[-1].startswith("NO (NONEXISTENT)")
assert c.cmd('RENAMESCRIPT "Ärger" "reports"') == ['OK "Renamescript completed"\r\n']
assert c.cmd("LISTSCRIPTS") == ['"other"\r\n', '"reports" ACTIVE\r\n', 'OK "Listscripts completed"\r\n']
r = c.cmd('GETSCRIPT "reports"')
assert r[0] == "{{%d}}\r\n%s\r\n" % (len({reports:?}), {reports:?}) and r[1].startswith("OK"), r
assert c.cmd('GETSCRIPT "Ärger"')[-1].startswith("NO (NONEXISTENT)")
assert c.cmd('DELETESCRIPT "reports"')[-1].startswith("NO (ACTIVE)")
r = c.cmd("CHECKSCRIPT " + c.literal("if true {{\r\n"))
assert re.match(r'NO "line \d+: ', r[-1]), r
assert c.cmd('NOOP "tag-1"') == ['OK (TAG "tag-1") "Done"\r\n']
assert c.cmd("UNAUTHENTICATE")[-1].startswith("OK")
assert c.cmd("LISTSCRIPTS")[-1].startswith("NO")
assert c.cmd("LOGOUT")[-1].startswith("OK")

# STARTTLS, then PLAIN with the credentials as a literal; what the first session left.
c = Client()
caps = "".join(c.starttls())
assert '"SASL" "SCRAM-SHA-256 PLAIN LOGIN"' in caps and '"STARTTLS"' not in caps, caps
r = c.cmd('AUTHENTICATE "PLAIN" ' + c.literal(b64(("\0" + user + "\0" + password).encode())))
assert r == ['OK "Logged in"\r\n'], r
assert c.cmd("LISTSCRIPTS") == ['"other"\r\n', '"reports" ACTIVE\r\n', 'OK "Listscripts completed"\r\n']
assert c.cmd('SETACTIVE ""')[-1].startswith("OK")
assert c.cmd('DELETESCRIPT "reports"')[-1].startswith("OK")
assert c.cmd("LOGOUT")[-1].startswith("OK")
print("ok")
"#,
        ip = a.ip,
        user = USER,
        password = PASSWORD,
        reports = REPORTS,
    );
    python_ok(&script);
}

#[test]
fn shutdown_says_bye_with_trylater() {
    if !have("python3") {
        return;
    }
    let mut a = server();
    let script = format!(
        r#"
import socket, sys, time
s = socket.create_connection(("{ip}", 14190), timeout=20)
f = s.makefile("rb")
while not f.readline().startswith(b"OK"):
    pass
print("connected", flush=True)
line = f.readline()
assert line.startswith(b"BYE (TRYLATER)"), line
print("ok")
"#,
        ip = a.ip
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert_eq!(first.trim(), "connected");
    assert!(a.stop().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success() && rest.contains("ok"), "{rest}");
}
