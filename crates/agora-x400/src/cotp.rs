//! ISO 8073 / X.224 transport, class 0 (what RFC 1006 carries): CR, CC, DR, DT and ER
//! TPDUs, TPDU size negotiation, TSAP selectors. Hand-written: a handful of fixed
//! headers with a parameter list, not ASN.1.

use thiserror::Error;

pub const CR: u8 = 0xe0;
pub const CC: u8 = 0xd0;
pub const DR: u8 = 0x80;
pub const DT: u8 = 0xf0;
pub const ER: u8 = 0x70;

const P_TPDU_SIZE: u8 = 0xc0;
const P_CALLING: u8 = 0xc1;
const P_CALLED: u8 = 0xc2;
/// In an ER: the octets of the TPDU that was refused.
const P_INVALID: u8 = 0xc1;

/// Class 0 allows TPDUs of 128 to 2,048 octets (size codes 7 to 11).
pub const MIN_SIZE_CODE: u8 = 7;
pub const MAX_SIZE_CODE: u8 = 11;
/// Without the parameter a TPDU is at most 128 octets.
pub const DEFAULT_SIZE_CODE: u8 = 7;
/// The longest TSAP selector taken (ISO allows up to 32 octets in practice).
pub const MAX_SELECTOR: usize = 64;

