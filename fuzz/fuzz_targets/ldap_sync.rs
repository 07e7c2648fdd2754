//! Fuzzes what replication decodes: a provider's messages as a consumer reads them
//! (entries with Sync State, Sync Info in every form, the search's end with Sync Done),
//! cookies and CSNs as a provider reads them from consumers, and the Sync Request
//! control of a decoded request. Refused or read, never a panic; a CSN read back from
//! its text is the same CSN.
#![no_main]
use agora_ldap::sync::{Cookie, Csn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = agora_ldap::syncmsg::decode(data);
    let _ = agora_ldap::syncmsg::sync_info(data);
    let cookie = Cookie::parse(data);
    for csn in &cookie.csns {
        assert_eq!(Csn::parse(&csn.text()), Some(*csn), "a CSN's text reads back as itself");
    }
    let _ = cookie.ours(0);
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(c) = Csn::parse(text)
    {
        assert_eq!(Csn::parse(&c.text()), Some(c), "a CSN's text reads back as itself");
    }
    if let Some(msg) = agora_ldap::session::decode(data)
        && let Some((_, Some(c))) = agora_ldap::sync::request(&msg.ctrl)
    {
        let _ = Cookie::parse(&c);
    }
});
