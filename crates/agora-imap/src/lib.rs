//! IMAP for Agora. So far the pure command parser (`command`), with the literal framing
//! a session needs (`literal_suffix`); the session over the store comes next.

pub mod command;

pub use command::{Command, ParseError, literal_suffix, parse};
