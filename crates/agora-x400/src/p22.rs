//! X.420 interpersonal messages (P22, and P2 as 1984 wrote it, the same shape): the
//! heading and the body parts the gateway converts (IA5 text, teletex, general text,
//! bilaterally defined, forwarded messages), and receipt notifications. BER through
//! rasn; fields the standard gives a DEFAULT are optional here (rasn's SET decoder
//! wants defaulted fields present), absent meaning the default.

use rasn::prelude::*;

use crate::acse::External;
use crate::p1::OrName;

/// IPMIdentifier: who made it and their name for it.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set, tag(application, 11))]
pub struct IpmIdentifier {
    pub user: Option<OrName>,
    pub local: Option<PrintableString>,
}

#[derive(AsnType, Debug, Clone, Default, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct OrDescriptor {
    pub formal_name: Option<OrName>,
    #[rasn(tag(context, 0))]
    pub free_form_name: Option<TeletexString>,
    #[rasn(tag(context, 1))]
    pub telephone: Option<PrintableString>,
}

/// Notification request bits.
pub const RN: usize = 0;
pub const NRN: usize = 1;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct RecipientSpecifier {
    #[rasn(tag(context, 0))]
    pub recipient: OrDescriptor,
    #[rasn(tag(context, 1))]
    pub notification_requests: Option<BitString>,
    #[rasn(tag(context, 2))]
    pub reply_requested: Option<bool>,
    #[rasn(tag(context, 3))]
    pub extensions: Option<Any>,
}

#[derive(AsnType, Debug, Clone, Copy, Decode, Encode, PartialEq, Eq)]
#[rasn(enumerated)]
pub enum Importance {
    Low = 0,
    Normal = 1,
    High = 2,
}

