//! Routing groups and connectors through `agora routing`: the topology kept in the
//! store, the table's versions and digest, the routes it gives, refusals.
#![allow(clippy::unwrap_used)]

mod common;

use common::Agora;

#[test]
fn topology_from_the_command_line() {
    let a = Agora::start();
    let ok = |args: &[&str]| a.cli_ok(&[&["routing"], args].concat(), None);
    ok(&["org", "acme"]);
    ok(&["group", "add", "A", "--domain", "a.example"]);
    ok(&["group", "add", "B"]);
    ok(&["group", "add", "C", "--domain", "c.example"]);
    ok(&["group", "member", "A", "a1", "--host", "127.0.0.11"]);
    ok(&["group", "member", "A", "a2", "--host", "127.0.0.12", "--smtp-port", "10025"]);
    ok(&["group", "member", "B", "b1", "--host", "127.0.0.13"]);
    ok(&["group", "member", "C", "c1", "--host", "127.0.0.14"]);
    ok(&["connector", "add", "ab", "--from", "A", "--to", "B", "--cost", "1", "--bridgeheads-from", "a1"]);
    ok(&["connector", "add", "bc", "--from", "B", "--to", "C", "--cost", "1"]);
    let said = ok(&["connector", "add", "ac", "--from", "A", "--to", "C", "--cost", "5"]);
    assert!(said.contains("routing table version 11.0"), "{said}");
    let show = ok(&["show"]);
    assert!(show.contains("route A -> C: A -[ab]-> B -[bc]-> C (cost 2)"), "{show}");
    assert!(show.contains("group A  master a1"), "{show}");
    assert!(show.contains("member a2  127.0.0.12  smtp 10025  routing 691"), "{show}");
    // A cheaper direct connector changes the route; a costlier one does not.
    ok(&["connector", "set", "ac", "--cost", "1"]);
    let show = ok(&["show"]);
    assert!(show.contains("route A -> C: A -[ac]-> C (cost 1)"), "{show}");
    // A schedule that never opens takes the connector out of every route.
    ok(&["connector", "set", "ac", "--schedule", "never"]);
    let show = ok(&["show"]);
    assert!(show.contains("route A -> C: A -[ab]-> B -[bc]-> C (cost 2)") && show.contains("schedule never"), "{show}");
    ok(&["connector", "set", "ac", "--schedule", "always"]);
    let bad = a.cli(&["routing", "connector", "set", "ac", "--schedule", "mon 25:00-26:00"], None);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--schedule"));
    let json: serde_json::Value = serde_json::from_str(&ok(&["show", "--json"])).unwrap();
    assert_eq!(json["version"]["major"], 14);
    assert_eq!(json["digest"].as_str().unwrap().len(), 64);
    assert_eq!(json["connectors"].as_array().unwrap().len(), 3);
    // Refusals, each in one line.
    for (args, says) in [
        (&["connector", "add", "aa", "--from", "A", "--to", "A"][..], "two different groups"),
        (&["connector", "add", "x", "--from", "A", "--to", "B", "--bridgeheads-to", "a1"][..], "not a member of B"),
        (&["connector", "add", "out", "--from", "A"][..], "needs --spaces"),
        (&["group", "member", "B", "a1", "--host", "h"][..], "is a member of A"),
        (&["group", "add", "bad name"][..], "letters, digits"),
        (&["group", "domain", "B", "c.example"][..], "is in C already"),
    ] {
        let out = a.cli(&[&["routing"], args].concat(), None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }
    // Removing a group takes its connectors with it.
    ok(&["group", "remove", "B"]);
    let show = ok(&["show"]);
    assert!(
        !show.contains("connector ab") && !show.contains("connector bc") && show.contains("connector ac"),
        "{show}"
    );
}

const SECRET: &str = "correct horse battery staple, routing";

/// A server of the organisation named `node`, its routing port on 10691.
fn member(node: &str, secret: &str) -> Agora {
    let (node, secret) = (node.to_string(), secret.to_string());
    Agora::start_with(move |data| {
        std::fs::write(data.join("routing.secret"), format!("{secret}\n")).unwrap();
        let cfg = format!("[routing]\nnode = \"{node}\"\nsecret_file = \"routing.secret\"\nsync_interval_secs = 2\n");
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
    })
}

fn digest(a: &Agora) -> String {
    let v: serde_json::Value = serde_json::from_str(&a.cli_ok(&["routing", "show", "--json"], None)).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

fn converge(servers: &[&Agora]) -> String {
    let start = std::time::Instant::now();
    loop {
        let d: Vec<String> = servers.iter().map(|a| digest(a)).collect();
        if d.windows(2).all(|w| w[0] == w[1]) {
            return d[0].clone();
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let shows: Vec<String> = servers.iter().map(|a| a.cli_ok(&["routing", "show"], None)).collect();
            panic!("tables did not converge: {d:?}\n{}", shows.join("\n----\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_group_shares_one_table_over_691() {
    let a1 = member("a1", SECRET);
    let a2 = member("a2", SECRET);
    // The topology is made on a member; its master learns it, then the master's
    // changes reach the member.
    let on = |a: &Agora, args: &[&str]| a.cli_ok(&[&["routing"], args].concat(), None);
    on(&a2, &["org", "acme"]);
    on(&a2, &["group", "add", "A"]);
    on(&a2, &["group", "member", "A", "a1", "--host", &a1.ip, "--routing-port", "10691", "--master"]);
    on(&a2, &["group", "member", "A", "a2", "--host", &a2.ip, "--routing-port", "10691"]);
    let first = converge(&[&a1, &a2]);
    on(&a1, &["group", "add", "B", "--domain", "b.example"]);
    on(&a1, &["connector", "add", "ab", "--from", "A", "--to", "B", "--cost", "3"]);
    let second = converge(&[&a1, &a2]);
    assert_ne!(first, second);
    let show = on(&a2, &["show"]);
    assert!(show.contains("connector ab  A -> B  cost 3  up"), "{show}");

    // A server without the secret learns nothing and changes nothing.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn agora_store::Store> =
        std::sync::Arc::new(agora_store::sql::SqlStore::open(dir.path()).unwrap());
    let impostor = agora_routing::table::Identity {
        node: "evil".into(),
        secret: std::sync::Arc::new(b"not the secret at all".to_vec()),
        interval: std::time::Duration::from_secs(1),
    };
    let err = rt.block_on(agora_routing::client::sync(&store, &impostor, &a1.ip, 10691)).unwrap_err();
    assert!(err.contains("not of this organisation"), "{err}");
    // …nor one that answers the server's proof with a made-up one of its own.
    let script = format!(
        "import socket, ssl\ns = socket.create_connection(('{ip}', 10691))\nf = s.makefile('rb')\nf.readline()\ns.sendall(b'HELLO x 00000000000000000000000000000000\\r\\n')\nprint(f.readline().decode().strip())\ns.sendall(b'STARTTLS\\r\\n')\nprint(f.readline().decode().strip())\nc = ssl._create_unverified_context()\nt = c.wrap_socket(s)\ng = t.makefile('rb')\nt.sendall(b'HELLO evil 00000000000000000000000000000000\\r\\n')\nprint(g.readline().decode().strip()[:3])\nt.sendall(b'PROVE ' + b'00' * 32 + b'\\r\\n')\nprint(g.readline().decode().strip())\n",
        ip = a1.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["530 STARTTLS first", "220 go ahead", "250", "535 not of this organisation"], "{out}");
    // Garbage ends the session; the server goes on.
    let mut s = std::net::TcpStream::connect((a1.ip.as_str(), 10691)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"\x16\x03\x01\x00\xa5garbage\r\n").unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.starts_with("220 a1 agora-routing 1") && got.contains("421 closing"), "{got:?}");
    assert_eq!(digest(&a1), second, "nothing changed");
    let ok = rt.block_on(agora_routing::client::sync(
        &store,
        &agora_routing::table::Identity {
            node: "a3".into(),
            secret: std::sync::Arc::new(SECRET.as_bytes().to_vec()),
            interval: std::time::Duration::from_secs(1),
        },
        &a1.ip,
        10691,
    ));
    assert_eq!(ok.map(|s| (s.peer, s.exchanged)), Ok(("a1".to_string(), true)), "a server with the secret is served");
}

/// A connector whose far side stops answering is marked down once the failures and
/// the damping time have passed, and up again the same way when it is back.
#[test]
fn a_dead_bridgehead_takes_its_connector_down_and_back() {
    let b1 = Agora::start();
    let a1 = Agora::start_with(|data| {
        std::fs::write(data.join("routing.secret"), format!("{SECRET}\n")).unwrap();
        let cfg = "[routing]\nnode = \"a1\"\nsecret_file = \"routing.secret\"\nsync_interval_secs = 1\n\
                   probe_interval_secs = 1\nprobe_retries = 2\ndamping_secs = 2\n";
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
    });
    let on = |args: &[&str]| a1.cli_ok(&[&["routing"], args].concat(), None);
    on(&["org", "acme"]);
    on(&["group", "add", "A"]);
    on(&["group", "add", "B", "--domain", "b.example"]);
    on(&["group", "member", "A", "a1", "--host", &a1.ip, "--routing-port", "10691"]);
    on(&["group", "member", "B", "b1", "--host", &b1.ip, "--smtp-port", "10025", "--routing-port", "10691"]);
    on(&["connector", "add", "ab", "--from", "A", "--to", "B", "--cost", "1"]);
    let state = |want: &str| {
        let start = std::time::Instant::now();
        loop {
            let show = on(&["show"]);
            if show.contains(&format!("connector ab  A -> B  cost 1  {want}")) {
                return start.elapsed();
            }
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "ab never became {want}: {show}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    state("up");
    let mut b1 = b1;
    b1.kill9();
    let took = state("down");
    assert!(took >= std::time::Duration::from_secs(2), "damped: {took:?}");
    let show = on(&["show"]);
    assert!(show.contains("route A -> B: unreachable"), "{show}");
    b1.spawn();
    state("up");
    assert!(on(&["show"]).contains("route A -> B: A -[ab]-> B (cost 1)"));
}

/// One server of the organisation `acme` for `domain`, named `node`, quick to notice
/// and to retry.
fn org_server(node: &str, domain: &str) -> Agora {
    org_server_with(node, domain, "")
}

/// `org_server` with more lines for `[transport]`.
fn org_server_with(node: &str, domain: &str, transport: &str) -> Agora {
    let (node, transport) = (node.to_string(), transport.to_string());
    Agora::start_for(domain, move |data| {
        std::fs::write(data.join("routing.secret"), format!("{SECRET}\n")).unwrap();
        let cfg = format!(
            "[routing]\nnode = \"{node}\"\nsecret_file = \"routing.secret\"\nsync_interval_secs = 1\n\
             probe_interval_secs = 1\nprobe_retries = 2\ndamping_secs = 3\n\n[transport]\nretry_secs = 1\npoll_secs = 1\n\
             {transport}"
        );
        std::fs::write(data.join("agora.toml"), cfg).unwrap();
    })
}

fn inbox(a: &Agora, login: &str) -> usize {
    let show = a.cli_ok(&["user", "show", login], None);
    show.lines()
        .find(|l| l.contains("INBOX"))
        .and_then(|l| l.rsplit_once('(').and_then(|(_, n)| n.split(' ').next()?.parse().ok()))
        .unwrap_or(0)
}

fn wait_inbox(a: &Agora, login: &str, n: usize) {
    let start = std::time::Instant::now();
    while inbox(a, login) < n {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{login} has {} of {n} messages",
            inbox(a, login)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(inbox(a, login), n, "no message twice");
}

fn submit(a: &Agora, subject: &str) {
    submit_sized(a, subject, 1);
}

/// Sends a message whose body is `lines` lines of 80 octets.
fn submit_sized(a: &Agora, subject: &str, lines: usize) {
    let script = format!(
        "import smtplib, ssl\ns = smtplib.SMTP('{ip}', 10587)\ns.starttls(context=ssl._create_unverified_context())\ns.login('ann@a.example', 'ann-pw')\nbody = ('x' * 78 + '\\r\\n') * {lines}\ns.sendmail('ann@a.example', ['carol@c.example'], 'From: ann@a.example\\r\\nTo: carol@c.example\\r\\nSubject: {subject}\\r\\n\\r\\n' + body)\ns.quit()\n",
        ip = a.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok, "{out}");
}

fn route_of(a: &Agora) -> String {
    let show = a.cli_ok(&["routing", "show"], None);
    show.lines().find(|l| l.starts_with("route A -> C:")).unwrap_or_default().to_string()
}

#[test]
fn mail_takes_the_cheapest_route_that_is_up() {
    let a1 = org_server("a1", "a.example");
    let a2 = org_server("a2", "a2.example");
    let mut b1 = org_server("b1", "b.example");
    let c1 = org_server("c1", "c.example");
    a1.cli_ok(&["user", "add", "ann@a.example", "--password-stdin"], Some("ann-pw\n"));
    c1.cli_ok(&["user", "add", "carol@c.example", "--password-stdin"], Some("carol-pw\n"));
    let on = |args: &[&str]| a1.cli_ok(&[&["routing"], args].concat(), None);
    on(&["org", "acme"]);
    on(&["group", "add", "A", "--domain", "a.example", "--domain", "a2.example"]);
    on(&["group", "add", "B", "--domain", "b.example"]);
    on(&["group", "add", "C", "--domain", "c.example"]);
    for (g, n, a) in [("A", "a1", &a1), ("A", "a2", &a2), ("B", "b1", &b1), ("C", "c1", &c1)] {
        on(&["group", "member", g, n, "--host", &a.ip, "--smtp-port", "10025", "--routing-port", "10691"]);
    }
    on(&[
        "connector",
        "add",
        "ab",
        "--from",
        "A",
        "--to",
        "B",
        "--cost",
        "1",
        "--bridgeheads-from",
        "a1",
        "--bridgeheads-to",
        "b1",
    ]);
    on(&["connector", "add", "bc", "--from", "B", "--to", "C", "--cost", "1"]);
    on(&["connector", "add", "ac", "--from", "A", "--to", "C", "--cost", "5", "--bridgeheads-from", "a1"]);
    // The other groups' servers join by asking a member for the table.
    for s in [&b1, &c1] {
        let out = s.cli_ok(&["routing", "join", &a1.ip, "--port", "10691"], None);
        assert!(out.contains("tables exchanged with a1"), "{out}");
    }
    converge(&[&a1, &a2]);
    assert!(route_of(&a1).contains("A -[ab]-> B -[bc]-> C (cost 2)"), "{}", route_of(&a1));

    // A to C goes through B; tshark sees the bridgeheads' SMTP sessions, whose link
    // state goes only inside TLS.
    let capture = (common::run("id", &["-u"], "").1.trim() == "0" && common::have("tshark")).then(|| {
        let file = a1.dir.path().join("smtp.pcap");
        let filter = format!("tcp port 10025 and (host {} or host {} or host {})", a1.ip, b1.ip, c1.ip);
        let child = common::start_capture(&filter, &file);
        (child, file)
    });
    submit(&a1, "through B");
    wait_inbox(&c1, "carol@c.example", 1);
    if let Some((mut child, file)) = capture {
        // Two link-state rounds between the bridgeheads besides the mail.
        std::thread::sleep(std::time::Duration::from_secs(3));
        let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
        child.wait().unwrap();
        let read = |filter: &str| {
            let f = file.to_str().unwrap();
            let (ok, out) = common::run("tshark", &["-r", f, "-d", "tcp.port==10025,smtp", "-Y", filter], "");
            assert!(ok, "{out}");
            out.lines().filter(|l| !l.contains("Running as user")).count()
        };
        assert!(read("smtp.req && frame contains \"STARTTLS\"") >= 2, "the bridgeheads talked SMTP");
        assert!(read("tls.handshake.type == 1") >= 2, "and TLS");
        assert_eq!(read("frame contains \"LINK2STATE\""), 0, "link state never in the clear");
    }
    let track = b1.cli_ok(&["track", "--recipient", "carol@c.example"], None);
    assert!(track.contains("via c1 over bc"), "B passed it on over bc: {track}");

    // B's bridgehead dies: after the damping time A routes to C directly, and what was
    // queued for the old path goes that way.
    b1.kill9();
    submit(&a1, "while B is down");
    let queue = a1.cli_ok(&["queue", "list"], None);
    if queue.contains("carol@c.example") {
        assert!(queue.contains("  route A -["), "the queue shows each entry's route: {queue}");
    }
    let start = std::time::Instant::now();
    while !route_of(&a1).contains("A -[ac]-> C (cost 5)") {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "{}", route_of(&a1));
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    wait_inbox(&c1, "carol@c.example", 2);
    let track = a1.cli_ok(&["track", "--recipient", "carol@c.example"], None);
    assert!(track.contains("via c1 over ac"), "{track}");

    // B is back: the route returns.
    b1.spawn();
    let start = std::time::Instant::now();
    while !route_of(&a1).contains("A -[ab]-> B -[bc]-> C (cost 2)") {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "{}", route_of(&a1));
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    submit(&a1, "B again");
    wait_inbox(&c1, "carol@c.example", 3);
    // Every server ends with the same table: the master's group over 691, the other
    // groups over X-LINK2STATE between bridgeheads.
    converge(&[&a1, &a2, &b1, &c1]);
    for s in [&a1, &a2, &b1, &c1] {
        assert_eq!(inbox(&c1, "carol@c.example"), 3);
        assert!(route_of(s).contains("A -[ab]-> B -[bc]-> C (cost 2)"), "{}", route_of(s));
    }
    // A message that passed through B already is held at A rather than sent through B
    // again (arriving in the group where its route ends would not be a loop).
    let script = format!(
        "import smtplib, ssl\ns = smtplib.SMTP('{ip}', 10587)\ns.starttls(context=ssl._create_unverified_context())\ns.login('ann@a.example', 'ann-pw')\ns.sendmail('ann@a.example', ['carol@c.example'], 'X-Agora-Routing: B\\r\\nFrom: ann@a.example\\r\\nSubject: loop\\r\\n\\r\\nround\\r\\n')\ns.quit()\n",
        ip = a1.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok, "{out}");
    let start = std::time::Instant::now();
    loop {
        let q = a1.cli_ok(&["queue", "list"], None);
        let id = q.split_whitespace().next().unwrap_or_default().to_string();
        if let Ok(id) = id.parse::<i64>() {
            let show = a1.cli_ok(&["queue", "show", &id.to_string()], None);
            if show.contains("would loop back into group B") {
                break;
            }
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "not held: {q}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(inbox(&c1, "carol@c.example"), 3, "the looping message did not arrive");
    // X-LINK2STATE is for the organisation's servers only.
    let script = format!(
        "import smtplib, ssl\ns = smtplib.SMTP('{ip}', 10025)\ns.starttls(context=ssl._create_unverified_context())\ns.ehlo('outsider.test')\nprint('offered' if s.has_extn('x-link2state') else 'not offered')\nprint(s.docmd('X-LINK2STATE HELLO evil ' + '00' * 16)[0])\n",
        ip = b1.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok && out.contains("not offered") && out.contains("502"), "{out}");

    // A size limit on ab: a large message goes the other way, a small one as before.
    on(&["connector", "set", "ab", "--max-size", "4000"]);
    submit_sized(&a1, "large", 100);
    wait_inbox(&c1, "carol@c.example", 4);
    let track = a1.cli_ok(&["track", "--recipient", "carol@c.example"], None);
    let last = track.lines().rfind(|l| l.contains("relayed")).unwrap_or_default().to_string();
    assert!(last.contains("via c1 over ac"), "{track}");
}

#[test]
fn mail_goes_to_another_server_of_the_far_group_when_one_is_down() {
    // a1 and b2 are in the table by name, resolved through a DNS server on loopback.
    let work = tempfile::tempdir().unwrap();
    let zone_file = work.path().join("zone.json");
    std::fs::write(&zone_file, "{}").unwrap();
    let (_dns, dns_ip) = common::dns_server(&zone_file);
    let ns = format!("nameservers = [\"{dns_ip}:10053\"]\n");
    let a1 = org_server_with("a1", "a.example", &ns);
    let mut b1 = org_server_with("b1", "b.example", &ns);
    let b2 = org_server_with("b2", "b2.example", &ns);
    let c1 = org_server_with("c1", "c.example", &ns);
    let zone = serde_json::json!({ "a1.acme.test/A": [a1.ip], "b2.acme.test/A": [b2.ip] });
    std::fs::write(&zone_file, zone.to_string()).unwrap();
    a1.cli_ok(&["user", "add", "ann@a.example", "--password-stdin"], Some("ann-pw\n"));
    c1.cli_ok(&["user", "add", "carol@c.example", "--password-stdin"], Some("carol-pw\n"));
    let on = |args: &[&str]| a1.cli_ok(&[&["routing"], args].concat(), None);
    on(&["org", "acme"]);
    on(&["group", "add", "A", "--domain", "a.example"]);
    on(&["group", "add", "B", "--domain", "b.example", "--domain", "b2.example"]);
    on(&["group", "add", "C", "--domain", "c.example"]);
    let names = ["a1.acme.test".to_string(), b1.ip.clone(), "b2.acme.test".to_string(), c1.ip.clone()];
    for ((g, n), host) in [("A", "a1"), ("B", "b1"), ("B", "b2"), ("C", "c1")].into_iter().zip(&names) {
        on(&["group", "member", g, n, "--host", host, "--smtp-port", "10025", "--routing-port", "10691"]);
    }
    // No bridgeheads named on B's side: any member of B takes mail, its master first.
    on(&["connector", "add", "ab", "--from", "A", "--to", "B", "--cost", "1"]);
    on(&["connector", "add", "bc", "--from", "B", "--to", "C", "--cost", "1"]);
    for s in [&b1, &b2, &c1] {
        s.cli_ok(&["routing", "join", &a1.ip, "--port", "10691"], None);
    }
    // b2 takes mail for C from a1 only because a1's name resolves to the address a1's
    // mail leaves from.
    submit(&a1, "through b1");
    wait_inbox(&c1, "carol@c.example", 1);
    let track = a1.cli_ok(&["track", "--recipient", "carol@c.example"], None);
    assert!(track.contains("via b1 over ab"), "{track}");

    // B's master dies: the connector stays up (b2 answers for B) and the next message
    // goes to b2 at once, without waiting for a new route.
    b1.kill9();
    submit(&a1, "through b2");
    wait_inbox(&c1, "carol@c.example", 2);
    let track = a1.cli_ok(&["track", "--recipient", "carol@c.example"], None);
    let last = track.lines().rfind(|l| l.contains("relayed")).unwrap_or_default().to_string();
    assert!(last.contains("via b2 over ab"), "{track}");
    assert!(route_of(&a1).contains("A -[ab]-> B -[bc]-> C (cost 2)"), "{}", route_of(&a1));
}

/// Sends a message from ann@a.example through `a`'s submission port to `to`.
fn submit_to(a: &Agora, to: &str, subject: &str) {
    let script = format!(
        "import smtplib, ssl\ns = smtplib.SMTP('{ip}', 10587)\ns.starttls(context=ssl._create_unverified_context())\ns.login('ann@a.example', 'ann-pw')\ns.sendmail('ann@a.example', ['{to}'], 'From: ann@a.example\\r\\nTo: {to}\\r\\nSubject: {subject}\\r\\n\\r\\nhello\\r\\n')\ns.quit()\n",
        ip = a.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok, "{out}");
}

#[test]
fn a_partner_domain_leaves_through_the_group_whose_connector_carries_it() {
    let work = tempfile::tempdir().unwrap();
    let zone_file = work.path().join("zone.json");
    std::fs::write(&zone_file, "{}").unwrap();
    let (_dns, dns_ip) = common::dns_server(&zone_file);
    let transport = format!("nameservers = [\"{dns_ip}:10053\"]\nmx_port = 10025\n");
    let a1 = org_server_with("a1", "a.example", &transport);
    let c1 = org_server_with("c1", "c.example", &transport);
    // A partner outside the organisation, reached by MX, for two domains.
    let partner = Agora::start_for("partner.example", |_| {});
    partner.cli_ok(&["domain", "add", "elsewhere.test"], None);
    partner.cli_ok(&["user", "add", "pat@partner.example", "--password-stdin"], Some("pat-password\n"));
    partner.cli_ok(&["user", "add", "eve@elsewhere.test", "--password-stdin"], Some("eve-password\n"));
    let zone = serde_json::json!({
        "partner.example/MX": ["10 mx.partner.example"],
        "elsewhere.test/MX": ["10 mx.partner.example"],
        "mx.partner.example/A": [partner.ip],
    });
    std::fs::write(&zone_file, zone.to_string()).unwrap();
    a1.cli_ok(&["user", "add", "ann@a.example", "--password-stdin"], Some("ann-pw\n"));
    let on = |args: &[&str]| a1.cli_ok(&[&["routing"], args].concat(), None);
    on(&["org", "acme"]);
    on(&["group", "add", "A", "--domain", "a.example"]);
    on(&["group", "add", "C", "--domain", "c.example"]);
    for (g, n, a) in [("A", "a1", &a1), ("C", "c1", &c1)] {
        on(&["group", "member", g, n, "--host", &a.ip, "--smtp-port", "10025", "--routing-port", "10691"]);
    }
    on(&["connector", "add", "ac", "--from", "A", "--to", "C", "--cost", "1"]);
    on(&["connector", "add", "partner", "--from", "C", "--spaces", "partner.example", "--cost", "1"]);
    c1.cli_ok(&["routing", "join", &a1.ip, "--port", "10691"], None);

    // The partner's domain goes by way of C, whose connector carries it.
    submit_to(&a1, "pat@partner.example", "to the partner");
    wait_inbox(&partner, "pat@partner.example", 1);
    let track = a1.cli_ok(&["track", "--recipient", "pat@partner.example"], None);
    assert!(track.contains("via c1 over ac: A -[ac]-> C -[partner]-> outside (cost 2)"), "{track}");
    // A domain no connector carries leaves A by its MX, as without routing.
    submit_to(&a1, "eve@elsewhere.test", "elsewhere");
    wait_inbox(&partner, "eve@elsewhere.test", 1);
    let track = a1.cli_ok(&["track", "--recipient", "eve@elsewhere.test"], None);
    assert!(track.contains("relayed") && !track.contains("via c1"), "{track}");
    // C relays for the organisation's servers only: an outsider gets no relay to the partner.
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('{ip}', 10025)\ns.ehlo('outsider.test')\ns.mail('x@outsider.test')\nprint(s.rcpt('pat@partner.example')[0])\n",
        ip = c1.ip
    );
    let (ok, out) = common::run("/usr/bin/python3", &["-c", &script], "");
    assert!(ok && out.trim().starts_with("55"), "{out}");
}
