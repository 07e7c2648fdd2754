//! X.411 P1, what MTAs exchange: the MTA bind, and MTS APDUs (message, probe, report)
//! with their envelopes, O/R names, MTS identifiers and trace. BER through rasn, in the
//! module's implicit tagging. Fields the standard gives a DEFAULT are optional here
//! (rasn's SET decoder wants defaulted fields present); absent means the default.

use rasn::prelude::*;

/// The most recipients one envelope may name here (X.411's ub-recipients is 32,767).
pub const MAX_RECIPIENTS: usize = 1024;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum CountryName {
    Numeric(NumericString),
    Printable(PrintableString),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum DomainName {
    Numeric(NumericString),
    Printable(PrintableString),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(explicit(application, 1)), delegate)]
pub struct Country(pub CountryName);

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(explicit(application, 2)), delegate)]
pub struct Admd(pub DomainName);

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 3))]
pub struct GlobalDomainIdentifier {
    pub country: Country,
    pub admd: Admd,
    pub prmd: Option<DomainName>,
}

/// MTSIdentifier: a message's, probe's or report's identity.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 4))]
pub struct MtsIdentifier {
    pub domain: GlobalDomainIdentifier,
    pub local: Ia5String,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct PersonalName {
    #[rasn(tag(context, 0))]
    pub surname: PrintableString,
    #[rasn(tag(context, 1))]
    pub given_name: Option<PrintableString>,
    #[rasn(tag(context, 2))]
    pub initials: Option<PrintableString>,
    #[rasn(tag(context, 3))]
    pub generation: Option<PrintableString>,
}

#[derive(AsnType, Debug, Clone, Default, Decode, Encode, PartialEq, Eq)]
pub struct StandardAttributes {
    pub country: Option<Country>,
    pub admd: Option<Admd>,
    #[rasn(tag(context, 0))]
    pub network_address: Option<NumericString>,
    #[rasn(tag(context, 1))]
    pub terminal_identifier: Option<PrintableString>,
    #[rasn(tag(explicit(context, 2)))]
    pub prmd: Option<DomainName>,
    #[rasn(tag(context, 3))]
    pub organization: Option<PrintableString>,
    #[rasn(tag(context, 4))]
    pub numeric_user_identifier: Option<NumericString>,
    #[rasn(tag(context, 5))]
    pub personal_name: Option<PersonalName>,
    #[rasn(tag(context, 6))]
    pub organizational_units: Option<Vec<PrintableString>>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct DomainDefinedAttribute {
    pub kind: PrintableString,
    pub value: PrintableString,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq, Hash)]
pub struct ExtensionAttribute {
    #[rasn(tag(context, 0))]
    pub kind: i64,
    #[rasn(tag(explicit(context, 1)))]
    pub value: Any,
}

/// ORName: an O/R address, with a directory name perhaps.
#[derive(AsnType, Debug, Clone, Default, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 0))]
pub struct OrName {
    pub standard: StandardAttributes,
    pub domain_defined: Option<Vec<DomainDefinedAttribute>>,
    pub extensions: Option<SetOf<ExtensionAttribute>>,
    #[rasn(tag(explicit(context, 0)))]
    pub directory_name: Option<Any>,
}

/// ORAddress as it stands alone (in P22 headings): the same without the tag.
#[derive(AsnType, Debug, Clone, Default, Decode, Encode, PartialEq, Eq)]
pub struct OrAddressValue {
    pub standard: StandardAttributes,
    pub domain_defined: Option<Vec<DomainDefinedAttribute>>,
    pub extensions: Option<SetOf<ExtensionAttribute>>,
}

/// A content type: built in (a number) or extended (an object identifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentType {
    BuiltIn(i64),
    Extended(ObjectIdentifier),
}

impl ContentType {
    /// From the two fields an envelope keeps it in.
    pub fn of(built_in: &Option<i64>, extended: &Option<ObjectIdentifier>) -> Option<ContentType> {
        match (built_in, extended) {
            (Some(n), None) => Some(ContentType::BuiltIn(*n)),
            (None, Some(o)) => Some(ContentType::Extended(o.clone())),
            _ => None,
        }
    }

