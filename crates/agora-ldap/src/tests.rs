//! LDAP session tests over an in-memory stream against a real store.

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::throttle::Throttle;
use agora_store::sql::SqlStore;
use agora_store::{Contact, Profile, Role, Store};
use bytes::BytesMut;
use ldap3_proto::control::{LdapControl, ServerSortRequet};
use ldap3_proto::proto::*;
use tokio_util::sync::CancellationToken;

use crate::{LdapConfig, Session, Shared};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    let d = Directory::new(Arc::clone(&store));
    d.add_domain("example.org").await.unwrap();
    d.add_domain("other.test").await.unwrap();
    d.add_user("admin@example.org", "Admin", "admin-pw", 0, Role::Admin).await.unwrap();
    let p = |title: &str, phone: &str| Profile { title: title.into(), phone: phone.into(), ..Profile::default() };
    d.add_user_with("ann@example.org", "Ann Lee", "ann-pw", 0, Role::User, p("Engineer", "+1 555 0100")).await.unwrap();
    let hidden = Profile { hidden: true, ..Profile::default() };
    d.add_user_with("annabel@example.org", "Annabel Smith", "pw", 0, Role::User, hidden).await.unwrap();
    d.add_user("bob@example.org", "Bob Annis", "bob-pw", 0, Role::User).await.unwrap();
    d.add_user("carol@other.test", "Ann Other", "carol-pw", 0, Role::User).await.unwrap();
    d.add_group("team@example.org", "Team").await.unwrap();
    d.add_group_member("team@example.org", "ann@example.org").await.unwrap();
    d.add_group_member("team@example.org", "bob@example.org").await.unwrap();
    d.add_group("all@example.org", "Everyone").await.unwrap();
    d.add_group_member("all@example.org", "team@example.org").await.unwrap();
    d.add_group_member("all@example.org", "friend@elsewhere.test").await.unwrap();
    store
        .add_contact(Contact {
            address: "partner@else.test".into(),
            domain: "example.org".into(),
            display_name: "Anne Partner".into(),
            ..Contact::default()
        })
        .await
        .unwrap();
    let shared = Shared::new(Arc::clone(&store), d, Arc::new(Throttle::new()));
    Fixture { _dir: dir, store, shared }
}

fn plain() -> LdapConfig {
    LdapConfig {
        allow_plaintext: true,
        default_domain: "example.org".into(),
        hostname: "mx.example.org".into(),
        ..LdapConfig::default()
    }
}

struct Client {
    c: agora_net::testing::TestClient,
    next: i32,
}

impl Fixture {
    async fn connect(&self, cfg: LdapConfig) -> Client {
        let (conn, c) = agora_net::testing::pipe(389, CancellationToken::new());
        let session = Session::new(Arc::new(cfg), Arc::clone(&self.shared));
        tokio::spawn(session.run(conn));
        Client { c, next: 1 }
    }
}

fn filter(s: &str) -> LdapFilter {
    ldap3_proto::parse_ldap_filter_str(s).unwrap()
}

/// An extensible match (the codec's filter parser takes no spaces or `=` in values).
fn ext(attr: &str, rule: &str, value: &str) -> LdapFilter {
    LdapFilter::Extensible(LdapMatchingRuleAssertion {
        matching_rule: Some(rule.into()),
        type_: Some(attr.into()),
        match_value: value.into(),
        dn_attributes: false,
    })
}

impl Client {
    async fn send(&mut self, op: LdapOp, ctrl: Vec<LdapControl>) -> i32 {
        let id = self.next;
        self.next += 1;
        let mut out = BytesMut::new();
        let tag: ldap3_lber::structure::StructureTag = LdapMsg::new_with_ctrls(id, op, ctrl).into();
        ldap3_lber::write::encode_into(&mut out, tag).unwrap();
        self.c.send_bytes(&out).await;
        id
    }

