//! RFC 1006 TPKT framing: ISO transport over TCP. A packet is version 3, a reserved
//! octet and a 16-bit length counting the four header octets, then one TPDU.
//! Hand-written: four octets of framing need no library.

use thiserror::Error;

pub const HEADER: usize = 4;
/// The largest packet RFC 1006 allows (its length field's range).
pub const MAX_PACKET: usize = 65_535;
/// The smallest: the header and a TPDU of at least its length and code.
pub const MIN_PACKET: usize = HEADER + 3;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TpktError {
    #[error("TPKT version {0}, not 3")]
    Version(u8),
    #[error("TPKT length {0} is below the minimum of 7")]
    Length(u16),
    #[error("a TPDU of {0} octets does not fit one TPKT")]
    TooLarge(usize),
}

/// One packet around `tpdu`.
pub fn encode(tpdu: &[u8]) -> Result<Vec<u8>, TpktError> {
    let len = tpdu.len() + HEADER;
    if len > MAX_PACKET {
        return Err(TpktError::TooLarge(tpdu.len()));
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[3, 0]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(tpdu);
    Ok(out)
}

/// The first packet in `buf`: its TPDU and the octets it took, or None while it is
/// incomplete.
pub fn decode(buf: &[u8]) -> Result<Option<(&[u8], usize)>, TpktError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] != 3 {
        return Err(TpktError::Version(buf[0]));
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]);
    if (len as usize) < MIN_PACKET {
        return Err(TpktError::Length(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some((&buf[HEADER..len], len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_refusals() {
        let p = encode(&[2, 0xf0, 0x80, 1, 2]).unwrap();
        assert_eq!(p, [3, 0, 0, 9, 2, 0xf0, 0x80, 1, 2]);
        assert_eq!(decode(&p).unwrap(), Some((&p[4..], 9)));
        assert_eq!(decode(&p[..8]).unwrap(), None, "incomplete");
        assert_eq!(decode(&[4, 0, 0, 9]), Err(TpktError::Version(4)));
        assert_eq!(decode(&[3, 0, 0, 6, 0, 0]), Err(TpktError::Length(6)));
        assert!(encode(&vec![0; MAX_PACKET]).is_err());
    }
}
