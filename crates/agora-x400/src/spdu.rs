//! X.225 session SPDUs: the kernel (CN, AC, RF, FN, DN, AB, AA, DT), the category 0
//! SPDUs that precede data (GT, PT) and what RTSE's transfers use of activity
//! management (AS, AE as a major sync point, AEA). Parameters are PI and PGI units;
//! user data travels in PGI 193, or 194 in version 2. Hand-written: SPDUs are not
//! ASN.1 but a code and length format of their own.

use thiserror::Error;

pub const SI_DT: u8 = 1; // and GT, category 0
pub const SI_PT: u8 = 2;
pub const SI_FN: u8 = 9;
pub const SI_DN: u8 = 10;
pub const SI_RF: u8 = 12;
pub const SI_CN: u8 = 13;
pub const SI_AC: u8 = 14;
pub const SI_AB: u8 = 25;
pub const SI_AA: u8 = 26;
pub const SI_MAP: u8 = 41;
pub const SI_MAA: u8 = 42;
pub const SI_AS: u8 = 45;

const PGI_CONNECTION_ID: u8 = 1;
const PGI_CONNECT_ACCEPT: u8 = 5;
const PI_SYNC_TYPE: u8 = 15;
const PI_TOKEN_ITEM: u8 = 16;
const PI_TRANSPORT_DISCONNECT: u8 = 17;
const PI_PROTOCOL_OPTIONS: u8 = 19;
const PI_REQUIREMENTS: u8 = 20;
const PI_VERSION: u8 = 22;
const PI_INITIAL_SERIAL: u8 = 23;
const PI_ENCLOSURE: u8 = 25;
const PI_TOKEN_SETTING: u8 = 26;
const PI_ACTIVITY_ID: u8 = 41;
const PI_SERIAL: u8 = 42;
const PI_REASON: u8 = 50;
const PI_CALLING_SSEL: u8 = 51;
const PI_CALLED_SSEL: u8 = 52;
const PGI_USER_DATA: u8 = 193;
const PGI_EXTENDED_USER_DATA: u8 = 194;

/// Session functional units (the Session User Requirements bits).
pub const FU_HALF_DUPLEX: u16 = 0x0001;
pub const FU_DUPLEX: u16 = 0x0002;
pub const FU_MINOR_SYNC: u16 = 0x0008;
pub const FU_ACTIVITY: u16 = 0x0040;
pub const FU_CAPABILITY: u16 = 0x0100;
pub const FU_EXCEPTIONS: u16 = 0x0200;
/// What RTSE asks of the session (X.228): two-way alternate turns, activities for
/// each transfer, exceptions; minor synchronisation and capability data as offered.
pub const RTSE_REQUIREMENTS: u16 = FU_HALF_DUPLEX | FU_MINOR_SYNC | FU_ACTIVITY | FU_CAPABILITY | FU_EXCEPTIONS;

/// Version 1 allows 512 octets of user data in a CN; version 2 up to 10,240.
pub const V1_CONNECT_DATA: usize = 512;
pub const V2_CONNECT_DATA: usize = 10_240;
/// The most parameter octets taken in one SPDU besides its user data.
const MAX_SELECTOR: usize = 64;