#[derive(AsnType, Debug, Clone, Copy, Decode, Encode, PartialEq, Eq)]
#[rasn(enumerated)]
pub enum Sensitivity {
    Personal = 1,
    Private = 2,
    CompanyConfidential = 3,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Heading {
    pub this_ipm: IpmIdentifier,
    #[rasn(tag(context, 0))]
    pub originator: Option<OrDescriptor>,
    #[rasn(tag(context, 1))]
    pub authorizing_users: Option<Vec<OrDescriptor>>,
    #[rasn(tag(context, 2))]
    pub primary_recipients: Option<Vec<RecipientSpecifier>>,
    #[rasn(tag(context, 3))]
    pub copy_recipients: Option<Vec<RecipientSpecifier>>,
    #[rasn(tag(context, 4))]
    pub blind_copy_recipients: Option<Vec<RecipientSpecifier>>,
    #[rasn(tag(context, 5))]
    pub replied_to: Option<IpmIdentifier>,
    #[rasn(tag(context, 6))]
    pub obsoleted: Option<Vec<IpmIdentifier>>,
    #[rasn(tag(context, 7))]
    pub related: Option<Vec<IpmIdentifier>>,
    /// Explicitly tagged (the field was a CHOICE in 1984's P2).
    #[rasn(tag(explicit(context, 8)))]
    pub subject: Option<TeletexString>,
    #[rasn(tag(context, 9))]
    pub expiry_time: Option<UtcTime>,
    #[rasn(tag(context, 10))]
    pub reply_time: Option<UtcTime>,
    #[rasn(tag(context, 11))]
    pub reply_recipients: Option<Vec<OrDescriptor>>,
    #[rasn(tag(context, 12))]
    pub importance: Option<Importance>,
    #[rasn(tag(context, 13))]
    pub sensitivity: Option<Sensitivity>,
    #[rasn(tag(context, 14))]
    pub auto_forwarded: Option<bool>,
    #[rasn(tag(context, 15))]
    pub extensions: Option<Any>,
}

/// IA5 repertoires.
pub const REPERTOIRE_ITA2: i64 = 2;
pub const REPERTOIRE_IA5: i64 = 5;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Ia5Parameters {
    #[rasn(tag(context, 0))]
    pub repertoire: Option<i64>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct Ia5Text {
    pub parameters: Ia5Parameters,
    pub data: Ia5String,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct TeletexParameters {
    #[rasn(tag(context, 0))]
    pub pages: Option<i64>,
    #[rasn(tag(context, 2))]
    pub telex_compatible: Option<bool>,
    #[rasn(tag(context, 1))]
    pub non_basic: Option<Any>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct Teletex {
    pub parameters: TeletexParameters,
    pub data: Vec<TeletexString>,
}

/// A forwarded message inside this one.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct MessageBodyPart {
    pub parameters: MessageParameters,
    pub data: Ipm,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct MessageParameters {
    #[rasn(tag(context, 0))]
    pub delivery_time: Option<UtcTime>,
    #[rasn(tag(context, 1))]
    pub delivery_envelope: Option<Any>,
}

/// An extended body part: its type named by the object identifier in `data`.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct Extended {
    #[rasn(tag(context, 0))]
    pub parameters: Option<External>,
    pub data: External,
}

/// Object identifiers of extended body part types (X.420 id-et-*).
pub mod et {
    pub const GENERAL_TEXT: &[u32] = &[2, 6, 1, 4, 11];
    pub const FILE_TRANSFER: &[u32] = &[2, 6, 1, 4, 12];
    pub const BILATERAL: &[u32] = &[2, 6, 1, 4, 10];
}

/// id-ep-file-transfer: the parameters of a file transfer body part.
pub const EP_FILE_TRANSFER: &[u32] = &[2, 6, 1, 11, 12];
/// FTAM's unstructured binary abstract syntax (ISO 8571), for the file's octets.
pub const FTAM_UNSTRUCTURED_BINARY: &[u32] = &[1, 0, 8571, 2, 4];

/// FileTransferParameters (X.420 file transfer body part): what this gateway reads
/// and writes of them is the file's name; the other parameters are carried as they are.
#[derive(AsnType, Debug, Clone, Default, Decode, Encode, PartialEq, Eq)]
pub struct FileTransferParameters {
    #[rasn(tag(explicit(context, 0)))]
    pub related_stored_file: Option<Any>,
    #[rasn(tag(explicit(context, 1)))]
    pub contents_type: Option<Any>,
    #[rasn(tag(explicit(context, 2)))]
    pub environment: Option<Any>,
    #[rasn(tag(explicit(context, 3)))]
    pub compression: Option<Any>,
    #[rasn(tag(context, 4))]
    pub file_attributes: Option<FileAttributes>,
    #[rasn(tag(explicit(context, 5)))]
    pub extensions: Option<Any>,
}

#[derive(AsnType, Debug, Clone, Default, Decode, Encode, PartialEq, Eq)]
pub struct FileAttributes {
    pub pathname: Option<Pathname>,
    /// The file's size in octets (FTAM's object-size attribute).
    #[rasn(tag(context, 13))]
    pub object_size: Option<ObjectSize>,
}

/// FTAM's Pathname-Attribute.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Pathname {
    #[rasn(tag(context, 23))]
    Incomplete(Vec<GraphicString>),
    #[rasn(tag(application, 23))]
    Actual(Vec<GraphicString>),
}

/// FTAM's Object-Size-Attribute: the actual size.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum ObjectSize {
    #[rasn(tag(context, 0))]
    NoValue(()),
    #[rasn(tag(context, 1))]
    Actual(i64),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum BodyPart {
    #[rasn(tag(context, 0))]
    Ia5(Ia5Text),
    #[rasn(tag(context, 5))]
    Teletex(Teletex),
    #[rasn(tag(context, 9))]
    Message(Box<MessageBodyPart>),
    #[rasn(tag(context, 14))]
    Bilateral(OctetString),
    #[rasn(tag(context, 15))]
    Extended(Extended),
    #[rasn(tag(context, 3))]
    G3Fax(Any),
    #[rasn(tag(context, 4))]
    G4Class1(Any),
    #[rasn(tag(context, 6))]
    Videotex(Any),
    #[rasn(tag(context, 7))]
    National(Any),
    #[rasn(tag(context, 8))]
    Encrypted(Any),
    #[rasn(tag(context, 11))]
    MixedMode(Any),
}

impl BodyPart {
    /// The body part's name in X.420 (for the notes a lossy conversion leaves).
    pub fn kind(&self) -> &'static str {
        match self {
            BodyPart::Ia5(_) => "ia5-text",
            BodyPart::Teletex(_) => "teletex",
            BodyPart::Message(_) => "message",
            BodyPart::Bilateral(_) => "bilaterally-defined",
            BodyPart::Extended(_) => "extended",
            BodyPart::G3Fax(_) => "g3-facsimile",
            BodyPart::G4Class1(_) => "g4-class1",
            BodyPart::Videotex(_) => "videotex",
            BodyPart::National(_) => "nationally-defined",
            BodyPart::Encrypted(_) => "encrypted",
            BodyPart::MixedMode(_) => "mixed-mode",
        }
    }
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct Ipm {
    pub heading: Heading,
    pub body: Vec<BodyPart>,
}

/// A receipt or non-receipt notification.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Ipn {
    pub subject_ipm: IpmIdentifier,
    #[rasn(tag(context, 1))]
    pub originator: Option<OrDescriptor>,
    #[rasn(tag(context, 2))]
    pub preferred_recipient: Option<OrDescriptor>,
    pub conversion_eits: Option<crate::p1::EncodedInformationTypes>,
    #[rasn(tag(explicit(context, 3)))]
    pub extensions: Option<Any>,
    /// Receipt fields or non-receipt fields.
    #[rasn(tag(explicit(context, 0)))]
    pub choice: IpnChoice,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum IpnChoice {
    #[rasn(tag(context, 0))]
    NonReceipt(NonReceipt),
    #[rasn(tag(context, 1))]
    Receipt(Receipt),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct NonReceipt {
    /// 0: IPM discarded, 1: auto-forwarded.
    #[rasn(tag(context, 0))]
    pub reason: i64,
    #[rasn(tag(context, 1))]
    pub discard_reason: Option<i64>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Receipt {
    #[rasn(tag(context, 0))]
    pub receipt_time: UtcTime,
    #[rasn(tag(context, 1))]
    pub acknowledgment_mode: Option<i64>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum InformationObject {
    #[rasn(tag(context, 0))]
    Ipm(Ipm),
    #[rasn(tag(context, 1))]
    Ipn(Ipn),
}

pub fn encode<T: Encode>(v: &T) -> Vec<u8> {
    rasn::ber::encode(v).unwrap_or_default()
}

pub fn decode<T: Decode>(b: &[u8]) -> Result<T, String> {
    rasn::ber::decode(b).map_err(|e| format!("P22: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipm_round_trips() {
        let ipm = InformationObject::Ipm(Ipm {
            heading: Heading {
                this_ipm: IpmIdentifier {
                    user: None,
                    local: Some(PrintableString::try_from("1234".to_string()).unwrap()),
                },
                originator: Some(OrDescriptor {
                    formal_name: Some(OrName::default()),
                    free_form_name: None,
                    telephone: None,
                }),
                authorizing_users: None,
                primary_recipients: Some(vec![RecipientSpecifier {
                    recipient: OrDescriptor::default(),
                    notification_requests: None,
                    reply_requested: None,
                    extensions: None,
                }]),
                copy_recipients: None,
                blind_copy_recipients: None,
                replied_to: None,
                obsoleted: None,
                related: None,
                subject: Some(TeletexString::from_bytes(b"Hello").unwrap()),
                expiry_time: None,
                reply_time: None,
                reply_recipients: None,
                importance: Some(Importance::High),
                sensitivity: None,
                auto_forwarded: None,
                extensions: None,
            },
            body: vec![
                BodyPart::Ia5(Ia5Text {
                    parameters: Ia5Parameters { repertoire: None },
                    data: Ia5String::try_from("text".to_string()).unwrap(),
                }),
                BodyPart::Bilateral(OctetString::from_static(b"\x00\x01")),
            ],
        });
        let b = encode(&ipm);
        assert_eq!(b[0], 0xa0, "[0] IMPLICIT SEQUENCE");
        assert!(b.windows(9).any(|w| w == [0xa8, 7, 0x14, 5, b'H', b'e', b'l', b'l', b'o']), "{b:02x?}");
        assert!(b.windows(3).any(|w| w == [0x8c, 1, 2]), "importance high: {b:02x?}");
        assert_eq!(decode::<InformationObject>(&b).unwrap(), ipm);
    }
}
