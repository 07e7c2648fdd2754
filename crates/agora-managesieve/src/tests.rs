//! ManageSieve session tests over an in-memory stream against a real store.

use std::sync::{Arc, Mutex};

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_store::sql::SqlStore;
use agora_store::{AccountId, Role, Store};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio_util::sync::CancellationToken;

use crate::{Session, SieveConfig};

type Client = agora_net::testing::TestClient;

/// ManageSieve's side of the shared test client.
trait Sieve {
    /// Sends a command; returns every line up to its OK, NO or BYE.
    async fn cmd(&mut self, s: &str) -> String;
    /// Lines up to and including the next OK, NO or BYE.
    async fn response(&mut self) -> String;
}

fn is_final(l: &str) -> bool {
    l.starts_with("OK") || l.starts_with("NO") || l.starts_with("BYE")
}

impl Sieve for Client {
    async fn cmd(&mut self, s: &str) -> String {
        self.send(&format!("{s}\r\n")).await;
        self.response().await
    }
    async fn response(&mut self) -> String {
        self.until(is_final).await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    directory: Directory,
    throttle: Arc<Throttle>,
    /// Every account whose scripts a session said it changed, in order.
    changed: Arc<Mutex<Vec<AccountId>>>,
    alice: AccountId,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    let directory = Directory::new(Arc::clone(&store));
    directory.add_domain("example.org").await.unwrap();
    directory.add_user("alice@example.org", "Alice", "secret", 0, Role::User).await.unwrap();
    let alice = store.account_by_login("alice@example.org").await.unwrap().unwrap().id;
    Fixture { _dir: dir, store, directory, throttle: Arc::new(Throttle::new()), changed: Arc::default(), alice }
}

impl Fixture {
    /// A session, its greeting read (and returned).
    async fn connect_with(&self, cfg: SieveConfig, shutdown: CancellationToken) -> (Client, String) {
        let (conn, mut c) = agora_net::testing::pipe(4190, shutdown);
        let changed = Arc::clone(&self.changed);
        let session = Session::new(
            Arc::new(cfg),
            self.directory.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.throttle),
            Arc::new(move |a| changed.lock().unwrap().push(a)),
        );
        tokio::spawn(session.run(conn));
        let greeting = c.response().await;
        assert!(greeting.ends_with("OK \"Agora ManageSieve ready\"\r\n"), "{greeting}");
        (c, greeting)
    }

    async fn plain(&self) -> Client {
        let cfg = SieveConfig { allow_plaintext: true, ..SieveConfig::default() };
        self.connect_with(cfg, CancellationToken::new()).await.0
    }

    /// A session logged in as alice.
    async fn logged_in(&self) -> Client {
        let mut c = self.plain().await;
        login(&mut c).await;
        c
    }

    fn changes(&self) -> usize {
        self.changed.lock().unwrap().len()
    }
}

async fn login(c: &mut Client) {
    let r = c.cmd(&format!("AUTHENTICATE \"PLAIN\" \"{}\"", B64.encode("\0alice@example.org\0secret"))).await;
    assert_eq!(r, "OK \"Logged in\"\r\n");
}

/// PUTSCRIPT with the script as a literal, as clients send it.
async fn put(c: &mut Client, name: &str, script: &str) -> String {
    c.cmd(&format!("PUTSCRIPT \"{name}\" {{{}+}}\r\n{script}", script.len())).await
}

