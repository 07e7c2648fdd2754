//! X.226 presentation PPDUs: CP, CPA, CPR, the abort PPDUs and user data, in both
//! modes: normal mode (presentation contexts, ACSE inside) and X.410-1984 mode (the
//! RTSE APDU in place of the parameters). BER through rasn.

use rasn::prelude::*;

use crate::rtse;

/// Object identifiers of the contexts the MTS transfer uses.
pub mod oid {
    /// BER (joint-iso-itu-t asn1(1) basic-encoding(1)).
    pub const BER: &[u32] = &[2, 1, 1];
    /// The ACSE abstract syntax.
    pub const ACSE: &[u32] = &[2, 2, 1, 0, 1];
    /// id-ac-mts-transfer: the 1988 application context of P1.
    pub const MTS_TRANSFER: &[u32] = &[2, 6, 0, 1, 6];
    /// id-as-mta-rtse: RTSE with the MTA bind and MTS APDUs.
    pub const MTA_RTSE: &[u32] = &[2, 6, 0, 2, 12];
    /// id-as-mtse: the MTS APDUs themselves (what RTSE transfers).
    pub const MTSE: &[u32] = &[2, 6, 0, 2, 7];
}

pub const X410_MODE: i64 = 0;
pub const NORMAL_MODE: i64 = 1;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct ModeSelector {
    #[rasn(tag(context, 0))]
    pub mode_value: i64,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct ContextDefinition {
    pub id: i64,
    pub abstract_syntax: ObjectIdentifier,
    pub transfer_syntaxes: Vec<ObjectIdentifier>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct ContextResult {
    /// 0: acceptance, 1: user rejection, 2: provider rejection.
    #[rasn(tag(context, 0))]
    pub result: i64,
    #[rasn(tag(context, 1))]
    pub transfer_syntax: Option<ObjectIdentifier>,
    /// 1: abstract syntax not supported, 2: transfer syntax not supported, 3: local limit.
    #[rasn(tag(context, 2))]
    pub provider_reason: Option<i64>,
}

pub const CONTEXT_ACCEPTED: i64 = 0;
pub const CONTEXT_PROVIDER_REJECTION: i64 = 2;
pub const REASON_ABSTRACT_SYNTAX: i64 = 1;
pub const REASON_TRANSFER_SYNTAX: i64 = 2;

/// One presentation data value list: values of one context.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct PdvList {
    pub transfer_syntax: Option<ObjectIdentifier>,
    pub context: i64,
    pub values: PdvValues,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum PdvValues {
    #[rasn(tag(explicit(context, 0)))]
    Single(Any),
    #[rasn(tag(context, 1))]
    Octets(OctetString),
    #[rasn(tag(context, 2))]
    Arbitrary(BitString),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum UserData {
    #[rasn(tag(application, 0))]
    Simple(OctetString),
    #[rasn(tag(application, 1))]
    Full(Vec<PdvList>),
}

impl UserData {
    /// One value in context `ctx`.
    pub fn one(ctx: i64, encoded: Vec<u8>) -> UserData {
        UserData::Full(vec![PdvList {
            transfer_syntax: None,
            context: ctx,
            values: PdvValues::Single(Any::new(encoded)),
        }])
    }

    /// The values with their contexts.
    pub fn values(&self) -> Vec<(i64, &[u8])> {
        match self {
            UserData::Simple(o) => vec![(0, o.as_ref())],
            UserData::Full(list) => list
                .iter()
                .filter_map(|p| match &p.values {
                    PdvValues::Single(a) => Some((p.context, a.as_bytes())),
                    PdvValues::Octets(o) => Some((p.context, o.as_ref())),
                    PdvValues::Arbitrary(_) => None,
                })
                .collect(),
        }
    }
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct CpNormal {
    #[rasn(tag(context, 0))]
    pub protocol_version: Option<BitString>,
    #[rasn(tag(context, 1))]
    pub calling_selector: Option<OctetString>,
    #[rasn(tag(context, 2))]
    pub called_selector: Option<OctetString>,
    #[rasn(tag(context, 4))]
    pub contexts: Option<Vec<ContextDefinition>>,
    #[rasn(tag(context, 6))]
    pub default_context: Option<Any>,
    #[rasn(tag(context, 8))]
    pub presentation_requirements: Option<BitString>,
    #[rasn(tag(context, 9))]
    pub user_session_requirements: Option<BitString>,
    pub user_data: Option<UserData>,
}

/// CP-type: the connect PPDU.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Cp {
    #[rasn(tag(context, 0))]
    pub mode: ModeSelector,
    #[rasn(tag(context, 1))]
    pub x410: Option<rtse::Rtorq>,
    #[rasn(tag(context, 2))]
    pub normal: Option<CpNormal>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct CpaNormal {
    #[rasn(tag(context, 0))]
    pub protocol_version: Option<BitString>,
    #[rasn(tag(context, 3))]
    pub responding_selector: Option<OctetString>,
    #[rasn(tag(context, 5))]
    pub results: Option<Vec<ContextResult>>,
    #[rasn(tag(context, 8))]
    pub presentation_requirements: Option<BitString>,
    #[rasn(tag(context, 9))]
    pub user_session_requirements: Option<BitString>,
    pub user_data: Option<UserData>,
}

/// CPA-PPDU: the connect accept.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Cpa {
    #[rasn(tag(context, 0))]
    pub mode: ModeSelector,
    #[rasn(tag(context, 1))]
    pub x410: Option<rtse::Rtoac>,
    #[rasn(tag(context, 2))]
    pub normal: Option<CpaNormal>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct CprNormal {
    #[rasn(tag(context, 0))]
    pub protocol_version: Option<BitString>,
    #[rasn(tag(context, 3))]
    pub responding_selector: Option<OctetString>,
    #[rasn(tag(context, 5))]
    pub results: Option<Vec<ContextResult>>,
    #[rasn(tag(context, 7))]
    pub default_context_result: Option<i64>,
    /// 0: not specified, 1: temporary congestion, 2: local limit exceeded, 3: called
    /// address unknown, 4: protocol version not supported, 5: default context not
    /// supported, 6: user data not readable, 7: no PSAP available.
    #[rasn(tag(context, 10))]
    pub provider_reason: Option<i64>,
    pub user_data: Option<UserData>,
}

/// CPR-PPDU: the connect refusal.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Cpr {
    X410(rtse::Rtorj),
    Normal(CprNormal),
}

pub const CPR_NOT_SPECIFIED: i64 = 0;
pub const CPR_ADDRESS_UNKNOWN: i64 = 3;
pub const CPR_USER_DATA_NOT_READABLE: i64 = 6;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct AruNormal {
    #[rasn(tag(context, 0))]
    pub contexts: Option<Any>,
    pub user_data: Option<UserData>,
}

/// ARP-PPDU: an abort by the presentation provider.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct Arp {
    /// 0: not specified, 1: unrecognized PPDU, 2: unexpected PPDU, 3: unexpected
    /// session service primitive, 4: unrecognized PPDU parameter, 5: unexpected PPDU
    /// parameter, 6: invalid PPDU parameter value.
    #[rasn(tag(context, 0))]
    pub reason: Option<i64>,
    #[rasn(tag(context, 1))]
    pub event: Option<i64>,
}

pub const ARP_UNRECOGNIZED_PPDU: i64 = 1;
pub const ARP_UNEXPECTED_PPDU: i64 = 2;
pub const ARP_INVALID_PARAMETER: i64 = 6;

/// Abort-type: by the user (normal mode) or the provider.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Abort {
    X410(rtse::Rtab),
    #[rasn(tag(context, 0))]
    User(AruNormal),
    Provider(Arp),
}

pub fn encode<T: Encode>(v: &T) -> Vec<u8> {
    rasn::ber::encode(v).unwrap_or_default()
}

pub fn decode<T: Decode>(b: &[u8]) -> Result<T, String> {
    rasn::ber::decode(b).map_err(|e| format!("presentation: {e}"))
}

/// One of the constants above (each a valid identifier) as rasn's type.
pub fn oid(arcs: &'static [u32]) -> ObjectIdentifier {
    ObjectIdentifier::new_unchecked(std::borrow::Cow::Borrowed(arcs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_in_both_modes() {
        let cp = Cp {
            mode: ModeSelector { mode_value: NORMAL_MODE },
            x410: None,
            normal: Some(CpNormal {
                protocol_version: None,
                calling_selector: Some(OctetString::from_static(&[0, 0, 0, 1])),
                called_selector: Some(OctetString::from_static(&[0, 0, 0, 1])),
                contexts: Some(vec![
                    ContextDefinition {
                        id: 1,
                        abstract_syntax: oid(oid::ACSE),
                        transfer_syntaxes: vec![oid(oid::BER)],
                    },
                    ContextDefinition {
                        id: 3,
                        abstract_syntax: oid(oid::MTA_RTSE),
                        transfer_syntaxes: vec![oid(oid::BER)],
                    },
                ]),
                default_context: None,
                presentation_requirements: None,
                user_session_requirements: None,
                user_data: Some(UserData::one(1, vec![0x60, 0])),
            }),
        };
        let b = encode(&cp);
        // SET { [0] { [0] 1 }, [2] SEQUENCE { ... [APPLICATION 1] ... } }
        assert_eq!(&b[2..7], &[0xa0, 3, 0x80, 1, 1], "{b:02x?}");
        assert!(b.windows(2).any(|w| w == [0x61, 9]), "{b:02x?}");
        assert_eq!(decode::<Cp>(&b).unwrap(), cp);
        let x410 = Cp {
            mode: ModeSelector { mode_value: X410_MODE },
            x410: Some(rtse::Rtorq {
                checkpoint_size: None,
                window_size: None,
                dialogue_mode: None,
                connection_data: rtse::ConnectionData::Open(Any::new(vec![5, 0])),
                application_protocol: Some(1),
            }),
            normal: None,
        };
        let b = encode(&x410);
        assert!(b.windows(3).any(|w| w == [0xa1, 9, 0xa3]), "[1] IMPLICIT RTORQ: {b:02x?}");
        assert_eq!(decode::<Cp>(&b).unwrap(), x410);
        let cpr = Cpr::X410(rtse::Rtorj { refuse_reason: Some(rtse::RJ_VALIDATION_FAILURE), user_data: None });
        assert_eq!(decode::<Cpr>(&encode(&cpr)).unwrap(), cpr);
        let arp = Abort::Provider(Arp { reason: Some(ARP_UNRECOGNIZED_PPDU), event: None });
        assert_eq!(decode::<Abort>(&encode(&arp)).unwrap(), arp);
        assert!(decode::<Cp>(&[0x31, 3, 0xa0, 1]).is_err());
    }
}
