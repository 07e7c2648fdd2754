//! The server's life cycle: first run, configuration errors, port conflicts, the
//! administration CLI against a running server, busy answers, SIGHUP and SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agora, BIN, DOMAIN, SmtpClient, have, run, spawn_server, unique_ip};

#[test]
fn first_run_creates_everything_and_prints_once() {
    let mut a = Agora::start();
    let data = a.data();
    assert!(a.admin_password.as_deref().is_some_and(|p| p.len() == 20), "{}", a.banner);
    assert!(a.banner.contains(&format!("smtp         {}:10025", a.ip)), "{}", a.banner);
    assert!(
        a.banner.contains(&format!("x400         {}:10102", a.ip)) && !a.banner.contains("not available yet"),
        "{}",
        a.banner
    );
    for f in ["agora.db", "agora.toml", "tls/cert.pem", "tls/key.pem", "blobs"] {
        assert!(data.join(f).exists(), "{f} missing");
    }
    let key_mode = std::fs::metadata(data.join("tls/key.pem")).unwrap().permissions().mode();
    assert_eq!(key_mode & 0o077, 0, "private key readable by others");
    let users = a.cli_ok(&["user", "list"], None);
    assert!(users.contains(&format!("admin@{DOMAIN}\tadmin")), "{users}");
    let show = a.cli_ok(&["user", "show", &format!("admin@{DOMAIN}")], None);
    for mb in ["INBOX", "Drafts \\Drafts", "Sent \\Sent", "Trash \\Trash", "Junk \\Junk", "Archive \\Archive"] {
        assert!(show.contains(&format!("mailbox:      {mb}")), "{mb} missing in {show}");
    }
    assert!(!show.contains("argon2"), "the password hash is never shown");
    // The first run ends with what to do next.
    assert!(a.banner.contains("Next steps:") && a.banner.contains(&format!("user add alice@{DOMAIN}")), "{}", a.banner);
    assert!(a.banner.contains("agora.toml") && a.banner.contains("swaks --server"), "{}", a.banner);

    assert!(a.stop().success(), "clean exit on SIGTERM");
    a.spawn();
    assert!(a.banner.contains("agora: ready"));
    assert!(!a.banner.contains("administrator password"), "password printed only once");
    assert!(!a.banner.contains("Next steps"), "next steps only on the first run");
}

/// A host name without a dot is never taken as the mail domain: the first run stops
/// and says how to name one; nothing is created.
#[test]
fn a_host_name_without_a_dot_is_no_mail_domain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .arg("--data")
        .arg(&data)
        .args(["serve", "--hostname", "vm", "--port-offset", "10000", "--bind", "127.0.0.1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    assert!(said.contains("\"vm\" has no dot") && said.contains("--domain"), "{said}");
    assert!(!data.join("agora.toml").exists() && !data.join("agora.db").exists(), "nothing made");
}

#[test]
fn malformed_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[server]\nhostname = \"x\"\n[limits]\nmax_connections = \"lots\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--port-offset", "10000", "--bind", &unique_ip()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml") && err.contains("line 4") && err.contains("limits.max_connections"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
}

