//! Fuzzes the NNTP command parser, wildmats and the store's newsgroup names from
//! folder paths.
//! Never a panic; what parses keeps its promises (message-ids well formed, names
//! without wildmat specials), and matching stays quick on any pattern.
#![no_main]
use agora_nntp::codec::{Command, Target, is_message_id, is_wildmat, parse, wildmat};
use agora_store::newsgroup_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data, 1_796_169_600) {
        Ok(Command::Article(Target::MessageId(id)) | Command::Ihave(id) | Command::TakeThis(id)) => {
            assert!(is_message_id(&id), "{id}");
        }
        Ok(Command::Group(g)) => assert!(!g.contains(['*', '?', ',', ' ']), "{g}"),
        Ok(Command::NewNews(w, _)) => assert!(is_wildmat(&w)),
        _ => {}
    }
    let text = String::from_utf8_lossy(data);
    let (pattern, name) = text.split_once('\n').unwrap_or((&text, "comp.lang.rust"));
    let _ = wildmat(pattern, name);
    if let Some(n) = newsgroup_name(&text) {
        assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-_.".contains(&b)), "{n}");
        assert!(!n.starts_with('.') && !n.ends_with('.') && !n.contains(".."), "{n}");
    }
});