    /// The two fields.
    pub fn fields(&self) -> (Option<i64>, Option<ObjectIdentifier>) {
        match self {
            ContentType::BuiltIn(n) => (Some(*n), None),
            ContentType::Extended(o) => (None, Some(o.clone())),
        }
    }
}

/// Built-in content types: interpersonal messaging of 1984 and of 1988.
pub const P2: i64 = 2;
pub const P22: i64 = 22;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set, tag(application, 5))]
pub struct EncodedInformationTypes {
    #[rasn(tag(context, 0))]
    pub built_in: BitString,
    #[rasn(tag(context, 1))]
    pub g3_fax: Option<BitString>,
    #[rasn(tag(context, 2))]
    pub teletex: Option<Any>,
    #[rasn(tag(context, 4))]
    pub extended: Option<SetOf<ObjectIdentifier>>,
}

/// Trace: where the message has been, domain by domain.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct DomainSuppliedInformation {
    #[rasn(tag(context, 0))]
    pub arrival_time: UtcTime,
    /// 0: relayed, 1: rerouted.
    #[rasn(tag(context, 2))]
    pub routing_action: RoutingAction,
    pub attempted_domain: Option<GlobalDomainIdentifier>,
    #[rasn(tag(context, 1))]
    pub deferred_time: Option<UtcTime>,
    pub converted: Option<EncodedInformationTypes>,
    #[rasn(tag(context, 3))]
    pub other_actions: Option<BitString>,
}

/// What a domain or MTA did with the message.
#[derive(AsnType, Debug, Clone, Copy, Decode, Encode, PartialEq, Eq)]
#[rasn(enumerated)]
pub enum RoutingAction {
    Relayed = 0,
    Rerouted = 1,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct TraceElement {
    pub domain: GlobalDomainIdentifier,
    pub info: DomainSuppliedInformation,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(tag(application, 9), delegate)]
pub struct TraceInformation(pub Vec<TraceElement>);

/// Internal trace (extension 38): MTA by MTA within a domain.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct MtaSuppliedInformation {
    #[rasn(tag(context, 0))]
    pub arrival_time: UtcTime,
    #[rasn(tag(context, 2))]
    pub routing_action: RoutingAction,
    /// The attempted MTA or domain (a CHOICE, as its alternatives).
    pub attempted_mta: Option<Ia5String>,
    pub attempted_domain: Option<GlobalDomainIdentifier>,
    #[rasn(tag(context, 1))]
    pub deferred_time: Option<UtcTime>,
    pub converted: Option<EncodedInformationTypes>,
    #[rasn(tag(context, 3))]
    pub other_actions: Option<BitString>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct InternalTraceElement {
    pub domain: GlobalDomainIdentifier,
    pub mta_name: Ia5String,
    pub info: MtaSuppliedInformation,
}

/// The standard extension number of internal trace information.
pub const EXT_INTERNAL_TRACE: i64 = 38;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq, Hash)]
#[rasn(choice)]
pub enum ExtensionType {
    #[rasn(tag(context, 0))]
    Standard(i64),
    #[rasn(tag(context, 3))]
    Private(ObjectIdentifier),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq, Hash)]
pub struct ExtensionField {
    pub kind: ExtensionType,
    #[rasn(tag(context, 1))]
    pub criticality: Option<BitString>,
    #[rasn(tag(explicit(context, 2)))]
    pub value: Option<Any>,
}

