//! IMAP session tests in process: the real session over an in-memory pipe against a
//! real store, as the SMTP and POP3 sessions are tested.

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_net::testing::{TestClient, pipe};
use agora_store::sql::SqlStore;
use agora_store::{Delivery, DeliveryTarget, Flags, Role, Store};
use tokio_util::sync::CancellationToken;

use crate::{ImapConfig, Session, UserSessions};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    directory: Directory,
    sessions: UserSessions,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    let directory = Directory::new(Arc::clone(&store));
    directory.add_domain("example.org").await.unwrap();
    directory.add_user("alice@example.org", "Alice", "secret", 0, Role::User).await.unwrap();
    let f = Fixture { _dir: dir, store, directory, sessions: UserSessions::default() };
    f.deliver(b"Subject: one\r\n\r\nfirst\r\n").await;
    f.deliver(b"Subject: two\r\n\r\nsecond\r\n").await;
    f
}

/// IMAP's side of the shared test client: a command's answer ends with its tagged line.
trait Imap {
    async fn cmd(&mut self, tag: &str, command: &str) -> String;
}

impl Imap for TestClient {
    async fn cmd(&mut self, tag: &str, command: &str) -> String {
        self.send(&format!("{tag} {command}\r\n")).await;
        let tagged = format!("{tag} ");
        self.until(|l| l.starts_with(&tagged)).await
    }
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