/// Transport Disconnect PI bits (AB, FN, RF): keep the transport, or release it.
pub const TD_RELEASE: u8 = 0x01;
pub const TD_USER_ABORT: u8 = 0x02;
pub const TD_PROTOCOL_ERROR: u8 = 0x04;
/// RF reason codes (X.225 8.3.3.17).
pub const RF_BY_USER: u8 = 2;
pub const RF_SSAP_UNKNOWN: u8 = 129;
pub const RF_SSUSER_NOT_ATTACHED: u8 = 130;
pub const RF_CONGESTION: u8 = 131;
pub const RF_VERSION: u8 = 132;
pub const RF_NO_REASON: u8 = 133;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spdu {
    pub si: u8,
    pub requirements: Option<u16>,
    /// Version Number bits: 1 for version 1, 2 for version 2.
    pub version: Option<u8>,
    pub protocol_options: Option<u8>,
    pub token_setting: Option<u8>,
    pub token_item: Option<u8>,
    pub transport_disconnect: Option<u8>,
    pub calling_ssel: Option<Vec<u8>>,
    pub called_ssel: Option<Vec<u8>>,
    /// Initial serial number or a sync point's serial number.
    pub serial: Option<u64>,
    /// A major sync point that ends an activity (AE rather than MAP).
    pub end_of_activity: bool,
    pub activity_id: Option<Vec<u8>>,
    /// RF's reason code (its first octet; the rest is user data).
    pub reason: Option<u8>,
    /// A segmented SSDU's enclosure bits; refused, since no segmenting is agreed.
    pub enclosure: Option<u8>,
    pub user_data: Vec<u8>,
    /// DT's user information, after the parameters.
    pub info: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpduError {
    #[error("SPDU truncated")]
    Short,
    #[error("SPDU code {0} is not one this session uses")]
    Code(u8),
    #[error("SPDU parameter {0} is malformed")]
    Parameter(u8),
    #[error("SPDU {0} is not allowed where it came")]
    Misplaced(u8),
}

/// A length: one octet, or 255 and two more.
fn read_len(b: &[u8], i: &mut usize) -> Result<usize, SpduError> {
    let first = *b.get(*i).ok_or(SpduError::Short)?;
    *i += 1;
    if first < 255 {
        return Ok(first as usize);
    }
    let two = b.get(*i..*i + 2).ok_or(SpduError::Short)?;
    *i += 2;
    Ok(u16::from_be_bytes([two[0], two[1]]) as usize)
}

fn write_len(out: &mut Vec<u8>, n: usize) {
    if n < 255 {
        out.push(n as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&(n.min(65_535) as u16).to_be_bytes());
    }
}

fn unit(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    // A length field holds at most 65,535.
    let value = &value[..value.len().min(65_535)];
    out.push(code);
    write_len(out, value.len());
    out.extend_from_slice(value);
}

/// The units of `b`, in order: (code, value).
fn units(b: &[u8]) -> Result<Vec<(u8, &[u8])>, SpduError> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let code = b[i];
        i += 1;
        let len = read_len(b, &mut i)?;
        let v = b.get(i..i + len).ok_or(SpduError::Parameter(code))?;
        out.push((code, v));
        i += len;
    }
    Ok(out)
}

fn serial_text(v: &[u8], code: u8) -> Result<u64, SpduError> {
    // Serial numbers are written in IA5 decimal digits (at most six).
    if v.is_empty() || v.len() > 6 || !v.iter().all(u8::is_ascii_digit) {
        return Err(SpduError::Parameter(code));
    }
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).ok_or(SpduError::Parameter(code))
}

impl Spdu {
    pub fn new(si: u8) -> Spdu {
        Spdu { si, ..Spdu::default() }
    }

    /// One unit; PGI 5's own units only at the top level (`nested` inside it), so a
    /// peer cannot make this recurse.
    fn take(&mut self, code: u8, v: &[u8], nested: bool) -> Result<(), SpduError> {
        let one = || match v {
            [x] => Ok(*x),
            _ => Err(SpduError::Parameter(code)),
        };
        match code {
            PGI_CONNECTION_ID => {}
            PGI_CONNECT_ACCEPT if nested => return Err(SpduError::Parameter(code)),
            PGI_CONNECT_ACCEPT => {
                for (c, v) in units(v)? {
                    self.take(c, v, true)?;
                }
            }
            PI_SYNC_TYPE => self.end_of_activity = one()? & 1 != 0,
            PI_TOKEN_ITEM => self.token_item = Some(one()?),
            PI_TRANSPORT_DISCONNECT => self.transport_disconnect = Some(one()?),
            PI_PROTOCOL_OPTIONS => self.protocol_options = Some(one()?),
            PI_REQUIREMENTS => {
                let [a, b] = v else { return Err(SpduError::Parameter(code)) };
                self.requirements = Some(u16::from_be_bytes([*a, *b]));
            }
            PI_VERSION => self.version = Some(one()?),
            PI_INITIAL_SERIAL | PI_SERIAL => self.serial = Some(serial_text(v, code)?),
            PI_ENCLOSURE => self.enclosure = Some(one()?),
            PI_TOKEN_SETTING => self.token_setting = Some(one()?),
            PI_ACTIVITY_ID if v.len() <= 6 => self.activity_id = Some(v.to_vec()),
            PI_CALLING_SSEL | PI_CALLED_SSEL if v.len() > MAX_SELECTOR => return Err(SpduError::Parameter(code)),
            PI_CALLING_SSEL => self.calling_ssel = Some(v.to_vec()),
            PI_CALLED_SSEL => self.called_ssel = Some(v.to_vec()),
            PI_REASON => {
                let (first, rest) = v.split_first().ok_or(SpduError::Parameter(code))?;
                self.reason = Some(*first);
                self.user_data = rest.to_vec();
            }
            PGI_USER_DATA | PGI_EXTENDED_USER_DATA => self.user_data = v.to_vec(),
            PI_ACTIVITY_ID => return Err(SpduError::Parameter(code)),
            // Others (TSDU sizes, references, reflected values, data overflow): noted by
            // no one here.
            _ => {}
        }
        Ok(())
    }

