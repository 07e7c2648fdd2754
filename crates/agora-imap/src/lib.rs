//! IMAP for Agora. So far the pure parts: the command parser (`command`, with the literal
//! framing a session needs) and response data (`response`: ENVELOPE, BODYSTRUCTURE);
//! the session over the store comes next.

pub mod command;
pub mod fetch;
pub mod response;

pub use command::{Command, ParseError, literal_suffix, parse};
