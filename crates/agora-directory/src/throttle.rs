//! Slows down failed logins per client IP and per account, so that guessing passwords
//! over any protocol costs time; a success clears the account's record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(15 * 60);
const BASE: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    /// Records a failure and returns how long to wait before answering it: doubling
    /// with each recent failure from the same IP or on the same account.
    pub fn failure(&self, ip: IpAddr, login: Option<&str>) -> Duration {
        let Ok(mut map) = self.failures.lock() else { return MAX_DELAY };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, at)| at.elapsed() < WINDOW);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let mut worst = 0;
        let keys = std::iter::once(format!("ip:{ip}")).chain(login.map(|l| format!("user:{}", l.to_lowercase())));
        for key in keys {
            let e = map.entry(key).or_insert((0, Instant::now()));
            if e.1.elapsed() > WINDOW {
                e.0 = 0;
            }
            e.0 = e.0.saturating_add(1);
            e.1 = Instant::now();
            worst = worst.max(e.0);
        }
        BASE.saturating_mul(1 << (worst - 1).min(6)).min(MAX_DELAY)
    }

    pub fn success(&self, login: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&format!("user:{}", login.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_reset() {
        let t = Throttle::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let d1 = t.failure(ip, Some("a@x.org"));
        let d2 = t.failure(ip, Some("a@x.org"));
        assert!(d2 > d1);
        // Another IP guessing the same account is slowed down as well.
        let d3 = t.failure("192.0.2.2".parse().unwrap(), Some("A@x.org"));
        assert!(d3 > d1);
        t.success("a@x.org");
        for _ in 0..20 {
            assert!(t.failure(ip, None) <= MAX_DELAY);
        }
    }
}
