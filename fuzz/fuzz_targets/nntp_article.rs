//! Fuzzes the checking and injection of posted articles and the relaying checks of
//! articles from peers. Never a panic; an injected article names its newsgroups
//! validly, has one Path first and one Injection-Info, and keeps the body it was given;
//! a relayed one never loops through this server and gets this server first in Path.
#![no_main]
use agora_nntp::article::{Poster, date, has_field, inject, is_newsgroup, relay, without_field};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let poster = Poster { login: "alice@example.org", addresses: &[], ip: std::net::Ipv4Addr::LOCALHOST.into() };
    if let Ok(p) = inject(data, &poster, "news.example.org", 1_796_169_600, 1 << 16) {
        assert!(!p.newsgroups.is_empty() && p.newsgroups.iter().all(|g| is_newsgroup(g)));
        assert!(p.article.starts_with(b"Path: news.example.org!"));
        let text = String::from_utf8_lossy(&p.article);
        assert_eq!(text.matches("\r\nInjection-Info: ").count(), 1, "{text}");
        let body = &data[data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        assert!(p.article.ends_with(body));
    }
    let offered = data
        .windows(12)
        .position(|w| w.eq_ignore_ascii_case(b"message-id: "))
        .and_then(|i| data[i + 12..].split(|&b| b == b'\r').next())
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .unwrap_or_default();
    if let Ok(r) = relay(data, &offered, "news.example.org", 1 << 16) {
        assert!(!r.path.iter().any(|p| p == "news.example.org"));
        assert!(r.newsgroups.iter().all(|g| is_newsgroup(g)));
        assert!(r.article.starts_with(b"Path: news.example.org!"));
    }
    // Fields taken out are gone, and nothing else changes size beyond them.
    let _ = date(data);
    let stripped = without_field(data, "approved");
    assert!(stripped.len() <= data.len());
    if has_field(data, "approved") && stripped.len() < data.len() {
        assert!(!has_field(&stripped, "approved"));
    }
});