#[tokio::test]
async fn greeting_and_capabilities() {
    let f = fixture().await;
    let (mut c, greeting) = f.connect_with(SieveConfig::default(), CancellationToken::new()).await;
    assert!(greeting.starts_with("\"IMPLEMENTATION\" \"Agora\"\r\n"), "{greeting}");
    // Without TLS and without plaintext allowed, only SCRAM; no STARTTLS without a
    // certificate.
    assert!(greeting.contains("\"SASL\" \"SCRAM-SHA-256\"\r\n"), "{greeting}");
    assert!(!greeting.contains("STARTTLS") && !greeting.contains("NOTIFY"), "{greeting}");
    let sieve = format!("\"SIEVE\" \"{}\"\r\n", agora_sieve::EXTENSIONS.join(" "));
    assert!(greeting.contains(&sieve), "{greeting}");
    assert!(greeting.contains("\"MAXREDIRECTS\" \"4\"\r\n") && greeting.contains("\"VERSION\" \"1.0\"\r\n"));
    assert!(greeting.contains("\"UNAUTHENTICATE\"\r\n"));
    assert_eq!(c.cmd("CAPABILITY").await, greeting.replace("Agora ManageSieve ready", "Capability completed"));
    // PLAIN needs TLS here.
    let r = c.cmd(&format!("AUTHENTICATE \"PLAIN\" \"{}\"", B64.encode("\0alice@example.org\0secret"))).await;
    assert!(r.starts_with("NO (ENCRYPT-NEEDED) "), "{r}");
    assert_eq!(c.cmd("STARTTLS").await, "NO \"TLS is not available or already active\"\r\n");
    for cmd in ["LISTSCRIPTS", "GETSCRIPT \"x\"", "CHECKSCRIPT \"keep;\"", "UNAUTHENTICATE"] {
        assert_eq!(c.cmd(cmd).await, "NO \"Authenticate first\"\r\n", "{cmd}");
    }

    // With plaintext allowed, every mechanism; logged in, the owner and no SASL.
    let mut c = f.plain().await;
    let caps = c.cmd("CAPABILITY").await;
    assert!(caps.contains("\"SASL\" \"SCRAM-SHA-256 PLAIN LOGIN\"\r\n"), "{caps}");
    login(&mut c).await;
    let caps = c.cmd("CAPABILITY").await;
    assert!(caps.contains("\"OWNER\" \"alice@example.org\"\r\n") && !caps.contains("SASL"), "{caps}");
}

#[tokio::test]
async fn sasl_initial_responses_continuations_and_failures() {
    let f = fixture().await;
    let creds = B64.encode("\0alice@example.org\0secret");
    // Initial response as a literal (sieve-connect's way).
    let mut c = f.plain().await;
    let r = c.cmd(&format!("AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{creds}", creds.len())).await;
    assert_eq!(r, "OK \"Logged in\"\r\n");
    assert!(c.cmd("AUTHENTICATE \"PLAIN\"").await.starts_with("NO \"Already authenticated\""));
    assert_eq!(c.cmd("LOGOUT").await, "OK \"Logout completed\"\r\n");
    assert!(c.at_eof().await);

    // No initial response: an empty challenge, the answer as a quoted string.
    let mut c = f.plain().await;
    c.send("AUTHENTICATE \"PLAIN\"\r\n").await;
    assert_eq!(c.line().await, "\"\"\r\n");
    assert_eq!(c.cmd(&format!("\"{creds}\"")).await, "OK \"Logged in\"\r\n");

    // LOGIN: two challenges, answers as a quoted string and a literal.
    let mut c = f.plain().await;
    c.send("AUTHENTICATE \"LOGIN\"\r\n").await;
    assert_eq!(c.line().await, format!("\"{}\"\r\n", B64.encode("Username:")));
    c.send(&format!("\"{}\"\r\n", B64.encode("alice@example.org"))).await;
    assert_eq!(c.line().await, format!("\"{}\"\r\n", B64.encode("Password:")));
    let pass = B64.encode("secret");
    assert_eq!(c.cmd(&format!("{{{}+}}\r\n{pass}", pass.len())).await, "OK \"Logged in\"\r\n");

    // Cancelled, refused, unknown, broken: each a NO, the session goes on.
    let mut c = f.plain().await;
    c.send("AUTHENTICATE \"PLAIN\"\r\n").await;
    c.line().await;
    assert_eq!(c.cmd("\"*\"").await, "NO \"Authentication cancelled\"\r\n");
    let wrong = B64.encode("\0alice@example.org\0wrong");
    assert_eq!(c.cmd(&format!("AUTHENTICATE \"PLAIN\" \"{wrong}\"")).await, "NO \"Authentication failed\"\r\n");
    assert_eq!(c.cmd("AUTHENTICATE \"X-UNKNOWN\"").await, "NO \"Unsupported authentication mechanism\"\r\n");
    assert!(c.cmd("AUTHENTICATE \"PLAIN\" \"!!\"").await.starts_with("NO \"Invalid base64"));
    c.send("AUTHENTICATE \"PLAIN\"\r\n").await;
    c.line().await;
    assert!(c.cmd("not a string").await.starts_with("NO "));
    assert!(c.cmd("NOOP").await.starts_with("OK"));
    login(&mut c).await;
}

