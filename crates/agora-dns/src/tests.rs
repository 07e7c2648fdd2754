//! DNS answers against a real store: records from the server's state, authoritative
//! negative answers, REFUSED outside the zones, truncation, FORMERR, live changes.

use std::sync::Arc;

use agora_store::Store;
use agora_store::sql::SqlStore;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::{DnsConfig, Shared, ZoneSettings, answer};

async fn fixture() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Shared>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    store.add_domain("example.org").await.unwrap();
    store.add_dkim_keys(agora_mail::auth::generate_keys("example.org").unwrap()).await.unwrap();
    let zone = ZoneSettings {
        hostname: "mx.example.org".into(),
        addresses: vec!["192.0.2.10".parse().unwrap()],
        nameservers: Vec::new(),
        listeners: vec![("submission".into(), 587), ("imaps".into(), 993)],
        dmarc_policy: "quarantine".into(),
        ttl: 3600,
    };
    let cfg = DnsConfig { zone, dnssec: true, algorithm: crate::dnssec::ECDSA_P256, zsk_lifetime: 0, tls: None };
    let shared = Shared::new(Arc::clone(&store), cfg);
    (dir, store, shared)
}

fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

async fn ask(shared: &Shared, name: &str, t: RecordType) -> Message {
    let zones = shared.zones().await.unwrap();
    Message::from_vec(&answer::answer(&zones, &query(name, t, Some(1232)), true).unwrap()).unwrap()
}

#[tokio::test]
async fn records_come_from_the_server_state() {
    let (_d, _s, shared) = fixture().await;
    let mx = ask(&shared, "Example.ORG.", RecordType::MX).await;
    assert!(mx.metadata.authoritative);
    assert_eq!(mx.queries[0].name().to_ascii(), "Example.ORG.", "the question as asked");
    assert!(matches!(&mx.answers[0].data, RData::MX(m) if m.exchange.to_ascii() == "mx.example.org."));
    let a = ask(&shared, "mx.example.org.", RecordType::A).await;
    assert!(matches!(&a.answers[0].data, RData::A(x) if x.0.to_string() == "192.0.2.10"));
    let srv = ask(&shared, "_submission._tcp.example.org.", RecordType::SRV).await;
    assert!(matches!(&srv.answers[0].data, RData::SRV(s) if s.port == 587));
    let none = ask(&shared, "_pop3._tcp.example.org.", RecordType::SRV).await;
    assert_eq!(none.metadata.response_code, ResponseCode::NXDomain, "a listener that is off has no record");
    let zones = shared.zones().await.unwrap();
    let dkim_names: Vec<String> = zones.zones[0].names.keys().filter(|n| n.contains("._domainkey.")).cloned().collect();
    assert_eq!(dkim_names.len(), 2, "RSA and Ed25519 keys: {dkim_names:?}");
    let txt = ask(&shared, &format!("{}.", dkim_names[0]), RecordType::TXT).await;
    assert!(matches!(&txt.answers[0].data, RData::TXT(t) if t.to_string().starts_with("v=DKIM1")));
}

