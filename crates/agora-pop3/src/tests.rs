//! POP3 session tests over an in-memory stream against a real store.

use std::sync::Arc;
use std::time::Duration;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_store::sql::SqlStore;
use agora_store::{Delivery, DeliveryTarget, Flags, Role, Store};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio_util::sync::CancellationToken;

use crate::{Locks, Pop3Config, Session};

type Client = agora_net::testing::TestClient;

/// POP3's side of the shared test client: one-line replies, dot-terminated bodies.
trait Pop3 {
    async fn cmd(&mut self, s: &str) -> String;
    async fn body(&mut self) -> String;
}

impl Pop3 for Client {
    async fn cmd(&mut self, s: &str) -> String {
        self.send(&format!("{s}\r\n")).await;
        self.line().await
    }
    /// A multi-line body up to (without) the terminating ".".
    async fn body(&mut self) -> String {
        let all = self.until(|l| l == ".\r\n").await;
        all.strip_suffix(".\r\n").unwrap_or(&all).to_string()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    directory: Directory,
    locks: Arc<Locks>,
    throttle: Arc<Throttle>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    let directory = Directory::new(Arc::clone(&store));
    directory.add_domain("example.org").await.unwrap();
    directory.add_user("alice@example.org", "Alice", "secret", 0, Role::User).await.unwrap();
    let f = Fixture { _dir: dir, store, directory, locks: Arc::default(), throttle: Arc::new(Throttle::new()) };
    for body in [&b"Subject: one\r\n\r\nfirst\r\n.dotted\r\n"[..], b"Subject: two\r\n\r\nsecond\r\n"] {
        f.deliver(body).await;
    }
    f
}

impl Fixture {
    async fn deliver(&self, body: &[u8]) {
        let acc = self.store.account_by_login("alice@example.org").await.unwrap().unwrap();
        let staged = self.store.stage(body.to_vec()).await.unwrap();
        self.store
            .deliver(Delivery {
                body: staged,
                internal_date: 1_700_000_000,
                envelope: None,
                flags: Flags::default(),
                keywords: Vec::new(),
                targets: vec![DeliveryTarget { account: acc.id, mailbox: "INBOX".into() }],
                relay: Vec::new(),
                enforce_quota: false,
            })
            .await
            .unwrap();
    }

    async fn connect(&self, cfg: Pop3Config) -> (Client, tokio::task::JoinHandle<()>) {
        let (conn, mut c) = agora_net::testing::pipe(110, CancellationToken::new());
        let session = Session::new(
            Arc::new(cfg),
            self.directory.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.locks),
            Arc::clone(&self.throttle),
        );
        let task = tokio::spawn(session.run(conn));
        assert!(c.line().await.starts_with("+OK"));
        (c, task)
    }

    async fn plain(&self) -> (Client, tokio::task::JoinHandle<()>) {
        self.connect(Pop3Config { allow_plaintext: true, ..Pop3Config::default() }).await
    }

    async fn inbox(&self) -> Vec<agora_store::MessageRef> {
        let acc = self.store.account_by_login("alice@example.org").await.unwrap().unwrap();
        let mb = self.store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
        self.store.message_list(mb.id).await.unwrap()
    }
}

async fn login(c: &mut Client) {
    assert!(c.cmd("USER alice@example.org").await.starts_with("+OK"));
    let r = c.cmd("PASS secret").await;
    assert!(r.starts_with("+OK Logged in, 2 messages"), "{r}");
}