#[tokio::test]
async fn scripts_put_list_activate_get_rename_delete() {
    let f = fixture().await;
    let mut c = f.logged_in().await;
    assert_eq!(c.cmd("LISTSCRIPTS").await, "OK \"Listscripts completed\"\r\n");
    let vacation = "require \"vacation\";\r\nvacation \"I am away\";\r\n";
    assert_eq!(put(&mut c, "vacation", vacation).await, "OK \"Putscript completed\"\r\n");
    assert_eq!(c.cmd("PUTSCRIPT \"work\" \"keep;\"").await, "OK \"Putscript completed\"\r\n");
    assert_eq!(f.changes(), 2);
    assert_eq!(c.cmd("LISTSCRIPTS").await, "\"vacation\"\r\n\"work\"\r\nOK \"Listscripts completed\"\r\n");
    assert_eq!(c.cmd("SETACTIVE \"vacation\"").await, "OK \"Setactive completed\"\r\n");
    assert_eq!(c.cmd("LISTSCRIPTS").await, "\"vacation\" ACTIVE\r\n\"work\"\r\nOK \"Listscripts completed\"\r\n");
    assert_eq!(
        f.store.active_sieve_script(f.alice).await.unwrap(),
        Some(("vacation".to_string(), vacation.to_string()))
    );
    assert_eq!(
        c.cmd("GETSCRIPT \"vacation\"").await,
        format!("{{{}}}\r\n{vacation}\r\nOK \"Getscript completed\"\r\n", vacation.len())
    );
    assert_eq!(c.cmd("SETACTIVE \"nope\"").await, "NO (NONEXISTENT) \"There is no script named \\\"nope\\\"\"\r\n");
    assert!(c.cmd("GETSCRIPT \"nope\"").await.starts_with("NO (NONEXISTENT) "));
    // The active script may not go; renamed, it stays active.
    assert!(c.cmd("DELETESCRIPT \"vacation\"").await.starts_with("NO (ACTIVE) "));
    assert!(c.cmd("RENAMESCRIPT \"vacation\" \"work\"").await.starts_with("NO (ALREADYEXISTS) "));
    assert!(c.cmd("RENAMESCRIPT \"nope\" \"other\"").await.starts_with("NO (NONEXISTENT) "));
    assert_eq!(c.cmd("RENAMESCRIPT \"vacation\" \"away\"").await, "OK \"Renamescript completed\"\r\n");
    assert_eq!(c.cmd("LISTSCRIPTS").await, "\"away\" ACTIVE\r\n\"work\"\r\nOK \"Listscripts completed\"\r\n");
    // Replacing the active script's text keeps it active.
    assert_eq!(c.cmd("PUTSCRIPT \"away\" \"discard;\"").await, "OK \"Putscript completed\"\r\n");
    assert_eq!(f.store.active_sieve_script(f.alice).await.unwrap(), Some(("away".to_string(), "discard;".to_string())));
    assert_eq!(c.cmd("SETACTIVE \"\"").await, "OK \"No script is active\"\r\n");
    assert_eq!(f.store.active_sieve_script(f.alice).await.unwrap(), None);
    assert_eq!(c.cmd("DELETESCRIPT \"away\"").await, "OK \"Deletescript completed\"\r\n");
    assert!(c.cmd("DELETESCRIPT \"away\"").await.starts_with("NO (NONEXISTENT) "));
    assert_eq!(c.cmd("LISTSCRIPTS").await, "\"work\"\r\nOK \"Listscripts completed\"\r\n");
    // Every change told: two puts, activate, rename, put, deactivate, delete.
    assert_eq!(f.changes(), 7);
    assert!(f.changed.lock().unwrap().iter().all(|&a| a == f.alice));
    // Refusals are answers, not mistakes: the session is still open after many.
    for _ in 0..12 {
        assert!(c.cmd("GETSCRIPT \"nope\"").await.starts_with("NO (NONEXISTENT)"));
    }
    assert!(c.cmd("NOOP").await.starts_with("OK"));
}

