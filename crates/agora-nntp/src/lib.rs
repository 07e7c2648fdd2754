//! NNTP for Agora (RFC 3977 and its extensions): public folders of the information
//! store served as newsgroups. This crate holds the pure wire format so far; the
//! session and its registration come with the public-folder model.

pub mod article;
pub mod codec;