#[tokio::test]
async fn plaintext_refused_without_tls() {
    let f = fixture().await;
    let (mut c, _t) = f.connect(Pop3Config::default()).await;
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    let caps = c.body().await;
    assert!(caps.contains("SASL SCRAM-SHA-256\r\n") && !caps.contains("PLAIN"), "{caps}");
    assert!(!caps.contains("USER\r\n") && caps.contains("UIDL") && caps.contains("RESP-CODES"), "{caps}");
    assert!(c.cmd("USER alice@example.org").await.starts_with("-ERR [AUTH]"));
    assert!(c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHNlY3JldA==").await.starts_with("-ERR [AUTH]"));
    assert!(c.cmd("STAT").await.starts_with("-ERR"), "no transaction commands before login");
}

#[tokio::test]
async fn transaction_commands_and_update() {
    let f = fixture().await;
    let (mut c, task) = f.plain().await;
    login(&mut c).await;
    let sizes: Vec<u64> = f.inbox().await.iter().map(|m| m.size).collect();
    assert_eq!(c.cmd("STAT").await, format!("+OK 2 {}\r\n", sizes[0] + sizes[1]));
    assert!(c.cmd("LIST").await.starts_with("+OK"));
    assert_eq!(c.body().await, format!("1 {}\r\n2 {}\r\n", sizes[0], sizes[1]));
    assert!(c.cmd("UIDL").await.starts_with("+OK"));
    let uidls = c.body().await;
    assert!(c.cmd("RETR 1").await.starts_with(&format!("+OK {} octets", sizes[0])));
    assert_eq!(c.body().await, "Subject: one\r\n\r\nfirst\r\n..dotted\r\n");
    assert!(c.cmd("TOP 2 0").await.starts_with("+OK"));
    assert_eq!(c.body().await, "Subject: two\r\n\r\n");
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 1").await.starts_with("-ERR"));
    assert!(c.cmd("RETR 1").await.starts_with("-ERR"));
    assert_eq!(c.cmd("STAT").await, format!("+OK 1 {}\r\n", sizes[1]));
    assert!(c.cmd("RSET").await.starts_with("+OK"));
    assert!(c.cmd("LIST 1").await.starts_with("+OK 1 "));
    assert!(c.cmd("LIST 9").await.starts_with("-ERR"));
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert_eq!(c.cmd("QUIT").await, "+OK Logging out, 1 messages deleted\r\n");
    task.await.unwrap();

    let left = f.inbox().await;
    assert_eq!(left.len(), 1);
    assert!(left[0].flags.contains(Flags::SEEN), "retrieved message marked \\Seen at QUIT");
    // UIDL of the remaining message is the same in a new session.
    let (mut c, _t) = f.plain().await;
    c.cmd("USER alice@example.org").await;
    assert!(c.cmd("PASS secret").await.starts_with("+OK Logged in, 1 messages"));
    c.cmd("UIDL").await;
    let again = c.body().await;
    assert_eq!(
        again.split(' ').nth(1),
        uidls.lines().next().and_then(|l| l.split(' ').nth(1)).map(|s| s.to_owned() + "\r\n").as_deref()
    );
}

#[tokio::test]
async fn dropped_connection_deletes_nothing_and_lock_is_released() {
    let f = fixture().await;
    let (mut c, task) = f.plain().await;
    login(&mut c).await;
    let (mut second, _t2) = f.plain().await;
    second.cmd("USER alice@example.org").await;
    assert!(second.cmd("PASS secret").await.starts_with("-ERR [IN-USE]"));
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    drop(c);
    task.await.unwrap();
    assert_eq!(f.inbox().await.len(), 2, "no QUIT, no deletion");
    second.cmd("USER alice@example.org").await;
    assert!(second.cmd("PASS secret").await.starts_with("+OK"), "lock released with the session");
}

#[tokio::test]
async fn sasl_plain_and_login_and_failures() {
    let f = fixture().await;
    let (mut c, _t) = f.plain().await;
    let r = c.cmd(&format!("AUTH PLAIN {}", B64.encode("\0alice@example.org\0wrong"))).await;
    assert!(r.starts_with("-ERR [AUTH] Authentication failed"), "{r}");
    assert!(c.cmd("AUTH PLAIN").await.starts_with("+ "));
    assert!(c.cmd(&B64.encode("\0alice@example.org\0secret")).await.starts_with("+OK Logged in"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));

    let (mut c, _t) = f.plain().await;
    let _ = c.cmd("AUTH LOGIN").await;
    assert!(c.cmd("*").await.starts_with("-ERR [AUTH] Authentication cancelled"));
    assert_eq!(c.cmd("AUTH LOGIN").await, format!("+ {}\r\n", B64.encode("Username:")));
    assert!(c.cmd(&B64.encode("alice@example.org")).await.starts_with("+ "));
    assert!(c.cmd(&B64.encode("secret")).await.starts_with("+OK"), "second session can log in after the first ended");
}

#[tokio::test]
async fn deletions_reach_other_sessions_through_the_change_bus() {
    let f = fixture().await;
    let mut bus = f.store.subscribe();
    let (mut c, _t) = f.plain().await;
    login(&mut c).await;
    let first = f.inbox().await[0].uid;
    c.cmd("DELE 1").await;
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let change = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(agora_store::Change::Expunged { uid, .. }) = bus.recv().await {
                return uid;
            }
        }
    })
    .await
    .expect("expunge published");
    assert_eq!(change, first);
}