    async fn connect_with(&self, cfg: ImapConfig) -> (TestClient, tokio::task::JoinHandle<()>, CancellationToken) {
        let token = CancellationToken::new();
        let (conn, mut c) = pipe(143, token.clone());
        let session = Session::new(
            Arc::new(cfg),
            self.directory.clone(),
            Arc::clone(&self.store),
            Arc::new(Throttle::new()),
            self.sessions.clone(),
        );
        let task = tokio::spawn(session.run(conn));
        let greeting = c.line().await;
        assert!(greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "), "{greeting}");
        (c, task, token)
    }

    /// Plaintext allowed (no TLS on an in-memory pipe), logged in as alice.
    async fn logged_in(&self) -> (TestClient, tokio::task::JoinHandle<()>, CancellationToken) {
        let (mut c, t, token) = self.connect_with(ImapConfig { allow_plaintext: true, ..ImapConfig::default() }).await;
        let r = c.cmd("a", "LOGIN alice@example.org secret").await;
        assert!(r.starts_with("a OK [CAPABILITY "), "{r}");
        (c, t, token)
    }
}

#[tokio::test]
async fn select_fetch_store_and_logout() {
    let f = fixture().await;
    let (mut c, task, _) = f.logged_in().await;
    let r = c.cmd("b", "SELECT INBOX").await;
    assert!(r.contains("* 2 EXISTS\r\n") && r.contains("b OK [READ-WRITE]"), "{r}");
    let r = c.cmd("c", "FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await;
    // The first read-write SELECT claims both messages as \Recent (IMAP4rev1).
    assert!(r.contains("Subject: one") && r.contains("FLAGS (\\Recent)") && r.contains("\r\nc OK "), "{r}");
    let r = c.cmd("d", "UID STORE 2 +FLAGS (\\Flagged)").await;
    assert!(r.contains("FLAGS (\\Flagged \\Recent)") && r.contains("d OK"), "{r}");
    let r = c.cmd("e", "SEARCH FLAGGED").await;
    assert!(r.contains("* SEARCH 2\r\n"), "{r}");
    let r = c.cmd("f", "LOGOUT").await;
    assert!(r.starts_with("* BYE") && r.contains("f OK"), "{r}");
    task.await.unwrap();
}

#[tokio::test]
async fn login_needs_tls_unless_allowed_and_failures_are_refused() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect_with(ImapConfig::default()).await;
    let r = c.cmd("a", "CAPABILITY").await;
    assert!(r.contains("LOGINDISABLED"), "{r}");
    assert!(c.cmd("b", "LOGIN alice@example.org secret").await.starts_with("b NO [PRIVACYREQUIRED]"));
    let (mut c, _t, _) = f.connect_with(ImapConfig { allow_plaintext: true, ..ImapConfig::default() }).await;
    let r = c.cmd("a", "LOGIN alice@example.org wrong").await;
    assert!(r.starts_with("a NO [AUTHENTICATIONFAILED]"), "{r}");
    assert!(c.cmd("b", "SELECT INBOX").await.starts_with("b BAD"), "no SELECT before login");
}

#[tokio::test]
async fn idle_sees_a_delivery_and_done_ends_it() {
    let f = fixture().await;
    let (mut c, _t, _) = f.logged_in().await;
    c.cmd("b", "SELECT INBOX").await;
    c.send("c IDLE\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    f.deliver(b"Subject: three\r\n\r\nthird\r\n").await;
    assert_eq!(c.line().await, "* 3 EXISTS\r\n");
    c.send("DONE\r\n").await;
    let r = c.until(|l| l.starts_with("c ")).await;
    assert!(r.ends_with("c OK Idle completed\r\n"), "{r}");
}

#[tokio::test]
async fn a_synchronizing_literal_waits_for_its_continuation() {
    let f = fixture().await;
    let (mut c, _t, _) = f.logged_in().await;
    let msg = "Subject: appended\r\n\r\nhello\r\n";
    c.send(&format!("b APPEND INBOX (\\Seen) {{{}}}\r\n", msg.len())).await;
    assert!(c.line().await.starts_with("+ "), "a continuation before the literal");
    c.send(&format!("{msg}\r\n")).await;
    let r = c.until(|l| l.starts_with("b ")).await;
    assert!(r.starts_with("b OK [APPENDUID "), "{r}");
    // LITERAL+: no continuation, the command goes on at once.
    let r = c.cmd("c", &format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len())).await;
    assert!(r.starts_with("c OK [APPENDUID "), "{r}");
    let inbox = f.store.mailbox(1, "INBOX").await.unwrap().unwrap();
    assert_eq!(inbox.messages, 4);
}

#[tokio::test]
async fn commands_split_at_every_byte_get_the_same_answers() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect_with(ImapConfig { allow_plaintext: true, ..ImapConfig::default() }).await;
    for b in b"a LOGIN alice@example.org secret\r\nb SELECT INBOX\r\n" {
        c.send_bytes(&[*b]).await;
    }
    let r = c.until(|l| l.starts_with("b ")).await;
    assert!(r.contains("a OK") && r.contains("* 2 EXISTS") && r.contains("b OK [READ-WRITE]"), "{r}");
}

#[tokio::test]
async fn shutdown_says_bye_and_garbage_gets_bad() {
    let f = fixture().await;
    let (mut c, task, token) = f.logged_in().await;
    assert!(c.cmd("b", "FROBNICATE").await.starts_with("b BAD"));
    token.cancel();
    assert_eq!(c.line().await, "* BYE Server shutting down\r\n");
    tokio::time::timeout(std::time::Duration::from_secs(2), task).await.expect("session ends").unwrap();
}