/// ER reject causes (X.224 13.12).
pub const ER_INVALID_CODE: u8 = 1;
pub const ER_INVALID_PARAMETER: u8 = 3;
/// DR reasons (X.224 13.5.3).
pub const DR_NORMAL: u8 = 0x80;
pub const DR_UNSPECIFIED: u8 = 0;
pub const DR_ADDRESS_UNKNOWN: u8 = 3;
pub const DR_CONGESTION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub dst_ref: u16,
    pub src_ref: u16,
    /// Class and options (class 0: 0).
    pub class: u8,
    /// TPDU size as its code: 2^code octets.
    pub size_code: Option<u8>,
    pub calling: Vec<u8>,
    pub called: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tpdu {
    Cr(Connect),
    Cc(Connect),
    Dr {
        dst_ref: u16,
        src_ref: u16,
        reason: u8,
    },
    /// Data: `eot` marks the last TPDU of a TSDU.
    Dt {
        eot: bool,
        data: Vec<u8>,
    },
    Er {
        dst_ref: u16,
        cause: u8,
        invalid: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TpduError {
    #[error("TPDU too short")]
    Short,
    #[error("TPDU length indicator {0} is past the packet")]
    Length(u8),
    #[error("TPDU code {0:#04x} is not one class 0 uses")]
    Code(u8),
    #[error("TPDU parameter {0:#04x} is malformed")]
    Parameter(u8),
    #[error("a class 0 TPDU carries no user data here")]
    UserData,
}

impl TpduError {
    /// The ER reject cause that answers it.
    pub fn cause(&self) -> u8 {
        match self {
            TpduError::Code(_) => ER_INVALID_CODE,
            TpduError::Parameter(_) => ER_INVALID_PARAMETER,
            _ => 0,
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Parameters (code, length, value) from `b`, each `f`-ed.
fn params(mut b: &[u8], mut f: impl FnMut(u8, &[u8]) -> Result<(), TpduError>) -> Result<(), TpduError> {
    while !b.is_empty() {
        if b.len() < 2 {
            return Err(TpduError::Parameter(b[0]));
        }
        let (code, len) = (b[0], b[1] as usize);
        let value = b.get(2..2 + len).ok_or(TpduError::Parameter(code))?;
        f(code, value)?;
        b = &b[2 + len..];
    }
    Ok(())
}

impl Tpdu {
    /// Reads one TPDU (the whole payload of a TPKT).
    pub fn decode(b: &[u8]) -> Result<Tpdu, TpduError> {
        if b.len() < 2 {
            return Err(TpduError::Short);
        }
        let li = b[0] as usize;
        if li == 0 || li == 255 || li + 1 > b.len() {
            return Err(TpduError::Length(b[0]));
        }
        let head = &b[1..=li];
        let rest = &b[li + 1..];
        let code = head[0];
        match code & 0xf0 {
            CR | CC => {
                if head.len() < 6 {
                    return Err(TpduError::Short);
                }
                if !rest.is_empty() {
                    return Err(TpduError::UserData);
                }
                let mut c = Connect {
                    dst_ref: u16_at(head, 1),
                    src_ref: u16_at(head, 3),
                    class: head[5],
                    size_code: None,
                    calling: Vec::new(),
                    called: Vec::new(),
                };
                params(&head[6..], |p, v| {
                    match p {
                        P_TPDU_SIZE => {
                            let [s] = v else { return Err(TpduError::Parameter(p)) };
                            if !(7..=13).contains(s) {
                                return Err(TpduError::Parameter(p));
                            }
                            c.size_code = Some(*s);
                        }
                        P_CALLING | P_CALLED if v.len() > MAX_SELECTOR => return Err(TpduError::Parameter(p)),
                        P_CALLING => c.calling = v.to_vec(),
                        P_CALLED => c.called = v.to_vec(),
                        // Others (preferred size, version, options) mean nothing in class 0.
                        _ => {}
                    }
                    Ok(())
                })?;
                Ok(if code & 0xf0 == CR { Tpdu::Cr(c) } else { Tpdu::Cc(c) })
            }
            DR => {
                if head.len() < 6 {
                    return Err(TpduError::Short);
                }
                Ok(Tpdu::Dr { dst_ref: u16_at(head, 1), src_ref: u16_at(head, 3), reason: head[5] })
            }
            DT => {
                if head.len() < 2 {
                    return Err(TpduError::Short);
                }
                Ok(Tpdu::Dt { eot: head[1] & 0x80 != 0, data: rest.to_vec() })
            }
            ER => {
                if head.len() < 4 {
                    return Err(TpduError::Short);
                }
                let mut invalid = Vec::new();
                params(&head[4..], |p, v| {
                    if p == P_INVALID {
                        invalid = v.to_vec();
                    }
                    Ok(())
                })?;
                Ok(Tpdu::Er { dst_ref: u16_at(head, 1), cause: head[3], invalid })
            }
            _ => Err(TpduError::Code(code)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(16);
        let param = |h: &mut Vec<u8>, code: u8, v: &[u8]| {
            let v = &v[..v.len().min(MAX_SELECTOR)];
            h.push(code);
            h.push(v.len() as u8);
            h.extend_from_slice(v);
        };
        let mut data: &[u8] = &[];
        match self {
            Tpdu::Cr(c) | Tpdu::Cc(c) => {
                h.push(if matches!(self, Tpdu::Cr(_)) { CR } else { CC });
                h.extend_from_slice(&c.dst_ref.to_be_bytes());
                h.extend_from_slice(&c.src_ref.to_be_bytes());
                h.push(c.class);
                if let Some(s) = c.size_code {
                    param(&mut h, P_TPDU_SIZE, &[s]);
                }
                if !c.calling.is_empty() {
                    param(&mut h, P_CALLING, &c.calling);
                }
                if !c.called.is_empty() {
                    param(&mut h, P_CALLED, &c.called);
                }
            }
            Tpdu::Dr { dst_ref, src_ref, reason } => {
                h.push(DR);
                h.extend_from_slice(&dst_ref.to_be_bytes());
                h.extend_from_slice(&src_ref.to_be_bytes());
                h.push(*reason);
            }
            Tpdu::Dt { eot, data: d } => {
                h.push(DT);
                h.push(if *eot { 0x80 } else { 0 });
                data = d;
            }
            Tpdu::Er { dst_ref, cause, invalid } => {
                h.push(ER);
                h.extend_from_slice(&dst_ref.to_be_bytes());
                h.push(*cause);
                if !invalid.is_empty() {
                    // At most what fits the length indicator.
                    let v = &invalid[..invalid.len().min(200)];
                    h.push(P_INVALID);
                    h.push(v.len() as u8);
                    h.extend_from_slice(v);
                }
            }
        }
        let mut out = Vec::with_capacity(1 + h.len() + data.len());
        out.push(h.len() as u8);
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out
    }
}

/// The size code both sides keep: the smaller of the proposal (default 128 octets) and
/// ours, within class 0's range.
pub fn negotiate(proposed: Option<u8>, ours: u8) -> u8 {
    proposed.unwrap_or(DEFAULT_SIZE_CODE).min(ours).clamp(MIN_SIZE_CODE, MAX_SIZE_CODE)
}

/// A TSDU cut into DT TPDUs of at most 2^`size_code` octets each (header included).
pub fn segment(tsdu: &[u8], size_code: u8) -> Vec<Tpdu> {
    let room = (1usize << size_code) - 3;
    if tsdu.is_empty() {
        return vec![Tpdu::Dt { eot: true, data: Vec::new() }];
    }
    let n = tsdu.len().div_ceil(room);
    tsdu.chunks(room).enumerate().map(|(i, c)| Tpdu::Dt { eot: i + 1 == n, data: c.to_vec() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_round_trips() {
        let cr = Tpdu::Cr(Connect {
            dst_ref: 0,
            src_ref: 0x1234,
            class: 0,
            size_code: Some(11),
            calling: b"AGORA".to_vec(),
            called: vec![0, 1],
        });
        let b = cr.encode();
        assert_eq!(&b[..7], &[b.len() as u8 - 1, 0xe0, 0, 0, 0x12, 0x34, 0]);
        assert_eq!(Tpdu::decode(&b).unwrap(), cr);
        let dt = Tpdu::Dt { eot: true, data: b"hello".to_vec() };
        assert_eq!(dt.encode(), [2, 0xf0, 0x80, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(Tpdu::decode(&dt.encode()).unwrap(), dt);
        let er = Tpdu::Er { dst_ref: 7, cause: ER_INVALID_CODE, invalid: vec![1, 2, 3] };
        assert_eq!(Tpdu::decode(&er.encode()).unwrap(), er);
        let dr = Tpdu::Dr { dst_ref: 1, src_ref: 2, reason: DR_NORMAL };
        assert_eq!(Tpdu::decode(&dr.encode()).unwrap(), dr);
    }

    #[test]
    fn refusals() {
        assert_eq!(Tpdu::decode(&[1]), Err(TpduError::Short));
        assert_eq!(Tpdu::decode(&[9, 0xe0, 0]), Err(TpduError::Length(9)));
        assert_eq!(Tpdu::decode(&[2, 0x10, 0]), Err(TpduError::Code(0x10)));
        // A TPDU size parameter of the wrong length, or out of range.
        assert_eq!(Tpdu::decode(&[8, 0xe0, 0, 0, 0, 1, 0, 0xc0, 0]), Err(TpduError::Parameter(0xc0)));
        assert_eq!(Tpdu::decode(&[9, 0xe0, 0, 0, 0, 1, 0, 0xc0, 1, 20]), Err(TpduError::Parameter(0xc0)));
        assert_eq!(Tpdu::decode(&[7, 0xe0, 0, 0, 0, 1, 0, 0xc2]), Err(TpduError::Parameter(0xc2)));
        assert_eq!(Tpdu::decode(&[6, 0xe0, 0, 0, 0, 1, 0, 9]), Err(TpduError::UserData));
    }

    #[test]
    fn sizes_and_segments() {
        assert_eq!(negotiate(None, 11), 7);
        assert_eq!(negotiate(Some(13), 11), 11);
        assert_eq!(negotiate(Some(9), 11), 9);
        let data = vec![7u8; 300];
        let parts = segment(&data, 7);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.encode().len() <= 128));
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|p| match p {
                Tpdu::Dt { data, .. } => data.clone(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(joined, data);
        assert!(matches!(parts.last(), Some(Tpdu::Dt { eot: true, .. })));
        assert!(matches!(parts[0], Tpdu::Dt { eot: false, .. }));
    }
}
