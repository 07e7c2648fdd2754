//! Session tests over an in-memory stream against a real store.

use std::sync::Arc;
use std::time::Duration;

use agora_directory::Directory;
use agora_store::sql::SqlStore;
use agora_store::{Role, Store};
use tokio_util::sync::CancellationToken;

use crate::{Session, SmtpConfig};

type Client = agora_net::testing::TestClient;

/// SMTP's side of the shared test client: replies may span lines (`250-...`).
trait Smtp {
    async fn reply(&mut self) -> String;
    async fn cmd(&mut self, s: &str) -> String;
}

impl Smtp for Client {
    async fn reply(&mut self) -> String {
        self.until(|l| l.len() < 4 || l.as_bytes()[3] != b'-').await
    }
    async fn cmd(&mut self, s: &str) -> String {
        self.send(&format!("{s}\r\n")).await;
        self.reply().await
    }
}

struct Fixture {
    memory: crate::MessageMemory,
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    cfg: Arc<SmtpConfig>,
    directory: Directory,
    mail: Arc<agora_mail::Mail>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    let directory = Directory::new(Arc::clone(&store));
    directory.add_domain("example.org").await.unwrap();
    directory.add_user("alice@example.org", "Alice", "pw", 0, Role::User).await.unwrap();
    directory.add_user("bob@example.org", "Bob", "pw", 0, Role::User).await.unwrap();
    directory.add_group("team@example.org", "Team").await.unwrap();
    directory.add_group_member("team@example.org", "alice@example.org").await.unwrap();
    directory.add_group_member("team@example.org", "bob@example.org").await.unwrap();
    let cfg = Arc::new(SmtpConfig {
        hostname: "mx.example.org".into(),
        primary_domain: "example.org".into(),
        max_message_size: 4096,
        ..SmtpConfig::default()
    });
    let mail =
        Arc::new(agora_mail::Mail::new(agora_mail::MailConfig::default(), Arc::clone(&store), directory.clone()));
    Fixture { memory: crate::MessageMemory::new(64 << 20), _dir: dir, store, cfg, directory, mail }
}

impl Fixture {
    async fn connect(&self) -> (Client, tokio::task::JoinHandle<()>, CancellationToken) {
        let token = CancellationToken::new();
        let (conn, mut c) = agora_net::testing::pipe(2525, token.clone());
        let session = Session::new(
            Arc::clone(&self.cfg),
            Arc::clone(&self.mail),
            self.memory.clone(),
            Arc::new(agora_directory::throttle::Throttle::new()),
        );
        let task = tokio::spawn(session.run(conn));
        assert!(c.reply().await.starts_with("220 mx.example.org ESMTP"));
        (c, task, token)
    }

    async fn inbox_count(&self, login: &str) -> u32 {
        let acc = self.store.account_by_login(login).await.unwrap().unwrap();
        self.store.mailbox(acc.id, "INBOX").await.unwrap().unwrap().messages
    }
}

