//! X.227 ACSE APDUs (association control): AARQ, AARE, RLRQ, RLRE, ABRT, and the
//! EXTERNAL that carries the application's first APDU in an association's user
//! information. BER through rasn.

use rasn::prelude::*;

/// EXTERNAL (X.208), which rasn does not define: a value named by a presentation
/// context (indirect reference) or an object identifier.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(universal, 8))]
pub struct External {
    pub direct_reference: Option<ObjectIdentifier>,
    pub indirect_reference: Option<i64>,
    pub encoding: ExternalEncoding,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum ExternalEncoding {
    #[rasn(tag(explicit(context, 0)))]
    Single(Any),
    #[rasn(tag(context, 1))]
    Octets(OctetString),
    #[rasn(tag(context, 2))]
    Arbitrary(BitString),
}

impl External {
    /// A value in presentation context `ctx`, as one ASN.1 type.
    pub fn in_context(ctx: i64, encoded: Vec<u8>) -> External {
        External {
            direct_reference: None,
            indirect_reference: Some(ctx),
            encoding: ExternalEncoding::Single(Any::new(encoded)),
        }
    }

    /// The encoded value it carries, if it carries one whole ASN.1 value.
    pub fn value(&self) -> Option<&[u8]> {
        match &self.encoding {
            ExternalEncoding::Single(a) => Some(a.as_bytes()),
            ExternalEncoding::Octets(o) => Some(o),
            ExternalEncoding::Arbitrary(_) => None,
        }
    }
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum ApTitle {
    Form2(ObjectIdentifier),
    Form1(Any),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 0))]
pub struct Aarq {
    #[rasn(tag(context, 0))]
    pub protocol_version: Option<BitString>,
    #[rasn(tag(explicit(context, 1)))]
    pub application_context_name: ObjectIdentifier,
    #[rasn(tag(explicit(context, 2)))]
    pub called_ap_title: Option<Any>,
    #[rasn(tag(explicit(context, 3)))]
    pub called_ae_qualifier: Option<Any>,
    #[rasn(tag(explicit(context, 4)))]
    pub called_ap_invocation: Option<i64>,
    #[rasn(tag(explicit(context, 5)))]
    pub called_ae_invocation: Option<i64>,
    #[rasn(tag(explicit(context, 6)))]
    pub calling_ap_title: Option<Any>,
    #[rasn(tag(explicit(context, 7)))]
    pub calling_ae_qualifier: Option<Any>,
    #[rasn(tag(explicit(context, 8)))]
    pub calling_ap_invocation: Option<i64>,
    #[rasn(tag(explicit(context, 9)))]
    pub calling_ae_invocation: Option<i64>,
    #[rasn(tag(context, 10))]
    pub sender_acse_requirements: Option<BitString>,
    #[rasn(tag(context, 11))]
    pub mechanism_name: Option<ObjectIdentifier>,
    #[rasn(tag(explicit(context, 12)))]
    pub calling_authentication_value: Option<Any>,
    #[rasn(tag(context, 13))]
    pub application_context_name_list: Option<Any>,
    #[rasn(tag(context, 29))]
    pub implementation_information: Option<OctetString>,
    #[rasn(tag(context, 30))]
    pub user_information: Option<Vec<External>>,
}

/// AARE results and diagnostics.
pub const ACCEPTED: i64 = 0;
pub const REJECTED_PERMANENT: i64 = 1;
pub const REJECTED_TRANSIENT: i64 = 2;
pub const DIAG_NULL: i64 = 0;
pub const DIAG_NO_REASON: i64 = 1;
pub const DIAG_CONTEXT_NOT_SUPPORTED: i64 = 2;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum SourceDiagnostic {
    #[rasn(tag(explicit(context, 1)))]
    User(i64),
    #[rasn(tag(explicit(context, 2)))]
    Provider(i64),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 1))]
pub struct Aare {
    #[rasn(tag(context, 0))]
    pub protocol_version: Option<BitString>,
    #[rasn(tag(explicit(context, 1)))]
    pub application_context_name: ObjectIdentifier,
    #[rasn(tag(explicit(context, 2)))]
    pub result: i64,
    #[rasn(tag(explicit(context, 3)))]
    pub result_source_diagnostic: SourceDiagnostic,
    #[rasn(tag(explicit(context, 4)))]
    pub responding_ap_title: Option<Any>,
    #[rasn(tag(explicit(context, 5)))]
    pub responding_ae_qualifier: Option<Any>,
    #[rasn(tag(explicit(context, 6)))]
    pub responding_ap_invocation: Option<i64>,
    #[rasn(tag(explicit(context, 7)))]
    pub responding_ae_invocation: Option<i64>,
    #[rasn(tag(context, 8))]
    pub responder_acse_requirements: Option<BitString>,
    #[rasn(tag(context, 9))]
    pub mechanism_name: Option<ObjectIdentifier>,
    #[rasn(tag(explicit(context, 10)))]
    pub responding_authentication_value: Option<Any>,
    #[rasn(tag(context, 11))]
    pub application_context_name_list: Option<Any>,
    #[rasn(tag(context, 29))]
    pub implementation_information: Option<OctetString>,
    #[rasn(tag(context, 30))]
    pub user_information: Option<Vec<External>>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 2))]
