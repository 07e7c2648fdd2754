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

/// When the tracking log is renamed and a new one begun (`[tracking]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingSection {
    /// Bytes; a log past this is renamed `tracking.log.DATE` and a new one begun.
    pub max_size: u64,
    /// A new log at least this often (days).
    pub rotate_days: u32,
    /// Renamed logs older than this are deleted (days; 0: kept).
    pub keep_days: u32,
}

impl Default for TrackingSection {
    fn default() -> Self {
        TrackingSection { max_size: 64 * 1024 * 1024, rotate_days: 1, keep_days: 90 }
    }
}

impl TrackingSection {
    pub const HELP: &'static [(&'static str, &'static str, &'static str)] = &[
        ("max_size", "", "bytes; past this tracking.log is renamed tracking.log.DATE and begun anew"),
        ("rotate_days", "", "a new tracking.log at least this often"),
        ("keep_days", "", "renamed logs older than this are deleted (0: kept)"),
    ];
}

/// The open log: its size and the time of its first event.
#[derive(Debug)]
struct Current {
    file: std::fs::File,
    size: u64,
    started: i64,
}

/// Appends events to the log file, renaming it when it grows past its size or age; a
/// failed write is reported and never stops mail.
#[derive(Debug)]
pub struct Tracker {
    path: PathBuf,
    rotation: TrackingSection,
    file: Mutex<Option<Current>>,
}

impl Tracker {
    pub fn new(path: &Path) -> Tracker {
        Tracker::with_rotation(path, TrackingSection::default())
    }

    pub fn with_rotation(path: &Path, rotation: TrackingSection) -> Tracker {
        Tracker { path: path.to_path_buf(), rotation, file: Mutex::new(None) }
    }

    pub fn log(&self, event: Event) {
        let time = event.time;
        let Ok(mut line) = serde_json::to_vec(&event) else { return };
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let due = guard.as_ref().is_some_and(|c| {
            let age = i64::from(self.rotation.rotate_days.max(1)) * 86_400;
            c.size > 0 && (c.size + line.len() as u64 > self.rotation.max_size.max(1) || time >= c.started + age)
        });
        if due && let Some(closed) = guard.take() {
            self.rotate(closed.started);
        }
        if guard.is_none() {
            match self.open(time) {
                Ok(c) => *guard = Some(c),
                Err(e) => {
                    tracing::warn!("tracking: cannot open {}: {e}", self.path.display());
                    return;
                }
            }
        }
        if let Some(c) = guard.as_mut() {
            match c.file.write_all(&line) {
                Ok(()) => {
                    if c.size == 0 {
                        c.started = time;
                    }
                    c.size += line.len() as u64;
                }
                Err(e) => {
                    tracing::warn!("tracking: cannot write {}: {e}", self.path.display());
                    *guard = None;
                }
            }
        }
    }

    /// Opens the log for appending; its start is its first event's time.
    fn open(&self, now: i64) -> std::io::Result<Current> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let size = file.metadata()?.len();
        let started = if size == 0 {
            now
        } else {
            let first = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&self.path)?)).next();
            first.and_then(|l| l.ok()).and_then(|l| serde_json::from_str::<Event>(&l).ok()).map_or(now, |e| e.time)
        };
        Ok(Current { file, size, started })
    }

    /// Renames the log after the time it began (so the names sort in order), then
    /// deletes renamed logs past their keeping time.
    fn rotate(&self, started: i64) {
        let stamp: String = agora_store::time::rfc3339(started).chars().filter(char::is_ascii_digit).collect();
        let mut to = self.path.with_extension(format!("log.{stamp}"));
        let mut n = 1;
        while to.exists() {
            to = self.path.with_extension(format!("log.{stamp}-{n:03}"));
            n += 1;
        }
        if let Err(e) = std::fs::rename(&self.path, &to) {
            tracing::warn!("tracking: cannot rename {} to {}: {e}", self.path.display(), to.display());
            return;
        }
        if self.rotation.keep_days == 0 {
            return;
        }
        let keep = std::time::Duration::from_secs(u64::from(self.rotation.keep_days) * 86_400);
        for old in rotated(&self.path) {
            let aged = std::fs::metadata(&old)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > keep);
            if aged && let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!("tracking: cannot remove {}: {e}", old.display());
            }
        }
    }
}

/// The renamed logs beside `path`, oldest first (their names sort by date).
fn rotated(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
        .map(|d| {
            d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()).collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads the events of a tracking log, and of its renamed predecessors, that match every
/// given filter (addresses case-insensitively, the id exactly), oldest first.
pub fn search(
    path: &Path,
    sender: Option<&str>,
    recipient: Option<&str>,
    id: Option<&str>,
) -> std::io::Result<Vec<Event>> {
    let lower = |s: &str| s.to_ascii_lowercase();
    let mut out = Vec::new();
    for file in rotated(path).into_iter().chain([path.to_path_buf()]) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Event>(l).ok())
                .filter(|e| sender.is_none_or(|s| lower(&e.sender) == lower(s)))
                .filter(|e| recipient.is_none_or(|r| e.recipients.iter().any(|x| lower(x) == lower(r))))
                .filter(|e| id.is_none_or(|i| e.id == i)),
        );
    }
    Ok(out)
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
    }

    #[test]
    fn rotates_by_size_and_age_and_searches_every_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracking.log");
        let t = Tracker::with_rotation(&path, TrackingSection { max_size: 300, rotate_days: 1, keep_days: 90 });
        let event = |time: i64, id: &str| Event {
            time,
            event: "received".into(),
            id: id.into(),
            sender: "a@x.test".into(),
            ..Event::default()
        };
        // Size: about 80 bytes an event, so a new log every few events.
        for i in 0..10 {
            t.log(event(1_000 + i, &format!("S{i}")));
        }
        let logs = rotated(&path);
        assert!(logs.len() >= 2, "{logs:?}");
        for l in logs.iter().chain([&path]) {
            assert!(std::fs::metadata(l).unwrap().len() <= 300, "{l:?} is past its size");
        }
        // A renamed log past its keeping time goes at the next renaming.
        let ancient = dir.path().join("tracking.log.19990101000000");
        std::fs::write(&ancient, "").unwrap();
        let f = std::fs::File::options().write(true).open(&ancient).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(91 * 86_400)).unwrap();
        drop(f);
        // Age: an event a day after the log began starts a new one.
        let before = rotated(&path).len() - 1;
        t.log(event(1_100 + 86_400, "D1"));
        assert_eq!(rotated(&path).len(), before + 1, "one more, and the ancient one gone");
        assert!(!ancient.exists());
        let all = search(&path, Some("a@x.test"), None, None).unwrap();
        let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 11, "every log is searched: {ids:?}");
        assert_eq!(ids.first(), Some(&"S0"), "oldest first: {ids:?}");
        assert_eq!(ids.last(), Some(&"D1"));
        // A new tracker over the same log continues its age from its first event.
        let again = Tracker::with_rotation(&path, TrackingSection { max_size: 1 << 20, rotate_days: 1, keep_days: 90 });
        again.log(event(1_100 + 86_400 + 10, "D2"));
        assert_eq!(rotated(&path).len(), before + 1, "same day: no new log");
        assert_eq!(message_id(b"Subject: x\r\nMessage-ID: <1@x>\r\n\r\nbody"), "<1@x>");
    }
}
