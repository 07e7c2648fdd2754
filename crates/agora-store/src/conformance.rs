//! The conformance battery: behaviour every `Store` backend must show. Each backend's
//! tests call `run_all` on a fresh, empty store.

use crate::{
    AccountUpdate, AddressEntry, Change, Contact, Delivery, DeliveryTarget, DnsRecord, DnssecKey, DnssecKeyState,
    Envelope, FlagOp, Flags, NewAccount, Profile, QueueOutcome, Role, Store, StoreError, SyncRecord,
};

pub(crate) fn new_account(login: &str) -> NewAccount {
    NewAccount {
        login: login.into(),
        display_name: "Test".into(),
        password_hash: "$argon2id$fake".into(),
        scram: String::new(),
        quota: 0,
        role: Role::User,
        profile: Profile::default(),
        addresses: Vec::new(),
    }
}

/// Runs every check against `store`, which must be empty.
pub async fn run_all<S: Store>(store: &S) {
    directory(store).await;
    delivery_and_uids(store).await;
    flags_and_expunge(store).await;
    single_instance(store).await;
    mailbox_operations(store).await;
    quota_and_atomic_delivery(store).await;
    acl_and_private_seen(store).await;
    address_book(store).await;
    tls_reporting(store).await;
    public_folders(store).await;
    news(store).await;
    search_text(store).await;
    web_sessions(store).await;
    sieve_scripts(store).await;
    replication_log(store).await;
    cluster(store).await;
    nul_in_text(store).await;
}

/// A body whose decoded text or subject holds NUL (quoted-printable `=00`) is kept and
/// found like any other: some engines refuse NUL in text.
async fn nul_in_text<S: Store>(s: &S) {
    let a = s.account_by_login("alice@example.org").await.expect("q").expect("alice");
    let body = b"Subject: =?utf-8?q?nul=00here?=\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\nbefore=00after zebra\r\n";
    let d = deliver_one(s, a.id, body).await;
    let m = s.messages(d.mailbox, d.uid..=d.uid).await.expect("q").remove(0);
    assert_eq!(s.read_blob(&m.blob).await.expect("body"), body.to_vec(), "the body as it came");
}

/// Nodes register and stay listed; leases are counted per kind and account and come
/// back when dropped.
async fn cluster<S: Store>(s: &S) {
    let node = crate::NodeInfo {
        name: "mx1".into(),
        address: "10.0.0.1".into(),
        role: "back-end".into(),
        started: 1_700_000_000,
        heartbeat: 0,
        version: "1".into(),
        tls_pin: "ab".into(),
    };
    s.heartbeat(node.clone()).await.expect("heartbeat");
    s.heartbeat(crate::NodeInfo { address: "10.0.0.2".into(), ..node.clone() }).await.expect("again");
    let nodes = s.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1, "one row a node");
    assert_eq!(nodes[0].address, "10.0.0.2");
    assert!((nodes[0].heartbeat - crate::now()).abs() <= 2, "the heartbeat is the store's time");
    let a = s.account_by_login("alice@example.org").await.expect("q").expect("alice");
    let first = s.take_lease("pop3", a.id, 1).await.expect("lease").expect("free");
    assert!(s.take_lease("pop3", a.id, 1).await.expect("lease").is_none(), "one holder");
    assert!(s.take_lease("imap", a.id, 1).await.expect("lease").is_some(), "kinds apart");
    s.drop_lease(first).await.expect("drop");
    assert!(s.take_lease("pop3", a.id, 1).await.expect("lease").is_some(), "given back");
    // The cluster's secret is made once and stays.
    let secret = s.cluster_secret().await.expect("secret");
    assert!(secret.len() >= 32);
    assert_eq!(s.cluster_secret().await.expect("secret"), secret);
    // A home must be a registered node.
    assert!(matches!(s.set_account_home("alice@example.org", Some("nowhere")).await, Err(StoreError::NotFound(_))));
    s.set_account_home("alice@example.org", Some("mx1")).await.expect("home");
    let a = s.account_by_login("alice@example.org").await.expect("q").expect("alice");
    assert_eq!(a.home.as_deref(), Some("mx1"));
    assert_eq!(s.nodes().await.expect("nodes")[0].tls_pin, "ab");
    s.set_account_home("alice@example.org", None).await.expect("home");
    s.remove_node("mx1").await.expect("remove");
    assert!(s.nodes().await.expect("nodes").is_empty());
    // The routing table: replaced only over what the writer read.
    assert_eq!(s.routing_table().await.expect("table"), None);
    assert!(s.replace_routing_table(None, "v1".into()).await.expect("first"));
    assert!(!s.replace_routing_table(None, "v1b".into()).await.expect("stale"), "a writer that read nothing lost");
    assert!(s.replace_routing_table(Some("v1".into()), "v2".into()).await.expect("second"));
    assert_eq!(s.routing_table().await.expect("table").as_deref(), Some("v2"));
    assert!(matches!(s.remove_node("mx1").await, Err(StoreError::NotFound(_))));
}

/// The replication log: records upserted by entryUUID, deletes dropped below the
/// horizon (which never moves back), named values set and removed; none of it moves
/// the directory version.
async fn replication_log<S: Store>(s: &S) {
    let rec = |n: u8, csn: &str, deleted: bool| SyncRecord {
        uuid: [n; 16],
        dn: format!("uid=u{n},ou=people,dc=example,dc=com"),
        csn: csn.into(),
        hash: [n; 16],
        deleted,
    };
    let v = s.directory_version();
    s.record_sync(vec![rec(1, "a1", false), rec(2, "a2", false), rec(3, "a3", true)], Some("a0".into())).await.unwrap();
    assert_eq!(s.directory_version(), v, "the log is not the directory");
    let mut log = s.sync_log().await.unwrap();
    log.sort_by_key(|r| r.uuid);
    assert_eq!(log.len(), 3);
    assert_eq!(log[2], rec(3, "a3", true));
    s.record_sync(vec![rec(2, "a5", true), rec(4, "a6", false)], Some("a4".into())).await.unwrap();
    let mut log = s.sync_log().await.unwrap();
    log.sort_by_key(|r| r.uuid);
    let uuids: Vec<u8> = log.iter().map(|r| r.uuid[0]).collect();
    assert_eq!(uuids, [1, 2, 4], "the delete below the horizon is forgotten, the newer one kept");
    assert!(log[1].deleted && log[1].csn == "a5");
    s.record_sync(Vec::new(), Some("a1".into())).await.unwrap();
    assert_eq!(s.sync_values("horizon").await.unwrap(), [("horizon".to_string(), "a4".to_string())]);
    s.set_sync_value("consumer.x", Some("1".into())).await.unwrap();
    s.set_sync_value("consumer.y", Some("2".into())).await.unwrap();
    s.set_sync_value("consumer.x", Some("3".into())).await.unwrap();
    assert_eq!(s.sync_values("consumer.").await.unwrap().len(), 2);
    assert_eq!(s.sync_values("consumer.x").await.unwrap()[0].1, "3");
    s.set_sync_value("consumer.x", None).await.unwrap();
    assert_eq!(s.sync_values("consumer.").await.unwrap().len(), 1);
    assert_eq!(s.directory_version(), v);

    // A replica's directory refuses every writer but replication.
    s.add_domain("replica.test").await.unwrap();
    s.add_domain("local.test").await.unwrap();
    s.set_sync_value("replica.domain.replica.test", Some("ldap://hub.test:379".into())).await.unwrap();
    let refused = s.create_account(new_account("r@replica.test")).await;
    assert!(matches!(refused, Err(StoreError::ReadOnly(ref p)) if p == "ldap://hub.test:379"), "{refused:?}");
    assert!(matches!(s.add_alias("x@replica.test", "r@replica.test").await, Err(StoreError::ReadOnly(_))));
    let acc = crate::as_replication(s.create_account(new_account("r@replica.test"))).await.unwrap();
    crate::as_replication(s.set_directory_uuid("r@replica.test", [7; 16])).await.unwrap();
    assert_eq!(s.account(acc.id).await.unwrap().unwrap().uuid, [7; 16]);
    assert!(matches!(s.remove_account("r@replica.test").await, Err(StoreError::ReadOnly(_))));
    // A role is local: it changes on a replica too.
    let role_only = AccountUpdate { display_name: None, profile: None, role: Some(Role::Admin) };
    s.update_account("r@replica.test", role_only).await.unwrap();
    // Other domains stay this server's own to write, one account of a batch at a time.
    let batch = s.create_accounts(vec![new_account("b@replica.test"), new_account("b@local.test")]).await.unwrap();
    assert!(matches!(batch[0], Err(StoreError::ReadOnly(_))) && batch[1].is_ok(), "{batch:?}");
    s.remove_account("b@local.test").await.unwrap();
    let mut claims = new_account("c@local.test");
    claims.addresses = vec!["c@replica.test".into()];
    assert!(matches!(s.create_account(claims).await, Err(StoreError::ReadOnly(_))), "an address in a copied domain");
    s.create_account(new_account("l@local.test")).await.unwrap();
    assert!(matches!(s.add_alias("l2@local.test", "r@replica.test").await, Ok(())));
    assert!(matches!(s.remove_domain("replica.test").await, Err(StoreError::ReadOnly(_))));
    s.remove_alias("l2@local.test").await.unwrap();
    s.remove_account("l@local.test").await.unwrap();
    s.remove_domain("local.test").await.unwrap();
    s.set_sync_value("replica.domain.replica.test", None).await.unwrap();
    s.remove_account("r@replica.test").await.unwrap();
    s.remove_domain("replica.test").await.unwrap();
}

