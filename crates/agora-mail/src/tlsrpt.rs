//! TLS reporting (RFC 8460): the report format; the daily report of this server's
//! outbound TLS sessions toward a domain, made from the outcomes the transport
//! records; and reports other organisations send about the hosted domains, read out
//! of the mail that carries them.

use std::io::Read;

use agora_store::TlsOutcome;
use serde::{Deserialize, Serialize};

/// Policy types (RFC 8460 §4.4).
pub const STS: &str = "sts";
pub const TLSA: &str = "tlsa";
pub const NO_POLICY: &str = "no-policy-found";

/// Largest report accepted, decompressed (a gzip bomb stops here).
pub const MAX_REPORT: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    #[serde(default)]
    pub organization_name: String,
    pub date_range: DateRange,
    #[serde(default)]
    pub contact_info: String,
    #[serde(default)]
    pub report_id: String,
    #[serde(default)]
    pub policies: Vec<PolicyResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    pub start_datetime: String,
    pub end_datetime: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyResult {
    pub policy: Policy,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    pub policy_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    #[serde(default)]
    pub policy_domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    pub total_successful_session_count: u64,
    pub total_failure_session_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    pub result_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sending_mta_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiving_mx_hostname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiving_ip: String,
    pub failed_session_count: u64,
}

/// The `rua` destinations of a domain's `_smtp._tls` TXT records: exactly one record
/// must start with `v=TLSRPTv1` (RFC 8460 §3); `mailto:` and `https:` URIs.
pub fn rua(records: &[String]) -> Vec<String> {
    let ours: Vec<&String> = records.iter().filter(|r| r.trim_start().starts_with("v=TLSRPTv1")).collect();
    let [record] = ours.as_slice() else { return Vec::new() };
    record
        .split(';')
        .filter_map(|f| f.trim().strip_prefix("rua="))
        .flat_map(|v| v.split(','))
        .map(|u| u.trim().to_string())
        .filter(|u| u.starts_with("mailto:") || u.starts_with("https://"))
        .collect()
}

/// RFC 3339 date-time as JSON wants it (`T` between date and time).
fn datetime(t: i64) -> String {
    agora_store::time::rfc3339(t).replacen(' ', "T", 1)
}

/// The key under which a period's outcomes are counted: its UTC day (`YYYY-MM-DD`)
/// for whole days, its start (RFC 3339) for shorter periods.
pub fn period_key(start: i64, period: i64) -> String {
    let t = datetime(start);
    if period % 86_400 == 0 { t.chars().take(10).collect() } else { t }
}

/// The report of one period's sessions toward `domain` (`start` to `end`, Unix
/// seconds): one policy entry per policy seen, its sessions counted and its failures
/// detailed by result, MX and address.
pub fn build(
    organization: &str,
    contact: &str,
    start: i64,
    end: i64,
    domain: &str,
    outcomes: &[(TlsOutcome, u64)],
) -> Report {
    let mut policies: Vec<PolicyResult> = Vec::new();
    for (o, n) in outcomes.iter().filter(|(o, _)| o.domain == domain) {
        let strings: Vec<String> = o.policy.lines().map(str::to_string).collect();
        let idx = match policies
            .iter()
            .position(|p| p.policy.policy_type == o.policy_type && p.policy.policy_string == strings)
        {
            Some(i) => i,
            None => {
                policies.push(PolicyResult {
                    policy: Policy {
                        policy_type: o.policy_type.clone(),
                        policy_string: strings,
                        policy_domain: domain.to_string(),
                        mx_host: Vec::new(),
                    },
                    summary: Summary { total_successful_session_count: 0, total_failure_session_count: 0 },
                    failure_details: Vec::new(),
                });
                policies.len() - 1
            }
        };
        let p = &mut policies[idx];
        if !o.mx.is_empty() && !p.policy.mx_host.contains(&o.mx) {
            p.policy.mx_host.push(o.mx.clone());
        }
        if o.result.is_empty() {
            p.summary.total_successful_session_count += n;
            continue;
        }
        p.summary.total_failure_session_count += n;
        match p
            .failure_details
            .iter_mut()
            .find(|d| d.result_type == o.result && d.receiving_mx_hostname == o.mx && d.receiving_ip == o.ip)
        {
            Some(d) => d.failed_session_count += n,
            None => p.failure_details.push(FailureDetail {
                result_type: o.result.clone(),
                sending_mta_ip: String::new(),
                receiving_mx_hostname: o.mx.clone(),
                receiving_ip: o.ip.clone(),
                failed_session_count: *n,
            }),
        }
    }
    Report {
        organization_name: organization.to_string(),
        date_range: DateRange { start_datetime: datetime(start), end_datetime: datetime(end) },
        contact_info: contact.to_string(),
        report_id: format!("{}.{domain}@{organization}", datetime(start)),
        policies,
    }
}

