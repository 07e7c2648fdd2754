//! Fuzzes the X.400 ASN.1 decoders and the gateway behind them: presentation, ACSE,
//! RTSE and P1 APDUs, P22 contents, teletex text, O/R addresses in text, RFC 2156
//! mappings, and a decoded message, report, DSN or MDN converted as the gateway does.
#![no_main]
use agora_x400::gateway::{self, Local};
use agora_x400::oraddr::{Mapper, Mapping, OrAddress};
use agora_x400::{acse, p1, p22, ppdu, rtse};
use libfuzzer_sys::fuzz_target;

fn mapper() -> Mapper {
    Mapper {
        entries: vec![Mapping {
            or: OrAddress { c: "GB".into(), admd: " ".into(), prmd: "Acme".into(), ..OrAddress::default() },
            domain: "a.example".into(),
        }],
        gateway: OrAddress { c: "GB".into(), admd: " ".into(), prmd: "Gw".into(), ..OrAddress::default() },
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = ppdu::decode::<ppdu::Cp>(data);
    let _ = ppdu::decode::<ppdu::Cpa>(data);
    let _ = ppdu::decode::<ppdu::Cpr>(data);
    let _ = ppdu::decode::<ppdu::UserData>(data);
    let _ = ppdu::decode::<ppdu::Abort>(data);
    let _ = acse::decode(data);
    let _ = rtse::decode(data);
    let _ = p1::decode::<p1::Bind>(data);
    let m = mapper();
    let local = Local { domain: m.gateway.clone(), hostname: "mx.a.example".into(), mta: "FUZZ".into() };
    match p1::decode::<p1::MtsApdu>(data) {
        Ok(p1::MtsApdu::Message(msg)) => {
            let _ = gateway::to_internet(&msg, &m, "mx.a.example");
        }
        Ok(p1::MtsApdu::Report(r)) => {
            let _ = gateway::report_to_dsn(&r, &m, "mx.a.example");
        }
        _ => {}
    }
    let _ = p22::decode::<p22::InformationObject>(data);
    // Teletex both ways: what T.61 text decodes to encodes again without loss.
    let text = agora_x400::t61::decode(data);
    let (again, lost) = agora_x400::t61::encode(&text);
    if !text.contains('\u{FFFD}') {
        assert!(!lost);
        assert_eq!(agora_x400::t61::decode(&again), text);
    }
    let _ = gateway::read_mdn(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(a) = OrAddress::parse(text) {
            assert_eq!(OrAddress::parse(&a.text()).as_ref(), Ok(&a), "the text form reads back");
            let _ = m.to_822(&a);
            if let Ok(n) = a.to_p1() {
                let _ = OrAddress::from_p1(&n);
            }
        }
        let _ = m.to_or(text);
        let _ = agora_x400::oraddr::decode_822(text);
        let _ = gateway::mts_id_parse(text);
    }
    if let Some(d) = gateway::read_dsn(data) {
        let dest = m.to_or("ann@a.example").and_then(|o| o.to_p1());
        if let Ok(dest) = dest {
            let _ = gateway::dsn_to_report(&d, &dest, &m, &local, "f1");
        }
    }
    let _ = gateway::to_x400("ann@a.example", &["bob@a.example".into()], data, &m, &local, "f2");
});
