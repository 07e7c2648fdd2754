//! Store errors, typed so that callers can map each to its protocol's reply.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("quota exceeded for {0}")]
    OverQuota(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
    /// The domain's directory is a read-only replica of this provider (an LDAP URL).
    #[error("this domain's directory is a read-only replica of {0}: make the change there")]
    ReadOnly(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
