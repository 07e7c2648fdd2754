//! NNTP session tests over an in-memory stream against a real store.

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_store::sql::SqlStore;
use agora_store::{PublicFolder, Role, Store};
use tokio_util::sync::CancellationToken;

use crate::session::{NntpConfig, Session};
use crate::transit::Transit;

type Client = agora_net::testing::TestClient;

trait Nntp {
    async fn cmd(&mut self, s: &str) -> String;
    async fn block(&mut self) -> String;
}

impl Nntp for Client {
    async fn cmd(&mut self, s: &str) -> String {
        self.send(&format!("{s}\r\n")).await;
        self.line().await
    }
    /// A multi-line block up to (without) the terminating ".".
    async fn block(&mut self) -> String {
        let all = self.until(|l| l == ".\r\n").await;
        all.strip_suffix(".\r\n").unwrap_or(&all).to_string()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    directory: Directory,
    transit: Arc<Transit>,
}

const HOST: &str = "news.example.org";

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    let directory = Directory::new(Arc::clone(&store));
    directory.add_domain("example.org").await.unwrap();
    for u in ["alice", "bob", "carol"] {
        directory.add_user(&format!("{u}@example.org"), u, "secret", 0, Role::User).await.unwrap();
    }
    let add = |path: &str, moderated: bool| PublicFolder {
        path: path.into(),
        newsgroup: agora_store::newsgroup_name(path).map(|n| format!("agora.{n}")),
        moderated,
        ..Default::default()
    };
    let test = store.add_public_folder(add("Test", false)).await.unwrap();
    store.set_acl(test.mailbox, "anyone", Some("lrs")).await.unwrap();
    store.set_acl(test.mailbox, "alice@example.org", Some("lrsip")).await.unwrap();
    let private = store.add_public_folder(add("Private", false)).await.unwrap();
    store.set_acl(private.mailbox, "alice@example.org", Some("lrsip")).await.unwrap();
    let announce = store.add_public_folder(add("Announce", true)).await.unwrap();
    store.set_acl(announce.mailbox, "authenticated", Some("lrsip")).await.unwrap();
    store.set_acl(announce.mailbox, "carol@example.org", Some("lrswipkxte")).await.unwrap();
    let transit = Arc::new(Transit::new(Arc::clone(&store), HOST.into(), 100_000, 3650));
    Fixture { _dir: dir, store, directory, transit }
}

impl Fixture {
    async fn connect(&self, peer: bool) -> Client {
        self.connect_as(peer.then(|| "*".to_string())).await
    }

    async fn connect_as(&self, peer: Option<String>) -> Client {
        let cfg =
            NntpConfig { hostname: HOST.into(), allow_plaintext: true, max_article: 100_000, ..NntpConfig::default() };
        let (conn, mut c) = agora_net::testing::pipe(119, CancellationToken::new());
        let session = Session::new(
            Arc::new(cfg),
            self.directory.clone(),
            Arc::clone(&self.store),
            Arc::new(Throttle::new()),
            Arc::clone(&self.transit),
            peer,
        );
        tokio::spawn(session.run(conn));
        let greeting = c.line().await;
        assert!(greeting.starts_with("200 news.example.org"), "{greeting}");
        c
    }

    async fn count(&self, path: &str) -> u32 {
        let f = self.store.public_folders().await.unwrap().into_iter().find(|f| f.path == path).unwrap();
        self.store.mailbox_by_id(f.mailbox).await.unwrap().unwrap().messages
    }
}

async fn login(c: &mut Client, user: &str) {
    assert_eq!(c.cmd(&format!("AUTHINFO USER {user}@example.org")).await, "381 Password required\r\n");
    assert_eq!(c.cmd("AUTHINFO PASS secret").await, "281 Authentication accepted\r\n");
}

async fn post(c: &mut Client, article: &str) -> String {
    let r = c.cmd("POST").await;
    assert!(r.starts_with("340"), "{r}");
    c.send(article).await;
    c.send(".\r\n").await;
    c.line().await
}

