//! Fuzzes what the X.400 MTA reads off the wire, layer by layer: TPKT framing, X.224
//! TPDUs, session SPDUs, and whole associations (a responder fed TPDUs cut from the
//! input, answering and refusing in each layer's terms).
#![no_main]
use agora_x400::assoc::{Event, Limits, Responder, Selectors};
use agora_x400::{cotp, p1, spdu, tpkt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tpkt::decode(data);
    if let Ok(t) = cotp::Tpdu::decode(data) {
        // What we write reads back as the same TPDU.
        assert_eq!(cotp::Tpdu::decode(&t.encode()).as_ref(), Ok(&t));
    }
    if let Ok(s) = spdu::decode_tsdu(data) {
        let _ = spdu::encode_tsdu(&s);
    }
    // An association: the input as a run of TPDUs (a length octet, then that many).
    let limits = Limits { max_apdu: 1 << 16, ..Limits::default() };
    let mut r = Responder::new(Selectors::default(), limits);
    let mut rest = data;
    let mut first = true;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let (tpdu, after) = tail.split_at(n);
        rest = after;
        // The first TPDU a valid connection request often enough to get further.
        let owned;
        let tpdu = if first {
            first = false;
            owned = cotp::Tpdu::Cr(cotp::Connect {
                dst_ref: 0,
                src_ref: 1,
                class: 0,
                size_code: tpdu.first().map(|s| s % 8 + 7),
                calling: Vec::new(),
                called: Vec::new(),
            })
            .encode();
            &owned[..]
        } else {
            tpdu
        };
        let (_, events) = r.receive(tpdu);
        for e in events {
            match e {
                Event::Bind { .. } => {
                    let _ = r.accept(&p1::Bind::new("FUZZ", "pw").unwrap_or(p1::Bind::Unauthenticated(())));
                }
                Event::Transfer(apdu) => {
                    let _ = p1::decode::<p1::MtsApdu>(&apdu);
                    let _ = r.confirm();
                }
                _ => {}
            }
        }
        if r.is_closed() {
            break;
        }
    }
});
