//! Fuzzes DNS answering: any datagram gets an answer that parses, or no answer (never a
//! panic); an answer over UDP never exceeds 4096 bytes, and keeps the request's ID.
#![no_main]
use std::sync::OnceLock;

use agora_dns::zones::{Zone, Zones};
use agora_mail::zone::{Data, Record, ZoneInput, build};
use libfuzzer_sys::fuzz_target;

fn zones() -> &'static Zones {
    static ZONES: OnceLock<Zones> = OnceLock::new();
    ZONES.get_or_init(|| {
        let input = ZoneInput {
            domain: "example.org".into(),
            hostname: "mx.example.org".into(),
            addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            nameservers: Vec::new(),
            dkim: Vec::new(),
            listeners: vec![("imaps".into(), 993), ("submission".into(), 587)],
            dmarc_policy: "none".into(),
            ttl: 60,
            serial: 1,
            extra: Vec::new(),
        };
        let mut records = build(&input);
        records.push(Record { name: "*.wild.example.org".into(), ttl: 60, data: Data::Txt("w".into()) });
        records.push(Record { name: "alias.example.org".into(), ttl: 60, data: Data::Cname("mx.example.org".into()) });
        records.push(Record { name: "loop.example.org".into(), ttl: 60, data: Data::Cname("loop.example.org".into()) });
        Zones { zones: vec![Zone::new("example.org", &records).unwrap()] }
    })
}

fuzz_target!(|data: &[u8]| {
    for udp in [true, false] {
        if let Some(answer) = agora_dns::answer::answer(zones(), data, udp) {
            assert!(answer.len() >= 12 && answer[..2] == data[..2], "the request's ID");
            assert!(!udp || answer.len() <= 4096);
            assert!(hickory_proto::op::Message::from_vec(&answer).is_ok(), "an answer that parses");
        }
    }
});