#[tokio::test]
async fn reading_follows_permissions() {
    let f = fixture().await;
    let mut c = f.connect(false).await;
    assert!(c.cmd("CAPABILITIES").await.starts_with("101"));
    let caps = c.block().await;
    assert!(caps.contains("VERSION 2\r\n") && caps.contains("READER\r\n") && caps.contains("OVER MSGID\r\n"), "{caps}");
    assert!(caps.contains("AUTHINFO USER SASL\r\n") && !caps.contains("IHAVE"), "{caps}");
    assert!(c.cmd("LIST").await.starts_with("215"));
    let active = c.block().await;
    assert_eq!(active, "agora.test 0 1 n\r\n", "anonymous readers see what anyone may read");
    assert_eq!(c.cmd("GROUP agora.private").await, "411 No such newsgroup\r\n");
    assert_eq!(c.cmd("GROUP agora.test").await, "211 0 1 0 agora.test\r\n");
    assert_eq!(c.cmd("POST").await, "480 Authentication required to post\r\n");
    assert_eq!(c.cmd("ARTICLE").await, "420 No current article selected\r\n");
    assert_eq!(c.cmd("FROB").await, "500 Unknown command\r\n");
    assert!(c.cmd("GROUP").await.starts_with("501"));
    assert_eq!(c.cmd("AUTHINFO PASS x").await, "482 Send AUTHINFO USER first\r\n");
    assert_eq!(c.cmd("AUTHINFO USER bob@example.org").await, "381 Password required\r\n");
    assert_eq!(c.cmd("AUTHINFO PASS wrong").await, "481 Authentication failed\r\n");
    login(&mut c, "alice").await;
    assert!(c.cmd("LIST ACTIVE agora.*").await.starts_with("215"));
    assert_eq!(c.block().await, "agora.announce 0 1 m\r\nagora.private 0 1 y\r\nagora.test 0 1 y\r\n");
    assert!(c.cmd("LIST NEWSGROUPS").await.starts_with("215"));
    assert!(c.block().await.contains("agora.private\tPrivate\r\n"));
    assert_eq!(c.cmd("LIST DISTRIB.PATS").await, "215 Distribution patterns follow\r\n");
    assert_eq!(c.block().await, "");
    let date = c.cmd("DATE").await;
    assert!(date.starts_with("111 20") && date.len() == 20, "{date:?}");
    assert_eq!(c.cmd("QUIT").await, "205 Bye\r\n");
}

#[tokio::test]
async fn posting_and_reading_back() {
    let f = fixture().await;
    let mut c = f.connect(false).await;
    login(&mut c, "alice").await;
    let r = post(&mut c, "From: Alice <alice@example.org>\r\nNewsgroups: agora.test,agora.private,no.such.group\r\nSubject: Hello\r\nMessage-ID: <hello@example.org>\r\n\r\nFirst line\r\n..dotted\r\n").await;
    assert_eq!(r, "240 Article received OK\r\n");
    assert_eq!((f.count("Test").await, f.count("Private").await), (1, 1), "cross-posted once per group");
    let dup = post(&mut c, "From: alice@example.org\r\nNewsgroups: agora.test\r\nSubject: again\r\nMessage-ID: <hello@example.org>\r\n\r\nx\r\n").await;
    assert!(dup.starts_with("441"), "{dup}");
    let bad = post(&mut c, "Newsgroups: agora.test\r\nSubject: no from\r\n\r\nx\r\n").await;
    assert!(bad.starts_with("441"), "{bad}");
    let r = post(&mut c, "From: alice@example.org\r\nNewsgroups: agora.test\r\nSubject: Re: Hello\r\nReferences: <hello@example.org>\r\n\r\nreply\r\n").await;
    assert_eq!(r, "240 Article received OK\r\n");

    assert_eq!(c.cmd("GROUP agora.test").await, "211 2 1 2 agora.test\r\n");
    assert!(c.cmd("OVER 1-").await.starts_with("224"));
    let over = c.block().await;
    let lines: Vec<&str> = over.lines().collect();
    assert_eq!(lines.len(), 2, "{over}");
    let first: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(&first[..6], &["1", "Hello", "Alice <alice@example.org>", first[3], "<hello@example.org>", ""]);
    assert!(!first[3].is_empty(), "a Date was added");
    assert_eq!(first[7], "2", "body lines");
    assert!(lines[1].contains("\tRe: Hello\t") && lines[1].contains("\t<hello@example.org>\t"), "{over}");
    assert_eq!(c.cmd("OVER 5-9").await, "423 No articles in that range\r\n");

    let art = c.cmd("ARTICLE 1").await;
    assert_eq!(art, "220 1 <hello@example.org> article\r\n");
    let text = c.block().await;
    assert!(text.starts_with("Path: news.example.org!not-for-mail\r\n"), "{text}");
    assert!(text.contains("Injection-Info: news.example.org; posting-account=\"alice@example.org\""), "{text}");
    assert!(text.ends_with("\r\n\r\nFirst line\r\n..dotted\r\n"), "stuffed again on the way out: {text}");
    assert_eq!(c.cmd("STAT <hello@example.org>").await, "223 0 <hello@example.org> status\r\n");
    assert!(c.cmd("HEAD").await.starts_with("221 1 <hello@example.org>"));
    assert!(!c.block().await.contains("First line"));
    assert!(c.cmd("BODY 1").await.starts_with("222 1"));
    assert_eq!(c.block().await, "First line\r\n..dotted\r\n");
    let next = c.cmd("NEXT").await;
    assert!(next.starts_with("223 2 <") && next.ends_with("@news.example.org>\r\n"), "a Message-ID was made: {next}");
    assert_eq!(c.cmd("NEXT").await, "421 No next article in this group\r\n");
    assert_eq!(c.cmd("LAST").await, "223 1 <hello@example.org>\r\n");
    assert_eq!(c.cmd("ARTICLE 7").await, "423 No article with that number\r\n");
    assert_eq!(c.cmd("ARTICLE <nope@x>").await, "430 No article with that message-id\r\n");
    assert!(c.cmd("HDR Subject 1-2").await.starts_with("225"));
    assert_eq!(c.block().await, "1 Hello\r\n2 Re: Hello\r\n");
    assert!(c.cmd("XHDR Injection-Info 1").await.starts_with("221"));
    assert!(c.block().await.starts_with("1 news.example.org; posting-account="));
    assert!(c.cmd("LISTGROUP agora.test 2-").await.starts_with("211 2 1 2 agora.test"));
    assert_eq!(c.block().await, "2\r\n");
    assert!(c.cmd("NEWNEWS agora.* 20000101 000000 GMT").await.starts_with("230"));
    let news = c.block().await;
    assert_eq!(news.lines().count(), 2, "{news}");

    // Bob may read agora.test but not agora.private: the cross-post is found only there.
    let mut b = f.connect(false).await;
    login(&mut b, "bob").await;
    assert_eq!(b.cmd("GROUP agora.private").await, "411 No such newsgroup\r\n");
    assert!(b.cmd("ARTICLE <hello@example.org>").await.starts_with("220 0 <hello@example.org>"));
    b.block().await;
    let refused = post(&mut b, "From: bob@example.org\r\nNewsgroups: agora.test\r\nSubject: s\r\n\r\nx\r\n").await;
    assert_eq!(refused, "441 Posting to agora.test not permitted\r\n");
}

