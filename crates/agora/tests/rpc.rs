//! DCE/RPC with impacket, the Python DCE/RPC implementation: rpcdump against the
//! endpoint mapper on 135, rpcmap on the address book's port, the NSPI address book
//! read with NTLM at the integrity and privacy levels (thousands of rows in the
//! smallest fragments), tshark dissecting a capture of it, and refusals: wrong
//! passwords, accounts without NTLM, anonymous callers, garbage and oversized PDUs.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use agora_rpc::pdu::{self, Body, Context, Pdu, Syntax, Uuid};
use common::{Agora, have, run};

const PY: &str = "/usr/bin/python3";
const NSPI_PORT: &str = "16004";

fn script() -> String {
    format!("{}/tests/rpc_client.py", env!("CARGO_MANIFEST_DIR"))
}

fn is_root() -> bool {
    run("id", &["-u"], "").1.trim() == "0"
}

fn impacket() -> bool {
    if !have(PY) {
        return false;
    }
    let ok = run(PY, &["-c", "import impacket.dcerpc.v5.nspi"], "").0;
    if !ok {
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "python3-impacket is required");
        eprintln!("skipping: impacket not installed");
    }
    ok
}

/// A server with people to look up; the endpoint mapper on 135 itself when the tests
/// may bind it (rpcdump asks nowhere else).
fn server() -> Agora {
    let root = is_root();
    let a = Agora::start_with(|data| {
        if root {
            std::fs::write(data.join("agora.toml"), "[listeners.rpc]\nport = 135\n").unwrap();
        }
    });
    let user = |login: &str, name: &str, pw: &str, extra: &[&str]| {
        let mut args = vec!["user", "add", login, "--name", name, "--password-stdin"];
        args.extend_from_slice(extra);
        a.cli_ok(&args, Some(&format!("{pw}\n")));
    };
    user(
        "ann@example.org",
        "Ann Lee",
        "ann-pw",
        &["--title", "Engineer", "--department", "Research", "--phone", "+1 555 0100"],
    );
    user("bob@example.org", "Bob Stone", "bob-pw", &[]);
    user("annabel@example.org", "Annabel Secret", "annabel-pw", &["--hidden"]);
    a.cli_ok(&["domain", "add", "other.test"], None);
    user("carol@other.test", "Carol Other", "carol-pw", &[]);
    a.cli_ok(&["contact", "add", "ext@partner.test", "--name", "Ext Partner", "--domain", "example.org"], None);
    // NTLM for ann now; for annabel from her next login with the password (over IMAP).
    a.cli_ok(&["user", "ntlm", "ann@example.org", "--password-stdin"], Some("ann-pw\n"));
    a.cli_ok(&["user", "ntlm", "annabel@example.org"], None);
    let shown = a.cli_ok(&["user", "show", "annabel@example.org"], None);
    assert!(shown.contains("ntlm:         on, waiting for the password"), "{shown}");
    a
}

fn client(a: &Agora, user: &str, pw: &str, level: &str, extra: &[&str]) -> (bool, String) {
    let s = script();
    let mut args = vec![s.as_str(), a.ip.as_str(), NSPI_PORT, user, pw, "EXAMPLE", level];
    args.extend_from_slice(extra);
    run(PY, &args, "")
}

