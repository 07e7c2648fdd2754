//! Response rate limiting over UDP (as NSD's and Knot's RRL): answers to one client
//! network (IPv4 /24, IPv6 /56) are limited per second, so forged-source queries
//! cannot turn the server into an amplifier; every `slip`-th answer over the limit goes
//! out truncated (empty, TC set) so a real client retries over TCP, the rest are
//! dropped. Networks listed as exempt (loopback by default) are never limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Client networks tracked at once; past it, idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Send an empty truncated answer instead.
    Slip,
    Drop,
}

/// A network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    bits: u8,
}

impl Net {
    pub fn parse(text: &str) -> Result<Net, String> {
        let (a, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("{text}: not an address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => {
                b.trim().parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("{text}: bad prefix length"))?
            }
            None => max,
        };
        Ok(Net { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.bits == 0 { 0 } else { u32::MAX << (32 - u32::from(self.bits)) };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.bits == 0 { 0 } else { u128::MAX << (128 - u32::from(self.bits)) };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// The network a client's answers are counted against.
fn bucket_key(ip: IpAddr) -> (bool, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => (true, u128::from(v6) & (u128::MAX << 72)),
    }
}

struct Bucket {
    /// Answers allowed before the next refill, refilled `per_second` a second.
    tokens: f64,
    last: Instant,
    over: u32,
}

pub struct RateLimiter {
    per_second: u32,
    slip: u32,
    exempt: Vec<Net>,
    buckets: Mutex<HashMap<(bool, u128), Bucket>>,
}

impl RateLimiter {
    /// `per_second` 0 turns limiting off.
    pub fn new(per_second: u32, slip: u32, exempt: Vec<Net>) -> RateLimiter {
        RateLimiter { per_second, slip, exempt, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn check(&self, ip: IpAddr) -> Verdict {
        self.check_at(ip, Instant::now())
    }

    pub fn check_at(&self, ip: IpAddr, now: Instant) -> Verdict {
        if self.per_second == 0 || self.exempt.iter().any(|n| n.contains(ip)) {
            return Verdict::Answer;
        }
        let Ok(mut map) = self.buckets.lock() else { return Verdict::Answer };
        if map.len() >= MAX_TRACKED {
            map.retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(2));
        }
        let rate = f64::from(self.per_second);
        let b = map.entry(bucket_key(ip)).or_insert(Bucket { tokens: rate, last: now, over: 0 });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.over = 0;
            return Verdict::Answer;
        }
        b.over = b.over.wrapping_add(1);
        if self.slip > 0 && b.over % self.slip == 0 { Verdict::Slip } else { Verdict::Drop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_network_with_slip_and_refill() {
        let rl = RateLimiter::new(5, 2, vec![Net::parse("127.0.0.0/8").unwrap()]);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let same_net: IpAddr = "192.0.2.200".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(rl.check_at(a, t0), Verdict::Answer);
        }
        assert_eq!(rl.check_at(same_net, t0), Verdict::Drop, "the /24 shares one budget");
        assert_eq!(rl.check_at(a, t0), Verdict::Slip, "every second answer over the limit slips");
        assert_eq!(rl.check_at("198.51.100.1".parse().unwrap(), t0), Verdict::Answer, "another network");
        assert_eq!(rl.check_at("127.0.0.1".parse().unwrap(), t0), Verdict::Answer, "exempt");
        assert_eq!(rl.check_at(a, t0 + Duration::from_millis(400)), Verdict::Answer, "refilled at 5 a second");
        let off = RateLimiter::new(0, 2, Vec::new());
        assert!((0..1000).all(|_| off.check_at(a, t0) == Verdict::Answer));
        let v6 = RateLimiter::new(1, 0, Vec::new());
        assert_eq!(v6.check_at("2001:db8:0:1::1".parse().unwrap(), t0), Verdict::Answer);
        assert_eq!(v6.check_at("2001:db8:0:1:ffff::9".parse().unwrap(), t0), Verdict::Drop, "the same /56");
        assert!(Net::parse("10.0.0.0/33").is_err() && Net::parse("x").is_err());
        assert!(Net::parse("::1").unwrap().contains("::1".parse().unwrap()));
    }
}
