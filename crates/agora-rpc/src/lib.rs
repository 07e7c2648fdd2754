//! DCE/RPC for Agora (C706 connection-oriented RPC with MS-RPCE's extensions, over
//! TCP). Written here because no Rust crate serves DCE/RPC; kept small: `pdu` and `ndr`
//! are the pure codecs, `assoc` one association's state, `ntlm` its authentication,
//! `epm` the endpoint mapper.

pub mod assoc;
pub mod epm;
pub mod ndr;
pub mod ntlm;
pub mod pdu;