#[tokio::test]
async fn moderated_groups_queue_posts() {
    let f = fixture().await;
    let mut c = f.connect(false).await;
    login(&mut c, "alice").await;
    let r = post(&mut c, "From: alice@example.org\r\nNewsgroups: agora.announce\r\nSubject: please\r\n\r\nx\r\n").await;
    assert_eq!(r, "240 Article received OK: it waits for a moderator\r\n");
    assert_eq!((f.count("Announce").await, f.count("Announce/Moderation Queue").await), (0, 1));
    let mut m = f.connect(false).await;
    login(&mut m, "carol").await;
    let r = post(&mut m, "From: carol@example.org\r\nNewsgroups: agora.announce\r\nSubject: news\r\n\r\nx\r\n").await;
    assert_eq!(r, "240 Article received OK\r\n");
    assert_eq!(f.count("Announce").await, 1, "a moderator's post goes straight in");
}

#[tokio::test]
async fn peers_feed_articles() {
    let f = fixture().await;
    let mut p = f.connect(true).await;
    assert!(p.cmd("CAPABILITIES").await.starts_with("101"));
    let caps = p.block().await;
    assert!(caps.contains("IHAVE\r\n") && caps.contains("STREAMING\r\n"), "{caps}");
    let article = |id: &str, path: &str| {
        format!(
            "Path: {path}\r\nFrom: x@inn.test\r\nNewsgroups: agora.test\r\nSubject: from afar\r\nDate: Wed, 2 Dec 2026 00:00:00 +0000\r\nMessage-ID: {id}\r\n\r\nhi\r\n"
        )
    };
    assert_eq!(p.cmd("IHAVE <a@inn.test>").await, "335 Send it; end with <CR-LF>.<CR-LF>\r\n");
    p.send(&article("<a@inn.test>", "inn.test!not-for-mail")).await;
    assert_eq!(p.cmd(".").await, "235 Article transferred OK\r\n");
    assert_eq!(p.cmd("IHAVE <a@inn.test>").await, "435 Article not wanted\r\n");
    assert_eq!(p.cmd("IHAVE <loop@inn.test>").await.get(..3), Some("335"));
    p.send(&article("<loop@inn.test>", "inn.test!news.example.org!not-for-mail")).await;
    let r = p.cmd(".").await;
    assert!(r.starts_with("437 loop"), "{r}");
    assert_eq!(p.cmd("IHAVE <loop@inn.test>").await, "435 Article not wanted\r\n", "refusals are remembered");
    assert_eq!(p.cmd("MODE STREAM").await, "203 Streaming permitted\r\n");
    assert_eq!(p.cmd("CHECK <b@inn.test>").await, "238 <b@inn.test>\r\n");
    assert_eq!(p.cmd("CHECK <a@inn.test>").await, "438 <a@inn.test>\r\n");
    p.send("TAKETHIS <b@inn.test>\r\n").await;
    p.send(&article("<b@inn.test>", "inn.test!not-for-mail")).await;
    assert_eq!(p.cmd(".").await, "239 <b@inn.test>\r\n");
    p.send("TAKETHIS <c@inn.test>\r\n").await;
    p.send(&article("<c@inn.test>", "inn.test!not-for-mail").replace("agora.test", "alt.elsewhere")).await;
    assert_eq!(p.cmd(".").await, "439 <c@inn.test>\r\n", "groups not carried");
    p.send("TAKETHIS <d@inn.test>\r\n").await;
    p.send(&article("<d@inn.test>", "inn.test").replace("agora.test", "agora.announce")).await;
    assert_eq!(p.cmd(".").await, "439 <d@inn.test>\r\n", "unapproved for a moderated group");
    assert_eq!(f.count("Test").await, 2);

    let mut r = f.connect(false).await;
    assert!(r.cmd("IHAVE <z@inn.test>").await.starts_with("502"), "readers are no peers");
    assert!(r.cmd("ARTICLE <b@inn.test>").await.starts_with("220 0 <b@inn.test>"));
    assert!(r.block().await.starts_with("Path: news.example.org!inn.test!not-for-mail\r\n"));
}

