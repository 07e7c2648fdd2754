//! DNS answers against a real store: records from the server's state, authoritative
//! negative answers, REFUSED outside the zones, truncation, FORMERR, live changes.

use std::sync::Arc;

use agora_store::Store;
use agora_store::sqlite::SqliteStore;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::{DnsConfig, Shared, answer};

async fn fixture() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Shared>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    store.add_domain("example.org").await.unwrap();
    store.add_dkim_keys(agora_mail::auth::generate_keys("example.org").unwrap()).await.unwrap();
    let cfg = DnsConfig {
        hostname: "mx.example.org".into(),
        addresses: vec!["192.0.2.10".parse().unwrap()],
        nameservers: Vec::new(),
        listeners: vec![("submission".into(), 587), ("imaps".into(), 993)],
        dmarc_policy: "quarantine".into(),
        ttl: 3600,
    };
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
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    store.add_domain("example.org").await.unwrap();
    let many: Vec<std::net::IpAddr> = (1..=40).map(|i| format!("2001:db8::{i}").parse().unwrap()).collect();
    let cfg = DnsConfig {
        hostname: "mx.example.org".into(),
        addresses: many,
        ttl: 60,
        dmarc_policy: "none".into(),
        ..DnsConfig::default()
    };
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