#[tokio::test]
async fn negative_answers_refusals_and_malformed_queries() {
    let (_d, _s, shared) = fixture().await;
    // NODATA: the name exists, the type does not; SOA in authority.
    let r = ask(&shared, "example.org.", RecordType::AAAA).await;
    assert_eq!((r.metadata.response_code, r.answers.len()), (ResponseCode::NoError, 0));
    assert!(matches!(r.authorities[0].data, RData::SOA(_)));
    // An empty non-terminal is NODATA too, not NXDOMAIN.
    let r = ask(&shared, "_tcp.example.org.", RecordType::TXT).await;
    assert_eq!((r.metadata.response_code, r.answers.len()), (ResponseCode::NoError, 0));
    let r = ask(&shared, "nothing.example.org.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(r.authorities[0].data, RData::SOA(_)));
    // Outside the hosted zones: never a resolver.
    let r = ask(&shared, "example.com.", RecordType::A).await;
    assert_eq!((r.metadata.response_code, r.metadata.authoritative), (ResponseCode::Refused, false));
    let zones = shared.zones().await.unwrap();
    // Garbage with an ID: FORMERR; too short for one, or a response: nothing.
    let r = Message::from_vec(&answer::answer(&zones, &[0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9], true).unwrap())
        .unwrap();
    assert_eq!((r.metadata.id, r.metadata.response_code), (0x1234, ResponseCode::FormErr));
    assert!(answer::answer(&zones, &[1, 2, 3], true).is_none());
    // Many questions (or another opcode): an error without them, never an amplifier.
    let mut many = Message::query();
    for i in 0..200 {
        many.add_query(Query::query(Name::from_ascii(format!("n{i}.example.org.")).unwrap(), RecordType::TXT));
    }
    let r = answer::answer(&zones, &many.to_vec().unwrap(), true).unwrap();
    assert!(r.len() <= 512, "{}", r.len());
    assert_eq!(Message::from_vec(&r).unwrap().metadata.response_code, ResponseCode::FormErr);
    let mut resp = query("example.org.", RecordType::A, None);
    resp[2] |= 0x80;
    assert!(answer::answer(&zones, &resp, true).is_none());
}

#[tokio::test]
async fn changes_show_at_once_and_the_serial_moves() {
    let (_d, store, shared) = fixture().await;
    let serial = |m: &Message| match &m.answers[0].data {
        RData::SOA(s) => s.serial,
        _ => 0,
    };
    let before = serial(&ask(&shared, "example.org.", RecordType::SOA).await);
    assert_eq!(before, serial(&ask(&shared, "example.org.", RecordType::SOA).await), "no change, same serial");
    // A new domain and a key rotation show without a restart; the serial moves.
    store.add_domain("new.test").await.unwrap();
    let r = ask(&shared, "new.test.", RecordType::MX).await;
    assert_eq!(r.answers.len(), 1);
    store.add_dkim_keys(agora_mail::auth::rotation_keys("example.org", "2027").unwrap()).await.unwrap();
    let after = serial(&ask(&shared, "example.org.", RecordType::SOA).await);
    assert!(after > before, "{after} > {before}");
    let zones = shared.zones().await.unwrap();
    let zone = zones.zones.iter().find(|z| z.apex == "example.org").unwrap();
    assert_eq!(zone.names.keys().filter(|n| n.contains("._domainkey.")).count(), 4, "pending keys published");
}

#[tokio::test]
async fn truncation_over_udp_when_the_answer_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(dir.path()).unwrap());
    store.add_domain("example.org").await.unwrap();
    let many: Vec<std::net::IpAddr> = (1..=40).map(|i| format!("2001:db8::{i}").parse().unwrap()).collect();
    let zone = ZoneSettings {
        hostname: "mx.example.org".into(),
        addresses: many,
        ttl: 60,
        dmarc_policy: "none".into(),
        ..ZoneSettings::default()
    };
    let cfg = DnsConfig { zone, dnssec: false, algorithm: crate::dnssec::ECDSA_P256, zsk_lifetime: 0, tls: None };
    let shared = Shared::new(store, cfg);
    let zones = shared.zones().await.unwrap();
    let q = |edns| query("mx.example.org.", RecordType::AAAA, edns);
    // 40 AAAA records: over 512 bytes.
    let small = answer::answer(&zones, &q(None), true).unwrap();
    let m = Message::from_vec(&small).unwrap();
    assert!(small.len() <= 512 && m.metadata.truncation && m.answers.is_empty(), "TC=1 within 512 bytes");
    // A client offering a bigger buffer gets it whole, as does TCP.
    let big = Message::from_vec(&answer::answer(&zones, &q(Some(4096)), true).unwrap()).unwrap();
    assert!(!big.metadata.truncation && big.answers.len() == 40);
    assert!(big.edns.is_some(), "EDNS answered with EDNS");
    let tcp = Message::from_vec(&answer::answer(&zones, &q(None), false).unwrap()).unwrap();
    assert_eq!(tcp.answers.len(), 40);
}

/// Checks every RRSIG in a message's section against the zone's DNSKEYs.
fn verify_section(records: &[hickory_proto::rr::Record], keys: &[hickory_proto::dnssec::rdata::DNSKEY]) -> usize {
    use hickory_proto::dnssec::Verifier;
    use hickory_proto::dnssec::rdata::DNSSECRData;
    let mut checked = 0;
    for sig in records {
        let RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) = &sig.data else { continue };
        let covered: Vec<&hickory_proto::rr::Record> =
            records.iter().filter(|r| r.name == sig.name && r.record_type() == rrsig.input().type_covered).collect();
        let key = keys.iter().find(|k| k.calculate_key_tag().unwrap() == rrsig.input().key_tag).expect("signing key");
        key.verify_rrsig(&sig.name, hickory_proto::rr::DNSClass::IN, rrsig, covered.into_iter())
            .unwrap_or_else(|e| panic!("{} {:?}: {e}", sig.name, rrsig.input().type_covered));
        checked += 1;
    }
    checked
}