#[tokio::test]
async fn names_sizes_and_quotas() {
    let f = fixture().await;
    let cfg = SieveConfig { allow_plaintext: true, max_script_size: 100, max_scripts: 2, ..SieveConfig::default() };
    let (mut c, _) = f.connect_with(cfg, CancellationToken::new()).await;
    login(&mut c).await;
    for bad in ["", "a/b", "tab\there", &"n".repeat(129)] {
        let r = c.cmd(&format!("PUTSCRIPT {} \"keep;\"", crate::codec::string(bad))).await;
        assert!(r.starts_with("NO \"Bad script name"), "{bad:?}: {r}");
    }
    assert!(c.cmd("RENAMESCRIPT \"a\" \"b/c\"").await.starts_with("NO \"Bad script name"));
    assert_eq!(c.cmd("HAVESPACE \"one\" 100").await, "OK \"Putscript would succeed\"\r\n");
    assert!(c.cmd("HAVESPACE \"one\" 101").await.starts_with("NO (QUOTA/MAXSIZE) "));
    // Too large: refused before the octets are kept, and the session stays in step.
    let big = "#".repeat(101);
    assert!(put(&mut c, "one", &big).await.starts_with("NO (QUOTA/MAXSIZE) "));
    assert!(c.cmd(&format!("CHECKSCRIPT {{101+}}\r\n{big}")).await.starts_with("NO (QUOTA/MAXSIZE) "));
    assert_eq!(c.cmd("NOOP \"in step\"").await, "OK (TAG \"in step\") \"Done\"\r\n");
    assert_eq!(put(&mut c, "ünï côdé", "keep;").await, "OK \"Putscript completed\"\r\n");
    assert_eq!(put(&mut c, "two", "keep;").await, "OK \"Putscript completed\"\r\n");
    assert!(put(&mut c, "three", "keep;").await.starts_with("NO (QUOTA/MAXSCRIPTS) "));
    assert!(c.cmd("HAVESPACE \"three\" 1").await.starts_with("NO (QUOTA/MAXSCRIPTS) "));
    assert_eq!(c.cmd("HAVESPACE \"two\" 1").await, "OK \"Putscript would succeed\"\r\n", "replacing takes no room");
    assert_eq!(put(&mut c, "two", "discard;").await, "OK \"Putscript completed\"\r\n");
    assert_eq!(f.store.sieve_scripts(f.alice).await.unwrap().len(), 2);
}

#[tokio::test]
async fn checkscript_accepts_a_good_script() {
    let f = fixture().await;
    let mut c = f.logged_in().await;
    let script =
        "require [\"fileinto\"];\r\nif header :contains \"subject\" \"[list]\" {\r\n  fileinto \"Lists\";\r\n}\r\n";
    assert_eq!(c.cmd(&format!("CHECKSCRIPT {{{}+}}\r\n{script}", script.len())).await, "OK \"Script is valid\"\r\n");
    assert_eq!(f.changes(), 0, "checking changes nothing");
    assert!(f.store.sieve_scripts(f.alice).await.unwrap().is_empty());
}

/// A script the Sieve compiler refuses is answered with the compiler's "line N: …"
/// and never kept.
#[tokio::test]
async fn a_script_that_does_not_compile_is_refused_with_its_line() {
    let f = fixture().await;
    let mut c = f.logged_in().await;
    let broken = "keep;\r\nif true {\r\n";
    let r = c.cmd(&format!("CHECKSCRIPT {{{}+}}\r\n{broken}", broken.len())).await;
    assert!(r.starts_with("NO \"line "), "CHECKSCRIPT of a broken script: {r}");
    let r = put(&mut c, "broken", broken).await;
    assert!(r.starts_with("NO \"line "), "PUTSCRIPT of a broken script: {r}");
    assert!(f.store.sieve_scripts(f.alice).await.unwrap().is_empty(), "a broken script is not kept");
}