    async fn recv(&mut self) -> LdapMsg {
        let mut frame = self.c.read_bytes(2).await;
        let len = if frame[1] < 0x80 {
            frame[1] as usize
        } else {
            let n = (frame[1] & 0x7f) as usize;
            let b = self.c.read_bytes(n).await;
            frame.extend_from_slice(&b);
            b.iter().fold(0usize, |a, x| (a << 8) | *x as usize)
        };
        let body = self.c.read_bytes(len).await;
        frame.extend_from_slice(&body);
        crate::session::decode(&frame).expect("a valid LDAP message")
    }

    async fn bind(&mut self, dn: &str, pw: &str) -> LdapResultCode {
        let op =
            LdapOp::BindRequest(LdapBindRequest { version: 3, dn: dn.into(), cred: LdapBindCred::Simple(pw.into()) });
        self.send(op, Vec::new()).await;
        match self.recv().await.op {
            LdapOp::BindResponse(r) => r.res.code,
            other => panic!("not a bind response: {other:?}"),
        }
    }

    async fn search_with(
        &mut self,
        base: &str,
        scope: LdapSearchScope,
        f: &str,
        attrs: &[&str],
        ctrl: Vec<LdapControl>,
    ) -> (Vec<LdapSearchResultEntry>, LdapResult, Vec<LdapControl>) {
        let op = LdapOp::SearchRequest(LdapSearchRequest {
            base: base.into(),
            scope,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter: filter(f),
            attrs: attrs.iter().map(|a| a.to_string()).collect(),
        });
        self.send(op, ctrl).await;
        let mut entries = Vec::new();
        loop {
            let m = self.recv().await;
            match m.op {
                LdapOp::SearchResultEntry(e) => entries.push(e),
                LdapOp::SearchResultDone(r) => return (entries, r, m.ctrl),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn search(&mut self, base: &str, f: &str, attrs: &[&str]) -> (Vec<String>, LdapResultCode) {
        self.search_filter(base, filter(f), attrs).await
    }

    async fn search_filter(&mut self, base: &str, f: LdapFilter, attrs: &[&str]) -> (Vec<String>, LdapResultCode) {
        let op = LdapOp::SearchRequest(LdapSearchRequest {
            base: base.into(),
            scope: LdapSearchScope::Subtree,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter: f,
            attrs: attrs.iter().map(|a| a.to_string()).collect(),
        });
        self.send(op, Vec::new()).await;
        let mut e = Vec::new();
        let r = loop {
            let m = self.recv().await;
            match m.op {
                LdapOp::SearchResultEntry(x) => e.push(x),
                LdapOp::SearchResultDone(r) => break r,
                other => panic!("unexpected {other:?}"),
            }
        };
        let mut dns: Vec<String> = e.into_iter().map(|e| e.dn).collect();
        dns.sort();
        (dns, r.code)
    }

    async fn write(&mut self, op: LdapOp) -> LdapResult {
        self.send(op, Vec::new()).await;
        match self.recv().await.op {
            LdapOp::AddResponse(r)
            | LdapOp::ModifyResponse(r)
            | LdapOp::DelResponse(r)
            | LdapOp::ModifyDNResponse(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn attr<'a>(e: &'a LdapSearchResultEntry, name: &str) -> Vec<&'a [u8]> {
    e.attributes
        .iter()
        .filter(|a| a.atype.eq_ignore_ascii_case(name))
        .flat_map(|a| a.vals.iter().map(|v| v.as_slice()))
        .collect()
}

const BASE: &str = "dc=example,dc=org";
const ADDRESS_BOOK: &str = "(|(cn=ann*)(mail=ann*)(sn=ann*)(givenName=ann*))";

#[tokio::test]
async fn root_dse_and_schema_are_public_the_rest_needs_a_bind() {
    let f = fixture().await;
    let mut c = f.connect(plain()).await;
    let (e, r, _) = c.search_with("", LdapSearchScope::Base, "(objectClass=*)", &["+"], Vec::new()).await;
    assert_eq!(r.code, LdapResultCode::Success);
    let ctx: Vec<&[u8]> = attr(&e[0], "namingContexts");
    assert_eq!(ctx, [b"dc=example,dc=org".as_slice(), b"dc=other,dc=test"]);
    assert!(attr(&e[0], "supportedControl").contains(&crate::session::CTRL_PAGED.as_bytes()));
    assert_eq!(attr(&e[0], "vendorName"), [b"Agora".as_slice()]);
    let (e, _, _) = c
        .search_with(
            "cn=Subschema",
            LdapSearchScope::Base,
            "(objectClass=subschema)",
            &["attributeTypes", "objectClasses"],
            Vec::new(),
        )
        .await;
    let types = attr(&e[0], "attributeTypes");
    assert!(types.iter().any(|t| std::str::from_utf8(t).unwrap().contains("'mail'")));
    assert!(attr(&e[0], "objectClasses").iter().any(|t| std::str::from_utf8(t).unwrap().contains("'inetOrgPerson'")));
    let (dns, code) = c.search(BASE, "(objectClass=*)", &[]).await;
    assert_eq!((dns.len(), code), (0, LdapResultCode::InsufficentAccessRights));
}

#[tokio::test]
async fn binds_by_dn_or_address_and_only_over_tls_unless_allowed() {
    let f = fixture().await;
    let mut c = f.connect(LdapConfig { allow_plaintext: false, ..plain() }).await;
    assert_eq!(c.bind("uid=ann,ou=people,dc=example,dc=org", "ann-pw").await, LdapResultCode::ConfidentialityRequired);
    let mut c = f.connect(plain()).await;
    assert_eq!(c.bind("UID=Ann, ou=People,dc=Example,dc=ORG", "ann-pw").await, LdapResultCode::Success);
    assert_eq!(c.bind("ann@example.org", "ann-pw").await, LdapResultCode::Success);
    assert_eq!(c.bind("uid=ann,ou=people,dc=example,dc=org", "").await, LdapResultCode::UnwillingToPerform);
    assert_eq!(c.bind("cn=team,ou=groups,dc=example,dc=org", "x").await, LdapResultCode::InvalidCredentials);
    assert_eq!(c.bind("", "").await, LdapResultCode::Success, "anonymous");
    // EXTERNAL needs a verified client certificate, which this connection has not.
    let ext = LdapBindCred::SASL(SaslCredentials { mechanism: "EXTERNAL".into(), credentials: Vec::new() });
    c.send(LdapOp::BindRequest(LdapBindRequest { version: 3, dn: String::new(), cred: ext }), Vec::new()).await;
    let LdapOp::BindResponse(r) = c.recv().await.op else { panic!() };
    assert_eq!(r.res.code, LdapResultCode::InappropriateAuthentication);
    c.send(LdapOp::ExtendedRequest(LdapExtendedRequest { name: OID_WHOAMI.into(), value: None }), Vec::new()).await;
    let LdapOp::ExtendedResponse(r) = c.recv().await.op else { panic!() };
    assert_eq!(r.value.unwrap_or_default(), b"", "anonymous after an anonymous bind");
    assert_eq!(c.bind("ann@example.org", "ann-pw").await, LdapResultCode::Success);
    c.send(LdapOp::ExtendedRequest(LdapExtendedRequest { name: OID_WHOAMI.into(), value: None }), Vec::new()).await;
    let LdapOp::ExtendedResponse(r) = c.recv().await.op else { panic!() };
    assert_eq!(r.value.unwrap(), b"u:ann@example.org");
}

#[tokio::test]
async fn the_address_book_query_finds_exactly_the_right_entries() {
    let f = fixture().await;
    let mut c = f.connect(plain()).await;
    assert_eq!(c.bind("bob@example.org", "bob-pw").await, LdapResultCode::Success);
    let (dns, code) = c.search(BASE, ADDRESS_BOOK, &["cn", "mail"]).await;
    assert_eq!(code, LdapResultCode::Success);
    assert_eq!(
        dns,
        [
            "mail=partner@else.test,ou=contacts,dc=example,dc=org",
            "uid=ann,ou=people,dc=example,dc=org",
            "uid=bob,ou=people,dc=example,dc=org",
        ],
        "hidden annabel and the other domain's carol are not there"
    );
    // The same from the root on 389 stays in the bound naming context.
    let (dns, _) = c.search("", ADDRESS_BOOK, &["cn"]).await;
    assert_eq!(dns.len(), 3);
    assert!(dns.iter().all(|d| d.ends_with(BASE)));
    // The hidden user still exists for mail, and sees herself.
    let mut h = f.connect(plain()).await;
    assert_eq!(h.bind("annabel@example.org", "pw").await, LdapResultCode::Success);
    let (dns, _) = h.search(BASE, "(uid=annabel)", &[]).await;
    assert_eq!(dns, ["uid=annabel,ou=people,dc=example,dc=org"]);
    // Matching follows each attribute's syntax.
    let (dns, _) = c.search(BASE, "(&(mail=ANN@Example.ORG)(telephoneNumber=+15550100))", &[]).await;
    assert_eq!(dns, ["uid=ann,ou=people,dc=example,dc=org"]);
    let (dns, _) = c.search_filter(BASE, ext("cn", "caseExactMatch", "ann lee"), &[]).await;
    assert!(dns.is_empty(), "case-exact rule");
    let (dns, _) = c.search_filter(BASE, ext("cn", "2.5.13.2", "ann lee"), &[]).await;
    assert_eq!(dns.len(), 1);
    let (dns, _) = c.search(BASE, "(!(objectClass=inetOrgPerson))", &["1.1"]).await;
    assert!(dns.iter().any(|d| d.starts_with("cn=team")) && dns.iter().any(|d| d.starts_with("ou=people")));
    let (dns, code) = c.search(BASE, "(userPassword=*)", &[]).await;
    assert_eq!((dns.len(), code), (0, LdapResultCode::Success), "secrets cannot even be matched");
}

#[tokio::test]
async fn entries_carry_addresses_groups_and_identities() {
    let f = fixture().await;
    let mut c = f.connect(plain()).await;
    assert_eq!(c.bind("ann@example.org", "ann-pw").await, LdapResultCode::Success);
    let (e, _, _) = c
        .search_with(
            "uid=ann,ou=people,dc=example,dc=org",
            LdapSearchScope::Base,
            "(objectClass=*)",
            &["*", "+"],
            Vec::new(),
        )
        .await;
    let e = &e[0];
    assert_eq!(attr(e, "title"), [b"Engineer".as_slice()]);
    assert_eq!(attr(e, "sn"), [b"Lee".as_slice()]);
    assert_eq!(attr(e, "givenName"), [b"Ann".as_slice()]);
    assert_eq!(attr(e, "proxyAddresses"), [b"SMTP:ann@example.org".as_slice()]);
    let mut groups: Vec<&[u8]> = attr(e, "memberOf");
    groups.sort();
    assert_eq!(
        groups,
        [b"cn=all,ou=groups,dc=example,dc=org".as_slice(), b"cn=team,ou=groups,dc=example,dc=org"],
        "nested"
    );
    assert_eq!(attr(e, "entryUUID")[0].len(), 36);
    assert!(attr(e, "userPassword").is_empty());
    let (e, _, _) = c
        .search_with(
            "cn=all,ou=groups,dc=example,dc=org",
            LdapSearchScope::Base,
            "(objectClass=groupOfNames)",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(attr(&e[0], "member"), [b"cn=team,ou=groups,dc=example,dc=org".as_slice()]);
    assert_eq!(attr(&e[0], "mgrpRFC822MailMember"), [b"friend@elsewhere.test".as_slice()]);
    // Group membership through nesting, as Active Directory's in-chain rule asks it.
    let chain = ext("memberOf", "1.2.840.113556.1.4.1941", "cn=all,ou=groups,dc=example,dc=org");
    let (dns, _) = c.search_filter(BASE, chain, &[]).await;
    assert!(dns.contains(&"uid=bob,ou=people,dc=example,dc=org".to_string()));
}

#[tokio::test]
async fn the_global_catalog_spans_domains_and_is_read_only() {
    let f = fixture().await;
    let mut gc = f.connect(LdapConfig { gc: true, ..plain() }).await;
    assert_eq!(gc.bind("bob@example.org", "bob-pw").await, LdapResultCode::Success);
    let (dns, _) = gc.search("", ADDRESS_BOOK, &["cn"]).await;
    assert_eq!(dns.len(), 4, "{dns:?}");
    assert!(dns.contains(&"uid=carol,ou=people,dc=other,dc=test".to_string()));
    // The partial attribute set: a photo or certificate is not in the GC.
    let (e, _, _) = gc.search_with("", LdapSearchScope::Subtree, "(uid=ann)", &["*"], Vec::new()).await;
    assert!(attr(&e[0], "title").len() == 1 && attr(&e[0], "postalAddress").is_empty());
    let mut admin = f.connect(LdapConfig { gc: true, ..plain() }).await;
    assert_eq!(admin.bind("admin@example.org", "admin-pw").await, LdapResultCode::Success);
    let r = admin.write(LdapOp::DelRequest("uid=bob,ou=people,dc=example,dc=org".into())).await;
    assert_eq!(r.code, LdapResultCode::UnwillingToPerform);
}

fn pa(name: &str, vals: &[&str]) -> LdapPartialAttribute {
    LdapPartialAttribute { atype: name.into(), vals: vals.iter().map(|v| v.as_bytes().to_vec()).collect() }
}

#[tokio::test]
async fn administrators_write_the_directory_the_mail_services_use() {
    let f = fixture().await;
    let mut c = f.connect(plain()).await;
    assert_eq!(c.bind("uid=admin,ou=people,dc=example,dc=org", "admin-pw").await, LdapResultCode::Success);
    let add = LdapOp::AddRequest(LdapAddRequest {
        dn: "uid=dave,ou=people,dc=example,dc=org".into(),
        attributes: vec![
            pa("objectClass", &["top", "person", "organizationalPerson", "inetOrgPerson"]),
            pa("cn", &["Dave Jones"]),
            pa("sn", &["Jones"]),
            pa("mail", &["dave@example.org", "dj@example.org"]),
            pa("title", &["Chef"]),
            pa("userPassword", &["dave-pw"]),
        ],
    });
    let foreign = LdapOp::AddRequest(LdapAddRequest {
        dn: "uid=eve,ou=people,dc=example,dc=org".into(),
        attributes: vec![pa("objectClass", &["inetOrgPerson"]), pa("cn", &["Eve"]), pa("mail", &["eve@unhosted.test"])],
    });
    assert_eq!(c.write(foreign).await.code, LdapResultCode::UnwillingToPerform);
    assert!(f.store.account_by_login("eve@example.org").await.unwrap().is_none(), "nothing half-made");
    assert_eq!(c.write(add.clone()).await.code, LdapResultCode::Success);
    assert_eq!(c.write(add).await.code, LdapResultCode::EntryAlreadyExists);
    // The account exists at once: it logs in and its extra address delivers.
    let acc = f.shared.dir.authenticate("dave@example.org", "dave-pw").await.unwrap().expect("logs in");
    assert_eq!((acc.display_name.as_str(), acc.profile.title.as_str()), ("Dave Jones", "Chef"));
    assert!(matches!(f.shared.dir.resolve("dj@example.org").await.unwrap(), agora_directory::Recipient::Local(_)));
    // A group changed over LDAP changes delivery.
    let m = LdapOp::ModifyRequest(LdapModifyRequest {
        dn: "cn=team,ou=groups,dc=example,dc=org".into(),
        changes: vec![LdapModify {
            operation: LdapModifyType::Add,
            modification: pa("member", &["uid=dave,ou=people,dc=example,dc=org"]),
        }],
    });
    assert_eq!(c.write(m).await.code, LdapResultCode::Success);
    let agora_directory::Recipient::Local(res) = f.shared.dir.resolve("team@example.org").await.unwrap() else {
        panic!()
    };
    assert!(res.accounts.iter().any(|a| a.login == "dave@example.org"));
    // Rename keeps the mailbox; without deleteoldrdn the old address stays.
    let r = c
        .write(LdapOp::ModifyDNRequest(LdapModifyDNRequest {
            dn: "uid=dave,ou=people,dc=example,dc=org".into(),
            newrdn: "uid=david".into(),
            deleteoldrdn: false,
            new_superior: None,
        }))
        .await;
    assert_eq!(r.code, LdapResultCode::Success, "{r:?}");
    let renamed = f.store.account_by_login("david@example.org").await.unwrap().unwrap();
    assert_eq!(renamed.id, acc.id);
    assert!(renamed.addresses.contains(&"dave@example.org".to_string()));
    // Contacts and deletes.
    let add = LdapOp::AddRequest(LdapAddRequest {
        dn: "mail=ext@partner.test,ou=contacts,dc=example,dc=org".into(),
        attributes: vec![pa("objectClass", &["inetOrgPerson"]), pa("cn", &["Ext Partner"]), pa("sn", &["Partner"])],
    });
    assert_eq!(c.write(add).await.code, LdapResultCode::Success);
    assert_eq!(f.store.contacts(Some("example.org")).await.unwrap().len(), 2);
    let r = c.write(LdapOp::DelRequest("mail=ext@partner.test,ou=contacts,dc=example,dc=org".into())).await;
    assert_eq!(r.code, LdapResultCode::Success);
    let r = c.write(LdapOp::DelRequest("uid=nobody,ou=people,dc=example,dc=org".into())).await;
    assert_eq!(r.code, LdapResultCode::NoSuchObject);
}

#[tokio::test]
async fn users_change_only_their_password_and_self_service_attributes() {
    let f = fixture().await;
    let mut c = f.connect(plain()).await;
    assert_eq!(c.bind("ann@example.org", "ann-pw").await, LdapResultCode::Success);
    let modify = |dn: &str, name: &str, v: &str| {
        LdapOp::ModifyRequest(LdapModifyRequest {
            dn: dn.into(),
            changes: vec![LdapModify { operation: LdapModifyType::Replace, modification: pa(name, &[v]) }],
        })
    };
    let me = "uid=ann,ou=people,dc=example,dc=org";
    assert_eq!(c.write(modify(me, "telephoneNumber", "+1 555 0199")).await.code, LdapResultCode::Success);
    assert_eq!(f.store.account_by_login("ann@example.org").await.unwrap().unwrap().profile.phone, "+1 555 0199");
    assert_eq!(c.write(modify(me, "title", "CEO")).await.code, LdapResultCode::InsufficentAccessRights);
    let bob = "uid=bob,ou=people,dc=example,dc=org";
    assert_eq!(c.write(modify(bob, "telephoneNumber", "1")).await.code, LdapResultCode::InsufficentAccessRights);
    // Password Modify: own password, old one checked.
    let req: LdapExtendedRequest = LdapPasswordModifyRequest {
        user_identity: None,
        old_password: Some("ann-pw".into()),
        new_password: Some("new-ann-pw".into()),
    }
    .into();
    c.send(LdapOp::ExtendedRequest(req), Vec::new()).await;
    let LdapOp::ExtendedResponse(r) = c.recv().await.op else { panic!() };
    assert_eq!(r.res.code, LdapResultCode::Success);
    assert!(f.shared.dir.authenticate("ann@example.org", "new-ann-pw").await.unwrap().is_some());
    // Compare works on ordinary attributes and never on secrets.
    let cmp = |a: &str, v: &str| {
        LdapOp::CompareRequest(LdapCompareRequest { dn: me.into(), atype: a.into(), val: v.as_bytes().to_vec() })
    };
    c.send(cmp("title", "engineer"), Vec::new()).await;
    assert!(matches!(c.recv().await.op, LdapOp::CompareResult(r) if r.code == LdapResultCode::CompareTrue));
    c.send(cmp("userPassword", "new-ann-pw"), Vec::new()).await;
    assert!(matches!(c.recv().await.op, LdapOp::CompareResult(r) if r.code == LdapResultCode::InsufficentAccessRights));
}

#[tokio::test]
async fn paging_sorting_and_limits() {
    let f = fixture().await;
    let mut c = f.connect(LdapConfig { max_results: 2, ..plain() }).await;
    assert_eq!(c.bind("bob@example.org", "bob-pw").await, LdapResultCode::Success);
    let (e, r, _) =
        c.search_with(BASE, LdapSearchScope::Subtree, "(objectClass=inetOrgPerson)", &["1.1"], Vec::new()).await;
    assert_eq!((e.len(), r.code), (2, LdapResultCode::AdminLimitExceeded));
    // Paged: all of them, two at a time, sorted by sn descending.
    let sort = LdapControl::ServerSort {
        sort_requests: vec![ServerSortRequet { attribute_name: "sn".into(), ordering_rule: None, reverse_order: true }],
    };
    let mut cookie = Vec::new();
    let mut all = Vec::new();
    loop {
        let ctrls = vec![LdapControl::SimplePagedResults { size: 2, cookie: cookie.clone() }, sort.clone()];
        let (e, r, ctrl) =
            c.search_with(BASE, LdapSearchScope::Subtree, "(objectClass=inetOrgPerson)", &["sn"], ctrls).await;
        assert_eq!(r.code, LdapResultCode::Success);
        let sorted = ctrl.iter().find_map(|c| match c {
            LdapControl::ServerSortResult { sort_result } => Some(sort_result.result_code.clone()),
            _ => None,
        });
        assert_eq!(sorted, Some(LdapResultCode::Success));
        all.extend(e.into_iter().map(|e| String::from_utf8(attr(&e, "sn")[0].to_vec()).unwrap()));
        cookie = ctrl
            .iter()
            .find_map(|c| match c {
                LdapControl::SimplePagedResults { cookie, .. } => Some(cookie.clone()),
                _ => None,
            })
            .unwrap();
        if cookie.is_empty() {
            break;
        }
    }
    assert_eq!(
        all,
        ["Lee", "Annis", "Anne Partner", "Admin"],
        "admin, ann, bob and the contact; hidden annabel absent"
    );
}

#[tokio::test]
async fn malformed_input_gets_a_notice_of_disconnection() {
    let f = fixture().await;
    let mut c = f.connect(plain()).await;
    c.c.send_bytes(&[0x30, 0x05, 0x02, 0x01, 0x01, 0x66, 0x00]).await;
    let m = c.recv().await;
    let LdapOp::ExtendedResponse(r) = m.op else { panic!("{m:?}") };
    assert_eq!(
        (m.msgid, r.res.code, r.name.as_deref()),
        (0, LdapResultCode::ProtocolError, Some("1.3.6.1.4.1.1466.20036"))
    );
    assert!(c.c.at_eof().await);
    // A length beyond the limit is refused before it is read.
    let mut c = f.connect(LdapConfig { max_message: 1024, ..plain() }).await;
    c.c.send_bytes(&[0x30, 0x84, 0x7f, 0xff, 0xff, 0xff]).await;
    let LdapOp::ExtendedResponse(r) = c.recv().await.op else { panic!() };
    assert_eq!(r.res.code, LdapResultCode::ProtocolError);
    // Too deep a filter is an error, not a crash.
    let mut c = f.connect(plain()).await;
    assert_eq!(c.bind("bob@example.org", "bob-pw").await, LdapResultCode::Success);
    let deep = (0..40).fold("(cn=a)".to_string(), |f, _| format!("(!{f})"));
    let (_, code) = c.search(BASE, &deep, &[]).await;
    assert!(matches!(code, LdapResultCode::AdminLimitExceeded | LdapResultCode::ProtocolError), "{code:?}");
}

/// The Assertion control's value: the filter in BER.
fn assertion_control(f: &str) -> LdapControl {
    use ldap3_lber::structures::ASNTag;
    let tag: ldap3_lber::structures::Tag = filter(f).into();
    let mut value = BytesMut::new();
    ldap3_lber::write::encode_into(&mut value, tag.into_structure()).unwrap();
    LdapControl::Unknown { oid: crate::session::CTRL_ASSERTION.into(), criticality: true, value: Some(value.to_vec()) }
}

#[tokio::test]
async fn assertion_control_size_limits_and_types_only() {
    let f = fixture().await;
    let mut c = f.connect(plain()).await;
    assert_eq!(c.bind("admin@example.org", "admin-pw").await, LdapResultCode::Success);
    let ann = "uid=ann,ou=people,dc=example,dc=org";
    // A modify under an assertion that holds goes through; one that does not is refused.
    let modify = |title: &str| {
        LdapOp::ModifyRequest(LdapModifyRequest {
            dn: ann.into(),
            changes: vec![LdapModify { operation: LdapModifyType::Replace, modification: pa("title", &[title]) }],
        })
    };
    c.send(modify("Lead"), vec![assertion_control("(title=engineer)")]).await;
    assert!(matches!(c.recv().await.op, LdapOp::ModifyResponse(r) if r.code == LdapResultCode::Success));
    c.send(modify("CEO"), vec![assertion_control("(title=engineer)")]).await;
    assert!(matches!(c.recv().await.op, LdapOp::ModifyResponse(r) if r.code == LdapResultCode::AssertionFailed));
    assert_eq!(f.store.account_by_login("ann@example.org").await.unwrap().unwrap().profile.title, "Lead");
    let (e, r, _) = c
        .search_with(ann, LdapSearchScope::Base, "(objectClass=*)", &["cn"], vec![assertion_control("(title=nobody)")])
        .await;
    assert_eq!((e.len(), r.code), (0, LdapResultCode::AssertionFailed));
    // A critical control the server does not know fails the operation.
    let unknown = LdapControl::Unknown { oid: "1.2.3.4".into(), criticality: true, value: None };
    let (_, r, _) = c.search_with(BASE, LdapSearchScope::Subtree, "(uid=ann)", &[], vec![unknown]).await;
    assert_eq!(r.code, LdapResultCode::UnavailableCriticalExtension);
    // The client's own size limit, and typesOnly.
    let op = LdapOp::SearchRequest(LdapSearchRequest {
        base: BASE.into(),
        scope: LdapSearchScope::Subtree,
        aliases: LdapDerefAliases::Never,
        sizelimit: 2,
        timelimit: 5,
        typesonly: true,
        filter: filter("(objectClass=inetOrgPerson)"),
        attrs: vec!["cn".into(), "mail".into()],
    });
    c.send(op, Vec::new()).await;
    let mut entries = Vec::new();
    let done = loop {
        match c.recv().await.op {
            LdapOp::SearchResultEntry(e) => entries.push(e),
            LdapOp::SearchResultDone(r) => break r,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((entries.len(), done.code), (2, LdapResultCode::SizeLimitExceeded));
    assert!(entries.iter().all(|e| e.attributes.len() == 2 && e.attributes.iter().all(|a| a.vals.is_empty())));
    // One level below the people unit, and Abandon (nothing runs concurrently: no answer).
    let (e, r, _) = c
        .search_with("ou=people,dc=example,dc=org", LdapSearchScope::OneLevel, "(objectClass=*)", &["1.1"], Vec::new())
        .await;
    assert_eq!((e.len(), r.code), (4, LdapResultCode::Success), "admin, ann, annabel, bob");
    c.send(LdapOp::AbandonRequest(1), Vec::new()).await;
    assert_eq!(c.bind("bob@example.org", "bob-pw").await, LdapResultCode::Success, "the connection goes on");
}
