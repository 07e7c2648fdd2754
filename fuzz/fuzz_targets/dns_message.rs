//! Fuzzes DNS answering: any datagram gets an answer that parses, or no answer (never a
//! panic), by the full path, the hot path and zone transfers (plain and TSIG); an
//! answer over UDP never exceeds 4096 bytes, and keeps the request's ID. One zone is
//! signed (NSEC chain, wildcard, CNAME loop), one has a delegation with glue.
#![no_main]
use std::sync::OnceLock;

use agora_dns::dnssec::{ECDSA_P256, Key, SigCache, ZoneSigner, generate};
use agora_dns::transfer::{Transfers, tsig_key};
use agora_dns::zones::{Zone, Zones};
use agora_mail::zone::{Data, Record, ZoneInput, build};
use libfuzzer_sys::fuzz_target;

fn input(domain: &str) -> ZoneInput {
    ZoneInput {
        domain: domain.into(),
        hostname: "mx.example.org".into(),
        addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        nameservers: Vec::new(),
        dkim: Vec::new(),
        listeners: vec![("imaps".into(), 993), ("submission".into(), 587), ("smtp".into(), 25), ("https".into(), 443)],
        dmarc_policy: "none".into(),
        mta_sts_mode: "testing".into(),
        tlsa: vec![vec![7; 32]],
        ttl: 60,
        serial: 1,
        extra: Vec::new(),
    }
}

fn zones() -> &'static (Zones, Transfers, Transfers) {
    static ZONES: OnceLock<(Zones, Transfers, Transfers)> = OnceLock::new();
    ZONES.get_or_init(|| {
        let mut records = build(&input("example.org"));
        records.push(Record { name: "*.wild.example.org".into(), ttl: 60, data: Data::Txt("w".into()) });
        records.push(Record { name: "alias.example.org".into(), ttl: 60, data: Data::Cname("mx.example.org".into()) });
        records.push(Record { name: "loop.example.org".into(), ttl: 60, data: Data::Cname("loop.example.org".into()) });
        let mut signed = Zone::new("example.org", &records).unwrap();
        let keys: Vec<Key> = [true, false]
            .iter()
            .map(|ksk| Key::load(&generate("example.org", *ksk, ECDSA_P256, 1_800_000_000).unwrap()).unwrap())
            .collect();
        let (old, mut new) = (SigCache::new(), SigCache::new());
        let mut signer = ZoneSigner { keys: &keys, now: 1_800_000_000, old: &old, new: &mut new, fresh: false };
        signer.sign(&mut signed);
        signer.sign_soa(&mut signed);
        let mut records = build(&input("other.test"));
        records.push(Record { name: "sub.other.test".into(), ttl: 60, data: Data::Ns("ns.sub.other.test".into()) });
        records.push(Record { name: "ns.sub.other.test".into(), ttl: 60, data: Data::A("192.0.2.53".parse().unwrap()) });
        let delegating = Zone::new("other.test", &records).unwrap();
        let mut zones = Zones { zones: vec![signed, delegating], ..Zones::default() };
        zones.fast = Some(agora_dns::fast::Cache::new(&zones.zones));
        let open = Transfers { secondaries: vec!["127.0.0.1:53".parse().unwrap()], key: None, notify_source: None };
        let keyed = Transfers {
            secondaries: vec!["127.0.0.1:53".parse().unwrap()],
            key: tsig_key("xfr", "hmac-sha256", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0").unwrap(),
            notify_source: None,
        };
        (zones, open, keyed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (zones, open, keyed) = zones();
    for udp in [true, false] {
        for answer in [agora_dns::fast::answer(zones, data, udp), agora_dns::answer::answer(zones, data, udp)]
            .into_iter()
            .flatten()
        {
            assert!(answer.len() >= 12 && answer[..2] == data[..2], "the request's ID");
            assert!(!udp || answer.len() <= 4096);
            assert!(hickory_proto::op::Message::from_vec(&answer).is_ok(), "an answer that parses");
        }
    }
    let peer = "127.0.0.1".parse().unwrap();
    for t in [open, keyed] {
        for m in agora_dns::transfer::respond(zones, data, peer, t) {
            assert!(hickory_proto::op::Message::from_vec(&m).is_ok(), "a transfer message that parses");
        }
    }
});