#[tokio::test]
async fn delivers_to_local_user_with_trace_headers() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    let ehlo = c.cmd("EHLO client.test").await;
    for ext in ["PIPELINING", "SIZE 4096", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"] {
        assert!(ehlo.contains(ext), "EHLO lacks {ext}: {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"), "no certificate configured, so no STARTTLS");
    assert!(c.cmd("MAIL FROM:<sender@remote.test> RET=HDRS ENVID=abc").await.starts_with("250 2.1.0"));
    assert!(c.cmd("RCPT TO:<Alice@Example.org> NOTIFY=FAILURE").await.starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let r = c.cmd("Subject: hello\r\n\r\n..dot\r\n.").await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    assert_eq!(f.inbox_count("alice@example.org").await, 1);

    let acc = f.store.account_by_login("alice@example.org").await.unwrap().unwrap();
    let mb = f.store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
    let m = f.store.messages(mb.id, 1..=u32::MAX).await.unwrap().remove(0);
    let body = String::from_utf8(f.store.read_blob(&m.blob).await.unwrap()).unwrap();
    assert!(
        body.starts_with("Return-Path: <sender@remote.test>\r\nReceived: from client.test ([127.0.0.1])"),
        "{body}"
    );
    assert!(body.ends_with("Subject: hello\r\n\r\n.dot\r\n"), "{body}");
    assert_eq!(m.summary.envelope.subject.as_deref(), Some("hello"));
    let env = f.store.envelope_of(mb.id, m.uid).await.unwrap().unwrap();
    assert_eq!(env.ret.as_deref(), Some("HDRS"));
    assert_eq!(env.envid.as_deref(), Some("abc"));
    assert_eq!(env.recipients[0].notify.as_deref(), Some("FAILURE"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
}

#[tokio::test]
async fn notify_success_on_local_delivery_sends_a_delivered_report() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("MAIL FROM:<bob@example.org> RET=HDRS ENVID=e-42").await.starts_with("250"));
    assert!(
        c.cmd("RCPT TO:<alice@example.org> NOTIFY=SUCCESS ORCPT=rfc822;Alice@example.org").await.starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<team@example.org> NOTIFY=FAILURE").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    assert!(c.cmd("Subject: tell me\r\n\r\nbody\r\n.").await.starts_with("250"));
    // Alice gets one copy (her address and the group's fold into one), Bob one copy from
    // the group and one report, which only Alice's recipient asked for.
    assert_eq!(f.inbox_count("alice@example.org").await, 1);
    assert_eq!(f.inbox_count("bob@example.org").await, 2);
    let acc = f.store.account_by_login("bob@example.org").await.unwrap().unwrap();
    let mb = f.store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
    let report = f.store.messages(mb.id, 1..=u32::MAX).await.unwrap().remove(1);
    let text = String::from_utf8(f.store.read_blob(&report.blob).await.unwrap()).unwrap();
    assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"), "{text}");
    for field in [
        "Original-Envelope-Id: e-42",
        "Final-Recipient: rfc822; alice@example.org",
        "Original-Recipient: rfc822;Alice@example.org",
        "Action: delivered",
        "Status: 2.0.0",
        "Content-Type: text/rfc822-headers",
    ] {
        assert!(text.contains(field), "{field} missing: {text}");
    }
    assert!(!text.contains("\r\n\r\nbody\r\n"), "RET=HDRS returns no body: {text}");
    // From the null sender: nobody answers a report.
    let env = f.store.envelope_of(mb.id, report.uid).await.unwrap().unwrap();
    assert_eq!(env.mail_from, "");
}

#[tokio::test]
async fn refuses_unknown_users_and_relaying() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("RCPT TO:<alice@example.org>").await.starts_with("503 5.5.1"));
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert!(c.cmd("RCPT TO:<nobody@example.org>").await.starts_with("550 5.1.1"));
    let relay = c.cmd("RCPT TO:<victim@elsewhere.test>").await;
    assert!(relay.starts_with("554 5.7.1") && relay.contains("Relay access denied"), "{relay}");
    assert!(c.cmd("DATA").await.starts_with("554 5.5.1"));
    assert!(c.cmd("AUTH PLAIN AGFAYg==").await.starts_with("503"));
    // The bare <Postmaster> is always accepted (RFC 5321 §4.1.1.3).
    f.directory.add_alias("postmaster@example.org", "alice@example.org").await.unwrap();
    c.cmd("RSET").await;
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert!(c.cmd("RCPT TO:<Postmaster>").await.starts_with("250 2.1.5"));
}

#[tokio::test]
async fn group_members_get_one_copy_each() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    // Pipelined: all commands in one write.
    c.send("EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<team@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n").await;
    for want in ["250-", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "wanted {want}, got {r}");
    }
    assert!(c.cmd("Subject: team\r\n\r\nhi\r\n.").await.starts_with("250 2.0.0"));
    assert_eq!(f.inbox_count("alice@example.org").await, 1, "alice once, though named twice");
    assert_eq!(f.inbox_count("bob@example.org").await, 1);
}