/// Mail in other charsets is found by words typed in UTF-8 (or sent in the charset
/// SEARCH names), in headers and bodies, in any case; previews are decoded.
#[tokio::test]
async fn search_finds_words_whatever_the_charset() {
    let f = fixture().await;
    // 3: Russian in KOI8-R, quoted-printable; 4: Japanese subject in ISO-2022-JP, body in
    // Shift_JIS base64 HTML; 5: Chinese GB2312 name in From.
    f.deliver(b"Subject: =?koi8-r?Q?=F0=D2=C9=D7=C5=D4?=\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=F0=D2=C9=D7=C5=D4, =CD=C9=D2\r\n").await;
    f.deliver(b"Subject: =?ISO-2022-JP?B?GyRCRnxLXBsoQg==?=\r\nContent-Type: text/html; charset=Shift_JIS\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+k/qWezwvYj4=\r\n").await;
    f.deliver(b"From: =?GB2312?B?1tDOxA==?= <zh@example.cn>\r\nSubject: hi\r\n\r\nx\r\n").await;
    let (mut c, _t, _) = f.logged_in().await;
    assert!(c.cmd("a", "SELECT INBOX").await.contains("* 5 EXISTS"));
    for (query, want) in [
        ("SEARCH SUBJECT \"привет\"", "* SEARCH 3\r\n"),
        ("SEARCH BODY \"МИР\"", "* SEARCH 3\r\n"),
        ("SEARCH TEXT \"日本\"", "* SEARCH 4\r\n"),
        ("SEARCH BODY \"日本\"", "* SEARCH 4\r\n"),
        ("SEARCH FROM \"中文\"", "* SEARCH 5\r\n"),
        ("SEARCH BODY second", "* SEARCH 2\r\n"),
    ] {
        let r = c.cmd("b", query).await;
        assert!(r.contains(want), "{query}: {r}");
    }
    // The search string in the charset the command names (KOI8-R bytes for "мир").
    c.send_bytes(b"c SEARCH CHARSET KOI8-R BODY {3}\r\n").await;
    assert!(c.line().await.starts_with("+"));
    c.send_bytes(b"\xcd\xc9\xd2\r\n").await;
    let r = c.until(|l| l.starts_with("c ")).await;
    assert!(r.contains("* SEARCH 3\r\n") && r.contains("c OK"), "{r}");
    let r = c.cmd("d", "SEARCH CHARSET X-NOTHING BODY x").await;
    assert!(r.contains("d NO [BADCHARSET (UTF-8 US-ASCII ") && r.contains("KOI8-R"), "{r}");
    let r = c.cmd("e", "FETCH 3:4 (PREVIEW)").await;
    assert!(r.contains("Привет, мир"), "{r}");
    assert!(r.contains("日本"), "{r}");
}

#[tokio::test]
async fn metadata_is_kept_per_mailbox_and_server() {
    let f = fixture().await;
    let (mut c, _t, _) = f.logged_in().await;
    let r = c.cmd("a", "SETMETADATA INBOX (/private/comment \"Mine\" /shared/vendor/x ~{3}\r\na\0b)").await;
    assert!(r.ends_with("a OK Setmetadata completed\r\n"), "{r}");
    let r = c.cmd("b", "GETMETADATA INBOX (/private/Comment)").await;
    assert!(r.contains("* METADATA \"INBOX\" (\"/private/comment\" {4}\r\nMine)"), "{r}");
    let r = c.cmd("c", "GETMETADATA (DEPTH infinity) INBOX /shared").await;
    assert!(r.contains("\"/shared/vendor/x\" ~{3}\r\na\0b)"), "{r}");
    let r = c.cmd("d", "GETMETADATA (MAXSIZE 2 DEPTH 1) INBOX /private").await;
    assert!(r.ends_with("d OK [METADATA LONGENTRIES 4] Getmetadata completed\r\n") && !r.contains("* METADATA"), "{r}");
    let r = c.cmd("e", "SETMETADATA INBOX (/private/comment NIL)").await;
    assert!(r.ends_with("e OK Setmetadata completed\r\n"), "{r}");
    assert!(!c.cmd("f", "GETMETADATA INBOX /private/comment").await.contains("* METADATA"));
    let r = c.cmd("g", "GETMETADATA \"\" /shared/admin").await;
    assert!(r.contains("mailto:postmaster@example.org"), "{r}");
    assert!(c.cmd("h", "SETMETADATA \"\" (/shared/admin \"x\")").await.starts_with("h NO [NOPERM]"));
    assert!(c.cmd("i", "SETMETADATA INBOX (/other/x \"y\")").await.starts_with("i BAD"));
    assert!(c.cmd("j", "GETMETADATA Nope /private/x").await.starts_with("j NO [NONEXISTENT]"));
    let many: String = (0..300).map(|i| format!(" /private/n{i} \"v\"")).collect();
    let r = c.cmd("k", &format!("SETMETADATA INBOX ({})", many.trim_start())).await;
    assert!(r.starts_with("k NO [METADATA TOOMANY]"), "{r}");
}