#[tokio::test]
async fn noop_tags_unauthenticate_and_logout() {
    let f = fixture().await;
    let mut c = f.logged_in().await;
    assert_eq!(c.cmd("NOOP").await, "OK \"Done\"\r\n");
    assert_eq!(c.cmd("NOOP \"STARTTLS-RESYNC-CAPA\"").await, "OK (TAG \"STARTTLS-RESYNC-CAPA\") \"Done\"\r\n");
    assert_eq!(c.cmd("NOOP {4+}\r\na\"\\b").await, "OK (TAG \"a\\\"\\\\b\") \"Done\"\r\n");
    assert_eq!(c.cmd("UNAUTHENTICATE").await, "OK \"Unauthenticated\"\r\n");
    assert_eq!(c.cmd("LISTSCRIPTS").await, "NO \"Authenticate first\"\r\n");
    assert!(c.cmd("CAPABILITY").await.contains("\"SASL\" "));
    login(&mut c).await;
    assert!(c.cmd("LISTSCRIPTS").await.starts_with("OK"));
    assert_eq!(c.cmd("logout").await, "OK \"Logout completed\"\r\n");
    assert!(c.at_eof().await);
}

#[tokio::test]
async fn bad_input_and_too_many_errors() {
    let f = fixture().await;
    let mut c = f.plain().await;
    assert_eq!(c.cmd("FROB").await, "NO \"Unknown command\"\r\n");
    assert!(c.cmd("GETSCRIPT unquoted").await.starts_with("NO \"Syntax error"));
    // A refused command's literal is read past, not taken for commands.
    assert_eq!(c.cmd("FROB {10+}\r\nLOGOUT\r\n\r\n").await, "NO \"Unknown command\"\r\n");
    assert_eq!(c.cmd("FROB \"x\" {6+}\r\nLOGOUT {6+}\r\nLOGOUT").await, "NO \"Unknown command\"\r\n");
    assert!(c.cmd("NOOP").await.starts_with("OK"));
    for _ in 0..5 {
        assert!(c.cmd("FROB").await.starts_with("NO"));
    }
    assert_eq!(c.cmd("FROB").await, "NO \"Unknown command\"\r\n");
    assert_eq!(c.line().await, "BYE \"Too many errors, closing\"\r\n");
    assert!(c.at_eof().await);
    // A line past the limit ends the session: what it announced cannot be told apart.
    let mut c = f.plain().await;
    assert_eq!(c.cmd(&format!("NOOP \"{}\"", "x".repeat(10_000))).await, "BYE \"Line too long\"\r\n");
    assert!(c.at_eof().await);
}

#[tokio::test]
async fn pipelined_and_byte_by_byte() {
    let f = fixture().await;
    let mut c = f.logged_in().await;
    c.send("PUTSCRIPT \"a\" {5+}\r\nkeep;\r\nSETACTIVE \"a\"\r\nGETSCRIPT {1+}\r\na\r\nLISTSCRIPTS\r\n").await;
    assert_eq!(c.response().await, "OK \"Putscript completed\"\r\n");
    assert_eq!(c.response().await, "OK \"Setactive completed\"\r\n");
    assert_eq!(c.response().await, "{5}\r\nkeep;\r\nOK \"Getscript completed\"\r\n");
    assert_eq!(c.response().await, "\"a\" ACTIVE\r\nOK \"Listscripts completed\"\r\n");
    for b in b"PUTSCRIPT \"b\" {8+}\r\ndiscard;\r\n" {
        c.send_bytes(&[*b]).await;
    }
    assert_eq!(c.response().await, "OK \"Putscript completed\"\r\n");
    assert_eq!(f.store.sieve_script(f.alice, "b").await.unwrap().as_deref(), Some("discard;"));
}

#[tokio::test]
async fn shutdown_says_bye() {
    let f = fixture().await;
    let token = CancellationToken::new();
    let cfg = SieveConfig { allow_plaintext: true, ..SieveConfig::default() };
    let (mut c, _) = f.connect_with(cfg, token.clone()).await;
    login(&mut c).await;
    token.cancel();
    assert_eq!(c.line().await, "BYE (TRYLATER) \"Server shutting down\"\r\n");
    assert!(c.at_eof().await);
}