fn check_session(out: &str) {
    assert!(out.contains("\ndone"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let has = |l: &str| lines.contains(&l);
    // The hierarchy: the Global Address List, then each hosted domain below it.
    assert!(has("container Global Address List 0 0"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("container example.org ") && l.ends_with(" 1")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("container other.test ") && l.ends_with(" 1")), "{out}");
    // ANR: ann and bob's address resolve; hidden annabel and nobody do not.
    let mids: Vec<u32> = lines
        .iter()
        .find_map(|l| l.strip_prefix("resolve mids "))
        .unwrap()
        .split(' ')
        .map(|m| m.parse().unwrap())
        .collect();
    assert!(mids[0] > 2 && mids[1] > 2 && mids[0] != mids[1], "{out}");
    assert_eq!(&mids[2..], [0, 0], "annabel is hidden, nobody-here unknown: {out}");
    assert!(
        has(
            "resolved Ann Lee ann@example.org /o=Agora/ou=example.org/cn=Recipients/cn=ann ann Engineer Research +1 555 0100 6 0 PermanentEntryID"
        ),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.starts_with("resolved Bob Stone bob@example.org ")), "{out}");
    // GetMatches: by display-name prefix and by ANR; the hidden entry never.
    assert!(has("prefix ok [('Bob Stone', 'bob@example.org')]"), "{out}");
    assert!(has("prefix-hidden ok []"), "{out}");
    assert!(has("anr ok [('Ann Lee', 'ann@example.org')]"), "{out}");
    assert!(has("anr-hidden ok []"), "{out}");
    assert!(has("gal-hidden False"), "{out}");
    assert!(has("props Ann Lee ann@example.org"), "{out}");
    assert!(has("dn-to-mid True"), "{out}");
    assert!(has("referral mx.example.org"), "{out}");
    assert!(has("update-stat 3 3 0"), "{out}");
    assert!(has("compare True") && has("prop-list True"), "{out}");
    assert!(has("explicit ['Bob Stone', 'Ann Lee']"), "{out}");
    assert!(has("seek True Bob Stone"), "{out}");
}

#[test]
fn impacket_maps_and_reads_the_address_book() {
    if !impacket() {
        return;
    }
    let a = server();
    let root = is_root();
    let capture = if root && have("tshark") {
        let file = a.dir.path().join("rpc.pcap");
        let child = common::start_capture(&format!("host {}", a.ip), &file);
        Some((child, file))
    } else {
        None
    };

    // rpcdump against 135 lists the address book and its referral with their port.
    if root {
        let (ok, out) = run(PY, &["/usr/share/doc/python3-impacket/examples/rpcdump.py", "-port", "135", &a.ip], "");
        assert!(ok, "{out}");
        let binding = format!("ncacn_ip_tcp:{}[{NSPI_PORT}]", a.ip);
        assert!(out.contains("UUID    : F5CC5A18-4264-101A-8C59-08002B2F8426 v56.0 Address book (NSPI)"), "{out}");
        assert!(out.contains("UUID    : 1544F5E0-613C-11D1-93DF-00C04FD7BD09 v1.0 Address book referral"), "{out}");
        assert_eq!(out.matches(&binding).count(), 2, "{out}");
        assert!(out.contains("Received 2 endpoints"), "{out}");
    } else {
        eprintln!("rpcdump: not root, so the endpoint mapper is not on 135 (rpcdump asks nowhere else)");
    }
    // rpcmap finds them through the management interface of their endpoint.
    let target = format!("ncacn_ip_tcp:{}[{NSPI_PORT}]", a.ip);
    let (ok, out) = run(PY, &["/usr/share/doc/python3-impacket/examples/rpcmap.py", &target], "");
    assert!(ok, "{out}");
    for uuid in [
        "F5CC5A18-4264-101A-8C59-08002B2F8426 v56.0",
        "1544F5E0-613C-11D1-93DF-00C04FD7BD09 v1.0",
        "AFA8BD80-7D8A-11C9-BEF4-08002B102989 v1.0",
    ] {
        assert!(out.contains(&format!("UUID: {uuid}")), "{out}");
    }

    // NSPI with NTLM at packet integrity (what tshark can read) and privacy.
    let (ok, out) = client(&a, "ann", "ann-pw", "5", &[]);
    assert!(ok, "{out}");
    check_session(&out);
    assert!(out.contains("gal 5 sorted admin@example.org ann@example.org bob@example.org"), "{out}");

    if let Some((mut child, file)) = capture {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        child.wait().unwrap();
        let read = |filter: &str| {
            let (ok, out) = run(
                "tshark",
                &["-r", file.to_str().unwrap(), "-d", &format!("tcp.port=={NSPI_PORT},dcerpc"), "-Y", filter],
                "",
            );
            assert!(ok, "{out}");
            out.lines().filter(|l| !l.contains("Running as user")).map(str::to_string).collect::<Vec<_>>()
        };
        let dissected = read("nspi || epm || rfr");
        for what in ["NspiBind response", "NspiQueryRows response", "Lookup response", "RfrGetNewDSA response"] {
            assert!(dissected.iter().any(|l| l.contains(what)), "{what} not dissected: {dissected:#?}");
        }
        // Nothing malformed, save Wireshark's NSPI dissector reading NspiGetMatches
        // requests (the client's packets) with its Exchange 5.5 definition of the call.
        let malformed = read("_ws.malformed && !(dcerpc.opnum == 5 && dcerpc.pkt_type == 0)");
        assert!(malformed.is_empty(), "malformed packets: {malformed:#?}");
    }

    // Privacy, thousands of rows, and the smallest fragments both ways.
    let mut csv = String::from("mail,displayname\n");
    for i in 0..2500 {
        csv.push_str(&format!("p{i:04}@example.org,Person {i:04}\n"));
    }
    let file = a.dir.path().join("people.csv");
    std::fs::write(&file, csv).unwrap();
    a.cli_ok(&["user", "import", file.to_str().unwrap()], None);
    let (ok, out) = client(&a, "ann", "ann-pw", "6", &["small"]);
    assert!(ok, "{out}");
    check_session(&out);
    assert!(out.contains("gal 2505 sorted admin@example.org ann@example.org bob@example.org"), "{out}");
    assert!(out.contains("\nmany 200 True\n"), "{out}");
}

/// One bind to the endpoint mapper, as raw bytes.
fn epm_bind(max_frag: u16) -> Vec<u8> {
    let epm = Syntax { uuid: Uuid::parse("e1af8308-5d1f-11c9-91a4-08002b14a0fa").unwrap(), version: 3 };
    pdu::encode(&Pdu {
        flags: 3,
        call_id: 1,
        body: Body::Bind {
            max_xmit: max_frag,
            max_recv: max_frag,
            assoc_group: 0,
            contexts: vec![
                Context { id: 0, abstract_syntax: epm, transfer_syntaxes: vec![pdu::ndr64()] },
                Context { id: 1, abstract_syntax: epm, transfer_syntaxes: vec![pdu::ndr()] },
            ],
        },
        auth: None,
    })
    .unwrap()
}

/// Reads one fragment.
fn read_pdu(s: &mut TcpStream) -> Option<Pdu> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).ok()?;
    let len = pdu::fragment_length(&head).ok()?;
    let mut all = head.to_vec();
    all.resize(len, 0);
    s.read_exact(&mut all[16..]).ok()?;
    pdu::decode(&all).ok().map(|d| d.0)
}

