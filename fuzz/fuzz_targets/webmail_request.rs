//! Fuzzes what the webmail reads from a request: query strings, form bodies (percent
//! and plus decoding, repeated, empty and unterminated fields, bytes that are not
//! UTF-8; multipart/form-data with files), and cookies.
#![no_main]
use agora_webmail::WebRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let query = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let cookie = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let body = parts.next().unwrap_or(b"").to_vec();
    let req = WebRequest {
        method: "POST".into(),
        path: query.split('?').next().unwrap_or("").to_string(),
        query: query.clone(),
        // A cookie line naming a multipart type is sent as the form's type as well.
        headers: vec![("content-type".into(), cookie.clone()), ("cookie".into(), cookie)],
        body: body.into(),
        peer: None,
        form: Default::default(),
    };
    let _ = req.form_fields("u");
    for f in &req.form().files {
        assert!(f.data.len() <= req.body.len());
    }
    for name in ["f", "u", "q", "csrf", "login", "password", "pre", "to", "body", "", "__Host-agora"] {
        let _ = req.query_field(name);
        let _ = req.form_field(name);
        let _ = req.cookie(name);
    }
    let _ = agora_webmail::Webmail::serves(&req.path);
});
