//! DCE/RPC for Agora (C706 connection-oriented RPC with MS-RPCE's extensions, over
//! TCP). Written here because no Rust crate serves DCE/RPC; kept small: `pdu` and `ndr`
//! are the pure codecs, `assoc` one association's state, `ntlm` its authentication,
//! `epm` the endpoint mapper, `nspi` the address book (with `mapi`'s values), `rfr`
//! its referral, `mgmt` what every endpoint answers about itself; `session` serves a
//! listener, `service` registers them.

pub mod assoc;
pub mod epm;
pub mod mapi;
pub mod mgmt;
pub mod ndr;
pub mod nspi;
pub mod ntlm;
pub mod pdu;
pub mod rfr;
pub mod service;
pub mod session;