#[tokio::test]
async fn bdat_chunks_and_size_limit() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO c.test").await;
    c.cmd("MAIL FROM:<x@remote.test> SIZE=100").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.send("BDAT 10\r\nSubject: a").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: 10 octets"));
    c.send("BDAT 8 LAST\r\n\r\n\r\nhi\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued"));
    assert_eq!(f.inbox_count("bob@example.org").await, 1);

    assert!(c.cmd("MAIL FROM:<x@remote.test> SIZE=999999").await.starts_with("552 5.3.4"));
    c.cmd("MAIL FROM:<x@remote.test>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    let big = "x".repeat(900);
    let mut msg = String::new();
    for _ in 0..10 {
        msg.push_str(&big);
        msg.push_str("\r\n");
    }
    msg.push('.');
    assert!(c.cmd(&msg).await.starts_with("552 5.3.4"));
    assert_eq!(f.inbox_count("bob@example.org").await, 1, "oversize message not stored");
    assert!(c.cmd("NOOP").await.starts_with("250"), "session continues after a refused message");
}

#[tokio::test]
async fn bare_lf_and_long_lines_are_refused() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    c.cmd("HELO c.test").await;
    c.cmd("MAIL FROM:<x@remote.test>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    // A smuggling attempt: "\n.\n" must not end the data.
    c.send("Subject: a\r\n\r\nbody\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("550 5.6.0"), "{r}");
    assert!(c.cmd("RSET").await.starts_with("250"), "the smuggled MAIL was data, not a command");

    c.cmd("MAIL FROM:<x@remote.test>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    let r = c.cmd(&format!("Subject: a\r\n\r\n{}\r\n.", "y".repeat(1200))).await;
    assert!(r.starts_with("550 5.6.0"), "{r}");
    assert_eq!(f.inbox_count("bob@example.org").await, 0);
}

#[tokio::test]
async fn garbage_gets_errors_then_disconnect() {
    let f = fixture().await;
    let (mut c, task, _) = f.connect().await;
    assert!(c.cmd("\u{1}\u{2}garbage").await.starts_with("501"));
    assert!(c.cmd("FOO BAR").await.starts_with("500 5.5.1"));
    assert!(c.cmd(&"A".repeat(5000)).await.starts_with("500 5.5.2"));
    assert!(c.cmd("MAIL FROM:<x@y.test>").await.starts_with("503"), "MAIL before HELO");
    // Four errors so far; the tenth closes the session.
    for _ in 0..6 {
        assert!(c.cmd("XYZZY").await.starts_with("500 5.5.1"));
    }
    let last = c.line().await;
    assert!(last.starts_with("421 4.7.0"), "{last}");
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("session ends").unwrap();
}

#[tokio::test]
async fn shutdown_says_421() {
    let f = fixture().await;
    let (mut c, task, token) = f.connect().await;
    c.cmd("EHLO c.test").await;
    token.cancel();
    assert!(c.reply().await.starts_with("421 4.3.2"));
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("session ends").unwrap();
}

#[tokio::test]
async fn smtputf8_addresses_need_the_parameter() {
    let f = fixture().await;
    f.directory.add_user("josé@example.org", "José", "pw", 0, Role::User).await.unwrap();
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO c.test").await;
    assert!(c.cmd("MAIL FROM:<jürgen@remote.test>").await.starts_with("553 5.6.7"));
    assert!(c.cmd("MAIL FROM:<jürgen@remote.test> SMTPUTF8").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<josé@example.org>").await.starts_with("250"));
    c.cmd("DATA").await;
    assert!(c.cmd("Subject: café\r\n\r\nhola\r\n.").await.starts_with("250"));
    assert_eq!(f.inbox_count("josé@example.org").await, 1);
}

#[tokio::test]
async fn dialogue_split_at_every_byte() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    let script = "EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n";
    for b in script.bytes() {
        c.send_bytes(&[b]).await;
    }
    for want in ["250-", "250 2.1.0", "250 2.1.5", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "wanted {want}, got {r}");
    }
    for b in "Subject: slow\r\n\r\n.body\r\n..\r\n.\r\n".bytes() {
        c.send_bytes(&[b]).await;
    }
    assert!(c.reply().await.starts_with("250 2.0.0"));
    let acc = f.store.account_by_login("bob@example.org").await.unwrap().unwrap();
    let mb = f.store.mailbox(acc.id, "INBOX").await.unwrap().unwrap();
    let m = f.store.messages(mb.id, 1..=u32::MAX).await.unwrap().remove(0);
    let body = f.store.read_blob(&m.blob).await.unwrap();
    assert!(body.ends_with(b"Subject: slow\r\n\r\nbody\r\n.\r\n"), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn exhausted_message_memory_gets_452_and_frees_it() {
    let mut f = fixture().await;
    // Room for one 64 KiB step only; the test messages are a little larger.
    f.memory = crate::MessageMemory::new(64 * 1024);
    f.cfg = Arc::new(SmtpConfig { max_message_size: 1 << 20, ..(*f.cfg).clone() });
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO c.test").await;
    let line = "z".repeat(900);
    let body: String = (0..100).map(|_| format!("{line}\r\n")).collect();
    for _ in 0..2 {
        c.cmd("MAIL FROM:<x@remote.test>").await;
        c.cmd("RCPT TO:<bob@example.org>").await;
        c.cmd("DATA").await;
        let r = c.cmd(&format!("Subject: big\r\n\r\n{body}.")).await;
        assert!(r.starts_with("452 4.3.1"), "{r}");
    }
    // A small message fits, so the memory of the refused ones was given back.
    c.cmd("MAIL FROM:<x@remote.test>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    assert!(c.cmd("Subject: small\r\n\r\nhi\r\n.").await.starts_with("250"));
}

#[tokio::test]
async fn a_spooled_message_without_memory_to_read_it_back_gets_452_and_leaves_no_file() {
    let mut f = fixture().await;
    f.memory = crate::MessageMemory::new(64 * 1024);
    let spool = tempfile::tempdir().unwrap();
    f.cfg =
        Arc::new(SmtpConfig { max_message_size: 1 << 20, spool: Some(spool.path().join("spool")), ..(*f.cfg).clone() });
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO c.test").await;
    let body: String = (0..100).map(|i| format!("{i} {}\r\n", "z".repeat(900))).collect();
    c.cmd("MAIL FROM:<x@remote.test>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    let r = c.cmd(&format!("Subject: big\r\n\r\n{body}.")).await;
    assert!(r.starts_with("452 4.3.1"), "{r}");
    assert_eq!(std::fs::read_dir(spool.path().join("spool")).unwrap().count(), 0, "the spool file is gone");
    // A small message still fits.
    c.cmd("MAIL FROM:<x@remote.test>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    assert!(c.cmd("Subject: small\r\n\r\nhi\r\n.").await.starts_with("250"));
}

#[tokio::test]
async fn full_mailbox_is_refused_at_rcpt_and_nothing_is_lost() {
    let f = fixture().await;
    f.directory.add_user("small@example.org", "Small", "pw", 400, Role::User).await.unwrap();
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO client.test").await;
    // A declared size past the quota is refused for good.
    assert!(c.cmd("MAIL FROM:<s@remote.test> SIZE=1000").await.starts_with("250"));
    let r = c.cmd("RCPT TO:<small@example.org>").await;
    assert!(r.starts_with("552 5.2.2"), "{r}");
    c.cmd("RSET").await;
    // Under the quota: accepted, even if the message then goes past it.
    assert!(c.cmd("MAIL FROM:<s@remote.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<small@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let body = format!("Subject: big\r\n\r\n{}\r\n.", "x".repeat(500));
    assert!(c.cmd(&body).await.starts_with("250"));
    assert_eq!(f.inbox_count("small@example.org").await, 1, "accepted mail is delivered, not dropped");
    // Now the mailbox is full: a temporary refusal, so the sender retries later.
    assert!(c.cmd("MAIL FROM:<s@remote.test>").await.starts_with("250"));
    let r = c.cmd("RCPT TO:<small@example.org>").await;
    assert!(r.starts_with("452 4.2.2"), "{r}");
}

impl Fixture {
    /// The same store and directory, served as submission.
    fn submission(&self, allow_plaintext: bool) -> Fixture {
        self.with_cfg(SmtpConfig { submission: true, allow_plaintext, ..(*self.cfg).clone() })
    }

    /// The same store, directory and mail core with another configuration.
    fn with_cfg(&self, cfg: SmtpConfig) -> Fixture {
        Fixture {
            memory: self.memory.clone(),
            _dir: tempfile::tempdir().unwrap(),
            store: Arc::clone(&self.store),
            cfg: Arc::new(cfg),
            directory: self.directory.clone(),
            mail: Arc::clone(&self.mail),
        }
    }
}

fn plain(user: &str, pw: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

#[tokio::test]
async fn submission_requires_auth_and_owned_senders() {
    let f = fixture().await;
    f.directory.add_alias("sales@example.org", "alice@example.org").await.unwrap();
    // Without TLS and without the plaintext setting: only SCRAM, and no mail without AUTH.
    let strict = f.submission(false);
    let (mut c, _t, _) = strict.connect().await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("AUTH SCRAM-SHA-256") && !ehlo.contains("PLAIN"), "{ehlo}");
    assert!(c.cmd("MAIL FROM:<alice@example.org>").await.starts_with("530 5.7.0"));
    let r = c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.org", "pw"))).await;
    assert!(r.starts_with("538 5.7.11"), "{r}");

    let sub = f.submission(true);
    let (mut c, _t, _) = sub.connect().await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("AUTH SCRAM-SHA-256 PLAIN LOGIN"), "{ehlo}");
    assert!(c.cmd(&format!("AUTH PLAIN {}", plain("alice@example.org", "wrong"))).await.starts_with("535 5.7.8"));
    // LOGIN, with its two challenges.
    assert!(c.cmd("AUTH LOGIN").await.starts_with("334 "));
    assert!(c.cmd("YWxpY2VAZXhhbXBsZS5vcmc=").await.starts_with("334 "));
    assert!(c.cmd("cHc=").await.starts_with("235 2.7.0"));
    assert!(c.cmd("AUTH PLAIN").await.starts_with("503"), "no second AUTH");
    // Someone else's address, or the null sender, is refused; an alias of one's own is fine.
    assert!(c.cmd("MAIL FROM:<bob@example.org>").await.starts_with("550 5.7.1"));
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("550 5.7.1"));
    assert!(c.cmd("MAIL FROM:<sales@example.org>").await.starts_with("250"));
    c.cmd("RSET").await;
    assert!(c.cmd("MAIL FROM:<alice+lists@example.org>").await.starts_with("250"));
    // Remote recipients are accepted from an authenticated user and queued.
    assert!(c.cmd("RCPT TO:<friend@remote.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    // A forged From: header is refused at the end of DATA.
    let r = c.cmd("From: Bob <bob@example.org>\r\nSubject: x\r\n\r\nhi\r\n.").await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(c.cmd("MAIL FROM:<alice@example.org>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<friend@remote.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let r = c.cmd("From: Alice <alice@example.org>\r\nSubject: x\r\n\r\nhi\r\n.").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(f.inbox_count("bob@example.org").await, 1, "local copy delivered");
    // A header name with a character across byte 4: once a panic that killed the session.
    assert!(c.cmd("MAIL FROM:<alice@example.org>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let r = c.cmd("Sub\u{e9}ject: x\r\nFrom: alice@example.org\r\n\r\nhi\r\n.").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(f.inbox_count("bob@example.org").await, 2);
    let q = f.store.queued().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].recipient.as_str(), q[0].mail_from.as_str()), ("friend@remote.test", "alice@example.org"));
}

#[tokio::test]
async fn inbound_port_is_never_an_open_relay() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("AUTH PLAIN AGFAYg==").await.starts_with("503"), "no AUTH on port 25");
    assert!(c.cmd("MAIL FROM:<spammer@remote.test>").await.starts_with("250"));
    for rcpt in [
        "<victim@elsewhere.test>",
        "<victim%elsewhere.test@example.org>",
        "<elsewhere.test!victim@example.org>",
        "<\"victim@elsewhere.test\"@example.org>",
        "<@example.org:victim@elsewhere.test>",
        "<victim@elsewhere.test@example.org>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert!(r.starts_with('5'), "{rcpt} was not refused: {r}");
    }
    assert!(f.store.queued().await.unwrap().is_empty());
}

#[tokio::test]
async fn mail_loops_are_cut_and_sessions_cannot_fan_out_without_bound() {
    let f = fixture().await;
    let (mut c, _t, _) = f.connect().await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("MAIL FROM:<s@remote.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let looped = format!("{}Subject: loop\r\n\r\nx\r\n.", "Received: from a by b; now\r\n".repeat(51));
    let r = c.cmd(&looped).await;
    assert!(r.starts_with("554 5.4.6"), "{r}");
    assert_eq!(f.inbox_count("alice@example.org").await, 0);
    // max_recipients is 100 here: a session gets ten times that over all its transactions.
    let mut refused = 0;
    for i in 0..1005 {
        if i % 100 == 0 {
            c.cmd("RSET").await;
            assert!(c.cmd("MAIL FROM:<s@remote.test>").await.starts_with("250"));
        }
        if c.cmd("RCPT TO:<alice@example.org>").await.starts_with("452 4.5.3") {
            refused += 1;
        }
    }
    assert_eq!(refused, 6, "1,006 RCPTs in all, the one before the loop included");
}

#[test]
fn networks() {
    use crate::session::in_network;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(in_network(ip("10.1.2.3"), ip("10.0.0.0"), 8));
    assert!(!in_network(ip("11.1.2.3"), ip("10.0.0.0"), 8));
    assert!(in_network(ip("192.0.2.7"), ip("192.0.2.7"), 32));
    assert!(in_network(ip("2001:db8::1"), ip("2001:db8::"), 32));
    assert!(!in_network(ip("2001:db9::1"), ip("2001:db8::"), 32));
    assert!(!in_network(ip("10.0.0.1"), ip("2001:db8::"), 0), "families never mix");
}

#[tokio::test]
async fn trusted_networks_may_relay_others_may_not() {
    let f = fixture().await;
    let trusted =
        f.with_cfg(SmtpConfig { trusted_networks: vec![("127.0.0.0".parse().unwrap(), 8)], ..(*f.cfg).clone() });
    let (mut c, _t, _) = trusted.connect().await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("MAIL FROM:<app@internal.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<someone@remote.test>").await.starts_with("250"));
    let untrusted =
        f.with_cfg(SmtpConfig { trusted_networks: vec![("10.0.0.0".parse().unwrap(), 8)], ..(*f.cfg).clone() });
    let (mut c, _t, _) = untrusted.connect().await;
    c.cmd("EHLO client.test").await;
    assert!(c.cmd("MAIL FROM:<app@internal.test>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<someone@remote.test>").await.starts_with("554 5.7.1"));
}

#[tokio::test]
async fn mail_from_trusted_networks_is_dkim_signed_unless_turned_off() {
    let f = fixture().await;
    f.store.add_dkim_keys(agora_mail::auth::generate_keys("example.org").unwrap()).await.unwrap();
    let trusted = vec![("127.0.0.0".parse().unwrap(), 8)];
    for sign in [true, false] {
        let fx = f.with_cfg(SmtpConfig { trusted_networks: trusted.clone(), dkim_sign: sign, ..(*f.cfg).clone() });
        let (mut c, _t, _) = fx.connect().await;
        c.cmd("EHLO app.internal").await;
        assert!(c.cmd("MAIL FROM:<alice@example.org>").await.starts_with("250"));
        let to = format!("someone-{sign}@remote.test");
        assert!(c.cmd(&format!("RCPT TO:<{to}>")).await.starts_with("250"));
        assert!(c.cmd("DATA").await.starts_with("354"));
        assert!(c.cmd("From: alice@example.org\r\nSubject: app\r\n\r\nreport\r\n.").await.starts_with("250"));
        let q = f.store.queued().await.unwrap().into_iter().find(|e| e.recipient == to).unwrap();
        let text = String::from_utf8(f.store.read_blob(&q.blob).await.unwrap()).unwrap();
        let signatures = text.matches("DKIM-Signature: ").count();
        assert_eq!(signatures, if sign { 2 } else { 0 }, "{text}");
        if sign {
            assert!(
                text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256") && text.contains("d=example.org")
            );
        }
    }
}
