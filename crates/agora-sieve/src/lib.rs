//! Sieve (RFC 5228) with the extensions people use: a script is parsed and checked
//! once (`compile`), then run over each message (`run`) to a list of actions that the
//! mail core carries out. Written here: no well-kept Rust Sieve library has a licence
//! that fits.

mod lex;
mod matching;
mod parse;
mod run;
#[doc(hidden)]
pub mod testsuite;

/// The extensions a script may `require`, as ManageSieve's SIEVE capability lists them.
pub const EXTENSIONS: &[&str] = &[
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "encoded-character",
    "imap4flags",
    "body",
    "variables",
    "vacation",
    "vacation-seconds",
    "copy",
    "relational",
    "subaddress",
    "date",
    "index",
    "regex",
    "mailbox",
    "include",
    "duplicate",
    "editheader",
    "comparator-i;ascii-numeric",
];

/// A script's mistake, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct Error {
    pub line: usize,
    pub message: String,
}

/// A checked script, ready to run.
#[derive(Debug, Clone)]
pub struct Script {
    program: parse::Program,
}

impl Script {
    /// Whether the script requires an extension.
    pub fn requires(&self, extension: &str) -> bool {
        self.program.caps.contains(extension)
    }
}

/// Parses and checks a script.
pub fn compile(text: &str) -> Result<Script, Error> {
    Ok(Script { program: parse::program(text)? })
}

/// The message and envelope one run looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub message: &'a [u8],
    /// The envelope sender ("" for the null return path).
    pub from: &'a str,
    /// The recipient address the message came to.
    pub to: &'a str,
    /// Who sent it, when they logged in.
    pub auth: Option<&'a str>,
    /// Seconds since the epoch (currentdate).
    pub now: i64,
}

/// What a run may ask of the place it runs in.
#[async_trait::async_trait]
pub trait Environment: Send + Sync {
    /// Whether the recipient has a mailbox of that name.
    async fn mailbox_exists(&self, name: &str) -> bool;
    /// Whether `key` was noted in the last `seconds` (the run's `Outcome::duplicates`
    /// are noted by the caller once the message is delivered).
    async fn duplicate(&self, key: &str, seconds: u64) -> bool;
    /// The text of one of the recipient's scripts (or a global one), for `include`.
    async fn script(&self, name: &str, global: bool) -> Option<String>;
}

/// Bounds on what one run may do.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_actions: usize,
    pub max_redirects: usize,
    pub max_includes: usize,
    pub max_include_depth: usize,
    pub max_variables: usize,
    pub max_variable_size: usize,
    pub max_header_fields: usize,
    /// The most of one body part a body test reads.
    pub max_body_test: usize,
    /// The period a vacation reply may ask for, in seconds: (least, most).
    pub vacation_seconds: (u64, u64),
    /// How long duplicate remembers an id unless the script says.
    pub duplicate_seconds: u64,
    /// Between user and detail (subaddress).
    pub separator: char,
    /// Steps all comparisons of one run may take together (about one per character).
    pub max_work: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_actions: 32,
            max_redirects: 4,
            max_includes: 16,
            max_include_depth: 4,
            max_variables: 256,
            max_variable_size: 4096,
            max_header_fields: 1000,
            max_body_test: 1 << 20,
            vacation_seconds: (3600, 90 * 86_400),
            duplicate_seconds: 7 * 86_400,
            separator: '+',
            max_work: 50_000_000,
        }
    }
}

/// What a script decided for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Into INBOX, with these IMAP flags and keywords.
    Keep {
        flags: Vec<String>,
    },
    FileInto {
        mailbox: String,
        flags: Vec<String>,
        create: bool,
    },
    Redirect {
        address: String,
    },
    /// Refused, with the reason to tell the sender (ereject: as SMTP would).
    Reject {
        reason: String,
        extended: bool,
    },
    Vacation(Vacation),
}

/// An automatic reply a script asked for (RFC 5230); the mail core decides whether it
/// goes (once per sender and handle per period, never to lists or automatic mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacation {
    pub reason: String,
    pub subject: Option<String>,
    pub from: Option<String>,
    /// The recipient's other addresses.
    pub addresses: Vec<String>,
    /// The reason is a whole MIME entity.
    pub mime: bool,
    pub handle: String,
    pub seconds: u64,
}

/// A run's result: the actions (none: discarded), each one's message as the header
/// edits before it left it (None: as received), and the runtime error that made it
/// keep the message, if any.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub actions: Vec<Action>,
    pub messages: Vec<Option<std::sync::Arc<Vec<u8>>>>,
    pub error: Option<String>,
    /// Duplicate ids to note once delivered: key, period in seconds, and whether the
    /// period starts again even when it was seen (`:last`).
    pub duplicates: Vec<(String, u64, bool)>,
}

/// Runs a script over one message for one recipient.
pub async fn run(script: &Script, input: &Input<'_>, env: &dyn Environment, limits: &Limits) -> Outcome {
    run::run(script, input, env, limits).await
}

#[cfg(test)]
mod tests;
