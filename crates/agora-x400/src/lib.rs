//! X.400 for Agora: an MTA on TCP port 102 (RFC 1006) and its gateway to Internet mail
//! (RFC 2156). Each layer of the OSI stack is a pure codec: `tpkt` (RFC 1006),
//! `cotp` (X.224 class 0), `spdu` (X.225 session).

pub mod cotp;
pub mod spdu;
pub mod tpkt;