#[test]
fn port_in_use_is_a_clear_error_and_nothing_starts() {
    let ip = unique_ip();
    let _holder = std::net::TcpListener::bind(format!("{ip}:10025")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--data").arg(dir.path().join("data"));
    let err = spawn_server(cmd, &ip).expect_err("must not start");
    assert!(err.contains("smtp") && err.contains("10025") && err.contains("--port-offset"), "{err}");
    assert!(!err.contains("agora: ready"));
}

#[test]
fn cli_changes_apply_to_running_server() {
    let a = Agora::start();
    let (mut c, _) = SmtpClient::connect(&a.smtp()).unwrap();
    c.cmd("EHLO t.test").unwrap();
    c.cmd("MAIL FROM:<x@remote.test>").unwrap();
    assert!(c.cmd("RCPT TO:<carol@example.org>").unwrap().starts_with("550 5.1.1"));
    c.cmd("RSET").unwrap();

    let added = Instant::now();
    a.cli_ok(&["user", "add", "carol@example.org", "--name", "Carol", "--password-stdin"], Some("s3cret-pass\n"));
    a.cli_ok(&["group", "add", "staff@example.org"], None);
    a.cli_ok(&["group", "member", "add", "staff@example.org", "carol@example.org"], None);
    a.cli_ok(&["group", "member", "add", "staff@example.org", "admin@example.org"], None);
    a.cli_ok(&["alias", "add", "info@example.org", "staff@example.org"], None);
    let r = c.send_message("x@remote.test", &["info@example.org"], "Subject: hi\r\n\r\nhello\r\n").unwrap();
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert!(added.elapsed() < Duration::from_secs(30));
    assert_eq!(a.inbox_count("carol@example.org"), 1);
    assert_eq!(a.inbox_count("admin@example.org"), 1);

    // Loops are refused with a one-line error and a non-zero exit.
    let out = a.cli(&["group", "member", "add", "carol@example.org", "staff@example.org"], None);
    assert!(!out.status.success());
    let out = a.cli(&["group", "add", "inner@example.org"], None);
    assert!(out.status.success());
    a.cli_ok(&["group", "member", "add", "inner@example.org", "staff@example.org"], None);
    let out = a.cli(&["group", "member", "add", "staff@example.org", "inner@example.org"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("loop"), "{err}");

    let out = a.cli(&["user", "add", "dave@nowhere.test", "--password-stdin"], Some("pw\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("domain nowhere.test not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    a.cli_ok(&["user", "remove", "carol@example.org"], None);
    let r = c.cmd("MAIL FROM:<x@remote.test>").unwrap();
    assert!(r.starts_with("250"));
    assert!(c.cmd("RCPT TO:<carol@example.org>").unwrap().starts_with("550 5.1.1"));
    let domains = a.cli_ok(&["domain", "list"], None);
    assert_eq!(domains.trim(), DOMAIN);
    let out = a.cli(&["domain", "remove", DOMAIN], None);
    assert!(!out.status.success(), "a domain with users is not removed");
}

#[test]
fn sigterm_says_421_and_exits_zero() {
    let mut a = Agora::start();
    let (mut c, greeting) = SmtpClient::connect(&a.smtp()).unwrap();
    assert!(greeting.starts_with("220 mx.example.org"));
    c.cmd("EHLO t.test").unwrap();
    a.signal("TERM");
    let bye = c.reply().unwrap();
    assert!(bye.starts_with("421 4.3.2"), "{bye}");
    assert!(a.wait(Duration::from_secs(20)).success());
    assert!(std::net::TcpStream::connect(a.smtp()).is_err(), "no longer listening");
}

#[test]
fn full_server_answers_busy() {
    let a = Agora::start_with(|data| {
        std::fs::write(
            data.join("agora.toml"),
            "[server]\nhostname = \"mx.example.org\"\ndomain = \"example.org\"\n[limits]\nmax_connections = 1\n",
        )
        .unwrap();
    });
    let (_first, g) = SmtpClient::connect(&a.smtp()).unwrap();
    assert!(g.starts_with("220"));
    let (_second, g2) = SmtpClient::connect(&a.smtp()).unwrap();
    assert!(g2.starts_with("421 4.3.2"), "{g2}");
}

#[test]
fn sighup_reloads_the_certificate() {
    if !have("openssl") {
        return;
    }
    let a = Agora::start();
    let served = |a: &Agora| {
        let (_, out) =
            run("openssl", &["s_client", "-starttls", "smtp", "-connect", &a.smtp(), "-showcerts"], "QUIT\r\n");
        out
    };
    // A line from inside the PEM body identifies the certificate served.
    let pem_line = |path: &std::path::Path| std::fs::read_to_string(path).unwrap().lines().nth(3).unwrap().to_string();
    let original = pem_line(&a.data().join("tls/cert.pem"));
    assert!(served(&a).contains(&original));
    let tmp = tempfile::tempdir().unwrap();
    let (c, k) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    agora_net::tls::ensure_self_signed(&c, &k, &["renewed.example.org".into()]).unwrap();
    let renewed = pem_line(&c);
    std::fs::copy(&c, a.data().join("tls/cert.pem")).unwrap();
    std::fs::copy(&k, a.data().join("tls/key.pem")).unwrap();
    a.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = served(&a);
        if out.contains(&renewed) {
            break;
        }
        assert!(Instant::now() < deadline, "certificate not reloaded: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ports_command_lists_the_whole_port_map() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(BIN).arg("--data").arg(dir.path()).args(["ports", "--port-offset", "10000"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for (svc, port) in
        [("smtp", 10025), ("imaps", 10993), ("ldap", 10389), ("gc", 13268), ("dns", 10053), ("rpc", 10135)]
    {
        assert!(text.lines().any(|l| l.starts_with(svc) && l.contains(&format!(":{port} "))), "{svc} missing: {text}");
    }
}

/// Completion scripts for each shell and man pages come from the command definitions:
/// every command is in them; bash takes the script and completes a subcommand.
#[test]
fn completions_and_man_pages() {
    let out = Command::new(BIN).args(["completions", "bash"]).output().unwrap();
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success() && script.contains("complete -F _agora") && script.contains("tls-report"), "{script}");
    for shell in ["zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("manpages"), "{shell}");
    }
    if have("bash") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agora.bash"), &script).unwrap();
        let probe = format!(
            "source {}/agora.bash; COMP_WORDS=(agora us); COMP_CWORD=1; _agora agora us agora; echo \"${{COMPREPLY[@]}}\"",
            dir.path().display()
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "user", "{}", String::from_utf8_lossy(&out.stderr));
    }
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let out = Command::new(BIN).args(["manpages", man.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(man.join("agora-user-add.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH agora-user-add 1"), "{page}");
    assert!(page.contains("password\\-stdin"), "the options are documented: {page}");
    assert!(man.join("agora.1").exists() && man.join("agora-serve.1").exists());
}

/// With `AGORA_LOG_FORMAT=json` every log line is a JSON object (time, level, message).
#[test]
fn json_logs_when_asked() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let ip = unique_ip();
    let mut child = Command::new(BIN)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("AGORA_LOG_FORMAT", "json")
        .env("AGORA_LOG", "info")
        .args(["serve", "--domain", DOMAIN, "--hostname", "mx.example.org", "--port-offset", "10000", "--bind", &ip])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.contains("agora: ready"));
    assert!(ready, "the server starts");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> =
        logs.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        lines.iter().any(|v| v["level"] == "INFO"
            && v["fields"]["message"].as_str().is_some_and(|m| m.contains("schema upgraded"))
            && v["timestamp"].is_string()),
        "{logs}"
    );
}

/// Under systemd (`Type=notify`): READY=1 with the main PID once every listener serves,
/// watchdog pings while the store commits, RELOADING=1 then READY=1 around a SIGHUP,
/// STOPPING=1 at SIGTERM.
#[test]
fn tells_the_service_manager_ready_alive_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let _dns = common::quiet_dns(dir.path(), &data);
    let path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).expect("a notice from the server");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ip = unique_ip();
    let mut cmd = Command::new(BIN);
    cmd.arg("--data").arg(&data).env("AGORA_LOG", "warn").env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "300000");
    let (mut child, banner) = spawn_server(cmd, &ip).unwrap_or_else(|e| panic!("{e}"));
    assert!(banner.contains("agora: ready"));
    let ready = next();
    assert!(ready.contains("READY=1") && ready.contains(&format!("MAINPID={}", child.id())), "{ready}");
    assert!(ready.contains("STATUS=serving example.org"), "{ready}");
    // Pings every half interval.
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    assert!(start.elapsed() < Duration::from_secs(3), "pings too slow: {:?}", start.elapsed());
    let signal =
        |sig: &str| assert!(Command::new("kill").arg(sig).arg(child.id().to_string()).status().unwrap().success());
    signal("-HUP");
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.starts_with("READY=1")) {
        seen.push(next());
    }
    let notices: Vec<&String> = seen.iter().filter(|m| *m != "WATCHDOG=1").collect();
    assert!(notices.len() == 2 && notices[0] == "RELOADING=1", "{seen:?}");
    signal("-TERM");
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert!(last.starts_with("STOPPING=1"), "{last}");
    assert!(child.wait().unwrap().success());
}
