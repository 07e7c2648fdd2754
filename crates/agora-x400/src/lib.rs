//! X.400 for Agora: an MTA on TCP port 102 (RFC 1006) and its gateway to Internet mail
//! (RFC 2156). Each layer of the OSI stack is a pure codec: `tpkt` (RFC 1006),
//! `cotp` (X.224 class 0), `spdu` (X.225 session), `ppdu` (X.226 presentation), `acse` (X.227),
//! `rtse` (X.228), `p1` (X.411), `p22` (X.420); the ASN.1 ones through rasn. `assoc` joins
//! them into one association, `oraddr` and `gateway` map to Internet mail (RFC 2156),
//! `mta` is the MTA on 102 and the gateway the transport uses, `service` registers it.

pub mod acse;
pub mod assoc;
pub mod cotp;
pub mod gateway;
pub mod mta;
pub mod oraddr;
pub mod p1;
pub mod p22;
pub mod ppdu;
pub mod rtse;
pub mod service;
pub mod spdu;
pub mod t61;
pub mod tpkt;

/// The ASN.1 library the types are written with (for callers building values).
pub use rasn;
