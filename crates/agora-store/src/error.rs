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
    Db(String),
    /// A uniqueness, reference or check constraint refused a write.
    #[error("database constraint: {0}")]
    Constraint(String),
    /// The write met a concurrent one (another node's) and may be tried again.
    #[error("the write met a concurrent change; try again ({0})")]
    Conflict(String),
    /// A query for one row found none (mapped to None where a row is optional).
    #[error("no such row")]
    NoRow,
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