    fn parameters(&self) -> Vec<u8> {
        let mut p = Vec::new();
        let mut ca = Vec::new();
        if let Some(o) = self.protocol_options {
            unit(&mut ca, PI_PROTOCOL_OPTIONS, &[o]);
        }
        if let Some(v) = self.version {
            unit(&mut ca, PI_VERSION, &[v]);
        }
        if let Some(t) = self.token_setting {
            unit(&mut ca, PI_TOKEN_SETTING, &[t]);
        }
        let connect = matches!(self.si, SI_CN | SI_AC);
        if connect {
            if let Some(s) = self.serial {
                unit(&mut ca, PI_INITIAL_SERIAL, s.to_string().as_bytes());
            }
            if !ca.is_empty() {
                unit(&mut p, PGI_CONNECT_ACCEPT, &ca);
            }
        }
        if let Some(t) = self.token_item {
            unit(&mut p, PI_TOKEN_ITEM, &[t]);
        }
        if let Some(t) = self.transport_disconnect {
            unit(&mut p, PI_TRANSPORT_DISCONNECT, &[t]);
        }
        if let Some(r) = self.requirements {
            unit(&mut p, PI_REQUIREMENTS, &r.to_be_bytes());
        }
        if !connect && let Some(v) = self.version {
            unit(&mut p, PI_VERSION, &[v]);
        }
        if self.si == SI_MAP {
            unit(&mut p, PI_SYNC_TYPE, &[u8::from(self.end_of_activity)]);
        }
        if let Some(a) = &self.activity_id {
            unit(&mut p, PI_ACTIVITY_ID, a);
        }
        if !connect && let Some(s) = self.serial {
            unit(&mut p, PI_SERIAL, s.to_string().as_bytes());
        }
        if let Some(s) = &self.calling_ssel {
            unit(&mut p, PI_CALLING_SSEL, s);
        }
        if let Some(s) = &self.called_ssel {
            unit(&mut p, PI_CALLED_SSEL, s);
        }
        if let Some(r) = self.reason {
            let mut v = vec![r];
            v.extend_from_slice(&self.user_data);
            unit(&mut p, PI_REASON, &v);
        } else if !self.user_data.is_empty() {
            // More than version 1's 512 octets in a CN needs version 2's extended unit.
            let code = if self.si == SI_CN && self.user_data.len() > V1_CONNECT_DATA {
                PGI_EXTENDED_USER_DATA
            } else {
                PGI_USER_DATA
            };
            unit(&mut p, code, &self.user_data);
        }
        p
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.si);
        let p = self.parameters();
        write_len(out, p.len());
        out.extend_from_slice(&p);
        out.extend_from_slice(&self.info);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Whether SPDUs with this code go after a category 0 SPDU (GT or PT) in one TSDU.
pub fn category2(si: u8) -> bool {
    matches!(si, SI_DT | SI_MAP | SI_MAA | SI_AS)
}

/// One TSDU: a category 0 SPDU (GT, no token) before a category 2 one, as basic
/// concatenation requires; other SPDUs alone.
pub fn encode_tsdu(s: &Spdu) -> Vec<u8> {
    let mut out = Vec::new();
    if category2(s.si) {
        out.extend_from_slice(&[SI_DT, 0]);
    }
    s.encode_into(&mut out);
    out
}

/// The SPDU a TSDU carries: a category 0 SPDU before a category 2 one is read and set
/// aside (its token item, if any, is kept on the result).
pub fn decode_tsdu(b: &[u8]) -> Result<Spdu, SpduError> {
    let (first, rest) = one(b, true)?;
    if let (SI_DT | SI_PT, Some(rest)) = (first.si, rest) {
        let (mut second, after) = match one(rest, false) {
            Ok(x) => x,
            // A DT sent without the GT basic concatenation wants: taken as it is.
            Err(SpduError::Code(_)) if first.si == SI_DT && first == Spdu::new(SI_DT) => {
                return Ok(Spdu { info: rest.to_vec(), ..first });
            }
            Err(e) => return Err(e),
        };
        if !category2(second.si) {
            return Err(SpduError::Misplaced(second.si));
        }
        if after.is_some_and(|a| !a.is_empty()) {
            return Err(SpduError::Misplaced(second.si));
        }
        second.token_item = second.token_item.or(first.token_item);
        return Ok(second);
    }
    if first.si == SI_DT && rest.is_none() {
        return Ok(first);
    }
    if rest.is_some_and(|r| !r.is_empty()) {
        return Err(SpduError::Misplaced(first.si));
    }
    Ok(first)
}

/// One SPDU from the front of `b`, and what follows it when a category 2 SPDU may
/// (`lead`: the first of a TSDU, where SI 1 with no parameters is a GT).
fn one(b: &[u8], lead: bool) -> Result<(Spdu, Option<&[u8]>), SpduError> {
    let si = *b.first().ok_or(SpduError::Short)?;
    let mut i = 1;
    let len = read_len(b, &mut i)?;
    let params = b.get(i..i + len).ok_or(SpduError::Short)?;
    let after = &b[i + len..];
    if !matches!(si, SI_DT | SI_PT | SI_FN | SI_DN | SI_RF | SI_CN | SI_AC | SI_AB | SI_AA | SI_MAP | SI_MAA | SI_AS) {
        return Err(SpduError::Code(si));
    }
    let mut s = Spdu::new(si);
    for (code, v) in units(params)? {
        s.take(code, v, false)?;
    }
    match si {
        // GT or PT leading a TSDU: what follows is the category 2 SPDU.
        SI_DT | SI_PT if lead && !after.is_empty() => Ok((s, Some(after))),
        SI_DT => {
            if s.enclosure.is_some() {
                return Err(SpduError::Parameter(PI_ENCLOSURE));
            }
            s.info = after.to_vec();
            Ok((s, None))
        }
        _ => Ok((s, Some(after))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_round_trips() {
        let mut cn = Spdu::new(SI_CN);
        cn.requirements = Some(RTSE_REQUIREMENTS);
        cn.version = Some(2);
        cn.protocol_options = Some(0);
        cn.serial = Some(0);
        cn.calling_ssel = Some(b"agora".to_vec());
        cn.called_ssel = Some(vec![0, 1]);
        cn.user_data = vec![0x31, 0x80, 0, 0];
        let b = encode_tsdu(&cn);
        assert_eq!(b[0], SI_CN);
        assert_eq!(decode_tsdu(&b).unwrap(), cn);
        // Large user data in a CN goes in the extended unit, with a 3-octet length.
        cn.user_data = vec![7; 2000];
        let b = encode_tsdu(&cn);
        assert!(b.windows(4).any(|w| w == [PGI_EXTENDED_USER_DATA, 255, 0x07, 0xd0]));
        assert_eq!(decode_tsdu(&b).unwrap(), cn);
        let mut rf = Spdu::new(SI_RF);
        rf.transport_disconnect = Some(TD_RELEASE);
        rf.reason = Some(RF_BY_USER);
        rf.user_data = vec![1, 2, 3];
        assert_eq!(decode_tsdu(&encode_tsdu(&rf)).unwrap(), rf);
    }

    #[test]
    fn data_follows_a_give_tokens() {
        let mut dt = Spdu::new(SI_DT);
        dt.info = b"rtse".to_vec();
        let b = encode_tsdu(&dt);
        assert_eq!(b, [1, 0, 1, 0, b'r', b't', b's', b'e']);
        assert_eq!(decode_tsdu(&b).unwrap(), dt);
        let mut ae = Spdu::new(SI_MAP);
        ae.end_of_activity = true;
        ae.serial = Some(12);
        let b = encode_tsdu(&ae);
        assert_eq!(decode_tsdu(&b).unwrap(), ae);
        let mut asp = Spdu::new(SI_AS);
        asp.activity_id = Some(b"1".to_vec());
        assert_eq!(decode_tsdu(&encode_tsdu(&asp)).unwrap(), asp);
    }

    #[test]
    fn refusals() {
        assert_eq!(decode_tsdu(&[]), Err(SpduError::Short));
        assert_eq!(decode_tsdu(&[77, 0]), Err(SpduError::Code(77)));
        assert_eq!(decode_tsdu(&[SI_CN, 5, 20, 2, 0]), Err(SpduError::Short));
        assert_eq!(decode_tsdu(&[SI_CN, 3, 20, 1, 0]), Err(SpduError::Parameter(20)));
        assert_eq!(decode_tsdu(&[SI_CN, 4, 42, 2, b'x', b'1']), Err(SpduError::Parameter(42)));
        // A CN after a GT is not category 2.
        assert_eq!(decode_tsdu(&[1, 0, SI_CN, 0]), Err(SpduError::Misplaced(SI_CN)));
        // Trailing octets after a connect.
        assert_eq!(decode_tsdu(&[SI_FN, 0, 9]), Err(SpduError::Misplaced(SI_FN)));
        // PGI 5 inside PGI 5 is refused, not followed.
        assert_eq!(decode_tsdu(&[SI_CN, 4, 5, 2, 5, 0]), Err(SpduError::Parameter(5)));
        // A segmented SSDU (enclosure item) is refused.
        assert_eq!(decode_tsdu(&[1, 0, 1, 3, 25, 1, 1, 9]), Err(SpduError::Parameter(25)));
    }
}
