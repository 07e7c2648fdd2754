//! DCE/RPC for Agora (C706 connection-oriented RPC with MS-RPCE's extensions, over
//! TCP). Written here because no Rust crate serves DCE/RPC; kept pure and small: `pdu`
//! decodes and encodes the protocol data units.

pub mod pdu;
