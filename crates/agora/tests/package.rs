//! The Debian package: made by `scripts/build-deb` (cargo-deb) from the binary these
//! tests run, installed with `dpkg -i`, its unit checked by `systemd-analyze verify`,
//! and the installed binary serving as the `agora` user with CAP_NET_BIND_SERVICE and
//! nothing else (started by setpriv, as systemd is not PID 1 here): port 25, no root.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{have, unique_ip, wait_ready};

/// Runs a command as root (directly, or through sudo when the tests are not root).
fn root(args: &[&str]) -> (bool, String) {
    let me = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|u| u.split_whitespace().next().unwrap().to_string()))
        .unwrap();
    let mut cmd = if me == "0" {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(args[0]);
        c
    };
    let out = cmd.args(&args[1..]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn root_ok(args: &[&str]) -> String {
    let (ok, out) = root(args);
    assert!(ok, "{args:?}: {out}");
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_package_installs_and_serves_as_the_agora_user_on_port_25() {
    for tool in ["dpkg", "setpriv", "systemd-analyze", "cargo-deb"] {
        if !have(tool) {
            return;
        }
    }
    // The package of the binary under test (the build the tests already made).
    let out = Command::new(repo().join("scripts/build-deb")).arg("--dev").output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "build-deb: {said}");
    let deb = said.lines().rev().find(|l| l.trim().ends_with(".deb")).expect("the .deb's path").trim().to_string();
    let contents = Command::new("dpkg-deb").args(["--contents", &deb]).output().unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout);
    for f in ["./usr/bin/agora", "./etc/agora/agora.toml", "agora.service", "./usr/share/man/man1/agora.1.gz"] {
        assert!(contents.contains(f), "{f} not in the package: {contents}");
    }

    // A clean state, then dpkg -i.
    let _ = root(&["dpkg", "--purge", "agora"]);
    let installed = root_ok(&["dpkg", "-i", &deb]);
    assert!(installed.contains("systemctl start agora"), "the next steps are printed: {installed}");
    let unit = ["/lib/systemd/system/agora.service", "/usr/lib/systemd/system/agora.service"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the unit is installed");
    let unit_text = std::fs::read_to_string(unit).unwrap();
    for line in [
        "Type=notify",
        "User=agora",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/agora",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
    ] {
        assert!(unit_text.contains(line), "{line} missing from the unit");
    }
    let (ok, verify) = root(&["systemd-analyze", "verify", unit]);
    assert!(ok, "systemd-analyze verify: {verify}");
    let passwd = root_ok(&["getent", "passwd", "agora"]);
    assert!(passwd.contains("/var/lib/agora") && passwd.contains("nologin"), "{passwd}");
    let stat = root_ok(&["stat", "-c", "%U:%G %a", "/var/lib/agora", "/etc/agora/agora.toml"]);
    assert_eq!(stat.lines().collect::<Vec<_>>(), ["agora:agora 700", "root:agora 640"], "{stat}");
    let config = std::fs::read_to_string("/etc/agora/agora.toml").unwrap();
    assert!(config.contains("# domain = \"example.org\""), "the domain is left to the administrator");

    // The installed binary as the agora user, with the unit's one capability.
    let data = format!("/var/lib/agora/test-{}", std::process::id());
    root_ok(&["install", "-d", "-o", "agora", "-g", "agora", "-m", "0700", &data]);
    let ip = unique_ip();
    let mut cmd = Command::new("setpriv");
    let as_agora = |cmd: &mut Command, caps: bool| {
        cmd.args(["--reuid=agora", "--regid=agora", "--init-groups", "--no-new-privs"]);
        if caps {
            cmd.args(["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]);
        }
        cmd.args(["--bounding-set=-all,+net_bind_service", "/usr/bin/agora", "--data", &data]);
        cmd.args(["--config", "/etc/agora/agora.toml", "serve", "--domain", "example.org"]);
        cmd.args(["--hostname", "mx.example.org", "--bind", &ip]).env("AGORA_LOG", "warn");
    };
    // Without the capability the agora user cannot have port 25...
    let mut bare = Command::new("setpriv");
    as_agora(&mut bare, false);
    let refused = bare.output().unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("ermission denied"), "{why}");
    // ...with it, it serves there.
    as_agora(&mut cmd, true);
    let (mut child, banner) = wait_ready(cmd).unwrap_or_else(|e| panic!("{e}"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let uid = passwd.split(':').nth(2).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().all(|f| f == "Uid:" || f == uid)),
        "{status}"
    );
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000400"),
        "only CAP_NET_BIND_SERVICE is effective: {status}"
    );
    assert!(banner.contains(&format!("{ip}:25 ")), "{banner}");
    let s = TcpStream::connect(format!("{ip}:25")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = String::new();
    BufReader::new(s).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("220 mx.example.org"), "{greeting}");
    let _ = child.kill();
    let _ = child.wait();
    let owner = root_ok(&["stat", "-c", "%U", &format!("{data}/agora.db")]);
    assert_eq!(owner.trim(), "agora", "the store belongs to the agora user");
    root_ok(&["rm", "-rf", &data]);
    root_ok(&["dpkg", "--purge", "agora"]);
    assert!(!Path::new("/usr/bin/agora").exists());
}
