//! Fuzzes the checking and injection of posted articles. Never a panic; an injected
//! article names its newsgroups validly, has one Path first and one Injection-Info,
//! and keeps the body it was given.
#![no_main]
use agora_nntp::article::{Poster, inject, is_newsgroup};
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
});