fn connect(a: &Agora, port: u16) -> TcpStream {
    let s = TcpStream::connect((a.ip.as_str(), port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// True when the server closed the connection (EOF or reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[test]
fn refusals_and_bad_pdus() {
    if !impacket() {
        return;
    }
    let a = server();
    let epm_port = if is_root() { 135 } else { 10135 };
    // A wrong password, an account without NTLM, and a hidden account whose hash is
    // not kept yet: refused, the throttle's delay included.
    for (user, pw) in [("ann", "wrong"), ("bob", "bob-pw"), ("annabel", "annabel-pw")] {
        let (ok, out) = client(&a, user, pw, "6", &[]);
        assert!(!ok && out.contains("rpc_s_access_denied"), "{user}: {out}");
    }
    // Annabel logs in over IMAP once: her NT hash is kept, NTLM works for her, and she
    // still does not see herself in the address book.
    // (STARTTLS first: passwords in the clear are refused before TLS.)
    let login = format!(
        "import imaplib, ssl\nc = imaplib.IMAP4('{}', 10143)\nc.starttls(ssl._create_unverified_context())\nc.login('annabel@example.org', 'annabel-pw')\nc.logout()\nprint('ok')",
        a.ip
    );
    let (ok, out) = run(PY, &["-c", &login], "");
    assert!(ok && out.contains("ok"), "{out}");
    let (ok, out) = client(&a, "annabel", "annabel-pw", "6", &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("resolve mids ") && out.contains("anr-hidden ok []") && out.contains("gal-hidden False"),
        "{out}"
    );
    // Anonymous NTLM reaches the management interface, never the address book.
    let anon = "import sys\nfrom impacket.dcerpc.v5 import transport, nspi, rpcrt\nt = transport.DCERPCTransportFactory(sys.argv[1])\nd = t.get_dce_rpc()\nd.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)\nd.set_auth_level(6)\nd.connect()\nd.bind(nspi.MSRPC_UUID_NSPI)\ntry:\n    nspi.hNspiBind(d)\n    print('bound')\nexcept Exception as e:\n    print('refused', e)\n";
    let (_, out) = run(PY, &["-c", anon, &format!("ncacn_ip_tcp:{}[{NSPI_PORT}]", a.ip)], "");
    assert!(out.contains("refused") && out.contains("access_denied"), "{out}");

    // NDR64 alone is refused by provider rejection; NDR 2.0 in the next context taken.
    let mut s = connect(&a, epm_port);
    s.write_all(&epm_bind(4280)).unwrap();
    match read_pdu(&mut s).unwrap().body {
        Body::BindAck { results, max_xmit, .. } => {
            assert_eq!((results[0].result, results[0].reason), (2, 2), "NDR64 refused: {results:?}");
            assert_eq!(results[1].result, 0);
            assert_eq!(results[1].transfer_syntax, pdu::ndr());
            assert!(max_xmit <= 5840);
        }
        other => panic!("{other:?}"),
    }
    // A request on a context never accepted: a fault, and the association goes on.
    let req = |call_id: u32, context: u16, opnum: u16, stub: Vec<u8>| {
        pdu::encode(&Pdu {
            flags: 3,
            call_id,
            body: Body::Request { alloc_hint: stub.len() as u32, context, opnum, object: None, stub },
            auth: None,
        })
        .unwrap()
    };
    s.write_all(&req(2, 0, 2, vec![0; 44])).unwrap();
    assert!(matches!(read_pdu(&mut s).unwrap().body, Body::Fault { status: 0x1c01_0003, .. }), "unknown interface");
    s.write_all(&req(3, 1, 99, Vec::new())).unwrap();
    assert!(matches!(read_pdu(&mut s).unwrap().body, Body::Fault { status: 0x1c01_0002, .. }), "opnum out of range");
    // A lookup cut short: bad stub data, still a fault, not a hang-up.
    s.write_all(&req(4, 1, 2, vec![0; 5])).unwrap();
    assert!(matches!(read_pdu(&mut s).unwrap().body, Body::Fault { status: 0x6f7, .. }), "bad stub data");
    // A lookup for an interface nobody serves: EPT_S_NOT_REGISTERED.
    let mut stub = vec![1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    stub.extend_from_slice(&[0x11; 16]);
    stub.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0]);
    stub.extend_from_slice(&[0; 20]);
    stub.extend_from_slice(&[10, 0, 0, 0]);
    s.write_all(&req(5, 1, 2, stub)).unwrap();
    match read_pdu(&mut s).unwrap().body {
        Body::Response { stub, .. } => assert_eq!(stub[stub.len() - 4..], 0x16c9_a0d6u32.to_le_bytes()),
        other => panic!("{other:?}"),
    }
    // A fragment longer than the association agreed to: a fault and the end of it.
    let big = req(6, 1, 2, vec![0; 6000]);
    s.write_all(&big).unwrap();
    assert!(matches!(read_pdu(&mut s).map(|p| p.body), Some(Body::Fault { status: 0x1c01_000b, .. })));
    assert!(closed(&mut s));

    // Garbage, a truncated PDU, an oversized header, a fragment below the minimum size.
    let mut s = connect(&a, epm_port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed(&mut s), "garbage ends the connection");
    let mut s = connect(&a, epm_port);
    let bind = epm_bind(4280);
    s.write_all(&bind[..20]).unwrap();
    drop(s);
    let mut s = connect(&a, epm_port);
    let mut huge = vec![5, 0, 11, 3, 0x10, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0];
    huge.extend_from_slice(&[0xAB; 65519]);
    let _ = s.write_all(&huge);
    assert!(closed(&mut s), "an unreadable bind ends the connection");
    let mut s = connect(&a, epm_port);
    s.write_all(&epm_bind(512)).unwrap();
    assert!(matches!(read_pdu(&mut s).map(|p| p.body), Some(Body::BindNak { .. })), "fragments below 1432 are refused");

    // Others are served all along.
    let (ok, out) = client(&a, "ann", "ann-pw", "6", &[]);
    assert!(ok, "{out}");
    check_session(&out);
}

/// The address book on the first free port of a configured range: the endpoint
/// mapper tells which, and the firewall plan opens the range.
#[test]
fn the_address_book_takes_a_port_of_its_range() {
    if !impacket() {
        return;
    }
    let ip = common::unique_ip();
    let taken = std::net::TcpListener::bind((ip.as_str(), 17004)).unwrap();
    let a = Agora::start_on(ip, common::DOMAIN, |data| {
        std::fs::write(data.join("agora.toml"), "[listeners.nspi]\nports = \"17004-17006\"\n").unwrap();
    });
    let lookup = "import sys\nfrom impacket.dcerpc.v5 import transport, epm\nd = transport.DCERPCTransportFactory(sys.argv[1]).get_dce_rpc()\nd.connect()\nfor e in epm.hept_lookup(None, dce=d):\n    print(e['annotation'][:-1].decode(), epm.PrintStringBinding(e['tower']['Floors']))\n";
    let (ok, out) = run(PY, &["-c", lookup, &format!("ncacn_ip_tcp:{}[10135]", a.ip)], "");
    assert!(ok, "{out}");
    assert!(out.contains(&format!("Address book (NSPI) ncacn_ip_tcp:{}[17005]", a.ip)), "{out}");
    let plan = a.cli_ok(&["firewall", "--role", "single", "--format", "nftables"], None);
    assert!(plan.contains("tcp dport 17004-17006 accept comment \"nspi from anyone\""), "{plan}");
    assert!(plan.contains("tcp dport 135 accept"), "{plan}");
    drop(taken);
}