#[tokio::test]
async fn list_status_covers_shared_mailboxes() {
    let f = fixture().await;
    f.directory.add_user("bob@example.org", "Bob", "secret", 0, Role::User).await.unwrap();
    let (mut c, _t, _) = f.logged_in().await;
    assert!(c.cmd("a", "SETACL INBOX bob@example.org lr").await.contains("a OK"));
    let (mut b, _t2, _) = f.connect_with(ImapConfig { allow_plaintext: true, ..ImapConfig::default() }).await;
    assert!(b.cmd("a", "LOGIN bob@example.org secret").await.contains("a OK"));
    let r = b.cmd("b", "LIST \"\" \"Other Users/*\" RETURN (STATUS (MESSAGES UNSEEN))").await;
    assert!(r.contains("* STATUS \"Other Users/alice@example.org/INBOX\" (MESSAGES 2 UNSEEN 2)"), "{r}");
}

#[tokio::test]
async fn a_readers_own_seen_reaches_their_other_sessions() {
    let f = fixture().await;
    f.directory.add_user("bob@example.org", "Bob", "secret", 0, Role::User).await.unwrap();
    let (mut alice, _t, _) = f.logged_in().await;
    assert!(alice.cmd("a", "SETACL INBOX bob@example.org lrs").await.contains("a OK"));
    alice.cmd("b", "SELECT INBOX").await;
    let cfg = || ImapConfig { allow_plaintext: true, ..ImapConfig::default() };
    let (mut b1, _t1, _) = f.connect_with(cfg()).await;
    let (mut b2, _t2, _) = f.connect_with(cfg()).await;
    for b in [&mut b1, &mut b2] {
        assert!(b.cmd("a", "LOGIN bob@example.org secret").await.contains("a OK"));
        let r = b.cmd("b", "SELECT \"Other Users/alice@example.org/INBOX\"").await;
        assert!(r.contains("b OK"), "{r}");
    }
    let r = b1.cmd("c", "STORE 1 +FLAGS (\\Seen)").await;
    assert!(r.contains("FLAGS (\\Seen"), "{r}");
    let r = b2.cmd("c", "NOOP").await;
    assert!(r.contains("* 1 FETCH (FLAGS (\\Seen"), "the reader's other session sees it: {r}");
    let r = alice.cmd("c", "FETCH 1 FLAGS").await;
    assert!(r.contains("* 1 FETCH (FLAGS (") && !r.contains("\\Seen"), "the owner's own \\Seen is apart: {r}");
}

/// A held session's future carries the session and its connection once (an `async fn`
/// wrapper would hold both again for the session's life), and an IDLE in progress a
/// future of its own, not one sized for the largest command.
#[tokio::test]
async fn held_session_futures_stay_small() {
    use agora_net::driver::LineProtocol;
    let f = fixture().await;
    let session = || {
        Session::new(
            Arc::new(ImapConfig::default()),
            f.directory.clone(),
            Arc::clone(&f.store),
            Arc::new(Throttle::new()),
            f.sessions.clone(),
        )
    };
    let (conn, _c) = pipe(143, CancellationToken::new());
    let held = std::mem::size_of::<Session>() + std::mem::size_of::<agora_net::Conn>();
    let run = session().run(conn);
    let size = std::mem::size_of_val(&run);
    eprintln!("session and connection {held} bytes, their future {size}");
    assert!(size < held + 2048, "session and connection {held} bytes, their future {size}");
    let (mut conn, _c) = pipe(143, CancellationToken::new());
    let mut s = session();
    let idle = s.line(&mut conn, b"a IDLE\r\n");
    let size = std::mem::size_of_val(&*idle);
    eprintln!("IDLE {size}");
    assert!(size < 4096, "IDLE's future {size} bytes");
}
