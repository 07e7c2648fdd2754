//! `agora dns check`: asks resolvers what they see of a hosted zone and lists every
//! record set that differs from what Agora publishes (for DNS hosted elsewhere, or a
//! parent that has not delegated yet).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use agora_mail::zone;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::zones::to_record;

pub use agora_mail::zone::Finding;

/// The record data as text, in a form both sides share (case folded, sorted).
fn texts(records: impl Iterator<Item = hickory_proto::rr::Record>) -> Vec<String> {
    let mut v: Vec<String> = records.map(|r| r.data.to_string().to_ascii_lowercase()).collect();
    v.sort();
    v.dedup();
    v
}

/// Every record set of `records` (the SOA apart: its serial moves) checked against
/// `resolver`.
pub async fn check(records: &[zone::Record], resolver: SocketAddr) -> Vec<Finding> {
    let mut sets: BTreeMap<(String, String), Vec<hickory_proto::rr::Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| !matches!(r.data, zone::Data::Soa { .. })) {
        if let Some(rec) = to_record(r) {
            sets.entry((r.name.clone(), r.data.type_name().to_string())).or_default().push(rec);
        }
    }
    let mut out = Vec::new();
    for ((name, rtype), recs) in sets {
        let t = recs[0].record_type();
        let expected = texts(recs.into_iter());
        let seen = ask(resolver, &name, t).await;
        out.push(Finding { name, rtype, expected, seen });
    }
    out
}

/// One question to a resolver (recursion desired), over UDP, and over TCP when the
/// answer is truncated.
async fn ask(resolver: SocketAddr, name: &str, t: RecordType) -> Result<Vec<String>, String> {
    let qname = Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())?;
    let mut m = Message::query();
    m.metadata.id = crate::random_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname.clone(), t));
    let mut e = hickory_proto::op::Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = if resolver.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| "bind")?;
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    let reply = agora_mail::dane::exchange(&sock, &bytes, resolver, 3, Duration::from_secs(2))
        .await
        .ok_or_else(|| format!("{resolver} did not answer"))?;
    let mut reply = Message::from_vec(&reply).map_err(|e| format!("unreadable answer: {e}"))?;
    if reply.metadata.truncation {
        reply = ask_tcp(resolver, &bytes).await?;
    }
    use hickory_proto::op::ResponseCode;
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(format!("{resolver} answered {other}")),
    }
    Ok(texts(reply.answers.into_iter().filter(|r| r.record_type() == t && r.name == qname)))
}

async fn ask_tcp(resolver: SocketAddr, query: &[u8]) -> Result<Message, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let go = async {
        let mut s = tokio::net::TcpStream::connect(resolver).await?;
        let mut out = (query.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(query);
        s.write_all(&out).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut msg).await?;
        Ok::<_, std::io::Error>(msg)
    };
    let msg = tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .map_err(|_| format!("{resolver} did not answer over TCP"))?
        .map_err(|e| format!("{resolver} over TCP: {e}"))?;
    Message::from_vec(&msg).map_err(|e| format!("unreadable answer: {e}"))
}
