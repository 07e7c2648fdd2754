//! Link-state routing between the servers of one organisation. `proto` is the pure
//! part of the protocol on 691 (lines, proofs of membership bound to the TLS session);
//! `session` answers it, `client` speaks it to another server to exchange tables;
//! `service` registers the listener and keeps each server's table moving: members
//! report to their group's master, the master pushes to its members.

pub mod client;
pub mod proto;
pub mod service;
pub mod session;
pub mod table;
