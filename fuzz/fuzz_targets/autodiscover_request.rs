//! Fuzzes what the HTTP service reads by hand from Autodiscover requests: the POX
//! body's address and the v2 JSON path and query. Never a panic; an address found is
//! lower case with one `@` and nothing that would need escaping in the XML answer.
#![no_main]
use agora_http::autodiscover::{json_email, pox_email, pox_settings, query_param};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    for found in [pox_email(data), json_email(path, query)].into_iter().flatten() {
        assert_eq!(found.matches('@').count(), 1, "{found}");
        assert!(!found.contains(['<', '>', '&', '"']), "{found}");
        let xml = pox_settings(&found, "mx.example.org", &[("imaps".into(), 993)]);
        assert!(xml.contains(&format!("<LoginName>{found}</LoginName>")));
    }
    let _ = query_param(query, "protocol");
});