#[tokio::test]
async fn message_expunged_elsewhere_does_not_break_the_session() {
    let f = fixture().await;
    let (mut c, _t) = f.plain().await;
    login(&mut c).await;
    let list = f.inbox().await;
    let acc = f.store.account_by_login("alice@example.org").await.unwrap().unwrap();
    let mb = f.store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
    f.store.expunge(mb.id, &[list[0].uid]).await.unwrap();
    assert!(c.cmd("RETR 1").await.starts_with("-ERR"));
    assert!(c.cmd("RETR 2").await.starts_with("+OK"));
    c.body().await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
}

#[tokio::test]
async fn bad_input_gets_err_and_session_survives() {
    let f = fixture().await;
    let (mut c, _t) = f.plain().await;
    assert!(c.cmd("FROB").await.starts_with("-ERR"));
    assert!(c.cmd(&"X".repeat(10_000)).await.starts_with("-ERR Line too long"));
    assert!(c.cmd("RETR one").await.starts_with("-ERR"));
    assert!(c.cmd("PASS nouser").await.starts_with("-ERR"));
    assert!(c.cmd("NOOP").await.starts_with("+OK"));
    login(&mut c).await;
    assert!(c.cmd("USER again").await.starts_with("-ERR"));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
}

#[tokio::test]
async fn expire_policy_removes_old_retrieved_mail() {
    let f = fixture().await;
    let (mut c, _t) =
        f.connect(Pop3Config { allow_plaintext: true, expire_days: Some(30), ..Pop3Config::default() }).await;
    login(&mut c).await;
    c.cmd("CAPA").await;
    assert!(c.body().await.contains("EXPIRE 30"));
    c.cmd("RETR 2").await;
    c.body().await;
    // Message 2 (from 2023) was retrieved and is older than 30 days: the policy removes it.
    assert_eq!(c.cmd("QUIT").await, "+OK Logging out, 1 messages deleted\r\n");
    assert_eq!(f.inbox().await.len(), 1);
}

/// A stored line "\r." once went out as "." and ended the RETR reply in the middle of
/// the message, leaving the rest to be read as replies to the next commands.
#[tokio::test]
async fn a_message_line_that_becomes_a_dot_cannot_end_the_reply() {
    let f = fixture().await;
    f.deliver(b"Subject: three\r\n\r\nbefore\r\n\r.\r\n+OK injected\r\n").await;
    let (mut c, _task) = f.plain().await;
    assert!(c.cmd("USER alice@example.org").await.starts_with("+OK"));
    assert!(c.cmd("PASS secret").await.starts_with("+OK Logged in, 3 messages"));
    assert!(c.cmd("RETR 3").await.starts_with("+OK"));
    assert_eq!(c.body().await, "Subject: three\r\n\r\nbefore\r\n..\r\n+OK injected\r\n");
    assert_eq!(c.cmd("QUIT").await.split_whitespace().next(), Some("+OK"));
}
