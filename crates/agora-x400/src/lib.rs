//! X.400 for Agora: an MTA on TCP port 102 (RFC 1006) and its gateway to Internet mail
//! (RFC 2156). Each layer of the OSI stack is a pure codec: `tpkt` (RFC 1006),
//! `cotp` (X.224 class 0), `spdu` (X.225 session), `ppdu` (X.226 presentation), `acse` (X.227),
//! `rtse` (X.228); the ASN.1 ones through rasn.

pub mod acse;
pub mod assoc;
pub mod cotp;
pub mod gateway;
pub mod oraddr;
pub mod p1;
pub mod p22;
pub mod ppdu;
pub mod rtse;
pub mod spdu;
pub mod tpkt;
