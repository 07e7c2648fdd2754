//! Zone transfers to the configured secondaries: AXFR over TCP, IXFR answered with the
//! whole zone (RFC 1995 §4 allows it) or with the SOA alone when the secondary is up
//! to date, TSIG (RFC 8945) on requests, every response message and NOTIFY, and
//! NOTIFY (RFC 1996) sent to every secondary whenever a zone's serial moves.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, make_tsig_record};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use hickory_proto::serialize::binary::BinEncoder;

use crate::Shared;
use crate::zones::Zone;

/// Allowed time difference on TSIG-signed messages, seconds (RFC 8945 recommends 300).
const FUDGE: u16 = 300;
/// Bytes of records per transfer message (well under the 64 KiB TCP limit).
const CHUNK: usize = 16 * 1024;

/// Who may transfer the zones, and the key they sign with.
#[derive(Clone, Default)]
pub struct Transfers {
    /// The secondaries: their addresses may transfer; NOTIFY goes to each (port 53
    /// unless given).
    pub secondaries: Vec<SocketAddr>,
    pub key: Option<TSigner>,
    /// The address NOTIFY is sent from (the one the secondaries expect the primary at).
    pub notify_source: Option<IpAddr>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers").field("secondaries", &self.secondaries).finish()
    }
}

/// Parses `[dns] secondaries` entries: `IP`, `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_secondary(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| format!("secondary {s:?}: say an address, address:port or [IPv6]:port"))
}

/// The TSIG key from `[dns] tsig_name`, `tsig_algorithm`, `tsig_secret` (base64).
pub fn tsig_key(name: &str, algorithm: &str, secret: &str) -> Result<Option<TSigner>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    let alg = match algorithm.to_ascii_lowercase().as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => return Err(format!("tsig_algorithm {other:?}: say hmac-sha256, hmac-sha384 or hmac-sha512")),
    };
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| "tsig_secret: not base64 (make one with `openssl rand -base64 32`)".to_string())?;
    if secret.len() < 16 {
        return Err("tsig_secret: at least 16 bytes, please".into());
    }
    let name = Name::from_ascii(name).map_err(|e| format!("tsig_name {name:?}: {e}"))?;
    TSigner::new(secret, alg, name, FUDGE).map(Some).map_err(|e| format!("TSIG key: {e}"))
}

impl Transfers {
    fn allowed(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.secondaries.iter().any(|s| canonical(s.ip()) == peer)
    }
}

/// An IPv4-mapped IPv6 address as IPv4 (a dual-stack socket's view of IPv4 clients).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The response messages to an AXFR or IXFR request over TCP from `peer`.
pub fn respond(zones: &crate::zones::Zones, request: &[u8], peer: IpAddr, t: &Transfers) -> Vec<Vec<u8>> {
    let Ok(msg) = Message::from_vec(request) else { return Vec::new() };
    let refuse = |code: ResponseCode| {
        let mut r = Message::response(msg.metadata.id, msg.metadata.op_code);
        if msg.queries.len() == 1 {
            r.queries = msg.queries.clone();
        }
        r.metadata.response_code = code;
        r.to_vec().ok().into_iter().collect()
    };
    let [q] = msg.queries.as_slice() else { return refuse(ResponseCode::FormErr) };
    let qname = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let Some(zone) = zones.zones.iter().find(|z| z.apex == qname) else { return refuse(ResponseCode::NotAuth) };
    if !t.allowed(peer) {
        tracing::info!("dns: transfer of {qname} refused to {peer}: not a configured secondary");
        return refuse(ResponseCode::Refused);
    }
    // With a key, the request must carry a valid signature by it.
    let mut mac = None;
    if let Some(key) = &t.key {
        let checked = msg
            .signature()
            .filter(|s| s.name == *key.signer_name())
            .ok_or_else(|| "unsigned".to_string())
            .and_then(|_| key.verify_message_byte(request, None, true).map_err(|e| e.to_string()))
            .and_then(|(m, _, range)| {
                let now = agora_store::now().max(0) as u64;
                if range.contains(&now) { Ok(m) } else { Err("signed at a time too far from ours".into()) }
            });
        match checked {
            Ok(m) => mac = Some(m),
            Err(e) => {
                tracing::info!("dns: transfer of {qname} refused to {peer}: TSIG {e}");
                return refuse(ResponseCode::NotAuth);
            }
        }
    }
    let serial = match &zone.soa.data {
        RData::SOA(s) => s.serial,
        _ => 0,
    };
    // IXFR from a secondary that is current: our SOA alone says so.
    let current = q.query_type() == RecordType::IXFR
        && msg.authorities.iter().any(|r| matches!(&r.data, RData::SOA(s) if !serial_newer(serial, s.serial)));
    let records: Vec<Record> = if current { vec![zone.soa.clone()] } else { zone_records(zone) };
    tracing::info!("dns: {} of {qname} (serial {serial}) to {peer}: {} records", q.query_type(), records.len());
    let mut out = Vec::new();
    let mut chunk: Vec<Record> = Vec::new();
    let mut size = 0;
    let now = agora_store::now().max(0) as u64;
    let mut flush = |chunk: &mut Vec<Record>, out: &mut Vec<Vec<u8>>| {
        let mut r = Message::response(msg.metadata.id, msg.metadata.op_code);
        r.metadata.authoritative = true;
        if out.is_empty() {
            r.queries = vec![q.clone()];
        }
        r.answers = std::mem::take(chunk);
        match sign_next(&mut r, t.key.as_ref(), &mut mac, out.is_empty(), now) {
            Some(bytes) => out.push(bytes),
            None => tracing::error!("dns: encoding a transfer message of {qname} failed"),
        }
    };
    for rec in records {
        size += rec.name.len() + 64 + rec.data.to_string().len();
        chunk.push(rec);
        if size >= CHUNK {
            flush(&mut chunk, &mut out);
            size = 0;
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut out);
    }
    out
}

