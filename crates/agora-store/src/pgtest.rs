//! A PostgreSQL server for tests: `initdb` into a fresh directory and `pg_ctl` on a
//! loopback port, as an unprivileged user when run as root (the server refuses to run
//! as root). Each test takes a database of its own from it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One running test server; stopped (and its directory removed) when dropped.
#[derive(Debug)]
pub struct TestPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    next: AtomicU32,
}

/// The newest PostgreSQL server's programs (Debian keeps them out of PATH).
fn bin_dir() -> std::io::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    if let Some(b) = found.pop() {
        return Ok(b);
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).find(|d| d.join("initdb").exists()))
        .unwrap_or_default();
    in_path.ok_or_else(|| std::io::Error::other("no PostgreSQL server here (Debian package postgresql)"))
}

/// Root runs the server's programs as `nobody`.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn run(mut c: Command, what: &str) -> std::io::Result<()> {
    let out = c.output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl TestPostgres {
    /// Starts a server on 127.0.0.1 with user `agora` (trusted, loopback only).
    pub fn start() -> std::io::Result<TestPostgres> {
        TestPostgres::start_opts(false).map(|(pg, _)| pg)
    }

    /// The same with TLS on (a certificate for 127.0.0.1 from a CA made for it); also
    /// the path of that CA's certificate.
    pub fn start_with_tls() -> std::io::Result<(TestPostgres, PathBuf)> {
        TestPostgres::start_opts(true)
    }

    fn start_opts(tls: bool) -> std::io::Result<(TestPostgres, PathBuf)> {
        let bin = bin_dir()?;
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("agora-pg-{}-{}-{n}", std::process::id(), crate::now()));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("nobody:nogroup").arg(&dir);
                    c
                },
                "chown",
            )?;
        }
        let data = dir.join("data");
        let mut init = as_server_user(&bin.join("initdb"));
        init.arg("-D").arg(&data).args(["-U", "agora", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"]);
        run(init, "initdb")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=300 -c shared_buffers=64MB",
            dir.display()
        );
        let cert = dir.join("server.crt");
        let ca = dir.join("ca.crt");
        if tls {
            let key = dir.join("server.key");
            let (ca_key, csr, ext) = (dir.join("ca.key"), dir.join("server.csr"), dir.join("ext.cnf"));
            std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
            let mut ca_req = Command::new("openssl");
            ca_req.args(["req", "-x509"]).args(ec).args(["-days", "2", "-subj", "/CN=Agora test CA", "-keyout"]);
            ca_req.arg(&ca_key).arg("-out").arg(&ca);
            run(ca_req, "openssl req (CA)")?;
            let mut req = Command::new("openssl");
            req.arg("req").args(ec).args(["-subj", "/CN=127.0.0.1", "-keyout"]).arg(&key).arg("-out").arg(&csr);
            run(req, "openssl req")?;
            let mut sign = Command::new("openssl");
            sign.args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]).arg(&csr).arg("-CA").arg(&ca);
            sign.arg("-CAkey").arg(&ca_key).arg("-extfile").arg(&ext).arg("-out").arg(&cert);
            run(sign, "openssl x509")?;
            if is_root() {
                let mut own = Command::new("chown");
                own.arg("nobody:nogroup").arg(&key).arg(&cert);
                run(own, "chown")?;
            }
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            opts.push_str(&format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display()));
        }
        let mut start = as_server_user(&bin.join("pg_ctl"));
        start.arg("-D").arg(&data).arg("-l").arg(dir.join("log")).args(["-o", &opts, "-w", "-t", "60", "start"]);
        run(start, "pg_ctl start")?;
        Ok((TestPostgres { dir, bin, port, next: AtomicU32::new(0) }, ca))
    }

    /// One server for the tests of a process that run at the same time: started by the
    /// first, stopped when the last lets go of it.
    pub fn shared() -> std::io::Result<std::sync::Arc<TestPostgres>> {
        static SHARED: std::sync::Mutex<std::sync::Weak<TestPostgres>> = std::sync::Mutex::new(std::sync::Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pg) = slot.upgrade() {
            return Ok(pg);
        }
        let pg = std::sync::Arc::new(TestPostgres::start()?);
        *slot = std::sync::Arc::downgrade(&pg);
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://agora@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its URL.
    pub async fn database(&self) -> std::io::Result<String> {
        let name = format!("t{}_{}", std::process::id(), self.next.fetch_add(1, Ordering::SeqCst));
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(std::io::Error::other)?;
        drop(client);
        let _ = driver.await;
        Ok(self.url(&name))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let mut stop = as_server_user(&self.bin.join("pg_ctl"));
        stop.arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