/// Sieve scripts: stored and replaced, listed by name with sizes, at most one active,
/// renamed (still active), the active one kept from deletion, and gone with their
/// account (but not with a new login).
async fn sieve_scripts<S: Store>(s: &S) {
    use crate::SieveScriptInfo;
    s.add_domain("sieve.test").await.expect("domain");
    let a = s.create_account(new_account("sal@sieve.test")).await.expect("account");
    let b = s.create_account(new_account("bea@sieve.test")).await.expect("account");
    let info = |name: &str, active: bool, size: u64| SieveScriptInfo { name: name.into(), active, size };
    assert!(s.sieve_scripts(a.id).await.expect("q").is_empty());
    assert_eq!(s.sieve_script(a.id, "none").await.expect("q"), None);
    assert_eq!(s.active_sieve_script(a.id).await.expect("q"), None);
    s.put_sieve_script(a.id, "work", "keep;").await.expect("put");
    s.put_sieve_script(a.id, "home", "discard;").await.expect("put");
    // Sizes are in octets: "ü" is two.
    s.put_sieve_script(a.id, "Ärger", "# ü\r\nkeep;").await.expect("put");
    s.put_sieve_script(b.id, "work", "stop;").await.expect("another account's, same name");
    assert!(s.put_sieve_script(a.id + 1_000_000, "x", "keep;").await.is_err(), "no such account");
    assert_eq!(
        s.sieve_scripts(a.id).await.expect("list"),
        vec![info("home", false, 8), info("work", false, 5), info("Ärger", false, 11)]
    );
    assert_eq!(s.sieve_script(a.id, "home").await.expect("q").as_deref(), Some("discard;"));
    assert_eq!(s.sieve_script(b.id, "work").await.expect("q").as_deref(), Some("stop;"));

    s.activate_sieve_script(a.id, Some("work")).await.expect("activate");
    assert_eq!(s.active_sieve_script(a.id).await.expect("q"), Some(("work".to_string(), "keep;".to_string())));
    s.activate_sieve_script(a.id, Some("home")).await.expect("another");
    let active: Vec<String> =
        s.sieve_scripts(a.id).await.expect("list").into_iter().filter(|i| i.active).map(|i| i.name).collect();
    assert_eq!(active, ["home"], "one active at a time");
    assert!(matches!(s.activate_sieve_script(a.id, Some("nope")).await, Err(StoreError::NotFound(_))));
    assert_eq!(
        s.active_sieve_script(a.id).await.expect("q").map(|(n, _)| n).as_deref(),
        Some("home"),
        "a failed activation leaves the active one"
    );
    // Replacing the active script's text keeps it active.
    s.put_sieve_script(a.id, "home", "fileinto \"Home\";").await.expect("replace");
    assert_eq!(
        s.active_sieve_script(a.id).await.expect("q"),
        Some(("home".to_string(), "fileinto \"Home\";".to_string()))
    );
    assert_eq!(s.accounts_with_active_sieve().await.expect("q"), vec![a.id]);
    s.activate_sieve_script(b.id, Some("work")).await.expect("b's");
    let mut both = vec![a.id, b.id];
    both.sort();
    assert_eq!(s.accounts_with_active_sieve().await.expect("q"), both);
    s.activate_sieve_script(b.id, None).await.expect("deactivate");
    assert_eq!(s.active_sieve_script(b.id).await.expect("q"), None);
    assert_eq!(s.accounts_with_active_sieve().await.expect("q"), vec![a.id]);

    // Renaming: the active one stays active under its new name.
    s.rename_sieve_script(a.id, "home", "house").await.expect("rename");
    assert_eq!(s.active_sieve_script(a.id).await.expect("q").map(|(n, _)| n).as_deref(), Some("house"));
    assert_eq!(s.sieve_script(a.id, "home").await.expect("q"), None);
    assert!(matches!(s.rename_sieve_script(a.id, "home", "x").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.rename_sieve_script(a.id, "house", "work").await, Err(StoreError::Exists(_))));
    assert!(matches!(s.rename_sieve_script(a.id, "work", "work").await, Err(StoreError::Exists(_))));

    // Deleting: never the active one.
    assert!(matches!(s.delete_sieve_script(a.id, "house").await, Err(StoreError::Invalid(_))));
    assert!(matches!(s.delete_sieve_script(a.id, "nope").await, Err(StoreError::NotFound(_))));
    s.delete_sieve_script(a.id, "work").await.expect("delete");
    assert_eq!(s.sieve_scripts(a.id).await.expect("list"), vec![info("house", true, 16), info("Ärger", false, 11)]);
    assert_eq!(s.sieve_script(b.id, "work").await.expect("q").as_deref(), Some("stop;"), "b's own is untouched");

    // A new login keeps the scripts; removing the account removes them.
    s.rename_account("sal@sieve.test", "sally@sieve.test").await.expect("rename account");
    assert_eq!(s.sieve_scripts(a.id).await.expect("list").len(), 2);
    s.remove_account("sally@sieve.test").await.expect("remove");
    assert!(s.sieve_scripts(a.id).await.expect("list").is_empty(), "scripts go with their account");
    assert_eq!(s.active_sieve_script(a.id).await.expect("q"), None);
    assert!(s.accounts_with_active_sieve().await.expect("q").is_empty());
    s.remove_account("bea@sieve.test").await.expect("remove");
    s.remove_domain("sieve.test").await.expect("remove domain");
}

