//! Message tracking (like Exchange's): one JSON line per event in the data directory's
//! `tracking.log` — received, delivered, relayed, deferred, bounced — with the queue
//! id, addresses, size, remote host and reply, for `agora track` to search.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the epoch.
    pub time: i64,
    /// received, delivered, relayed, deferred, bounced.
    pub event: String,
    pub id: String,
    pub sender: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// The client (received) or the server the message went to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reply: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_id: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Appends events to the log file; a failed write is reported and never stops mail.
#[derive(Debug)]
pub struct Tracker {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl Tracker {
    pub fn new(path: &Path) -> Tracker {
        Tracker { path: path.to_path_buf(), file: Mutex::new(None) }
    }

    pub fn log(&self, event: Event) {
        let Ok(mut line) = serde_json::to_vec(&event) else { return };
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            match std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    tracing::warn!("tracking: cannot open {}: {e}", self.path.display());
                    return;
                }
            }
        }
        if let Some(f) = guard.as_mut()
            && let Err(e) = f.write_all(&line)
        {
            tracing::warn!("tracking: cannot write {}: {e}", self.path.display());
            *guard = None;
        }
    }
}

/// Reads the events of a tracking log that match every given filter (addresses
/// case-insensitively, the id exactly).
pub fn search(
    path: &Path,
    sender: Option<&str>,
    recipient: Option<&str>,
    id: Option<&str>,
) -> std::io::Result<Vec<Event>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let lower = |s: &str| s.to_ascii_lowercase();
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| sender.is_none_or(|s| lower(&e.sender) == lower(s)))
        .filter(|e| recipient.is_none_or(|r| e.recipients.iter().any(|x| lower(x) == lower(r))))
        .filter(|e| id.is_none_or(|i| e.id == i))
        .collect())
}

/// The Message-ID header of a message, if any.
pub fn message_id(message: &[u8]) -> String {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    for line in message[..end].split(|&b| b == b'\n') {
        if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            return String::from_utf8_lossy(&line[11..]).trim().chars().take(200).collect();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_and_searches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracking.log");
        let t = Tracker::new(&path);
        t.log(Event {
            time: 1,
            event: "received".into(),
            id: "A1".into(),
            sender: "a@x.test".into(),
            recipients: vec!["B@y.test".into()],
            ..Event::default()
        });
        t.log(Event {
            time: 2,
            event: "relayed".into(),
            id: "A1".into(),
            sender: "a@x.test".into(),
            recipients: vec!["b@y.test".into()],
            reply: "250 ok".into(),
            ..Event::default()
        });
        t.log(Event {
            time: 3,
            event: "received".into(),
            id: "C2".into(),
            sender: "c@x.test".into(),
            ..Event::default()
        });
        assert_eq!(search(&path, None, Some("b@y.test"), None).unwrap().len(), 2);
        assert_eq!(search(&path, Some("C@X.test"), None, None).unwrap()[0].id, "C2");
        assert_eq!(search(&path, None, None, Some("A1")).unwrap().len(), 2);
        assert!(search(&dir.path().join("none"), None, None, None).unwrap().is_empty());
        assert_eq!(message_id(b"Subject: x\r\nMessage-ID: <1@x>\r\n\r\nbody"), "<1@x>");
    }
}