#[tokio::test]
async fn only_bad_commands_close_the_connection() {
    let f = fixture().await;
    let mut c = f.connect(false).await;
    assert!(c.cmd("GROUP agora.test").await.starts_with("211"));
    for _ in 0..30 {
        assert_eq!(c.cmd("ARTICLE 99").await, "423 No article with that number\r\n", "missing articles are normal");
    }
    for _ in 0..19 {
        assert_eq!(c.cmd("FROB").await, "500 Unknown command\r\n");
    }
    c.send("FROB\r\n").await;
    assert_eq!(c.line().await, "500 Unknown command\r\n");
    assert_eq!(c.line().await, "400 Too many errors, closing connection\r\n");
    assert!(c.at_eof().await);
}

#[tokio::test]
async fn moderation_takes_whole_crossposts_and_approval_is_a_moderators_word() {
    let f = fixture().await;
    let mut c = f.connect(false).await;
    assert_eq!(c.cmd("GROUP agora.announce").await, "480 Authentication required\r\n", "open to logged-in users");
    assert!(c.cmd("LIST ACTIVE agora.test").await.starts_with("215"));
    assert_eq!(c.block().await, "agora.test 0 1 n\r\n");
    login(&mut c, "alice").await;
    let r =
        post(&mut c, "From: alice@example.org\r\nNewsgroups: agora.test,agora.announce\r\nSubject: both\r\n\r\nx\r\n")
            .await;
    assert_eq!(r, "240 Article received OK: it waits for a moderator\r\n");
    assert_eq!((f.count("Test").await, f.count("Announce/Moderation Queue").await), (0, 1), "whole, to the moderators");
    let r = post(&mut c, "From: alice@example.org\r\nNewsgroups: agora.test\r\nSubject: forged\r\nApproved: alice@example.org\r\nMessage-ID: <forged@example.org>\r\n\r\nx\r\n").await;
    assert_eq!(r, "240 Article received OK\r\n");
    assert!(c.cmd("HEAD <forged@example.org>").await.starts_with("221"));
    assert!(!c.block().await.contains("Approved:"), "a poster's Approved is dropped");

    let mut p = f.connect_as(Some("agora.test,agora.announce".into())).await;
    let article = |id: &str, groups: &str, extra: &str| {
        format!(
            "Path: inn.test\r\nFrom: x@inn.test\r\nNewsgroups: {groups}\r\nSubject: s\r\nDate: {}\r\nMessage-ID: {id}\r\n{extra}\r\nhi\r\n",
            agora_store::time::rfc5322_date(agora_store::now())
        )
    };
    for (id, groups, extra, want) in [
        ("<x1@inn.test>", "agora.test,agora.announce", "", "437 unapproved"),
        ("<x2@inn.test>", "agora.private", "", "437 no newsgroup"),
        ("<x3@inn.test>", "agora.test,agora.announce", "Approved: mod@inn.test\r\n", "235"),
    ] {
        assert!(p.cmd(&format!("IHAVE {id}")).await.starts_with("335"));
        p.send(&article(id, groups, extra)).await;
        let r = p.cmd(".").await;
        assert!(r.starts_with(want), "{id}: {r}");
    }
    assert_eq!((f.count("Test").await, f.count("Announce").await, f.count("Private").await), (2, 1, 0));
    assert!(p.cmd("IHAVE <old@inn.test>").await.starts_with("335"));
    p.send(
        &article("<old@inn.test>", "agora.test", "")
            .replace(&agora_store::time::rfc5322_date(agora_store::now()), "Mon, 1 Jan 1990 00:00:00 +0000"),
    )
    .await;
    assert!(p.cmd(".").await.starts_with("437 too old"));
}
