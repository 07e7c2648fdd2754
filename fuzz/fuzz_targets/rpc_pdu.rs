//! Fuzzes the DCE/RPC PDU decoder: any input decodes or is refused (never a panic),
//! and what decodes encodes to a fragment that decodes again to the same call.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((pdu, n)) = agora_rpc::pdu::decode(data) {
        assert!(n <= data.len());
        if let Some(bytes) = agora_rpc::pdu::encode(&pdu) {
            let (again, m) = agora_rpc::pdu::decode(&bytes).expect("what we encode decodes");
            assert_eq!(m, bytes.len());
            assert_eq!((again.call_id, again.flags), (pdu.call_id, pdu.flags));
            assert_eq!(std::mem::discriminant(&again.body), std::mem::discriminant(&pdu.body));
        }
    }
});
