//! Outlook Autodiscover for IMAP/POP3/SMTP accounts: the e-mail address out of a POX
//! request (hand-read: one element of a fixed schema, bounded; a full XML parser would
//! add a dependency for one text node), the "settings" answer, and the v2 JSON lookup.

/// Largest Autodiscover request body read.
pub const MAX_REQUEST: usize = 16 * 1024;

/// The `EMailAddress` of a POX request, unescaped, if it is a plausible address.
pub fn pox_email(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body.get(..body.len().min(MAX_REQUEST))?).ok()?;
    let start = text.find("<EMailAddress>")? + "<EMailAddress>".len();
    let len = text[start..].find("</EMailAddress>")?;
    address(&unescape(text[start..start + len].trim()))
}

/// The address a v2 JSON request asks about: `/autodiscover/autodiscover.json/v1.0/ADDR`
/// or the `Email` query parameter.
pub fn json_email(path: &str, query: &str) -> Option<String> {
    let from_path = path.rsplit_once("/v1.0/").map(|(_, a)| percent_decode(a));
    address(&from_path.or_else(|| query_param(query, "email"))?)
}

/// A query parameter's value (name compared without case), percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.eq_ignore_ascii_case(name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// A lower-cased address with one `@`, a local part and a dotted domain, or None.
fn address(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let (local, domain) = s.split_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && domain.len() <= 253
        && !domain.contains('@')
        && s.bytes().all(|b| b.is_ascii_graphic() && !b"<>&\"'".contains(&b));
    ok.then_some(s)
}

/// The "settings" answer (responseschema 2006a): one protocol entry per kind that is
/// on, implicit TLS preferred, the login being the address.
pub fn pox_settings(email: &str, host: &str, listening: &[(String, u16)]) -> String {
    let port = |k: &str| listening.iter().find(|(x, _)| x == k).map(|(_, p)| *p);
    let (email, host) = (crate::xml_escape(email), crate::xml_escape(host));
    let mut protocols = String::new();
    for (kind, implicit, starttls) in
        [("IMAP", "imaps", "imap"), ("POP3", "pop3s", "pop3"), ("SMTP", "submissions", "submission")]
    {
        let tls = match (port(implicit), port(starttls)) {
            (Some(p), _) => Some((p, "<SSL>on</SSL>")),
            (None, Some(p)) => Some((p, "<SSL>on</SSL>\n        <Encryption>TLS</Encryption>")),
            _ => None,
        };
        if let Some((p, tls)) = tls {
            protocols.push_str(&format!(
                "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{host}</Server>\n        <Port>{p}</Port>\n        <LoginName>{email}</LoginName>\n        <DomainRequired>off</DomainRequired>\n        <SPA>off</SPA>\n        {tls}\n        <AuthRequired>on</AuthRequired>\n      </Protocol>\n"
            ));
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n{protocols}    </Account>\n  </Response>\n</Autodiscover>\n"
    )
}

/// The answer to a request that names no hosted address (error 600, invalid request).
pub fn pox_error() -> String {
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response>\n    <Error Time=\"00:00:00\" Id=\"0\">\n      <ErrorCode>600</ErrorCode>\n      <Message>Invalid Request</Message>\n      <DebugData />\n    </Error>\n  </Response>\n</Autodiscover>\n".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read() {
        let body = br#"<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress> Ann@Example.org </EMailAddress><AcceptableResponseSchema>x</AcceptableResponseSchema></Request></Autodiscover>"#;
        assert_eq!(pox_email(body).as_deref(), Some("ann@example.org"));
        assert_eq!(pox_email(b"<EMailAddress>a&lt;b@x.org</EMailAddress>"), None);
        assert_eq!(pox_email(b"<EMailAddress>no-at-sign</EMailAddress>"), None);
        assert_eq!(pox_email(b"<EMailAddress>unclosed@x.org"), None);
        assert_eq!(
            json_email("/autodiscover/autodiscover.json/v1.0/ann%40example.org", "Protocol=AutodiscoverV1").as_deref(),
            Some("ann@example.org")
        );
        assert_eq!(
            json_email("/autodiscover/autodiscover.json", "Email=ann%40example.org").as_deref(),
            Some("ann@example.org")
        );
        let s = pox_settings("ann@example.org", "mx.example.org", &[("imaps".into(), 993), ("submission".into(), 587)]);
        assert!(s.contains("<Type>IMAP</Type>") && s.contains("<Port>993</Port>") && !s.contains("POP3"));
        assert!(s.contains("<Type>SMTP</Type>") && s.contains("<Encryption>TLS</Encryption>"));
    }
}
