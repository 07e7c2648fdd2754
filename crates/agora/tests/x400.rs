//! The X.400 MTA on 102 between two servers: the 1988 mode one way and the 1984 mode
//! the other, `agora x400 test`, Internet mail through X.400 with its headers and
//! attachment, a non-delivery coming back as a DSN, a partner down and back, transfers
//! cut short or sent twice, refusals at each layer, and tshark reading the captures.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use agora_x400::assoc::{Event, Initiator, Limits, Mode, Selectors};
use common::Agora;

const PASSWORD: &str = "x400-link-password";

/// A server for `domain` whose partner is the MTA at `peer_ip`, reached in `mode`.
fn mta(ip: &str, domain: &str, name: &str, or: &str, peer: (&str, &str, &str, &str, &str)) -> Agora {
    let (peer_ip, peer_name, peer_domain, peer_or, mode) = peer;
    let cfg = format!(
        "[transport]\nretry_secs = 1\npoll_secs = 1\n\n[x400]\nmta_name = \"{name}\"\nor_address = \"{or}\"\n\n\
         [x400.partners.peer]\nmta_name = \"{peer_name}\"\npassword_file = \"peer.secret\"\naddress = \"{peer_ip}:10102\"\n\
         mode = \"{mode}\"\ndomains = {{ \"{peer_domain}\" = \"{peer_or}O={o}/\" }}\n\n\
         [x400.partners.wrong]\nmta_name = \"NOBODY\"\npassword_file = \"wrong.secret\"\naddress = \"{peer_ip}:10102\"\n",
        o = peer_domain.split('.').next().unwrap().to_ascii_uppercase(),
    );
    Agora::start_on(ip.to_string(), domain, |data| {
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
        std::fs::write(data.join("peer.secret"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(data.join("wrong.secret"), "not-the-password\n").unwrap();
    })
}

fn wait_inbox(a: &Agora, login: &str, n: u32) {
    let start = Instant::now();
    while a.inbox_count(login) < n {
        assert!(start.elapsed() < Duration::from_secs(60), "{login} has {} of {n}", a.inbox_count(login));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(a.inbox_count(login), n, "nothing twice");
}

/// The newest message of a user's INBOX, over IMAP.
fn newest(a: &Agora, login: &str, password: &str) -> String {
    let script = format!(
        "import imaplib, ssl\nm = imaplib.IMAP4('{ip}', 10143)\nm.starttls(ssl._create_unverified_context())\nm.login('{login}', '{password}')\nm.select('INBOX')\n\
         typ, data = m.search(None, 'ALL')\nlast = data[0].split()[-1]\ntyp, msg = m.fetch(last, '(RFC822)')\nimport sys\nsys.stdout.write(msg[0][1].decode('utf-8', 'replace'))\n",
        ip = a.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok, "{out}");
    out
}

fn submit(a: &Agora, from: &str, password: &str, to: &str, message: &str) {
    let script = format!(
        "import smtplib, ssl, sys\ns = smtplib.SMTP('{ip}', 10587)\ns.starttls(context=ssl._create_unverified_context())\ns.login('{from}', '{password}')\ns.sendmail('{from}', ['{to}'], sys.stdin.read().encode())\ns.quit()\n",
        ip = a.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], message);
    assert!(ok, "{out}");
}

/// One association by hand: TPKTs over a socket.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(ip: &str) -> Raw {
        let tcp = TcpStream::connect((ip, 10102)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { tcp, buf: Vec::new() }
    }

    fn send(&mut self, tpdus: &[Vec<u8>]) {
        for t in tpdus {
            self.tcp.write_all(&agora_x400::tpkt::encode(t).unwrap()).unwrap();
        }
    }

    fn read(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Ok(Some((t, used))) = agora_x400::tpkt::decode(&self.buf) {
                let t = t.to_vec();
                self.buf.drain(..used);
                return Some(t);
            }
            let mut b = [0u8; 8192];
            match self.tcp.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
            }
        }
    }

    /// Runs the initiator until an event matches; the events seen.
    fn until(&mut self, i: &mut Initiator, done: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        while let Some(t) = self.read() {
            let (out, events) = i.receive(&t);
            self.send(&out);
            let stop = events.iter().any(&done);
            seen.extend(events);
            if stop {
                break;
            }
        }
        seen
    }
}

