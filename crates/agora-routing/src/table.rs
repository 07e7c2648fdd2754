//! The organisation's table as this server keeps it in the store (the mail core's
//! helpers, named here for the service's use).

pub use agora_mail::routing::{Identity, load, merge_stored as merge, set_stored_state as set_state};