pub struct Rlrq {
    /// 0: normal.
    #[rasn(tag(context, 0))]
    pub reason: Option<i64>,
    #[rasn(tag(context, 30))]
    pub user_information: Option<Vec<External>>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 3))]
pub struct Rlre {
    #[rasn(tag(context, 0))]
    pub reason: Option<i64>,
    #[rasn(tag(context, 30))]
    pub user_information: Option<Vec<External>>,
}

/// ABRT sources.
pub const ABRT_USER: i64 = 0;
pub const ABRT_PROVIDER: i64 = 1;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 4))]
pub struct Abrt {
    #[rasn(tag(context, 0))]
    pub abort_source: i64,
    #[rasn(tag(context, 1))]
    pub abort_diagnostic: Option<i64>,
    #[rasn(tag(context, 30))]
    pub user_information: Option<Vec<External>>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Apdu {
    Aarq(Aarq),
    Aare(Aare),
    Rlrq(Rlrq),
    Rlre(Rlre),
    Abrt(Abrt),
}

pub fn encode(a: &Apdu) -> Vec<u8> {
    rasn::ber::encode(a).unwrap_or_default()
}

pub fn decode(b: &[u8]) -> Result<Apdu, String> {
    rasn::ber::decode(b).map_err(|e| format!("ACSE: {e}"))
}

impl Aarq {
    pub fn new(context: ObjectIdentifier, user: Vec<External>) -> Aarq {
        Aarq {
            protocol_version: None,
            application_context_name: context,
            called_ap_title: None,
            called_ae_qualifier: None,
            called_ap_invocation: None,
            called_ae_invocation: None,
            calling_ap_title: None,
            calling_ae_qualifier: None,
            calling_ap_invocation: None,
            calling_ae_invocation: None,
            sender_acse_requirements: None,
            mechanism_name: None,
            calling_authentication_value: None,
            application_context_name_list: None,
            implementation_information: None,
            user_information: (!user.is_empty()).then_some(user),
        }
    }
}

impl Aare {
    pub fn new(context: ObjectIdentifier, result: i64, diagnostic: SourceDiagnostic, user: Vec<External>) -> Aare {
        Aare {
            protocol_version: None,
            application_context_name: context,
            result,
            result_source_diagnostic: diagnostic,
            responding_ap_title: None,
            responding_ae_qualifier: None,
            responding_ap_invocation: None,
            responding_ae_invocation: None,
            responder_acse_requirements: None,
            mechanism_name: None,
            responding_authentication_value: None,
            application_context_name_list: None,
            implementation_information: None,
            user_information: (!user.is_empty()).then_some(user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tags() {
        let ctx = ObjectIdentifier::new(vec![2, 6, 0, 1, 6]).unwrap();
        let aarq = Apdu::Aarq(Aarq::new(ctx.clone(), vec![External::in_context(3, vec![0xb0, 0])]));
        let b = encode(&aarq);
        assert_eq!(&b[..9], &[0x60, b.len() as u8 - 2, 0xa1, 6, 6, 4, 0x56, 0, 1], "{b:02x?}");
        // [30] IMPLICIT SEQUENCE OF EXTERNAL { INTEGER 3, [0] { ... } }
        assert!(b.ends_with(&[0xbe, 9, 0x28, 7, 2, 1, 3, 0xa0, 2, 0xb0, 0]), "{b:02x?}");
        assert_eq!(decode(&b).unwrap(), aarq);
        let aare = Apdu::Aare(Aare::new(ctx, ACCEPTED, SourceDiagnostic::User(DIAG_NULL), Vec::new()));
        let b = encode(&aare);
        assert!(b.windows(5).any(|w| w == [0xa2, 3, 2, 1, 0]), "{b:02x?}");
        assert!(b.windows(7).any(|w| w == [0xa3, 5, 0xa1, 3, 2, 1, 0]), "{b:02x?}");
        assert_eq!(decode(&b).unwrap(), aare);
        let rlrq = Apdu::Rlrq(Rlrq { reason: Some(0), user_information: None });
        assert_eq!(encode(&rlrq), [0x62, 3, 0x80, 1, 0]);
        assert!(decode(&[0x60, 2, 0xa1, 0]).is_err());
    }
}
