//! Fuzzes LDAP's decoder and what reads its output: a frame decodes to a message or is
//! refused (never a panic); filters compile and evaluate against a small tree; DNs
//! parse and normalise; decoded messages encode again.
#![no_main]
use std::sync::OnceLock;

use agora_ldap::tree::{Source, Tree};
use agora_store::{Account, Group, Profile};
use ldap3_proto::proto::{LdapMsg, LdapOp};
use libfuzzer_sys::fuzz_target;

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let account = |id: i64, login: &str, name: &str| Account {
            id,
            login: login.into(),
            display_name: name.into(),
            addresses: vec![format!("x{id}@example.org")],
            password_hash: String::new(),
            scram: String::new(),
            quota: 0,
            used: 0,
            role: agora_store::Role::User,
            created: 1_700_000_000,
            profile: Profile { phone: "+1 555 0100".into(), manager: "ann@example.org".into(), ..Profile::default() },
            uuid: [id as u8; 16],
            changed: 1_700_000_000,
        };
        Tree::build(Source {
            domains: vec!["example.org".into()],
            accounts: vec![account(1, "ann@example.org", "Ann Lee"), account(2, "bob@example.org", "Bob")],
            groups: vec![Group {
                address: "team@example.org".into(),
                display_name: "Team".into(),
                members: vec!["ann@example.org".into(), "out@else.test".into()],
                ..Group::default()
            }],
            aliases: vec![("info@example.org".into(), vec!["bob@example.org".into()])],
            contacts: Vec::new(),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    // DN parsing on the raw bytes as text.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(dn) = agora_ldap::dn::Dn::parse(text)
    {
        let n = dn.normalized();
        // Escaping may lengthen a normalised DN past the parser's limit; below it, the
        // normal form is a fixed point.
        if n.len() <= 4096 {
            assert_eq!(agora_ldap::dn::normalize(&n), Some(n.clone()), "normalising is idempotent: {text:?}");
        }
    }
    let Some(msg) = agora_ldap::session::decode(data) else { return };
    let t = tree();
    match &msg.op {
        LdapOp::SearchRequest(s) => {
            let _ = agora_ldap::dn::normalize(&s.base);
            if let Ok(f) = agora_ldap::filter::compile(&s.filter) {
                for e in &t.entries {
                    let _ = f.eval(t, e, &|_| true);
                }
                let _ = f.candidates(t);
            }
        }
        LdapOp::BindRequest(b) => {
            let _ = agora_ldap::dn::Dn::parse(&b.dn);
        }
        LdapOp::AddRequest(a) => {
            let _ = agora_ldap::dn::Dn::parse(&a.dn);
            for attr in &a.attributes {
                if let Some(id) = agora_ldap::schema::attr(&attr.atype) {
                    let syntax = agora_ldap::schema::attr_type(id).syntax;
                    for v in &attr.vals {
                        let _ = agora_ldap::matching::prepare(syntax, v);
                    }
                }
            }
        }
        _ => {}
    }
    // What decoded encodes again.
    let tag: ldap3_lber::structure::StructureTag = LdapMsg::clone(&msg).into();
    let mut out = bytes::BytesMut::new();
    let _ = ldap3_lber::write::encode_into(&mut out, tag);
});
