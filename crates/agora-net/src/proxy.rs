//! PROXY protocol v1 (text) and v2 (binary) header decoder, for a trusted front proxy
//! that passes on the real client address. Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 headers are at most 107 bytes (spec §2.1).
const V1_MAX: usize = 107;
/// v2 headers larger than this are refused rather than buffered.
const V2_MAX: usize = 16 + 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed.
    Incomplete,
    /// The header was read: the client's address (None for LOCAL/UNKNOWN) and its length.
    Done { source: Option<SocketAddr>, consumed: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PROXY protocol header: {0}")]
pub struct ProxyError(pub &'static str);

pub fn decode(buf: &[u8]) -> Result<Decoded, ProxyError> {
    if buf.is_empty() {
        return Ok(Decoded::Incomplete);
    }
    if buf[0] == b'\r' {
        return decode_v2(buf);
    }
    if buf[0] == b'P' {
        return decode_v1(buf);
    }
    Err(ProxyError("no PROXY signature"))
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(ProxyError("no PROXY signature"));
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Err(ProxyError("v1 line too long")) } else { Ok(Decoded::Incomplete) };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError("v1 line too long"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError("v1 not ASCII"))?;
    let f: Vec<&str> = line.split(' ').collect();
    let consumed = end + 2;
    match f.get(1).copied() {
        Some("UNKNOWN") => Ok(Decoded::Done { source: None, consumed }),
        Some("TCP4") | Some("TCP6") if f.len() == 6 => {
            let ip: IpAddr = f[2].parse().map_err(|_| ProxyError("v1 bad source address"))?;
            let _: IpAddr = f[3].parse().map_err(|_| ProxyError("v1 bad destination address"))?;
            let port: u16 = f[4].parse().map_err(|_| ProxyError("v1 bad source port"))?;
            let _: u16 = f[5].parse().map_err(|_| ProxyError("v1 bad destination port"))?;
            if (f[1] == "TCP4") != ip.is_ipv4() {
                return Err(ProxyError("v1 address family mismatch"));
            }
            Ok(Decoded::Done { source: Some(SocketAddr::new(ip, port)), consumed })
        }
        _ => Err(ProxyError("v1 unknown protocol")),
    }
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let n = buf.len().min(12);
    if buf[..n] != V2_SIG[..n] {
        return Err(ProxyError("no PROXY signature"));
    }
    if buf.len() < 16 {
        return Ok(Decoded::Incomplete);
    }
    if buf[12] >> 4 != 2 {
        return Err(ProxyError("v2 unsupported version"));
    }
    let command = buf[12] & 0x0f;
    let family = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if 16 + len > V2_MAX {
        return Err(ProxyError("v2 header too long"));
    }
    if buf.len() < 16 + len {
        return Ok(Decoded::Incomplete);
    }
    let consumed = 16 + len;
    let body = &buf[16..consumed];
    match command {
        0 => Ok(Decoded::Done { source: None, consumed }),
        1 => {
            let source = match family >> 4 {
                1 if body.len() >= 12 => {
                    let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                    Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([body[8], body[9]])))
                }
                2 if body.len() >= 36 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&body[..16]);
                    Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), u16::from_be_bytes([body[32], body[33]])))
                }
                0 => None,
                1 | 2 => return Err(ProxyError("v2 address block too short")),
                _ => None,
            };
            Ok(Decoded::Done { source, consumed })
        }
        _ => Err(ProxyError("v2 unknown command")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_split_at_every_byte() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 25\r\nEHLO x\r\n";
        for i in 0..44 {
            assert_eq!(decode(&h[..i]).unwrap(), Decoded::Incomplete, "prefix {i}");
        }
        let want = Decoded::Done { source: Some("192.0.2.1:51000".parse().unwrap()), consumed: 44 };
        assert_eq!(decode(h).unwrap(), want);
    }

    #[test]
    fn v2_tcp4() {
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12, 10, 0, 0, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 25]);
        for i in 0..h.len() {
            assert_eq!(decode(&h[..i]).unwrap(), Decoded::Incomplete);
        }
        let want = Decoded::Done { source: Some("10.0.0.7:8080".parse().unwrap()), consumed: 28 };
        assert_eq!(decode(&h).unwrap(), want);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(b"EHLO x\r\n").is_err());
        assert!(decode(b"PROXY TCP4 nonsense\r\n").is_err());
        assert!(decode(&[b'P'; 200]).is_err());
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(decode(&h).is_err());
    }
}