/// Webmail sessions: found by their token's hash, touched, listed, signed out one at a
/// time or all at once, expired when idle or old, and gone with their account.
async fn web_sessions<S: Store>(s: &S) {
    use crate::WebSession;
    s.add_domain("web.test").await.expect("domain");
    let a = s.create_account(new_account("walt@web.test")).await.expect("account");
    let session = |id: &str, created: i64| WebSession {
        id: id.into(),
        account: a.id,
        csrf: format!("csrf-{id}"),
        created,
        seen: created,
        address: "192.0.2.1".into(),
        agent: "Browser/1.0".into(),
    };
    s.add_web_session(session("h1", 1000)).await.expect("add");
    s.add_web_session(session("h2", 2000)).await.expect("add");
    s.add_web_session(session("h3", 3000)).await.expect("add");
    assert!(s.add_web_session(session("h1", 4000)).await.is_err(), "ids are unique");
    assert_eq!(s.web_session("h2").await.expect("q"), Some(session("h2", 2000)));
    assert_eq!(s.web_session("nope").await.expect("q"), None);
    s.touch_web_session("h1", 5000).await.expect("touch");
    s.touch_web_session("h1", 4500).await.expect("touch");
    assert_eq!(s.web_session("h1").await.expect("q").map(|w| w.seen), Some(5000), "seen only moves forward");
    let ids = |v: Vec<WebSession>| v.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(ids(s.web_sessions(a.id).await.expect("list")), ["h1", "h2", "h3"]);
    assert_eq!(s.remove_web_sessions(a.id, Some("h2")).await.expect("one"), 1);
    assert_eq!(s.remove_web_sessions(a.id + 1_000_000, Some("h3")).await.expect("other's"), 0);
    // Idle since before 4000 (h3) or created before 500 (none): h1 stays.
    assert_eq!(s.expire_web_sessions(4000, 500).await.expect("expire"), 1);
    assert_eq!(ids(s.web_sessions(a.id).await.expect("list")), ["h1"]);
    s.add_web_session(session("h4", 6000)).await.expect("add");
    assert_eq!(s.remove_web_sessions(a.id, None).await.expect("all"), 2);
    // A second factor: set, read back, each step used once, turned off.
    assert_eq!(s.totp(a.id).await.expect("q"), None);
    s.set_totp("walt@web.test", Some("GEZDGNBVGY3TQOJQ")).await.expect("totp on");
    assert_eq!(s.totp(a.id).await.expect("q"), Some(("GEZDGNBVGY3TQOJQ".to_string(), 0)));
    assert!(s.use_totp_step(a.id, 100).await.expect("use"));
    assert!(!s.use_totp_step(a.id, 100).await.expect("replay"), "a step signs in once");
    assert!(!s.use_totp_step(a.id, 99).await.expect("older"), "an older step neither");
    assert!(s.use_totp_step(a.id, 101).await.expect("next"));
    s.set_totp("walt@web.test", None).await.expect("totp off");
    assert_eq!(s.totp(a.id).await.expect("q"), None);
    assert!(!s.use_totp_step(a.id, 200).await.expect("off"));
    assert_eq!(s.ntlm(a.id).await.expect("q"), None, "NTLM is off unless turned on");
    s.set_ntlm("walt@web.test", Some("")).await.expect("ntlm on");
    assert_eq!(s.ntlm(a.id).await.expect("q").as_deref(), Some(""));
    s.set_ntlm("walt@web.test", Some("00ff")).await.expect("ntlm hash");
    assert_eq!(s.ntlm(a.id).await.expect("q").as_deref(), Some("00ff"));
    s.set_password("walt@web.test", &a.password_hash, &a.scram).await.expect("password");
    assert_eq!(s.ntlm(a.id).await.expect("q").as_deref(), Some(""), "a new password makes the NT hash stale");
    s.set_ntlm("walt@web.test", Some("00ff")).await.expect("ntlm hash");
    s.set_ntlm("walt@web.test", None).await.expect("ntlm off");
    assert_eq!(s.ntlm(a.id).await.expect("q"), None);
    assert!(s.set_ntlm("nobody@web.test", Some("")).await.is_err());
    assert!(s.set_totp("nobody@web.test", None).await.is_err());
    s.add_web_session(session("h5", 7000)).await.expect("add");
    s.set_account_setting(a.id, "signature", Some("-- \nWalt")).await.expect("set");
    s.set_account_setting(a.id, "language", Some("de")).await.expect("set");
    s.set_account_setting(a.id, "language", Some("fr")).await.expect("replace");
    s.set_account_setting(a.id, "gone", None).await.expect("clearing what is not there");
    assert_eq!(
        s.account_settings(a.id).await.expect("q"),
        vec![("language".to_string(), "fr".to_string()), ("signature".to_string(), "-- \nWalt".to_string())]
    );
    assert_eq!(s.settings_named("language").await.expect("q"), vec![(a.id, "fr".to_string())]);
    assert!(s.note_vacation_reply(a.id, "Bob@x.test", 1000, 600).await.expect("first"));
    assert!(!s.note_vacation_reply(a.id, "bob@x.test", 1300, 600).await.expect("within the period"));
    assert!(s.note_vacation_reply(a.id, "bob@x.test", 1700, 600).await.expect("after it"));
    assert!(
        s.noted_since(a.id, "BOB@x.test", 1600).await.expect("read")
            && !s.noted_since(a.id, "bob@x.test", 1700).await.expect("read")
    );
    assert!(!s.noted_since(a.id, "carol@x.test", 0).await.expect("read"), "never noted");
    // IMAP METADATA: set, replace, remove; a limit leaves everything as it was.
    let e = |n: &str, v: Option<&[u8]>| (n.to_string(), v.map(<[u8]>::to_vec));
    s.set_metadata(a.id, 0, vec![e("/private/Comment", Some(b"hi")), e("/shared/x", Some(b"\0bin"))], 10)
        .await
        .expect("set");
    s.set_metadata(a.id, 0, vec![e("/private/comment", Some(b"new")), e("/shared/x", None)], 10)
        .await
        .expect("replace");
    assert_eq!(s.metadata(a.id, 0).await.expect("read"), [("/private/comment".to_string(), b"new".to_vec())]);
    let many: Vec<_> = (0..3).map(|i| e(&format!("/private/n{i}"), Some(b"v"))).collect();
    assert!(matches!(s.set_metadata(a.id, 0, many, 2).await, Err(StoreError::OverQuota(_))));
    assert_eq!(s.metadata(a.id, 0).await.expect("read").len(), 1, "nothing of a refused change stays");
    s.remove_account("walt@web.test").await.expect("remove account");
    assert_eq!(s.web_session("h5").await.expect("q"), None, "sessions go with their account");
    assert!(s.account_settings(a.id).await.expect("q").is_empty(), "settings go with their account");
    s.remove_domain("web.test").await.expect("remove domain");
}

/// The decoded text of a body is kept at delivery only when its raw bytes are not it.
async fn search_text<S: Store>(s: &S) {
    let a = s.account_by_login("alice@example.org").await.expect("q").expect("alice");
    let plain = deliver_one(s, a.id, "Subject: t\r\n\r\nплоский текст\r\n".as_bytes()).await;
    let koi8 = deliver_one(
        s,
        a.id,
        b"Subject: k\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=F0=D2=C9=D7=C5=D4\r\n",
    )
    .await;
    let inbox = s.mailbox(a.id, "INBOX").await.expect("q").expect("inbox");
    let unseen = s.unseen_counts(a.id).await.expect("counts");
    let boxes = s.mailboxes(a.id).await.expect("mailboxes");
    assert_eq!(unseen.len(), boxes.len(), "every mailbox, empty ones too");
    let in_inbox = |u: &[(i64, u32)]| u.iter().find(|(m, _)| *m == inbox.id).map(|(_, n)| *n);
    let listed = s.message_list(inbox.id).await.expect("list");
    let want = listed.iter().filter(|m| !m.flags.contains(crate::Flags::SEEN)).count() as u32;
    assert_eq!(in_inbox(&unseen), Some(want));
    s.store_flags(inbox.id, &[plain.uid], crate::FlagOp::Add, crate::Flags::SEEN, &[], None).await.expect("seen");
    assert_eq!(in_inbox(&s.unseen_counts(a.id).await.expect("counts")), Some(want - 1));
    let msgs = s.messages(inbox.id, plain.uid..=koi8.uid).await.expect("messages");
    // Pages: newest first by UID, largest first by size; `messages_with` takes any UIDs.
    let page = s.message_page(inbox.id, crate::PageOrder::Arrival, 0, 2).await.expect("page");
    assert_eq!(page.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![koi8.uid, plain.uid]);
    let skipped = s.message_page(inbox.id, crate::PageOrder::Arrival, 1, 1).await.expect("page");
    assert_eq!(skipped.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![plain.uid]);
    let by_size = s.message_page(inbox.id, crate::PageOrder::Size, 0, 2).await.expect("page");
    assert!(by_size[0].size >= by_size[1].size, "largest first");
    let picked = s.messages_with(inbox.id, &[koi8.uid, 999_999, plain.uid]).await.expect("with");
    assert_eq!(picked.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![plain.uid, koi8.uid]);
    assert_eq!(picked[1].summary, msgs[1].summary);
    assert_eq!(s.neighbours(inbox.id, koi8.uid).await.expect("q"), (Some(plain.uid), None));
    assert_eq!(s.neighbours(inbox.id, plain.uid).await.expect("q").1, Some(koi8.uid));
    assert_eq!(msgs[0].summary.body_text, crate::BodyText::Raw);
    let (body, text) = s.read_blob_for_search(&msgs[0].blob).await.expect("text");
    assert_eq!((body.len(), text), (msgs[0].size as usize, None));
    assert_eq!(msgs[1].summary.body_text, crate::BodyText::Kept);
    let (_, text) = s.read_blob_for_search(&msgs[1].blob).await.expect("text");
    assert_eq!(text.as_deref(), Some("ПРИВЕТ\r\n"));
    s.expunge(inbox.id, &[plain.uid, koi8.uid]).await.expect("expunge");
    // The kept counts follow every change: new mail, \Seen taken away, expunges.
    let listed = s.message_list(inbox.id).await.expect("list");
    let want = listed.iter().filter(|m| !m.flags.contains(crate::Flags::SEEN)).count() as u32;
    assert_eq!(in_inbox(&s.unseen_counts(a.id).await.expect("counts")), Some(want), "after expunge");
}

