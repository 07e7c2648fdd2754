//! X.228 RTSE APDUs (reliable transfer): RTORQ, RTOAC, RTORJ, RTTP, RTTR, RTAB, with
//! the connection data that carries the MTA bind or a recovery. BER through rasn.

use rasn::prelude::*;

/// What an RTORQ or RTOAC carries: the application's bind, or the identity of a
/// session to recover.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum ConnectionData {
    #[rasn(tag(explicit(context, 0)))]
    Open(Any),
    #[rasn(tag(context, 1))]
    Recover(SessionConnectionIdentifier),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct SessionConnectionIdentifier {
    pub calling_ss_user_reference: CallingSsUserReference,
    pub common_reference: UtcTime,
    #[rasn(tag(context, 0))]
    pub additional_reference_information: Option<TeletexString>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum CallingSsUserReference {
    T61(TeletexString),
    Octets(OctetString),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Rtorq {
    /// Absent: 0 (no checkpointing). Optional rather than DEFAULT: rasn's SET decoder
    /// wants defaulted fields present.
    #[rasn(tag(context, 0))]
    pub checkpoint_size: Option<i64>,
    /// Absent: 3.
    #[rasn(tag(context, 1))]
    pub window_size: Option<i64>,
    /// 0 or absent: monologue, 1: two-way alternate.
    #[rasn(tag(context, 2))]
    pub dialogue_mode: Option<i64>,
    #[rasn(tag(explicit(context, 3)))]
    pub connection_data: ConnectionData,
    /// X.410-1984 mode only: 1 for P1 (mts-transfer-protocol-1984).
    #[rasn(tag(context, 4))]
    pub application_protocol: Option<i64>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Rtoac {
    #[rasn(tag(context, 0))]
    pub checkpoint_size: Option<i64>,
    #[rasn(tag(context, 1))]
    pub window_size: Option<i64>,
    #[rasn(tag(explicit(context, 2)))]
    pub connection_data: ConnectionData,
}

/// RTORJ refuse reasons.
pub const RJ_BUSY: i64 = 0;
pub const RJ_CANNOT_RECOVER: i64 = 1;
pub const RJ_VALIDATION_FAILURE: i64 = 2;
pub const RJ_UNACCEPTABLE_DIALOGUE_MODE: i64 = 3;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Rtorj {
    #[rasn(tag(context, 0))]
    pub refuse_reason: Option<i64>,
    #[rasn(tag(explicit(context, 1)))]
    pub user_data: Option<Any>,
}

/// RTAB abort reasons.
pub const AB_LOCAL_SYSTEM_PROBLEM: i64 = 0;
pub const AB_INVALID_PARAMETER: i64 = 1;
pub const AB_UNRECOGNIZED_ACTIVITY: i64 = 2;
pub const AB_TEMPORARY_PROBLEM: i64 = 3;
pub const AB_PROTOCOL_ERROR: i64 = 4;
pub const AB_PERMANENT_PROBLEM: i64 = 5;
pub const AB_USER_ERROR: i64 = 6;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Rtab {
    #[rasn(tag(context, 0))]
    pub abort_reason: Option<i64>,
    #[rasn(tag(context, 1))]
    pub reflected_parameter: Option<BitString>,
    #[rasn(tag(explicit(context, 2)))]
    pub user_data: Option<Any>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Apdu {
    #[rasn(tag(context, 16))]
    Rtorq(Rtorq),
    #[rasn(tag(context, 17))]
    Rtoac(Rtoac),
    #[rasn(tag(context, 18))]
    Rtorj(Rtorj),
    /// Please-turn, with a priority.
    Rttp(i64),
    /// Transfer: one application APDU, BER-encoded.
    Rttr(OctetString),
    #[rasn(tag(context, 22))]
    Rtab(Rtab),
}

pub fn encode(a: &Apdu) -> Vec<u8> {
    rasn::ber::encode(a).unwrap_or_default()
}

pub fn decode(b: &[u8]) -> Result<Apdu, String> {
    rasn::ber::decode(b).map_err(|e| format!("RTSE: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tags() {
        let open = Any::new(rasn::ber::encode(&Ia5String::try_from("MTA-A".to_string()).unwrap()).unwrap());
        let rq = Apdu::Rtorq(Rtorq {
            checkpoint_size: None,
            window_size: None,
            dialogue_mode: None,
            connection_data: ConnectionData::Open(open),
            application_protocol: Some(1),
        });
        let b = encode(&rq);
        // [16] IMPLICIT SET, defaults left out, [3] { [0] { IA5String } }, [4] 1.
        assert_eq!(b[0], 0xb0);
        assert!(b.windows(4).any(|w| w == [0xa3, 0x09, 0xa0, 0x07]), "{b:02x?}");
        assert!(b.ends_with(&[0x84, 1, 1]), "{b:02x?}");
        assert_eq!(decode(&b).unwrap(), rq);
        let tr = Apdu::Rttr(OctetString::from_static(b"p1"));
        assert_eq!(encode(&tr), [4, 2, b'p', b'1']);
        assert_eq!(decode(&encode(&tr)).unwrap(), tr);
        let rj = Apdu::Rtorj(Rtorj { refuse_reason: Some(RJ_VALIDATION_FAILURE), user_data: None });
        assert_eq!(encode(&rj), [0xb2, 3, 0x80, 1, 2]);
        assert!(decode(&[0xb0, 5, 0x80]).is_err());
    }
}