/// Per-recipient indicator bits (X.411 12.2.1.1.1.3).
pub mod indicator {
    /// This MTA is responsible for delivering to the recipient.
    pub const RESPONSIBILITY: usize = 0;
    pub const MTA_REPORT: usize = 1;
    pub const MTA_NON_DELIVERY_REPORT: usize = 2;
    pub const ORIGINATOR_REPORT: usize = 3;
    pub const ORIGINATOR_NON_DELIVERY_REPORT: usize = 4;
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct PerRecipientFields {
    pub recipient: OrName,
    #[rasn(tag(context, 0))]
    pub originally_specified_number: i64,
    #[rasn(tag(context, 1))]
    pub indicators: BitString,
    #[rasn(tag(context, 2))]
    pub explicit_conversion: Option<i64>,
    #[rasn(tag(context, 3))]
    pub extensions: Option<SetOf<ExtensionField>>,
}

/// MessageTransferEnvelope (the per-message fields and the recipients).
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Envelope {
    pub identifier: MtsIdentifier,
    pub originator: OrName,
    pub original_eits: Option<EncodedInformationTypes>,
    /// ContentType, a CHOICE, as its two alternatives (rasn's SET decoder cannot
    /// place an untagged CHOICE); exactly one is present.
    #[rasn(tag(application, 6))]
    pub content_type_built_in: Option<i64>,
    pub content_type_extended: Option<ObjectIdentifier>,
    #[rasn(tag(application, 10))]
    pub content_identifier: Option<PrintableString>,
    /// 0: normal, 1: non-urgent, 2: urgent.
    #[rasn(tag(application, 7))]
    pub priority: Option<Priority>,
    #[rasn(tag(application, 8))]
    pub per_message_indicators: Option<BitString>,
    #[rasn(tag(context, 0))]
    pub deferred_delivery_time: Option<UtcTime>,
    #[rasn(tag(context, 1))]
    pub per_domain_bilateral: Option<Vec<Any>>,
    pub trace: TraceInformation,
    #[rasn(tag(context, 3))]
    pub extensions: Option<SetOf<ExtensionField>>,
    #[rasn(tag(context, 2))]
    pub recipients: Vec<PerRecipientFields>,
}

#[derive(AsnType, Debug, Clone, Copy, Decode, Encode, PartialEq, Eq)]
#[rasn(enumerated)]
pub enum Priority {
    Normal = 0,
    NonUrgent = 1,
    Urgent = 2,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct Message {
    pub envelope: Envelope,
    pub content: OctetString,
}

/// A probe's recipients have the fields a message's have.
pub type PerRecipientProbeFields = PerRecipientFields;

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Probe {
    pub identifier: MtsIdentifier,
    pub originator: OrName,
    pub original_eits: Option<EncodedInformationTypes>,
    /// ContentType, a CHOICE, as its two alternatives (rasn's SET decoder cannot
    /// place an untagged CHOICE); exactly one is present.
    #[rasn(tag(application, 6))]
    pub content_type_built_in: Option<i64>,
    pub content_type_extended: Option<ObjectIdentifier>,
    #[rasn(tag(application, 10))]
    pub content_identifier: Option<PrintableString>,
    #[rasn(tag(context, 0))]
    pub content_length: Option<i64>,
    #[rasn(tag(application, 8))]
    pub per_message_indicators: Option<BitString>,
    #[rasn(tag(context, 1))]
    pub per_domain_bilateral: Option<Vec<Any>>,
    pub trace: TraceInformation,
    #[rasn(tag(context, 3))]
    pub extensions: Option<SetOf<ExtensionField>>,
    #[rasn(tag(context, 2))]
    pub recipients: Vec<PerRecipientProbeFields>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct ReportEnvelope {
    pub identifier: MtsIdentifier,
    pub destination: OrName,
    pub trace: TraceInformation,
    #[rasn(tag(context, 1))]
    pub extensions: Option<SetOf<ExtensionField>>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct DeliveryReport {
    #[rasn(tag(context, 0))]
    pub delivery_time: UtcTime,
    #[rasn(tag(context, 1))]
    pub type_of_user: Option<i64>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct NonDeliveryReport {
    #[rasn(tag(context, 0))]
    pub reason: i64,
    #[rasn(tag(context, 1))]
    pub diagnostic: Option<i64>,
}

/// Non-delivery reasons and diagnostics (X.411 8.3.1.2.1.11-12).
pub mod nd {
    pub const TRANSFER_FAILURE: i64 = 0;
    pub const UNABLE_TO_TRANSFER: i64 = 1;
    pub const UNRECOGNISED_OR_NAME: i64 = 0;
    pub const AMBIGUOUS_OR_NAME: i64 = 1;
    pub const MTS_CONGESTION: i64 = 2;
    pub const LOOP_DETECTED: i64 = 3;
    pub const RECIPIENT_UNAVAILABLE: i64 = 4;
    pub const MAXIMUM_TIME_EXPIRED: i64 = 5;
    pub const CONTENT_TOO_LONG: i64 = 7;
    pub const CONTENT_SYNTAX_ERROR: i64 = 12;
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum ReportType {
    #[rasn(tag(context, 0))]
    Delivery(DeliveryReport),
    #[rasn(tag(context, 1))]
    NonDelivery(NonDeliveryReport),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct LastTrace {
    #[rasn(tag(context, 0))]
    pub arrival_time: UtcTime,
    pub converted: Option<EncodedInformationTypes>,
    #[rasn(tag(explicit(context, 1)))]
    pub report: ReportType,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct PerRecipientReportFields {
    #[rasn(tag(context, 0))]
    pub actual_recipient: OrName,
    #[rasn(tag(context, 1))]
    pub originally_specified_number: i64,
    #[rasn(tag(context, 2))]
    pub indicators: BitString,
    #[rasn(tag(context, 3))]
    pub last_trace: LastTrace,
    #[rasn(tag(context, 4))]
    pub originally_intended: Option<OrName>,
    #[rasn(tag(context, 5))]
    pub supplementary: Option<PrintableString>,
    #[rasn(tag(context, 6))]
    pub extensions: Option<SetOf<ExtensionField>>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct ReportContent {
    pub subject: MtsIdentifier,
    pub subject_trace: Option<TraceInformation>,
    pub original_eits: Option<EncodedInformationTypes>,
    #[rasn(tag(application, 6))]
    pub content_type_built_in: Option<i64>,
    pub content_type_extended: Option<ObjectIdentifier>,
    #[rasn(tag(application, 10))]
    pub content_identifier: Option<PrintableString>,
    #[rasn(tag(context, 1))]
    pub returned_content: Option<OctetString>,
    #[rasn(tag(context, 2))]
    pub additional_information: Option<Any>,
    #[rasn(tag(context, 3))]
    pub extensions: Option<SetOf<ExtensionField>>,
    #[rasn(tag(context, 0))]
    pub recipients: Vec<PerRecipientReportFields>,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
pub struct Report {
    pub envelope: ReportEnvelope,
    pub content: ReportContent,
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum MtsApdu {
    #[rasn(tag(context, 0))]
    Message(Message),
    #[rasn(tag(context, 1))]
    Report(Report),
    #[rasn(tag(context, 2))]
    Probe(Probe),
}

/// Password ::= CHOICE { IA5String, OCTET STRING }.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Password {
    Text(Ia5String),
    Octets(OctetString),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Credentials {
    Simple(Password),
    #[rasn(tag(context, 0))]
    Strong(Any),
    #[rasn(tag(context, 1))]
    Protected(Any),
}

#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(set)]
pub struct Authenticated {
    #[rasn(tag(context, 0))]
    pub name: Ia5String,
    #[rasn(tag(explicit(context, 1)))]
    pub credentials: Credentials,
    #[rasn(tag(context, 2))]
    pub security_context: Option<Any>,
}

/// MTABindArgument and MTABindResult have one shape.
#[derive(AsnType, Debug, Clone, Decode, Encode, PartialEq, Eq)]
#[rasn(choice)]
pub enum Bind {
    Unauthenticated(()),
    #[rasn(tag(context, 1))]
    Authenticated(Authenticated),
}

/// MTABindError values.
pub const BIND_BUSY: i64 = 0;
pub const BIND_AUTHENTICATION_ERROR: i64 = 2;
pub const BIND_UNACCEPTABLE_DIALOGUE_MODE: i64 = 3;

/// The longest MTA name and password (ub-mta-name-length, ub-password-length).
pub const MAX_MTA_NAME: usize = 32;
pub const MAX_PASSWORD: usize = 62;

impl Bind {
    pub fn new(name: &str, password: &str) -> Result<Bind, String> {
        if name.is_empty() || name.len() > MAX_MTA_NAME || password.len() > MAX_PASSWORD {
            return Err("an MTA name of 1 to 32 characters and a password of at most 62".into());
        }
        let ia5 = |s: &str| Ia5String::try_from(s.to_string()).map_err(|_| format!("{s:?} is not IA5 text"));
        Ok(Bind::Authenticated(Authenticated {
            name: ia5(name)?,
            credentials: Credentials::Simple(Password::Text(ia5(password)?)),
            security_context: None,
        }))
    }

    /// The name and simple password, when it has them.
    pub fn name_and_password(&self) -> Option<(String, Vec<u8>)> {
        let Bind::Authenticated(a) = self else { return None };
        let pw = match &a.credentials {
            Credentials::Simple(Password::Text(t)) => t.to_string().into_bytes(),
            Credentials::Simple(Password::Octets(o)) => o.to_vec(),
            _ => return None,
        };
        Some((a.name.to_string(), pw))
    }
}

pub fn encode<T: Encode>(v: &T) -> Vec<u8> {
    rasn::ber::encode(v).unwrap_or_default()
}

pub fn decode<T: Decode>(b: &[u8]) -> Result<T, String> {
    rasn::ber::decode(b).map_err(|e| format!("P1: {e}"))
}

/// Text as PrintableString (characters outside its set refused).
pub fn printable(s: &str) -> Result<PrintableString, String> {
    PrintableString::try_from(s.to_string()).map_err(|_| format!("{s:?} is not printable string text"))
}

pub fn ia5(s: &str) -> Result<Ia5String, String> {
    Ia5String::try_from(s.to_string()).map_err(|_| format!("{s:?} is not IA5 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn name(s: &str, o: &str) -> OrName {
        OrName {
            standard: StandardAttributes {
                country: Some(Country(CountryName::Printable(printable("GB").unwrap()))),
                admd: Some(Admd(DomainName::Printable(printable(" ").unwrap()))),
                prmd: Some(DomainName::Printable(printable("Acme").unwrap())),
                organization: Some(printable(o).unwrap()),
                personal_name: Some(PersonalName {
                    surname: printable(s).unwrap(),
                    given_name: Some(printable("Ann").unwrap()),
                    initials: None,
                    generation: None,
                }),
                ..StandardAttributes::default()
            },
            ..OrName::default()
        }
    }

    fn gdi() -> GlobalDomainIdentifier {
        GlobalDomainIdentifier {
            country: Country(CountryName::Printable(printable("GB").unwrap())),
            admd: Admd(DomainName::Printable(printable(" ").unwrap())),
            prmd: Some(DomainName::Printable(printable("Acme").unwrap())),
        }
    }

    #[test]
    fn a_message_round_trips() {
        let now: UtcTime = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let m = MtsApdu::Message(Message {
            envelope: Envelope {
                identifier: MtsIdentifier { domain: gdi(), local: ia5("4711").unwrap() },
                originator: name("Lee", "Sales"),
                original_eits: None,
                content_type_built_in: Some(P22),
                content_type_extended: None,
                content_identifier: None,
                priority: Some(Priority::Urgent),
                per_message_indicators: None,
                deferred_delivery_time: None,
                per_domain_bilateral: None,
                trace: TraceInformation(vec![TraceElement {
                    domain: gdi(),
                    info: DomainSuppliedInformation {
                        arrival_time: now,
                        routing_action: RoutingAction::Relayed,
                        attempted_domain: None,
                        deferred_time: None,
                        converted: None,
                        other_actions: None,
                    },
                }]),
                extensions: None,
                recipients: vec![PerRecipientFields {
                    recipient: name("Park", "Research"),
                    originally_specified_number: 1,
                    indicators: BitString::from_slice(&[0b1001_1000]),
                    explicit_conversion: None,
                    extensions: None,
                }],
            },
            content: OctetString::from_static(b"\x31\x00"),
        });
        let b = encode(&m);
        assert_eq!(b[0], 0xa0, "[0] IMPLICIT SEQUENCE");
        // The MTS identifier: [APPLICATION 4] { [APPLICATION 3] { [APPLICATION 1] { "GB" } ... } }
        assert!(b.windows(4).any(|w| w[0] == 0x64 && w[2] == 0x63), "{b:02x?}");
        assert!(b.windows(4).any(|w| w == [0x61, 4, 0x13, 2]), "country as explicit PrintableString: {b:02x?}");
        assert!(b.windows(3).any(|w| w == [0x46, 1, 22]), "built-in content type 22: {b:02x?}");
        assert!(b.windows(3).any(|w| w == [0x47, 1, 2]), "priority urgent: {b:02x?}");
        assert_eq!(decode::<MtsApdu>(&b).unwrap(), m);
    }

    /// A small deterministic generator (xorshift), for values of every shape.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn text(&mut self, max: u64) -> PrintableString {
            const CHARS: &[u8] = b"ABCxyz019 '()+,-./:=?";
            let n = 1 + self.below(max);
            let s: Vec<u8> = (0..n).map(|_| CHARS[self.below(CHARS.len() as u64) as usize]).collect();
            PrintableString::from_bytes(&s).unwrap()
        }
        fn opt(&mut self, max: u64) -> Option<PrintableString> {
            (self.below(2) == 0).then(|| self.text(max))
        }
        fn name(&mut self) -> OrName {
            let country = (self.below(3) > 0).then(|| Country(CountryName::Printable(self.text(2))));
            let ous = (self.below(2) == 0).then(|| (0..1 + self.below(4)).map(|_| self.text(10)).collect());
            let personal = (self.below(3) > 0).then(|| PersonalName {
                surname: self.text(20),
                given_name: self.opt(10),
                initials: self.opt(3),
                generation: self.opt(3),
            });
            let dda = (self.below(4) == 0).then(|| {
                (0..1 + self.below(3))
                    .map(|_| DomainDefinedAttribute { kind: self.text(8), value: self.text(30) })
                    .collect()
            });
            OrName {
                standard: StandardAttributes {
                    country,
                    admd: (self.below(2) == 0).then(|| Admd(DomainName::Printable(self.text(16)))),
                    prmd: (self.below(2) == 0).then(|| DomainName::Printable(self.text(16))),
                    organization: self.opt(30),
                    personal_name: personal,
                    organizational_units: ous,
                    ..StandardAttributes::default()
                },
                domain_defined: dda,
                ..OrName::default()
            }
        }
    }

    #[test]
    fn every_generated_apdu_decodes_to_itself() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..400 {
            let now: UtcTime = chrono::DateTime::from_timestamp(1_700_000_000 + g.below(1 << 30) as i64, 0).unwrap();
            let domain = GlobalDomainIdentifier {
                country: Country(CountryName::Printable(g.text(2))),
                admd: Admd(DomainName::Printable(g.text(16))),
                prmd: (g.below(2) == 0).then(|| DomainName::Printable(g.text(16))),
            };
            let id = MtsIdentifier { domain: domain.clone(), local: ia5(&format!("id{}", g.next())).unwrap() };
            let trace = TraceInformation(
                (0..1 + g.below(3))
                    .map(|_| TraceElement {
                        domain: domain.clone(),
                        info: DomainSuppliedInformation {
                            arrival_time: now,
                            routing_action: if g.below(2) == 0 {
                                RoutingAction::Relayed
                            } else {
                                RoutingAction::Rerouted
                            },
                            attempted_domain: None,
                            deferred_time: None,
                            converted: None,
                            other_actions: None,
                        },
                    })
                    .collect(),
            );
            let bits = BitString::from_slice(&[g.below(256) as u8]);
            let apdu = match g.below(3) {
                0 => MtsApdu::Message(Message {
                    envelope: Envelope {
                        identifier: id,
                        originator: g.name(),
                        original_eits: None,
                        content_type_built_in: Some(if g.below(2) == 0 { P2 } else { P22 }),
                        content_type_extended: None,
                        content_identifier: g.opt(16),
                        priority: [None, Some(Priority::Normal), Some(Priority::NonUrgent), Some(Priority::Urgent)]
                            [g.below(4) as usize],
                        per_message_indicators: None,
                        deferred_delivery_time: None,
                        per_domain_bilateral: None,
                        trace,
                        extensions: None,
                        recipients: (0..1 + g.below(5))
                            .map(|i| PerRecipientFields {
                                recipient: g.name(),
                                originally_specified_number: i as i64 + 1,
                                indicators: bits.clone(),
                                explicit_conversion: None,
                                extensions: None,
                            })
                            .collect(),
                    },
                    content: OctetString::from((0..g.below(300)).map(|_| g.next() as u8).collect::<Vec<u8>>()),
                }),
                1 => MtsApdu::Report(Report {
                    envelope: ReportEnvelope { identifier: id.clone(), destination: g.name(), trace, extensions: None },
                    content: ReportContent {
                        subject: id,
                        subject_trace: None,
                        original_eits: None,
                        content_type_built_in: Some(P22),
                        content_type_extended: None,
                        content_identifier: None,
                        returned_content: None,
                        additional_information: None,
                        extensions: None,
                        recipients: (0..1 + g.below(4))
                            .map(|i| PerRecipientReportFields {
                                actual_recipient: g.name(),
                                originally_specified_number: i as i64 + 1,
                                indicators: bits.clone(),
                                last_trace: LastTrace {
                                    arrival_time: now,
                                    converted: None,
                                    report: if g.below(2) == 0 {
                                        ReportType::Delivery(DeliveryReport { delivery_time: now, type_of_user: None })
                                    } else {
                                        ReportType::NonDelivery(NonDeliveryReport {
                                            reason: g.below(2) as i64,
                                            diagnostic: Some(g.below(16) as i64),
                                        })
                                    },
                                },
                                originally_intended: None,
                                supplementary: g.opt(40),
                                extensions: None,
                            })
                            .collect(),
                    },
                }),
                _ => MtsApdu::Probe(Probe {
                    identifier: id,
                    originator: g.name(),
                    original_eits: None,
                    content_type_built_in: Some(P22),
                    content_type_extended: None,
                    content_identifier: None,
                    content_length: Some(g.below(1 << 20) as i64),
                    per_message_indicators: None,
                    per_domain_bilateral: None,
                    trace,
                    extensions: None,
                    recipients: vec![PerRecipientProbeFields {
                        recipient: g.name(),
                        originally_specified_number: 1,
                        indicators: bits,
                        explicit_conversion: None,
                        extensions: None,
                    }],
                }),
            };
            let wire = encode(&apdu);
            assert_eq!(decode::<MtsApdu>(&wire).as_ref(), Ok(&apdu), "{wire:02x?}");
        }
    }

    #[test]
    fn the_bind() {
        let b = Bind::new("MTA-A", "secret").unwrap();
        let e = encode(&b);
        assert_eq!(
            e,
            [0xa1, 0x11, 0x80, 5, b'M', b'T', b'A', b'-', b'A', 0xa1, 8, 0x16, 6, b's', b'e', b'c', b'r', b'e', b't']
        );
        let back: Bind = decode(&e).unwrap();
        assert_eq!(back.name_and_password(), Some(("MTA-A".into(), b"secret".to_vec())));
        assert_eq!(decode::<Bind>(&[5, 0]).unwrap(), Bind::Unauthenticated(()));
        assert!(Bind::new("", "x").is_err());
        assert!(decode::<MtsApdu>(&[0xa0, 3, 0x31, 0]).is_err());
    }
}