#[tokio::test]
async fn signed_answers_and_authenticated_denial() {
    use hickory_proto::dnssec::rdata::DNSSECRData;
    let (_d, store, shared) = fixture().await;
    store
        .add_dns_record(agora_store::DnsRecord {
            domain: "example.org".into(),
            name: "*.wild.example.org".into(),
            rtype: "TXT".into(),
            value: "wildcard".into(),
            ttl: 300,
        })
        .await
        .unwrap();
    let zones = shared.zones().await.unwrap();
    let ask_do = |name: &str, t| {
        let mut q = Message::from_vec(&query(name, t, Some(4096))).unwrap();
        if let Some(e) = q.edns.as_mut() {
            e.set_dnssec_ok(true);
        }
        Message::from_vec(&answer::answer(&zones, &q.to_vec().unwrap(), true).unwrap()).unwrap()
    };
    let keyset = ask_do("example.org.", RecordType::DNSKEY);
    let keys: Vec<_> = keyset
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys.iter().filter(|k| k.secure_entry_point()).count(), 1, "one KSK, one ZSK");
    assert_eq!(keys.len(), 2);
    assert_eq!(verify_section(&keyset.answers, &keys), 1, "the DNSKEY set signed by the KSK");
    // Positive: the MX and its signature.
    let mx = ask_do("example.org.", RecordType::MX);
    assert!(mx.edns.as_ref().unwrap().flags().dnssec_ok);
    assert_eq!(verify_section(&mx.answers, &keys), 1);
    // Without DO: no signatures.
    assert!(
        ask(&shared, "example.org.", RecordType::MX).await.answers.iter().all(|r| r.record_type() == RecordType::MX)
    );
    // NXDOMAIN: SOA, the NSEC covering the name and the one covering the wildcard, all signed.
    let nx = ask_do("nothing.example.org.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let nsecs: Vec<&hickory_proto::rr::Record> =
        nx.authorities.iter().filter(|r| r.record_type() == RecordType::NSEC).collect();
    assert!(!nsecs.is_empty());
    let asked = Name::from_ascii("nothing.example.org.").unwrap();
    let apex = Name::from_ascii("example.org.").unwrap();
    let covers = |n: &&hickory_proto::rr::Record| match &n.data {
        RData::DNSSEC(DNSSECRData::NSEC(nsec)) => {
            n.name < asked && (asked < *nsec.next_domain_name() || *nsec.next_domain_name() == apex)
        }
        _ => false,
    };
    assert!(nsecs.iter().any(covers), "an NSEC spans the name asked: {nsecs:?}");
    assert_eq!(verify_section(&nx.authorities, &keys), 1 + nsecs.len(), "SOA and each NSEC signed");
    // NODATA: the name's own NSEC without the type.
    let nd = ask_do("example.org.", RecordType::AAAA);
    let own = nd.authorities.iter().find(|r| r.record_type() == RecordType::NSEC).expect("NSEC");
    let RData::DNSSEC(DNSSECRData::NSEC(nsec)) = &own.data else { unreachable!() };
    assert!(own.name == Name::from_ascii("example.org.").unwrap());
    assert!(nsec.type_bit_maps().any(|t| t == RecordType::MX) && !nsec.type_bit_maps().any(|t| t == RecordType::AAAA));
    assert_eq!(verify_section(&nd.authorities, &keys), 2);
    // A wildcard answer: signed with the wildcard's label count, plus proof the name itself is absent.
    let w = ask_do("a.wild.example.org.", RecordType::TXT);
    assert_eq!(w.answers[0].name.to_ascii(), "a.wild.example.org.");
    let sig = w.answers.iter().find_map(|r| match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(sig.expect("RRSIG").input().num_labels, 3, "labels of *.wild.example.org");
    assert!(w.authorities.iter().any(|r| r.record_type() == RecordType::NSEC));
    assert_eq!(verify_section(&w.authorities, &keys), 1);
}

#[tokio::test]
async fn the_fast_path_answers_as_the_full_path_does() {
    let (_d, store, shared) = fixture().await;
    store
        .add_dns_record(agora_store::DnsRecord {
            domain: "example.org".into(),
            name: "www.example.org".into(),
            rtype: "CNAME".into(),
            value: "mx.example.org.".into(),
            ttl: 300,
        })
        .await
        .unwrap();
    let zones = shared.zones().await.unwrap();
    let names = [
        "Example.ORG.",
        "mx.example.org.",
        "WWW.example.org.",
        "_tcp.example.org.",
        "nope.EXAMPLE.org.",
        "a.b.example.org.",
    ];
    let types = [
        RecordType::MX,
        RecordType::A,
        RecordType::TXT,
        RecordType::SOA,
        RecordType::AAAA,
        RecordType::NS,
        RecordType::DNSKEY,
    ];
    let mut fast_answers = 0;
    for name in names {
        for t in types {
            for edns in [None, Some(false), Some(true)] {
                let mut m = Message::query();
                m.metadata.id = 0x4242;
                m.metadata.recursion_desired = true;
                m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
                if let Some(d) = edns {
                    let mut e = Edns::new();
                    e.set_max_payload(1232);
                    e.set_dnssec_ok(d);
                    m.set_edns(e);
                }
                let q = m.to_vec().unwrap();
                let full = Message::from_vec(&answer::answer(&zones, &q, true).unwrap()).unwrap();
                // Twice: the first makes the kept response, the second uses it.
                for _ in 0..2 {
                    let Some(fast) = crate::fast::answer(&zones, &q, true) else { continue };
                    fast_answers += 1;
                    let fast = Message::from_vec(&fast).unwrap();
                    assert_eq!(fast.metadata, full.metadata, "{name} {t} {edns:?}");
                    assert!(fast.queries[0].name().eq_case(full.queries[0].name()), "the question as asked");
                    // Owners in the answer keep the case asked; elsewhere case does not matter.
                    for (a, b, case) in
                        [(&fast.answers, &full.answers, true), (&fast.authorities, &full.authorities, false)]
                    {
                        assert_eq!(a.len(), b.len(), "{name} {t} {edns:?}");
                        for (x, y) in a.iter().zip(b.iter()) {
                            assert!(
                                if case { x.name.eq_case(&y.name) } else { x.name == y.name },
                                "{} vs {}",
                                x.name,
                                y.name
                            );
                            assert_eq!((x.ttl, &x.data), (y.ttl, &y.data));
                        }
                    }
                    assert_eq!(fast.edns.is_some(), full.edns.is_some());
                }
            }
        }
    }
    assert_eq!(fast_answers, names.len() * types.len() * 3 * 2, "all of these take the fast path");
}

#[tokio::test]
async fn delegations_are_referrals_with_glue() {
    use hickory_proto::dnssec::rdata::DNSSECRData;
    let (_d, store, shared) = fixture().await;
    for (name, rtype, value) in
        [("sub.example.org", "NS", "ns1.sub.example.org."), ("ns1.sub.example.org", "A", "192.0.2.53")]
    {
        let rec = agora_store::DnsRecord {
            domain: "example.org".into(),
            name: name.into(),
            rtype: rtype.into(),
            value: value.into(),
            ttl: 300,
        };
        store.add_dns_record(rec).await.unwrap();
    }
    for name in ["www.sub.example.org.", "sub.example.org.", "ns1.sub.example.org."] {
        let r = ask(&shared, name, RecordType::A).await;
        assert_eq!(
            (r.metadata.response_code, r.metadata.authoritative, r.answers.len()),
            (ResponseCode::NoError, false, 0)
        );
        assert!(matches!(&r.authorities[0].data, RData::NS(n) if n.0.to_ascii() == "ns1.sub.example.org."), "{name}");
        assert!(
            matches!(&r.additionals.iter().find(|a| a.record_type() == RecordType::A).unwrap().data, RData::A(a) if a.0.to_string() == "192.0.2.53")
        );
    }
    // Signed: the referral proves the child unsigned (the cut's NSEC, no DS); the NS
    // themselves are the child's and carry no signature.
    let zones = shared.zones().await.unwrap();
    let mut q = Message::from_vec(&query("www.sub.example.org.", RecordType::A, Some(4096))).unwrap();
    q.edns.as_mut().unwrap().set_dnssec_ok(true);
    let r = Message::from_vec(&answer::answer(&zones, &q.to_vec().unwrap(), true).unwrap()).unwrap();
    let nsec = r.authorities.iter().find_map(|x| match &x.data {
        RData::DNSSEC(DNSSECRData::NSEC(n)) if x.name.to_ascii() == "sub.example.org." => Some(n.clone()),
        _ => None,
    });
    let nsec = nsec.expect("the cut's NSEC");
    assert!(nsec.type_bit_maps().any(|t| t == RecordType::NS) && !nsec.type_bit_maps().any(|t| t == RecordType::DS));
    assert!(
        !r.authorities.iter().any(
            |x| matches!(&x.data, RData::DNSSEC(DNSSECRData::RRSIG(s)) if s.input().type_covered == RecordType::NS)
        )
    );
    // A DS question at the cut is ours: NODATA, authoritative.
    let ds = ask(&shared, "sub.example.org.", RecordType::DS).await;
    assert!(ds.metadata.authoritative && ds.answers.is_empty());
    assert!(matches!(ds.authorities[0].data, RData::SOA(_)));
}