#[test]
fn two_mtas_exchange_mail_over_102_in_both_modes() {
    let (ip_a, ip_b) = (common::unique_ip(), common::unique_ip());
    let or_a = "/C=GB/ADMD= /PRMD=Acme/";
    let or_b = "/C=GB/ADMD= /PRMD=Beta/";
    let capture = (common::run("id", &["-u"], "").1.trim() == "0" && common::have("tshark")).then(|| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x400.pcap");
        let child = common::start_capture(&format!("tcp port 10102 and (host {ip_a} or host {ip_b})"), &file);
        (dir, file, child)
    });
    // A reaches B in the 1988 mode, B reaches A in the 1984 mode.
    let a = mta(&ip_a, "a.example", "MTA-A", or_a, (&ip_b, "MTA-B", "b.example", or_b, "1988"));
    let mut b = mta(&ip_b, "b.example", "MTA-B", or_b, (&ip_a, "MTA-A", "a.example", or_a, "1984"));
    a.cli_ok(&["domain", "x400", "a.example", "/C=GB/ADMD= /PRMD=Acme/O=A/"], None);
    let said = b.cli_ok(&["domain", "x400", "b.example", "/C=GB/ADMD= /PRMD=Beta/O=B/"], None);
    assert!(said.contains("/C=GB/ADMD= /PRMD=Beta/O=B/S=ann/"), "{said}");
    a.cli_ok(&["user", "add", "ann@a.example", "--name", "Ann Lee", "--password-stdin"], Some("ann-pw\n"));
    b.cli_ok(&["user", "add", "bob@b.example", "--name", "Bob Park", "--password-stdin"], Some("bob-pw\n"));

    // Each layer of each link, from the command line.
    let out = a.cli_ok(&["x400", "test", "peer"], None);
    assert!(out.contains("ok      P1 bind: bound to MTA MTA-B in 1988 mode") && out.contains("ACSE"), "{out}");
    let out = b.cli_ok(&["x400", "test", "peer"], None);
    assert!(out.contains("bound to MTA MTA-A in 1984 mode") && !out.contains("ACSE"), "{out}");
    let bad = a.cli(&["x400", "test", "wrong"], None);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success() && text.contains("FAILED  P1 bind: authentication error"), "{text}");

    // An Internet message from A's user to B's, through X.400, with an attachment.
    let message = "From: Ann Lee <ann@a.example>\r\nTo: Bob Park <bob@b.example>\r\nSubject: Caf\u{e9} at noon\r\n\
                   Message-ID: <lunch-1@a.example>\r\nImportance: high\r\nMIME-Version: 1.0\r\n\
                   Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
                   See you \u{e0} midi.\r\n--b\r\nContent-Type: application/pdf; name=\"menu.pdf\"\r\n\
                   Content-Disposition: attachment; filename=\"menu.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                   JVBERi0xLjQKbWVudQo=\r\n--b--\r\n";
    submit(&a, "ann@a.example", "ann-pw", "bob@b.example", message);
    wait_inbox(&b, "bob@b.example", 1);
    let got = newest(&b, "bob@b.example", "bob-pw");
    for want in [
        "From: Ann Lee <ann@a.example>",
        "Subject: =?UTF-8?B?",
        "Message-ID: <lunch-1@a.example>",
        "Importance: high",
        "X400-MTS-Identifier: [/C=GB/ADMD= /PRMD=Acme/;",
        "X400-Originator: /C=GB/ADMD= /PRMD=Acme/O=A/S=ann/",
        "with X.400 P1 (1988)",
        "JVBERi0xLjQKbWVudQo=",
        "Content-Type: application/pdf; name=\"menu.pdf\"",
    ] {
        assert!(got.contains(want), "{want}:\n{got}");
    }
    assert!(!got.contains("X400-Conversion-Note"), "the attachment went as a file, with its name: {got}");
    let track = a.cli_ok(&["track", "--recipient", "bob@b.example"], None);
    assert!(track.contains("via X.400 MTA MTA-B"), "{track}");

    // To nobody at B: B's refusal comes back over the 1984 link as a report, and A
    // gives Ann a DSN.
    submit(&a, "ann@a.example", "ann-pw", "nobody@b.example", "Subject: lost\r\n\r\nhello\r\n");
    wait_inbox(&a, "ann@a.example", 1);
    let dsn = newest(&a, "ann@a.example", "ann-pw");
    assert!(dsn.contains("report-type=delivery-status") && dsn.contains("nobody@b.example"), "{dsn}");
    assert!(dsn.contains("Status: 5.1.1") && dsn.contains("Action: failed"), "{dsn}");

    // B down: A keeps the message queued, and delivers it once B is back.
    b.stop();
    submit(&a, "ann@a.example", "ann-pw", "bob@b.example", "Subject: while you were out\r\n\r\nqueued\r\n");
    std::thread::sleep(Duration::from_secs(2));
    let q = a.cli_ok(&["queue", "list"], None);
    assert!(q.contains("bob@b.example"), "still queued: {q}");
    b.spawn();
    wait_inbox(&b, "bob@b.example", 2);

    // A transfer cut short leaves nothing; one sent twice (its confirmation lost) is
    // taken once.
    // A's view of the addresses, to make APDUs by hand as A would.
    let or = |t: &str| agora_x400::oraddr::OrAddress::parse(t).unwrap();
    let mapper_a = agora_x400::oraddr::Mapper {
        entries: vec![
            agora_x400::oraddr::Mapping { or: or("/C=GB/ADMD= /PRMD=Acme/O=A/"), domain: "a.example".into() },
            agora_x400::oraddr::Mapping { or: or("/C=GB/ADMD= /PRMD=Beta/O=B/"), domain: "b.example".into() },
        ],
        gateway: or(or_a),
    };
    let local_a = agora_x400::gateway::Local { domain: or(or_a), hostname: "a.example".into(), mta: "MTA-A".into() };
    let (m, _) = agora_x400::gateway::to_x400(
        "ann@a.example",
        &["bob@b.example".into()],
        b"From: ann@a.example\r\nSubject: twice\r\n\r\nonce only\r\n",
        &mapper_a,
        &local_a,
        "twice-1",
    )
    .unwrap();
    let apdu = agora_x400::p1::encode(&agora_x400::p1::MtsApdu::Message(m));
    let bind = agora_x400::p1::Bind::new("MTA-A", PASSWORD).unwrap();
    let open = |mode: Mode| {
        let mut raw = Raw::connect(&ip_b);
        let (mut i, out) =
            Initiator::new(mode, Selectors::default(), Selectors::default(), bind.clone(), Limits::default());
        raw.send(&out);
        let ev = raw.until(&mut i, |e| matches!(e, Event::Bound { .. } | Event::Refused(_) | Event::Aborted(_)));
        assert!(ev.iter().any(|e| matches!(e, Event::Bound { .. })), "{ev:?}");
        (raw, i)
    };
    let (mut raw, mut i) = open(Mode::Normal);
    let tpdus = i.transfer(&apdu);
    // Everything but the end of the activity, then the connection drops.
    raw.send(&tpdus[..tpdus.len() - 1]);
    drop(raw);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.inbox_count("bob@b.example"), 2, "a cut transfer is not taken");
    for mode in [Mode::Normal, Mode::X410] {
        let (mut raw, mut i) = open(mode);
        raw.send(&i.transfer(&apdu));
        let ev = raw.until(&mut i, |e| matches!(e, Event::Confirmed | Event::Aborted(_)));
        assert!(ev.contains(&Event::Confirmed), "{ev:?}");
        raw.send(&i.release());
        raw.until(&mut i, |e| matches!(e, Event::Released | Event::Aborted(_)));
    }
    wait_inbox(&b, "bob@b.example", 3);

    // A probe: B answers with a report (bob would get mail, nobody would not), which
    // reaches Ann as a DSN through A.
    use agora_x400::p1;
    let name = |a: &str| mapper_a.to_or(a).unwrap().to_p1().unwrap();
    let domain = agora_x400::gateway::gdi(&agora_x400::oraddr::OrAddress::parse(or_a).unwrap()).unwrap();
    let mut indicators = agora_x400::rasn::types::BitString::repeat(false, 8);
    indicators.set(0, true);
    let probe = p1::MtsApdu::Probe(p1::Probe {
        identifier: p1::MtsIdentifier { domain: domain.clone(), local: p1::ia5("probe-1").unwrap() },
        originator: name("ann@a.example"),
        original_eits: None,
        content_type_built_in: Some(p1::P22),
        content_type_extended: None,
        content_identifier: None,
        content_length: Some(100),
        per_message_indicators: None,
        per_domain_bilateral: None,
        trace: p1::TraceInformation(vec![]),
        extensions: None,
        recipients: ["bob@b.example", "nobody@b.example"]
            .iter()
            .enumerate()
            .map(|(i, r)| p1::PerRecipientProbeFields {
                recipient: name(r),
                originally_specified_number: i as i64 + 1,
                indicators: indicators.clone(),
                explicit_conversion: None,
                extensions: None,
            })
            .collect(),
    });
    let (mut raw, mut i) = open(Mode::Normal);
    raw.send(&i.transfer(&p1::encode(&probe)));
    let ev = raw.until(&mut i, |e| matches!(e, Event::Confirmed | Event::Aborted(_)));
    assert!(ev.contains(&Event::Confirmed), "{ev:?}");
    wait_inbox(&a, "ann@a.example", 2);
    let report = newest(&a, "ann@a.example", "ann-pw");
    assert!(report.contains("X400-Subject-Identifier: [/C=GB/ADMD= /PRMD=Acme/;probe-1]"), "{report}");
    assert!(report.contains("Final-Recipient: rfc822; bob@b.example\r\nAction: delivered"), "{report}");
    assert!(report.contains("Final-Recipient: rfc822; nobody@b.example\r\nAction: failed"), "{report}");
    // A message whose trace names B's domain already has looped: reported, not delivered.
    let (mut m, _) = agora_x400::gateway::to_x400(
        "ann@a.example",
        &["bob@b.example".into()],
        b"From: ann@a.example\r\nSubject: round and round\r\n\r\nloop\r\n",
        &mapper_a,
        &local_a,
        "loop-1",
    )
    .unwrap();
    let mut seen_at_b = m.envelope.trace.0[0].clone();
    seen_at_b.domain = agora_x400::gateway::gdi(&agora_x400::oraddr::OrAddress::parse(or_b).unwrap()).unwrap();
    m.envelope.trace.0.insert(0, seen_at_b);
    let (mut raw, mut i) = open(Mode::X410);
    raw.send(&i.transfer(&p1::encode(&p1::MtsApdu::Message(m))));
    let ev = raw.until(&mut i, |e| matches!(e, Event::Confirmed | Event::Aborted(_)));
    assert!(ev.contains(&Event::Confirmed), "{ev:?}");
    wait_inbox(&a, "ann@a.example", 3);
    let report = newest(&a, "ann@a.example", "ann-pw");
    assert!(report.contains("Status: 5.4.6"), "{report}");
    assert_eq!(b.inbox_count("bob@b.example"), 3, "the looping message was not delivered");

    // Bob's mail client sends a read receipt for the lunch message: it crosses as an
    // X.400 receipt notification and reaches Ann as an MDN about the same message.
    let mdn = "From: bob@b.example\r\nTo: ann@a.example\r\nSubject: Read: lunch\r\nMIME-Version: 1.0\r\n\
               Content-Type: multipart/report; report-type=disposition-notification; boundary=z\r\n\r\n\
               --z\r\nContent-Type: text/plain\r\n\r\nDisplayed.\r\n--z\r\nContent-Type: message/disposition-notification\r\n\r\n\
               Reporting-UA: mua.b.example; Test\r\nFinal-Recipient: rfc822; bob@b.example\r\n\
               Original-Message-ID: <lunch-1@a.example>\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--z--\r\n";
    submit(&b, "bob@b.example", "bob-pw", "ann@a.example", mdn);
    wait_inbox(&a, "ann@a.example", 4);
    let receipt = newest(&a, "ann@a.example", "ann-pw");
    assert!(receipt.contains("report-type=disposition-notification"), "{receipt}");
    assert!(
        receipt.contains("Original-Message-ID: <lunch-1@a.example>") && receipt.contains("; displayed"),
        "{receipt}"
    );

    // B killed while a large message is on its way: after B restarts, the message
    // arrives once (A sends it again under the same MTS identifier; B either never
    // took it or knows it).
    let big = format!(
        "From: ann@a.example\r\nTo: bob@b.example\r\nSubject: the big one\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n\
         --z\r\nContent-Type: application/octet-stream; name=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--z--\r\n",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n".repeat(60_000)
    );
    submit(&a, "ann@a.example", "ann-pw", "bob@b.example", &big);
    std::thread::sleep(Duration::from_millis(300));
    b.kill9();
    b.spawn();
    wait_inbox(&b, "bob@b.example", 4);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.inbox_count("bob@b.example"), 4, "the big message arrived once");
    let track = a.cli_ok(&["track", "--recipient", "bob@b.example"], None);
    eprintln!("the big message: {}", track.lines().filter(|l| l.contains("deferred")).collect::<Vec<_>>().join(" | "));

    // Refusals at each layer: garbage TPKT version (the connection ends), a wrong bind.
    let mut raw = Raw::connect(&ip_b);
    raw.tcp.write_all(&[9, 0, 0, 7, 2, 0xf0, 0x80]).unwrap();
    assert!(raw.read().is_none(), "not a TPKT: closed");
    let mut raw = Raw::connect(&ip_b);
    let wrong = agora_x400::p1::Bind::new("MTA-A", "guess").unwrap();
    let (mut i, out) =
        Initiator::new(Mode::Normal, Selectors::default(), Selectors::default(), wrong, Limits::default());
    raw.send(&out);
    let ev = raw.until(&mut i, |e| matches!(e, Event::Refused(_) | Event::Aborted(_) | Event::Bound { .. }));
    assert!(
        ev.iter().any(|e| matches!(e, Event::Refused(f) if f.layer == "P1 bind" && f.what == "authentication error")),
        "{ev:?}"
    );
    // B still serves after all that.
    let out = a.cli_ok(&["x400", "test", "peer"], None);
    assert!(out.contains("the link to MTA-B works"), "{out}");

    if let Some((_dir, file, mut child)) = capture {
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
        child.wait().unwrap();
        let f = file.to_str().unwrap();
        let read = |filter: &str| {
            let (ok, out) = common::run("tshark", &["-r", f, "-d", "tcp.port==10102,tpkt", "-Y", filter], "");
            assert!(ok, "{out}");
            out.lines()
                .filter(|l| !l.contains("Running as user") && !l.starts_with("tshark:"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert!(!read("cotp.type == 0x0e").is_empty(), "COTP connection requests");
        assert!(!read("ses").is_empty() && !read("pres").is_empty() && !read("rtse").is_empty());
        assert!(!read("acse.aarq_element").is_empty(), "the 1988 mode's AARQ");
        // P1's binds in both modes, with the MTA names; the refused one as its error.
        let p1 = read("p1").join("\n");
        assert!(p1.contains("Bind-Argument MTA-A simple") && p1.contains("Bind-Result MTA-B simple"), "{p1}");
        assert!(p1.contains("Bind-Argument MTA-B simple") && p1.contains("Bind-Result MTA-A simple"), "{p1}");
        assert!(p1.contains("Bind-Error (authentication-error)"), "{p1}");
        assert!(!read("ses.type == 45").is_empty() && !read("ses.type == 42").is_empty(), "activities");
        // The transfers themselves in the 1988 mode: P1 envelopes and the P22 content
        // (the subject in T.61, the attachment as a file transfer body part).
        assert!(p1.contains("Transfer probe"), "{p1}");
        let fields = |filter: &str, field: &str| {
            let f = file.to_str().unwrap();
            let args = ["-r", f, "-d", "tcp.port==10102,tpkt", "-Y", filter, "-T", "fields", "-e", field];
            common::run("tshark", &args, "").1
        };
        assert!(fields("p22", "p22.subject").contains("Caf\u{e9} at noon"), "{}", fields("p22", "p22.subject"));
        assert!(fields("p22", "p1.surname").contains("bob"));
        assert!(!read("p22 && frame contains \"menu.pdf\"").is_empty(), "the file's name in the IPM");
        // Nothing is malformed, in either mode.
        let malformed = read("_ws.malformed");
        assert!(malformed.is_empty(), "{malformed:?}");
    }
}
