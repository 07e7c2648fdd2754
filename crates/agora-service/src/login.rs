//! What every protocol does once a login is decided, so that all of them throttle, log
//! and time out alike: a success forgets the account's failures and gives the
//! connection its logged-in timeouts; a failure is answered only after the throttle's
//! delay (per client address and per account).

use std::net::IpAddr;

use agora_directory::throttle::Throttle;
use agora_net::Conn;

/// The session is logged in as `login`.
pub fn succeeded(throttle: &Throttle, conn: &mut Conn, protocol: &str, login: &str) {
    throttle.success(login);
    conn.set_authenticated();
    metrics::counter!("agora_logins_total", "protocol" => protocol.to_string()).increment(1);
    tracing::info!("{protocol}: {login} logged in from {}", conn.peer.ip());
}

/// A login failed: waits the throttle's delay; the caller answers after it.
pub async fn failed(throttle: &Throttle, peer: IpAddr, protocol: &str, login: Option<&str>) {
    let delay = throttle.failure(peer, login);
    metrics::counter!("agora_login_failures_total", "protocol" => protocol.to_string()).increment(1);
    tracing::info!("{protocol}: failed login for {:?} from {peer}", login.unwrap_or_default());
    tokio::time::sleep(delay).await;
}