/// Whether serial `a` is newer than `b` (RFC 1982 arithmetic).
fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// The whole zone in transfer order: the SOA, every other record with the
/// signatures, the SOA again.
fn zone_records(zone: &Zone) -> Vec<Record> {
    let mut out = vec![zone.soa.clone()];
    let mut names: Vec<&String> = zone.names.keys().collect();
    names.sort();
    for n in names {
        out.extend(zone.names[n].iter().filter(|r| r.record_type() != RecordType::SOA).cloned());
    }
    let mut sigs: Vec<(&(String, RecordType), &Vec<Record>)> = zone.sigs.iter().collect();
    sigs.sort_by(|a, b| a.0.0.cmp(&b.0.0).then(u16::from(a.0.1).cmp(&u16::from(b.0.1))));
    for (_, s) in sigs {
        out.extend(s.iter().cloned());
    }
    out.push(zone.soa.clone());
    out
}

/// Encodes a message, signed with the key when there is one: the first of a
/// response chained to the request's MAC with the full TSIG variables, later ones to
/// the previous message's MAC with the timers only (RFC 8945 §5.3.1).
fn sign_next(
    m: &mut Message,
    key: Option<&TSigner>,
    mac: &mut Option<Vec<u8>>,
    first: bool,
    now: u64,
) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    let Some(key) = key else { return Some(bytes) };
    let stub = TSIG::new(key.algorithm().clone(), now, key.fudge(), Vec::new(), m.metadata.id, None, Vec::new());
    let mut tbs = Vec::with_capacity(bytes.len() + 128);
    {
        let mut enc = BinEncoder::new(&mut tbs);
        if let Some(prev) = mac.as_ref() {
            enc.emit_u16(prev.len() as u16).ok()?;
            enc.emit_vec(prev).ok()?;
        }
        enc.emit_vec(&bytes).ok()?;
        if first {
            stub.emit_tsig_for_mac(&mut enc, key.signer_name()).ok()?;
        } else {
            enc.emit_u16((now >> 32) as u16).ok()?;
            enc.emit_u32(now as u32).ok()?;
            enc.emit_u16(key.fudge()).ok()?;
        }
    }
    let sig = key.sign(&tbs).ok()?;
    *mac = Some(sig.clone());
    m.set_signature(Box::new(make_tsig_record(key.signer_name().clone(), stub.set_mac(sig))));
    m.to_vec().ok()
}

/// Sends NOTIFY for every zone whose serial moved (and for all at start) to every
/// secondary, until shutdown; polls the directory version each second.
pub async fn notifier(shared: Arc<Shared>, t: Arc<Transfers>, shutdown: tokio_util::sync::CancellationToken) {
    if t.secondaries.is_empty() {
        return;
    }
    let mut told: HashMap<String, u32> = HashMap::new();
    let mut seen = None;
    loop {
        let version = shared.store.directory_version();
        let built = shared.zones.current().map(|z| z.built);
        if seen != Some((version, built))
            && let Some(zones) = shared.zones().await
        {
            seen = Some((version, Some(zones.built)));
            for z in &zones.zones {
                let RData::SOA(soa) = &z.soa.data else { continue };
                if told.get(&z.apex) != Some(&soa.serial) {
                    told.insert(z.apex.clone(), soa.serial);
                    for target in &t.secondaries {
                        let t2 = Arc::clone(&t);
                        let (apex, soa, target) = (z.apex_name.clone(), z.soa.clone(), *target);
                        tokio::spawn(async move { notify(&t2, apex, soa, target).await });
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One NOTIFY to one secondary, resent (five times, two seconds apart) until it answers.
async fn notify(t: &Transfers, apex: Name, soa: Record, target: SocketAddr) {
    let source = t.notify_source.unwrap_or(if target.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    });
    let socket = match tokio::net::UdpSocket::bind(SocketAddr::new(source, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("dns: NOTIFY of {apex} to {target}: binding {source}: {e}");
            return;
        }
    };
    let id: u16 = crate::random_id();
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    let mut q = Query::query(apex.clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    m.add_answer(soa);
    if let Some(key) = &t.key {
        match key.sign_message(&m, agora_store::now().max(0) as u64) {
            Ok((sig, _)) => {
                m.set_signature(sig);
            }
            Err(e) => {
                tracing::error!("dns: signing NOTIFY of {apex}: {e}");
                return;
            }
        }
    }
    let Ok(bytes) = m.to_vec() else { return };
    if agora_mail::dane::exchange(&socket, &bytes, target, 5, Duration::from_secs(2)).await.is_some() {
        tracing::info!("dns: NOTIFY of {apex} acknowledged by {target}");
        return;
    }
    tracing::warn!("dns: NOTIFY of {apex} to {target}: no answer");
}