/// The report gzip-compressed, as sent.
pub fn gzip(report: &Report) -> Vec<u8> {
    use std::io::Write;
    let json = serde_json::to_vec(report).unwrap_or_default();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(&json);
    enc.finish().unwrap_or_default()
}

/// The mail that carries a report (RFC 8460 §5.3): multipart/report of type tlsrpt,
/// a line for people and the gzip-compressed JSON.
pub fn message(report: &Report, period: (i64, i64), from: &str, to: &str, domain: &str, submitter: &str) -> Vec<u8> {
    use base64::Engine;
    let date = agora_store::time::rfc5322_date(agora_store::now());
    let name = format!("{submitter}!{domain}!{}!{}!{}.json.gz", period.0, period.1, crate::queue_id());
    let boundary = format!("tlsrpt-{}", crate::queue_id());
    let data = base64::engine::general_purpose::STANDARD.encode(gzip(report));
    let mut body = String::new();
    for chunk in data.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        body.push_str("\r\n");
    }
    format!(
        "From: {from}\r\nTo: {to}\r\nDate: {date}\r\nSubject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>\r\n\
         Message-ID: <{mid}@{submitter}>\r\nTLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {submitter}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         This is the TLS report of {submitter} for {domain}, {start} to {end}.\r\n\r\n\
         --{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{body}\r\n--{boundary}--\r\n",
        id = report.report_id,
        mid = crate::queue_id(),
        start = report.date_range.start_datetime,
        end = report.date_range.end_datetime,
    )
    .into_bytes()
}

/// Whether a message's header names it a TLS report (a cheap look before parsing).
pub fn looks_like_report(raw: &[u8]) -> bool {
    let head = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw, |p| &raw[..p]);
    let head = &head[..head.len().min(64 * 1024)];
    head.windows(18).any(|w| w.eq_ignore_ascii_case(b"\ntls-report-domain"))
}

/// The report a message carries: its `application/tlsrpt+gzip` (or `+json`) part.
pub fn parse_message(raw: &[u8]) -> Option<Report> {
    use mail_parser::MimeHeaders;
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    for part in msg.parts.iter() {
        let Some(ct) = part.content_type() else { continue };
        let sub = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        if !ct.ctype().eq_ignore_ascii_case("application") || !sub.starts_with("tlsrpt") {
            continue;
        }
        let data = part.contents();
        let json = if sub == "tlsrpt+gzip" {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(data).take(MAX_REPORT as u64 + 1).read_to_end(&mut out).ok()?;
            if out.len() > MAX_REPORT {
                return None;
            }
            out
        } else {
            data.get(..MAX_REPORT.min(data.len()))?.to_vec()
        };
        return serde_json::from_slice(&json).ok();
    }
    None
}

/// What `agora tls-report list` keeps of a received report: its totals and failures
/// for the hosted policy domains.
pub fn summary(r: &Report, hosted: &[String], received: i64) -> agora_store::TlsReport {
    let ours = r.policies.iter().filter(|p| hosted.contains(&p.policy.policy_domain.to_ascii_lowercase()));
    let mut out = agora_store::TlsReport {
        received,
        organization: r.organization_name.chars().take(200).collect(),
        report_id: r.report_id.chars().take(200).collect(),
        domains: hosted.join(","),
        start: r.date_range.start_datetime.chars().take(40).collect(),
        end: r.date_range.end_datetime.chars().take(40).collect(),
        ..Default::default()
    };
    let mut details = Vec::new();
    for p in ours {
        out.successes += p.summary.total_successful_session_count;
        out.failures += p.summary.total_failure_session_count;
        for d in p.failure_details.iter().take(100) {
            details.push(format!(
                "{} {} {} mx={} ip={}",
                d.failed_session_count, p.policy.policy_type, d.result_type, d.receiving_mx_hostname, d.receiving_ip
            ));
        }
    }
    out.details = details.join("\n");
    out
}