/// Public folders as newsgroups: counts, overview from the summaries, Message-IDs and
/// the history, moderation queues, settings.
async fn news<S: Store>(s: &S) {
    use crate::{PublicFolder, PublicFolderUpdate};
    let _ = s.add_domain("news.test").await;
    let g = s
        .add_public_folder(PublicFolder {
            path: "News".into(),
            newsgroup: Some("agora.news".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    s.set_acl(g.mailbox, "anyone", Some("lr")).await.unwrap();
    let owner = s.mailbox_by_id(g.mailbox).await.unwrap().unwrap().account;
    let groups = s.news_groups().await.unwrap();
    let ng = groups.iter().find(|n| n.name == "agora.news").expect("listed");
    assert_eq!((ng.count, ng.low, ng.high), (0, 1, 0), "an empty group: low one above high");
    assert_eq!(ng.acl, vec![("anyone".to_string(), "lr".to_string())]);
    let post = |id: &str, subject: &str| {
        format!(
            "From: a@news.test\r\nSubject: {subject}\r\nMessage-ID: {id}\r\nReferences: <r@x>\r\n\r\none\r\ntwo\r\nthree\r\n"
        )
    };
    let mut uids = Vec::new();
    for (id, subject) in [("<1@news.test>", "first"), ("<2@news.test>", "second"), ("<3@news.test>", "third")] {
        let staged = s.stage(post(id, subject).into_bytes()).await.unwrap();
        let d = Delivery {
            body: staged,
            internal_date: 1_700_000_000,
            envelope: None,
            flags: Flags::default(),
            keywords: Vec::new(),
            targets: vec![DeliveryTarget { account: owner, mailbox: "News".into() }],
            relay: Vec::new(),
            enforce_quota: false,
        };
        uids.push(s.deliver(d).await.unwrap().remove(0).uid);
    }
    let ng = s.news_groups().await.unwrap().into_iter().find(|n| n.name == "agora.news").unwrap();
    assert_eq!((ng.count, ng.low, ng.high), (3, uids[0], uids[2]));
    let over = s.overview(g.mailbox, uids[1]..=u32::MAX, 10).await.unwrap();
    assert_eq!(over.len(), 2);
    assert_eq!(
        (
            over[0].uid,
            over[0].subject.as_str(),
            over[0].message_id.as_str(),
            over[0].references.as_str(),
            over[0].lines
        ),
        (uids[1], "second", "<2@news.test>", "<r@x>", 3)
    );
    assert_eq!(over[0].bytes as usize, post("<2@news.test>", "second").len());
    assert_eq!(s.overview(g.mailbox, 1..=u32::MAX, 1).await.unwrap().len(), 1, "the limit holds");
    assert_eq!(s.news_article("<2@news.test>").await.unwrap(), vec![(g.mailbox, uids[1])]);
    assert!(s.news_article("<9@news.test>").await.unwrap().is_empty());
    assert_eq!(s.news_since(0).await.unwrap().len(), 3);
    s.expunge(g.mailbox, &[uids[1]]).await.unwrap();
    assert!(s.news_article("<2@news.test>").await.unwrap().is_empty(), "expired articles are gone");
    assert!(s.news_seen("<2@news.test>").await.unwrap(), "but the history remembers them");
    // The history's days count from when the article went, not from when it came.
    assert_eq!(s.forget_news_history(crate::now() - 60).await.unwrap(), 0);
    assert!(!s.news_seen("<9@news.test>").await.unwrap());
    s.remember_news(vec!["<9@news.test>".into()], 10).await.unwrap();
    assert!(s.news_seen("<9@news.test>").await.unwrap());
    assert_eq!(s.forget_news_history(i64::MAX).await.unwrap(), 2, "history of absent articles only");
    assert!(!s.news_seen("<2@news.test>").await.unwrap() && s.news_seen("<1@news.test>").await.unwrap());

    // Moderation: the queue is a hidden subfolder open to moderators (x) only.
    s.set_acl(g.mailbox, "mod@news.test", Some("lrswipkxte")).await.unwrap();
    let f = s
        .update_public_folder(
            "News",
            PublicFolderUpdate { moderated: Some(true), expire_days: Some(30), ..Default::default() },
        )
        .await
        .unwrap();
    assert!(f.moderated && f.expire_days == 30);
    assert_eq!(f.post_path("lrsip"), "News/Moderation Queue");
    assert_eq!(f.post_path("lrswipkxte"), "News");
    let queue = s.public_folders().await.unwrap().into_iter().find(|q| q.path == f.queue_path()).expect("queue made");
    assert_eq!(queue.newsgroup, None);
    assert_eq!(s.acl(queue.mailbox).await.unwrap(), vec![("mod@news.test".to_string(), "lrswipkxte".to_string())]);
    s.set_acl(g.mailbox, "boss@news.test", Some("lrswipkxtea")).await.unwrap();
    s.set_acl(g.mailbox, "mod@news.test", Some("lrs")).await.unwrap();
    assert_eq!(s.acl(queue.mailbox).await.unwrap(), vec![("boss@news.test".to_string(), "lrswipkxtea".to_string())]);
    assert!(s.news_groups().await.unwrap().iter().all(|n| n.folder.mailbox != queue.mailbox), "not a newsgroup");
    // The queue's name is reserved and it goes only with its folder.
    assert!(s.remove_public_folder("News/Moderation Queue").await.is_err());
    assert!(s.rename_public_folder("News/Moderation Queue", "News/Open").await.is_err());
    let reserved = PublicFolder { path: "Other/Moderation Queue".into(), ..Default::default() };
    assert!(s.add_public_folder(reserved).await.is_err());
    // Posts waiting keep the folder moderated.
    let staged = s.stage(b"From: a@news.test\r\nSubject: wait\r\n\r\nx\r\n".to_vec()).await.unwrap();
    s.deliver(Delivery {
        body: staged,
        internal_date: 1_700_000_000,
        envelope: None,
        flags: Flags::default(),
        keywords: Vec::new(),
        targets: vec![DeliveryTarget { account: owner, mailbox: f.queue_path() }],
        relay: Vec::new(),
        enforce_quota: false,
    })
    .await
    .unwrap();
    let off = PublicFolderUpdate { moderated: Some(false), ..Default::default() };
    assert!(s.update_public_folder("News", off).await.is_err(), "a post waits");
    let wait = s.public_folders().await.unwrap().into_iter().find(|q| q.path == f.queue_path()).unwrap();
    let uids: Vec<u32> = s.message_list(wait.mailbox).await.unwrap().iter().map(|m| m.uid).collect();
    s.expunge(wait.mailbox, &uids).await.unwrap();
    // A delivery to a public folder that is gone is refused, never a stray mailbox.
    let staged = s.stage(b"Subject: lost\r\n\r\nx\r\n".to_vec()).await.unwrap();
    let lost = Delivery {
        body: staged,
        internal_date: 1_700_000_000,
        envelope: None,
        flags: Flags::default(),
        keywords: Vec::new(),
        targets: vec![DeliveryTarget { account: owner, mailbox: "Gone".into() }],
        relay: Vec::new(),
        enforce_quota: false,
    };
    assert!(s.deliver(lost).await.is_err());
    let f = s
        .update_public_folder(
            "News",
            PublicFolderUpdate { moderated: Some(false), newsgroup: Some(None), ..Default::default() },
        )
        .await
        .unwrap();
    assert!(!f.moderated && f.newsgroup.is_none());
    assert!(s.public_folders().await.unwrap().iter().all(|q| q.path != f.queue_path()), "an empty queue goes");
    s.update_public_folder("News", PublicFolderUpdate { moderated: Some(true), ..Default::default() }).await.unwrap();
    s.remove_public_folder("News").await.unwrap();
    assert!(s.public_folders().await.unwrap().iter().all(|q| !q.path.starts_with("News")), "with its queue");
}

async fn public_folders<S: Store>(s: &S) {
    use crate::PublicFolder;
    let _ = s.add_domain("public.test").await;
    let folder = |path: &str| PublicFolder { path: path.into(), ..Default::default() };
    let sales =
        s.add_public_folder(PublicFolder { newsgroup: Some("Agora.Sales".into()), ..folder("Sales") }).await.unwrap();
    assert_eq!(sales.newsgroup.as_deref(), Some("agora.sales"));
    s.set_acl(sales.mailbox, "anyone", Some("lr")).await.unwrap();
    let emea = s
        .add_public_folder(PublicFolder { address: Some("EMEA@public.test".into()), ..folder("Sales/EMEA") })
        .await
        .unwrap();
    assert_eq!(emea.address.as_deref(), Some("emea@public.test"));
    assert_eq!(s.acl(emea.mailbox).await.unwrap(), vec![("anyone".to_string(), "lr".to_string())], "inherited");
    assert!(matches!(s.add_public_folder(folder("Nowhere/Child")).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.add_public_folder(folder("Sales")).await, Err(StoreError::Exists(_))));
    let dup = PublicFolder { newsgroup: Some("agora.sales".into()), ..folder("Other") };
    assert!(matches!(s.add_public_folder(dup).await, Err(StoreError::Exists(_))));
    assert!(s.add_public_folder(folder("a//b")).await.is_err());
    let taken = s
        .create_account(crate::NewAccount {
            login: "emea@public.test".into(),
            display_name: String::new(),
            password_hash: "x".into(),
            ..Default::default()
        })
        .await;
    assert!(taken.is_err(), "a folder's address is not free for an account");
    assert!(
        !s.accounts(None).await.unwrap().iter().any(|a| a.login == crate::PUBLIC_OWNER),
        "the organisation's account is not a user"
    );
    assert!(s.remove_public_folder("Sales").await.is_err(), "a folder with subfolders stays");
    s.rename_public_folder("Sales", "Marketing").await.unwrap();
    let all = s.public_folders().await.unwrap();
    let paths: Vec<(&str, i64)> = all.iter().map(|f| (f.path.as_str(), f.mailbox)).collect();
    assert_eq!(paths, vec![("Marketing", sales.mailbox), ("Marketing/EMEA", emea.mailbox)]);
    assert!(s.rename_public_folder("Marketing", "Marketing/EMEA/x").await.is_err());
    s.remove_public_folder("Marketing/EMEA").await.unwrap();
    s.remove_public_folder("Marketing").await.unwrap();
    assert!(s.public_folders().await.unwrap().is_empty());
}

async fn tls_reporting<S: Store>(s: &S) {
    let o = |day: &str, result: &str| crate::TlsOutcome {
        day: day.into(),
        domain: "b.test".into(),
        policy_type: "sts".into(),
        policy: "version: STSv1\nmode: enforce".into(),
        mx: "mx.b.test".into(),
        ip: "192.0.2.1".into(),
        result: result.into(),
    };
    for (day, result) in
        [("2026-12-01", ""), ("2026-12-01", ""), ("2026-12-01", "certificate-expired"), ("2026-12-02", "")]
    {
        s.tls_outcome(o(day, result)).await.unwrap();
    }
    let first = s.tls_outcomes("2026-12-01").await.unwrap();
    assert_eq!(first, vec![(o("2026-12-01", ""), 2), (o("2026-12-01", "certificate-expired"), 1)]);
    s.forget_tls_outcomes("2026-12-01").await.unwrap();
    assert!(s.tls_outcomes("2026-12-01").await.unwrap().is_empty());
    assert_eq!(s.tls_outcomes("2026-12-02").await.unwrap().len(), 1, "later days stay");
    let r = crate::TlsReport {
        received: 5,
        organization: "mx.a.test".into(),
        report_id: "r1".into(),
        domains: "b.test".into(),
        successes: 3,
        ..Default::default()
    };
    assert!(s.add_tls_report(r.clone()).await.unwrap());
    assert!(!s.add_tls_report(r.clone()).await.unwrap(), "the same report is kept once");
    assert_eq!(s.tls_reports().await.unwrap(), vec![r]);
}

async fn address_book<S: Store>(s: &S) {
    s.add_domain("book.test").await.expect("domain");
    let profile = Profile {
        given_name: "Ann".into(),
        surname: "Lee".into(),
        phone: "+1 555 0100".into(),
        photo: vec![0xff, 0xd8, 0, 1],
        certificates: vec![vec![0x30, 0x82]],
        hidden: true,
        ..Profile::default()
    };
    let a = s
        .create_account(NewAccount { profile: profile.clone(), ..new_account("ann@book.test") })
        .await
        .expect("account");
    assert_eq!(a.profile, profile, "binary values and flags survive the round trip");
    assert_ne!(a.uuid, [0; 16], "every account gets an identity");
    let b = s.create_account(new_account("bob@book.test")).await.expect("bob");
    assert_ne!(a.uuid, b.uuid);
    s.update_account("ann@book.test", AccountUpdate { display_name: Some("Ann Lee".into()), ..Default::default() })
        .await
        .expect("update");
    let a2 = s.account_by_login("ann@book.test").await.expect("q").expect("ann");
    assert_eq!((a2.display_name.as_str(), &a2.profile, a2.uuid), ("Ann Lee", &profile, a.uuid), "others kept");
    // Renaming keeps the identity and mail, and references follow.
    s.create_group("team@book.test", "Team").await.expect("group");
    s.add_group_member("team@book.test", "ann@book.test").await.expect("member");
    s.rename_account("ann@book.test", "ann.lee@book.test").await.expect("rename");
    assert!(s.account_by_login("ann@book.test").await.expect("q").is_none());
    let renamed = s.account_by_login("ann.lee@book.test").await.expect("q").expect("renamed");
    assert_eq!((renamed.id, renamed.uuid), (a.id, a.uuid));
    let AddressEntry::Group(g) = s.lookup_address("team@book.test").await.expect("q") else { panic!("group") };
    assert_eq!(g.members, ["ann.lee@book.test"]);
    assert_ne!(g.uuid, [0; 16]);
    s.add_account_address("ann.lee@book.test", "al@book.test").await.expect("address");
    s.add_account_address("ann.lee@book.test", "a.lee@book.test").await.expect("address");
    // Listed with every account, in one domain or all, extra addresses in order.
    for list in [s.accounts(None).await.unwrap(), s.accounts(Some("book.test")).await.unwrap()] {
        let ann = list.iter().find(|x| x.login == "ann.lee@book.test").expect("listed");
        assert_eq!(ann.addresses, ["a.lee@book.test", "al@book.test"]);
        assert!(
            list.iter()
                .filter(|x| x.login != "ann.lee@book.test")
                .all(|x| !x.addresses.contains(&"al@book.test".to_string()))
        );
    }
    s.remove_account_address("ann.lee@book.test", "a.lee@book.test").await.expect("remove address");
    s.remove_account_address("ann.lee@book.test", "al@book.test").await.expect("remove address");
    assert!(s.remove_account_address("ann.lee@book.test", "ann.lee@book.test").await.is_err(), "never the login");
    // Contacts: external only, listed per domain, block the domain's removal.
    let c = s
        .add_contact(Contact {
            address: "Partner@Elsewhere.test".into(),
            domain: "book.test".into(),
            display_name: "Partner".into(),
            ..Contact::default()
        })
        .await
        .expect("contact");
    assert_eq!(c.address, "partner@elsewhere.test");
    assert!(
        s.add_contact(Contact { address: "bob@book.test".into(), domain: "book.test".into(), ..Contact::default() })
            .await
            .is_err(),
        "a served address is no contact"
    );
    s.update_contact(
        "partner@elsewhere.test",
        None,
        Some(Profile { company: "Partner Inc".into(), ..Profile::default() }),
    )
    .await
    .expect("update contact");
    let listed = s.contacts(Some("book.test")).await.expect("contacts");
    assert_eq!((listed.len(), listed[0].profile.company.as_str()), (1, "Partner Inc"));
    assert!(s.contacts(Some("other.test")).await.expect("contacts").is_empty());
    s.update_group("team@book.test", Some("The Team".into()), None).await.expect("group update");
    s.add_alias("info@book.test", "bob@book.test").await.expect("alias");
    assert!(s.aliases().await.expect("aliases").contains(&("info@book.test".into(), vec!["bob@book.test".into()])));
    s.remove_contact("partner@elsewhere.test").await.expect("remove contact");
    // Extra DNS records: unique per value, removed by name and type (and value).
    let rec = |v: &str| DnsRecord {
        domain: "book.test".into(),
        name: "www.book.test".into(),
        rtype: "a".into(),
        value: v.into(),
        ttl: 300,
    };
    s.add_dns_record(rec("192.0.2.1")).await.expect("record");
    s.add_dns_record(rec("192.0.2.2")).await.expect("record");
    assert!(matches!(s.add_dns_record(rec("192.0.2.1")).await, Err(StoreError::Exists(_))));
    assert_eq!(s.dns_records("book.test").await.expect("records")[0].rtype, "A");
    assert_eq!(s.remove_dns_records("book.test", "www.book.test", "A", Some("192.0.2.2")).await.expect("rm"), 1);
    assert_eq!(s.remove_dns_records("book.test", "WWW.book.test", "A", None).await.expect("rm"), 1);
    assert!(s.dns_records("book.test").await.expect("records").is_empty());
    // MTA-STS: testing for a new domain, then as set.
    assert_eq!(s.domain("book.test").await.expect("domain").expect("there").mta_sts_mode, "testing");
    s.set_mta_sts_mode("Book.test", "enforce").await.expect("mode");
    assert_eq!(
        s.domains().await.expect("domains").iter().find(|d| d.name == "book.test").expect("d").mta_sts_mode,
        "enforce"
    );
    assert!(matches!(s.set_mta_sts_mode("book.test", "strict").await, Err(StoreError::Invalid(_))));
    // The domain's X.400 space.
    assert_eq!(s.domain("book.test").await.expect("domain").expect("there").x400, "");
    s.set_domain_x400("Book.test", "/C=GB/ADMD= /PRMD=Book/").await.expect("x400");
    assert_eq!(s.domain("book.test").await.expect("domain").expect("there").x400, "/C=GB/ADMD= /PRMD=Book/");
    assert!(matches!(s.set_domain_x400("nowhere.test", "/C=GB/").await, Err(StoreError::NotFound(_))));
    // DNSSEC keys: stored, moved through a rollover's states, deleted.
    let v = s.directory_version();
    let key = DnssecKey {
        id: 0,
        domain: "Book.test".into(),
        ksk: true,
        algorithm: 13,
        private_key: vec![1, 2, 3],
        created: 5,
        state: DnssecKeyState::Active,
        since: 5,
    };
    let id = s.add_dnssec_key(key).await.expect("dnssec key");
    assert_ne!(s.directory_version(), v, "a key is directory data");
    s.set_dnssec_key_state(id, Some(DnssecKeyState::Retired)).await.expect("retire");
    let keys = s.dnssec_keys("book.test").await.expect("keys");
    assert_eq!((keys.len(), keys[0].ksk, keys[0].algorithm, keys[0].state), (1, true, 13, DnssecKeyState::Retired));
    assert!(keys[0].since > 5 && keys[0].private_key == [1, 2, 3]);
    s.set_dnssec_key_state(id, None).await.expect("delete");
    assert!(s.dnssec_keys("book.test").await.expect("keys").is_empty());
    assert!(matches!(s.set_dnssec_key_state(id, None).await, Err(StoreError::NotFound(_))));
    // A batch: each account on its own, in order.
    let c2 = NewAccount { addresses: vec!["c2.alt@book.test".into()], ..new_account("c2@book.test") };
    let batch = vec![new_account("c1@book.test"), new_account("bob@book.test"), c2];
    let res = s.create_accounts(batch).await.expect("batch");
    assert!(res[0].is_ok() && matches!(res[1], Err(StoreError::Exists(_))) && res[2].is_ok());
    let c2 = s.account_by_login("c2@book.test").await.expect("q").expect("c2");
    assert_eq!(c2.addresses, ["c2.alt@book.test"]);
    assert_eq!(s.mailboxes(res[2].as_ref().expect("c2").id).await.expect("mailboxes").len(), 6);
    assert!(s.contacts(None).await.expect("contacts").is_empty());
}

async fn acl_and_private_seen<S: Store>(s: &S) {
    s.add_domain("acl.test").await.expect("domain");
    let owner = s.create_account(new_account("owner@acl.test")).await.expect("owner");
    let reader = s.create_account(new_account("reader@acl.test")).await.expect("reader");
    let mb = s.create_mailbox(owner.id, "Shared", None).await.expect("mailbox");
    s.set_acl(mb.id, "reader@acl.test", Some("lr")).await.expect("setacl");
    s.set_acl(mb.id, "anyone", Some("l")).await.expect("setacl");
    assert_eq!(
        s.acl(mb.id).await.expect("acl"),
        [("anyone".to_string(), "l".to_string()), ("reader@acl.test".to_string(), "lr".to_string())]
    );
    let shared = s.shared_with(reader.id, &["reader@acl.test".into(), "anyone".into()]).await.expect("shared");
    assert_eq!(shared.len(), 1, "one mailbox, its rights joined over identifiers");
    assert_eq!((shared[0].owner.as_str(), shared[0].mailbox.id), ("owner@acl.test", mb.id));
    assert!(shared[0].rights.contains('r') && shared[0].rights.contains('l'));
    assert!(s.shared_with(owner.id, &["anyone".into()]).await.expect("shared").is_empty(), "not one's own");
    // A reader's \Seen is kept apart from the owner's flags and goes with the message.
    let staged = s.stage(b"Subject: s\r\n\r\nbody\r\n".to_vec()).await.expect("stage");
    let d = s
        .deliver(Delivery {
            body: staged,
            internal_date: 0,
            envelope: None,
            flags: Flags::default(),
            keywords: Vec::new(),
            targets: vec![DeliveryTarget { account: owner.id, mailbox: "Shared".into() }],
            relay: Vec::new(),
            enforce_quota: false,
        })
        .await
        .expect("deliver");
    let uid = d[0].uid;
    s.set_private_seen(mb.id, reader.id, &[uid, 999], true).await.expect("seen");
    assert_eq!(s.private_seen(mb.id, reader.id).await.expect("seen"), [uid], "only existing messages");
    assert!(!s.messages(mb.id, uid..=uid).await.expect("q")[0].flags.contains(Flags::SEEN));
    s.expunge(mb.id, &[uid]).await.expect("expunge");
    assert!(s.private_seen(mb.id, reader.id).await.expect("seen").is_empty());
    s.set_acl(mb.id, "reader@acl.test", None).await.expect("deleteacl");
    assert!(s.shared_with(reader.id, &["reader@acl.test".into()]).await.expect("shared").is_empty());
}

async fn quota_and_atomic_delivery<S: Store>(s: &S) {
    s.add_domain("quota.test").await.expect("domain");
    let a = s.create_account(NewAccount { quota: 100, ..new_account("q@quota.test") }).await.expect("account");
    let inbox = s.mailbox(a.id, "INBOX").await.expect("q").expect("inbox");
    let mk = |body: &[u8], enforce: bool| {
        let body = body.to_vec();
        async move {
            Delivery {
                body: s.stage(body).await.expect("stage"),
                internal_date: 0,
                envelope: None,
                flags: Flags::default(),
                keywords: Vec::new(),
                targets: vec![DeliveryTarget { account: a.id, mailbox: "INBOX".into() }],
                relay: Vec::new(),
                enforce_quota: enforce,
            }
        }
    };
    let sixty = [b'x'; 60];
    s.deliver(mk(&sixty, true).await).await.expect("within quota");
    // A second 60 bytes would pass 100: refused when enforced, and nothing is stored.
    assert!(matches!(s.deliver(mk(&sixty, true).await).await, Err(StoreError::OverQuota(_))));
    // Several deliveries at once are all or nothing.
    let both = vec![mk(b"Subject: a\r\n\r\n1\r\n", true).await, mk(&sixty, true).await];
    assert!(matches!(s.deliver_all(both).await, Err(StoreError::OverQuota(_))));
    assert_eq!(s.message_list(inbox.id).await.expect("list").len(), 1, "a refused batch leaves nothing behind");
    // COPY is refused as a whole too; SMTP-style delivery may go over.
    let other = s.create_mailbox(a.id, "Other", None).await.expect("mailbox");
    let uid = s.message_list(inbox.id).await.expect("list")[0].uid;
    assert!(matches!(s.copy_messages(inbox.id, &[uid], other.id).await, Err(StoreError::OverQuota(_))));
    s.deliver(mk(&sixty, false).await).await.expect("not enforced");
    assert_eq!(s.account(a.id).await.expect("q").expect("a").used, 120);
    // A raised quota lets the COPY through.
    s.set_quota("q@quota.test", 1000).await.expect("set quota");
    s.copy_messages(inbox.id, &[uid], other.id).await.expect("copy within the new quota");
    assert!(s.set_quota("ghost@quota.test", 1).await.is_err());
}

async fn mailbox_operations<S: Store>(s: &S) {
    s.add_domain("ops.test").await.expect("domain");
    let a = s.create_account(new_account("ops@ops.test")).await.expect("account");
    let d1 = deliver_one(s, a.id, b"Subject: a\r\n\r\nA\r\n").await;
    let d2 = deliver_one(s, a.id, b"Subject: b\r\n\r\nB\r\n").await;
    s.store_flags(d1.mailbox, &[d1.uid], FlagOp::Add, Flags::FLAGGED, &[], None).await.expect("flag");

    // COPY: new UIDs in the target, flags and body kept, source untouched.
    let arch = s.mailbox(a.id, "Archive").await.expect("q").expect("Archive");
    let (uv, pairs) = s.copy_messages(d1.mailbox, &[d2.uid, d1.uid, 999], arch.id).await.expect("copy");
    assert_eq!(uv, arch.uidvalidity);
    assert_eq!(pairs, vec![(d1.uid, arch.uidnext), (d2.uid, arch.uidnext + 1)]);
    let copied = s.messages(arch.id, 1..=u32::MAX).await.expect("q");
    assert!(copied[0].flags.contains(Flags::FLAGGED));
    assert_eq!(s.read_blob(&copied[1].blob).await.expect("blob"), b"Subject: b\r\n\r\nB\r\n");
    assert_eq!(s.mailbox_by_id(arch.id).await.expect("q").expect("mb").messages, 2);

    // \Recent: the first claim gets everything, the next one nothing new.
    let inbox = s.mailbox(a.id, "INBOX").await.expect("q").expect("INBOX");
    assert_eq!(s.claim_recent(inbox.id).await.expect("claim"), 0);
    assert_eq!(s.claim_recent(inbox.id).await.expect("claim"), d2.uid);
    assert_eq!(s.mailbox(a.id, "INBOX").await.expect("q").expect("INBOX").recent_uid, d2.uid);

    // RENAME with children; DELETE; SUBSCRIBE.
    s.create_mailbox(a.id, "Work", None).await.expect("create");
    s.create_mailbox(a.id, "Work/2024", None).await.expect("create");
    s.rename_mailbox(a.id, "Work", "Jobs").await.expect("rename");
    assert!(s.mailbox(a.id, "Jobs/2024").await.expect("q").is_some(), "children move along");
    assert!(s.mailbox(a.id, "Work").await.expect("q").is_none());
    assert!(matches!(s.rename_mailbox(a.id, "Jobs", "Archive").await, Err(StoreError::Exists(_))));
    s.set_subscribed(a.id, "Jobs", false).await.expect("unsubscribe");
    assert!(!s.mailbox(a.id, "Jobs").await.expect("q").expect("Jobs").subscribed);
    // Subscriptions are names: new mailboxes start unsubscribed, a name may be subscribed
    // before it exists, the subscription follows a rename and outlives a delete.
    assert!(!s.mailbox(a.id, "Jobs/2024").await.expect("q").expect("child").subscribed);
    s.set_subscribed(a.id, "Jobs/2024", true).await.expect("subscribe");
    s.set_subscribed(a.id, "Later", true).await.expect("subscribe a name that does not exist");
    s.rename_mailbox(a.id, "Jobs", "Work").await.expect("rename back");
    let subs = s.subscriptions(a.id).await.expect("subscriptions");
    assert!(subs.contains(&"Work/2024".to_string()) && subs.contains(&"Later".to_string()), "{subs:?}");
    assert!(!subs.contains(&"Jobs/2024".to_string()));
    s.delete_mailbox(a.id, "Work/2024").await.expect("delete");
    assert!(s.subscriptions(a.id).await.expect("subscriptions").contains(&"Work/2024".to_string()));
    s.rename_mailbox(a.id, "Work", "Jobs").await.expect("rename again");
    s.delete_mailbox(a.id, "Archive").await.expect("delete");
    assert!(s.mailbox(a.id, "Archive").await.expect("q").is_none());
    assert!(s.delete_mailbox(a.id, "INBOX").await.is_err(), "INBOX is never deleted");
    assert_eq!(s.read_blob(&copied[1].blob).await.expect("still in INBOX"), b"Subject: b\r\n\r\nB\r\n");

    // Renaming INBOX moves its messages and leaves it empty.
    let inbox = s.mailbox(a.id, "INBOX").await.expect("q").expect("INBOX");
    s.rename_mailbox(a.id, "INBOX", "Old mail").await.expect("rename INBOX");
    let old = s.mailbox(a.id, "Old mail").await.expect("q").expect("moved");
    assert_eq!(old.messages, 2);
    let moved = s.messages(old.id, 1..=u32::MAX).await.expect("q");
    assert_eq!(moved.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    // CONDSTORE: the new mailbox's HIGHESTMODSEQ is at least every message's MODSEQ.
    assert!(moved.iter().all(|m| m.modseq <= old.highestmodseq), "{moved:?} above {}", old.highestmodseq);
    let inbox2 = s.mailbox(a.id, "INBOX").await.expect("q").expect("INBOX stays");
    assert_eq!(inbox2.messages, 0);
    assert_eq!(s.expunged_since(inbox.id, inbox.highestmodseq).await.expect("q"), vec![d1.uid, d2.uid]);
    let acct = s.account(a.id).await.expect("q").expect("ops");
    assert_eq!(acct.used, (b"Subject: a\r\n\r\nA\r\n".len() + b"Subject: b\r\n\r\nB\r\n".len()) as u64);
}

async fn directory<S: Store>(s: &S) {
    s.add_domain("Example.ORG").await.expect("add domain");
    assert!(matches!(s.add_domain("example.org").await, Err(StoreError::Exists(_))));
    assert_eq!(s.domains().await.expect("domains")[0].name, "example.org");
    assert!(matches!(s.create_account(new_account("x@nowhere.test")).await, Err(StoreError::NotFound(_))));

    let a = s.create_account(new_account("Alice@example.org")).await.expect("create");
    assert_eq!(a.login, "alice@example.org");
    let names: Vec<String> = s.mailboxes(a.id).await.expect("mailboxes").into_iter().map(|m| m.name).collect();
    for want in ["INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"] {
        assert!(names.iter().any(|n| n == want), "missing default mailbox {want}");
    }
    let sent = s.mailbox(a.id, "Sent").await.expect("q").expect("Sent");
    assert_eq!(sent.special_use.map(|u| u.as_str()), Some("\\Sent"));
    assert!(s.mailbox(a.id, "inbox").await.expect("q").is_some(), "INBOX is case-insensitive");
    assert!(matches!(s.create_account(new_account("alice@example.org")).await, Err(StoreError::Exists(_))));

    s.add_alias("postmaster@example.org", "alice@example.org").await.expect("alias");
    assert!(matches!(s.add_alias("alice@example.org", "x@y.z").await, Err(StoreError::Exists(_))));
    assert_eq!(
        s.lookup_address("POSTMASTER@example.org").await.expect("lookup"),
        AddressEntry::Alias(vec!["alice@example.org".into()])
    );
    s.create_group("team@example.org", "Team").await.expect("group");
    s.add_group_member("team@example.org", "alice@example.org").await.expect("member");
    s.add_group_member("team@example.org", "friend@elsewhere.test").await.expect("member");
    match s.lookup_address("team@example.org").await.expect("lookup") {
        AddressEntry::Group(g) => assert_eq!(g.members.len(), 2),
        other => panic!("expected group, got {other:?}"),
    }
    assert!(matches!(s.lookup_address("alice@example.org").await.expect("lookup"), AddressEntry::Account(_)));
    assert_eq!(s.lookup_address("nobody@example.org").await.expect("lookup"), AddressEntry::None);
    assert!(s.remove_domain("example.org").await.is_err(), "domain with users must not be removed");

    s.set_password("alice@example.org", "$argon2id$other", "4096:c2FsdA==:a2V5:a2V5").await.expect("passwd");
    let a2 = s.account_by_login("alice@example.org").await.expect("q").expect("exists");
    assert_eq!(a2.password_hash, "$argon2id$other");
    assert_eq!(a2.scram, "4096:c2FsdA==:a2V5:a2V5");

    s.add_domain("gone.test").await.expect("domain");
    s.create_account(new_account("bob@gone.test")).await.expect("bob");
    s.remove_account("bob@gone.test").await.expect("remove bob");
    assert!(s.account_by_login("bob@gone.test").await.expect("q").is_none());
    s.remove_domain("gone.test").await.expect("remove empty domain");
}

pub(crate) async fn deliver_one<S: Store>(s: &S, account: i64, body: &[u8]) -> crate::Delivered {
    let staged = s.stage(body.to_vec()).await.expect("stage");
    let d = Delivery {
        body: staged,
        internal_date: 1_700_000_000,
        envelope: Some(Envelope { mail_from: "sender@x.test".into(), ..Envelope::default() }),
        flags: Flags::default(),
        keywords: Vec::new(),
        targets: vec![DeliveryTarget { account, mailbox: "INBOX".into() }],
        relay: Vec::new(),
        enforce_quota: false,
    };
    s.deliver(d).await.expect("deliver").remove(0)
}

async fn delivery_and_uids<S: Store>(s: &S) {
    let a = s.account_by_login("alice@example.org").await.expect("q").expect("alice");
    let mut bus = s.subscribe();
    let before = s.mailbox(a.id, "INBOX").await.expect("q").expect("inbox");
    let d1 = deliver_one(s, a.id, b"Subject: one\r\n\r\nbody one\r\n").await;
    let d2 = deliver_one(s, a.id, b"Subject: two\r\n\r\nbody two\r\n").await;
    assert_eq!(d1.uid, before.uidnext);
    assert_eq!(d2.uid, d1.uid + 1);
    assert!(d2.modseq > d1.modseq);
    assert_eq!(d1.uidvalidity, before.uidvalidity);
    let after = s.mailbox(a.id, "INBOX").await.expect("q").expect("inbox");
    assert_eq!(after.uidnext, d2.uid + 1);
    assert_eq!(after.highestmodseq, d2.modseq);
    assert_eq!(after.messages, 2);

    let msgs = s.messages(after.id, 1..=u32::MAX).await.expect("messages");
    assert_eq!(msgs.len(), 2);
    let list = s.message_list(after.id).await.expect("list");
    let brief = |uid: u32, size: u64, blob: &str| (uid, size, blob.to_string());
    assert_eq!(
        list.iter().map(|m| brief(m.uid, m.size, &m.blob)).collect::<Vec<_>>(),
        msgs.iter().map(|m| brief(m.uid, m.size, &m.blob)).collect::<Vec<_>>()
    );
    assert_eq!(msgs[0].summary.envelope.subject.as_deref(), Some("one"));
    assert_eq!(msgs[1].size, 26);
    assert_eq!(s.read_blob(&msgs[1].blob).await.expect("blob"), b"Subject: two\r\n\r\nbody two\r\n");
    let env = s.envelope_of(after.id, d1.uid).await.expect("q").expect("envelope");
    assert_eq!(env.mail_from, "sender@x.test");

    let c1 = bus.recv().await.expect("change");
    assert!(matches!(c1, Change::Appended { uid, .. } if uid == d1.uid));

    // Mailbox names are unique per account; a new mailbox gets its own UIDVALIDITY.
    let m = s.create_mailbox(a.id, "Projects", None).await.expect("create");
    assert!(matches!(s.create_mailbox(a.id, "Projects", None).await, Err(StoreError::Exists(_))));
    assert_ne!(m.uidvalidity, 0);
    let acct = s.account(a.id).await.expect("q").expect("alice");
    assert_eq!(acct.used, 26 + 26);
}

async fn flags_and_expunge<S: Store>(s: &S) {
    let a = s.account_by_login("alice@example.org").await.expect("q").expect("alice");
    let inbox = s.mailbox(a.id, "INBOX").await.expect("q").expect("inbox");
    let msgs = s.messages(inbox.id, 1..=u32::MAX).await.expect("messages");
    let uid = msgs[0].uid;
    let changed = s
        .store_flags(inbox.id, &[uid], FlagOp::Add, Flags::SEEN.union(Flags::DELETED), &["$Label1".into()], None)
        .await
        .expect("store")
        .changed;
    assert_eq!(changed.len(), 1);
    assert!(changed[0].1 > inbox.highestmodseq);
    let again = s.store_flags(inbox.id, &[uid], FlagOp::Add, Flags::SEEN, &[], None).await.expect("store");
    assert!(again.changed.is_empty(), "a no-op flag change must not bump MODSEQ");
    // UNCHANGEDSINCE: a message changed after the given MODSEQ is left alone.
    let guarded =
        s.store_flags(inbox.id, &[uid], FlagOp::Add, Flags::FLAGGED, &[], Some(changed[0].1 - 1)).await.expect("store");
    assert_eq!((guarded.changed.len(), guarded.modified.clone()), (0, vec![uid]));
    // The same change since the current MODSEQ shows in changes_since with the keywords.
    let since = s.changes_since(inbox.id, inbox.highestmodseq).await.expect("changes");
    assert_eq!(since.changed.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![uid]);
    assert_eq!(since.changed[0].keywords, vec!["$Label1".to_string()]);
    assert_eq!(since.highest_modseq, changed[0].1);
    let m = s.messages(inbox.id, uid..=uid).await.expect("q").remove(0);
    assert!(m.flags.contains(Flags::SEEN) && m.flags.contains(Flags::DELETED));
    assert_eq!(m.keywords, vec!["$Label1".to_string()]);

    let hms = s.mailbox(a.id, "INBOX").await.expect("q").expect("inbox").highestmodseq;
    let removed = s.expunge(inbox.id, &[uid, 999_999]).await.expect("expunge");
    assert_eq!(removed, vec![uid]);
    assert_eq!(s.expunged_since(inbox.id, hms).await.expect("q"), vec![uid]);
    let since = s.changes_since(inbox.id, hms).await.expect("changes");
    assert_eq!((since.expunged.clone(), since.changed.len()), (vec![uid], 0));
    assert!(since.highest_modseq > hms);
    let left = s.messages(inbox.id, 1..=u32::MAX).await.expect("q");
    assert!(left.iter().all(|m| m.uid != uid));
    let mb = s.mailbox(a.id, "INBOX").await.expect("q").expect("inbox");
    assert_eq!(mb.messages as usize, left.len());
    assert!(mb.uidnext > uid, "UIDs are never reused");
}

async fn single_instance<S: Store>(s: &S) {
    s.create_account(new_account("carol@example.org")).await.expect("carol");
    let a = s.account_by_login("alice@example.org").await.expect("q").expect("alice");
    let c = s.account_by_login("carol@example.org").await.expect("q").expect("carol");
    let body = vec![b'z'; crate::blob::INLINE_MAX + 100];
    let staged = s.stage(body.clone()).await.expect("stage");
    let out = s
        .deliver(Delivery {
            body: staged,
            internal_date: 1_700_000_000,
            envelope: None,
            flags: Flags::default(),
            keywords: Vec::new(),
            targets: vec![
                DeliveryTarget { account: a.id, mailbox: "INBOX".into() },
                DeliveryTarget { account: c.id, mailbox: "INBOX".into() },
            ],
            relay: vec!["remote@elsewhere.test".into()],
            enforce_quota: false,
        })
        .await
        .expect("deliver");
    assert_eq!(out.len(), 2);
    let ma = s.messages(out[0].mailbox, out[0].uid..=out[0].uid).await.expect("q").remove(0);
    let mc = s.messages(out[1].mailbox, out[1].uid..=out[1].uid).await.expect("q").remove(0);
    assert_eq!(ma.blob, mc.blob, "one body stored once for both recipients");
    let q = s.queued().await.expect("queue");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].recipient, "remote@elsewhere.test");
    assert_eq!(q[0].blob, ma.blob);
    s.expunge(out[0].mailbox, &[out[0].uid]).await.expect("expunge");
    assert_eq!(s.read_blob(&mc.blob).await.expect("still referenced"), body);
    s.expunge(out[1].mailbox, &[out[1].uid]).await.expect("expunge");
    assert_eq!(s.read_blob(&mc.blob).await.expect("queue still refers to it"), body);
    // The queue's life: due now, deferred with its error, held, released, then done.
    let id = q[0].id;
    assert_eq!(s.queue_due(crate::now() + 1, 10).await.expect("due").len(), 1);
    assert!(s.queue_due(crate::now() + 1, 10).await.expect("due").is_empty(), "a claimed entry is handed out once");
    let later = crate::now() + 600;
    s.queue_update(id, QueueOutcome::Retry { at: later, error: "451 4.3.0 try later".into() }).await.expect("retry");
    assert!(s.queue_due(crate::now() + 1, 10).await.expect("due").is_empty(), "not due before its time");
    let e = s.queued().await.expect("queue").remove(0);
    assert_eq!((e.attempts, e.next_attempt, e.last_error.as_str()), (1, later, "451 4.3.0 try later"));
    s.queue_update(id, QueueOutcome::Hold(true)).await.expect("hold");
    assert!(s.queue_due(later + 1, 10).await.expect("due").is_empty(), "held entries wait");
    s.queue_update(id, QueueOutcome::RetryNow).await.expect("release");
    assert_eq!(s.queue_due(crate::now() + 1, 10).await.expect("due").len(), 1);
    s.queue_update(id, QueueOutcome::Done).await.expect("done");
    assert!(s.queued().await.expect("queue").is_empty());
    assert!(
        matches!(s.read_blob(&mc.blob).await, Err(StoreError::NotFound(_))),
        "the last reference went with the queue entry"
    );

    // A body nobody refers to any more is removed.
    let lone = vec![b'y'; crate::blob::INLINE_MAX + 100];
    let d = deliver_one(s, a.id, &lone).await;
    let m = s.messages(d.mailbox, d.uid..=d.uid).await.expect("q").remove(0);
    s.expunge(d.mailbox, &[d.uid]).await.expect("expunge");
    assert!(matches!(s.read_blob(&m.blob).await, Err(StoreError::NotFound(_))), "unreferenced body is removed");
}
