//! Fuzzes what routing reads from other servers: the table's text (decoded, merged,
//! routed over, encoded again to the same table) and the 691 protocol's command lines.
#![no_main]
use agora_mail::routing::Table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = agora_routing::proto::parse(data.split(|&b| b == b'\n').next().unwrap_or_default());
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(t) = Table::decode(text) else { return };
    let again = Table::decode(&t.encode()).expect("what we write reads back");
    assert_eq!(again, t);
    let mut merged = Table::default();
    merged.merge(&t);
    for node in t.groups.values().flat_map(|g| g.members.keys()).take(4) {
        for d in ["a.example", "partner.example", "x.test"] {
            let _ = t.route(node, d, 1000).describe();
        }
        for g in t.groups.keys().take(4) {
            let _ = t.route_to_group(node, g, 0);
        }
    }
});