/// The result type (RFC 8460 §4.3) of a failed TLS negotiation, from its error.
pub fn result_type(error: &str, dane: bool) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("starttls") {
        "starttls-not-supported"
    } else if dane {
        if e.contains("bogus") || e.contains("dnssec") { "dnssec-invalid" } else { "tlsa-invalid" }
    } else if e.contains("expired") || e.contains("notvalidyet") || e.contains("not valid yet") {
        "certificate-expired"
    } else if e.contains("notvalidforname") || e.contains("not valid for name") || e.contains("name mismatch") {
        "certificate-host-mismatch"
    } else if e.contains("unknownissuer") || e.contains("unknown issuer") || e.contains("certificate") {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: &str, mx: &str) -> TlsOutcome {
        TlsOutcome {
            day: "2026-12-01".into(),
            domain: "b.test".into(),
            policy_type: STS.into(),
            policy: "version: STSv1\nmode: enforce\nmx: mx.b.test\nmax_age: 86400".into(),
            mx: mx.into(),
            ip: "192.0.2.7".into(),
            result: result.into(),
        }
    }

    #[test]
    fn reports_count_and_round_trip_through_mail() {
        let outcomes = vec![
            (outcome("", "mx.b.test"), 5),
            (outcome("certificate-expired", "mx.b.test"), 2),
            (outcome("", "mx2.b.test"), 1),
        ];
        let start = 1_796_083_200; // 2026-12-01T00:00:00Z
        assert_eq!(period_key(start, 86_400), "2026-12-01");
        assert_eq!(period_key(start + 60, 60), "2026-12-01T00:01:00Z");
        let r = build("mx.a.test", "mailto:postmaster@a.test", start, start + 86_399, "b.test", &outcomes);
        assert_eq!(r.policies.len(), 1);
        let p = &r.policies[0];
        assert_eq!((p.summary.total_successful_session_count, p.summary.total_failure_session_count), (6, 2));
        assert_eq!(p.policy.mx_host, vec!["mx.b.test", "mx2.b.test"]);
        assert_eq!(p.policy.policy_string[1], "mode: enforce");
        assert_eq!(p.failure_details[0].failed_session_count, 2);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["policies"][0]["summary"]["total-successful-session-count"], 6);
        assert_eq!(json["date-range"]["end-datetime"], "2026-12-01T23:59:59Z");
        let mail = message(&r, (start, start + 86_399), "tlsrpt@a.test", "tls@b.test", "b.test", "mx.a.test");
        assert!(looks_like_report(&mail));
        assert_eq!(parse_message(&mail), Some(r));
        assert_eq!(parse_message(b"Subject: x\r\n\r\nhello\r\n"), None);
    }

    #[test]
    fn rua_lists() {
        let r = rua(&["v=TLSRPTv1; rua=mailto:tls@b.test, https://r.b.test/x".into(), "v=spf1 -all".into()]);
        assert_eq!(r, vec!["mailto:tls@b.test", "https://r.b.test/x"]);
        assert!(rua(&["v=TLSRPTv1; rua=mailto:a@b".into(), "v=TLSRPTv1; rua=mailto:c@d".into()]).is_empty());
        assert!(rua(&["v=TLSRPTv1; rua=ftp://x".into()]).is_empty());
    }

    #[test]
    fn result_types() {
        assert_eq!(result_type("MTA-STS: the server offers no STARTTLS", false), "starttls-not-supported");
        assert_eq!(result_type("invalid peer certificate: Expired", false), "certificate-expired");
        assert_eq!(result_type("invalid peer certificate: NotValidForName", false), "certificate-host-mismatch");
        assert_eq!(result_type("invalid peer certificate: UnknownIssuer", false), "certificate-not-trusted");
        assert_eq!(result_type("DANE: no TLSA record matches", true), "tlsa-invalid");
    }
}
