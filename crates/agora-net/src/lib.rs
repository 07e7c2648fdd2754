//! The listener layer every protocol shares: binding, admission (global and per-IP
//! limits, answered "busy" in the protocol's words), implicit TLS, PROXY protocol,
//! and two-step shutdown (stop accepting, then tell and drain sessions).

pub mod conn;
mod deflate;
pub mod dot;
pub mod driver;
pub mod metrics;
pub mod proxy;
pub mod testing;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use conn::{Conn, Read, Stream, Timeouts};
pub use driver::{Flow, LineProtocol, drive};
pub use tls::TlsSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text; STARTTLS offered when a certificate is configured.
    StartTls,
    /// TLS from the first byte.
    Implicit,
    /// Plain text only: no STARTTLS.
    None,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::StartTls => "starttls",
            TlsMode::Implicit => "implicit",
            TlsMode::None => "none",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub service: String,
    pub addr: SocketAddr,
    pub tls: TlsMode,
    /// Expect a PROXY protocol v1/v2 header from a trusted front proxy first.
    pub proxy_protocol: bool,
    /// The service's session timeouts (each protocol has its own).
    pub timeouts: Timeouts,
    /// This listener's own share of the connections.
    pub admission: Admission,
}

/// A listener's own connection budget, so a flood on one cannot lock users out of the
/// others, and within it the sessions not yet logged in, so connections that never log
/// in cannot take the places of users who did. Listeners of one service key (IPv4 and
/// IPv6) share one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub max_connections: usize,
    pub max_unauthenticated: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { max_connections: 1000, max_unauthenticated: 1000 }
    }
}

/// How long a TLS handshake may take (implicit TLS and STARTTLS): it is before login,
/// and a client that opens TLS and never finishes it is dropped quickly.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// The wait before login while a listener is under stress (Postfix's smtpd shortens its
/// timeouts the same way under load).
pub const STRESS_PREAUTH: Duration = Duration::from_secs(5);

/// The places of one service key's listeners, and its stress mode: on when its share
/// for sessions not logged in is three quarters full, off again below half.
struct Budget {
    name: String,
    all: Arc<Semaphore>,
    preauth: Arc<Semaphore>,
    admission: Admission,
    stressed: std::sync::atomic::AtomicBool,
    /// Sessions holding a place before login, oldest first, each with its own token
    /// (cancelled to make room: the session says its goodbye and ends).
    waiting: Mutex<std::collections::BTreeMap<u64, CancellationToken>>,
    next: std::sync::atomic::AtomicU64,
    /// Woken when stress mode begins, so waits already running are cut short too.
    stress_begins: Arc<tokio::sync::Notify>,
}

impl Budget {
    fn in_use(&self) -> usize {
        self.admission.max_unauthenticated.saturating_sub(self.preauth.available_permits())
    }

    /// Enters or leaves stress mode by how full the share before login is.
    fn weigh(&self) {
        // Again after each change: a count that moved meanwhile is never left behind.
        for _ in 0..4 {
            if !self.weigh_once() {
                break;
            }
        }
    }

    /// One look; true when the mode changed.
    fn weigh_once(&self) -> bool {
        use std::sync::atomic::Ordering;
        let (used, max) = (self.in_use(), self.admission.max_unauthenticated.max(1));
        let was = self.stressed.load(Ordering::SeqCst);
        let now = if was { used * 2 >= max } else { used * 4 >= max * 3 };
        let changed =
            now != was && self.stressed.compare_exchange(was, now, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if changed {
            let gauge = ::metrics::gauge!("agora_listener_stress", "listener" => self.name.clone());
            gauge.set(if now { 1.0 } else { 0.0 });
            if now {
                self.stress_begins.notify_waiters();
                tracing::warn!(
                    "{}: stress mode: {used} of {max} places before login taken; waiting before login cut to {}s, oldest closed first when full",
                    self.name,
                    STRESS_PREAUTH.as_secs()
                );
            } else {
                tracing::info!("{}: stress mode over: {used} of {max} places before login taken", self.name);
            }
        }
        changed
    }

    /// Closes the oldest session still waiting to log in, to make room.
    fn evict_oldest(&self) -> bool {
        // Cancelled under the lock: a session that logs in (and leaves `waiting`) at the
        // same moment is either still in the map and closed, or gone and spared.
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.pop_first().map(|(_, token)| token.cancel()).is_some()
    }
}

/// A session's place before login; given back (and its entry gone) when dropped.
pub(crate) struct PreauthPlace {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    seq: u64,
    budget: Arc<Budget>,
    /// The session's own token (a child of the server's), cancelled to close it for room.
    session: CancellationToken,
}

impl PreauthPlace {
    pub(crate) fn stressed(&self) -> bool {
        self.budget.stressed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn stress_begins(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.budget.stress_begins)
    }
}

impl Drop for PreauthPlace {
    fn drop(&mut self) {
        self.budget.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.seq);
        drop(self.permit.take());
        self.budget.weigh();
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// Connections from one network (IPv4 /`network_v4`, IPv6 /`network_v6`), so a
    /// flood from one network is cut early.
    pub max_per_network: usize,
    pub network_v4: u8,
    pub network_v6: u8,
    /// How long shutdown waits for sessions to finish.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4000,
            max_per_ip: 50,
            max_per_network: 256,
            network_v4: 24,
            network_v6: 64,
            drain: Duration::from_secs(10),
        }
    }
}

/// A protocol served on a listener.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// The complete reply refusing a connection when the server is full.
    fn busy_reply(&self) -> &'static [u8];
    /// Runs one session to its end. Must return promptly once `Conn` reports shutdown.
    async fn serve(&self, conn: Conn);
    /// Application protocols offered in the TLS handshake (ALPN), most preferred first;
    /// none for protocols that have no such name in use.
    fn alpn(&self) -> &'static [&'static [u8]] {
        &[]
    }
}

/// A protocol served over UDP: one request datagram, at most one answer.
#[async_trait]
pub trait DatagramService: Send + Sync + 'static {
    /// The answer to `request` from `peer`, or None to drop it.
    async fn answer(&self, request: &[u8], peer: SocketAddr) -> Option<Vec<u8>>;

    /// The answer without waiting for anything, when the service has it at hand:
    /// `Some(answer)` settles the datagram, None sends it to `answer`.
    fn answer_now(&self, _request: &[u8], _peer: SocketAddr) -> Option<Option<Vec<u8>>> {
        None
    }
}

/// Largest datagram read (the UDP maximum); answers may be smaller by the protocol's rules.
const MAX_DATAGRAM: usize = 65_535;
/// How long a datagram thread waits for a datagram before it looks at shutdown.
const DATAGRAM_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("{service}: cannot listen on {addr}: {cause}{hint}")]
pub struct BindError {
    pub service: String,
    pub addr: SocketAddr,
    pub cause: std::io::Error,
    pub hint: String,
}

impl BindError {
    /// The machine has no such address family (IPv6 switched off).
    pub fn family_unsupported(&self) -> bool {
        matches!(self.cause.raw_os_error(), Some(97 /* EAFNOSUPPORT */ | 99 /* EADDRNOTAVAIL */))
    }
}

/// A bind failure with the fix that usually applies.
fn bind_error(spec: &ListenerSpec, proto: &str, source: std::io::Error) -> BindError {
    let hint = match source.kind() {
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE: run with \
             --port-offset 10000, or `setcap cap_net_bind_service=+ep` on the binary)"
            .to_string(),
        std::io::ErrorKind::AddrInUse => format!(
            " (another program uses {proto}port {}: stop it, change [listeners.{}] in the configuration, \
             or use --port-offset)",
            spec.addr.port(),
            spec.service
        ),
        std::io::ErrorKind::AddrNotAvailable => " (no interface has that address)".to_string(),
        _ => String::new(),
    };
    BindError { service: spec.service.clone(), addr: spec.addr, cause: source, hint }
}

/// Binds a listener now, so that every port is known good before any service starts.
pub fn bind(spec: &ListenerSpec) -> Result<TcpListener, BindError> {
    let err = |source| bind_error(spec, "", source);
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if spec.addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if spec.addr.is_ipv6() {
        // IPv6 only: IPv4 has its own socket, so peers never show as ::ffff:a.b.c.d.
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&spec.addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(std::net::TcpListener::from(socket)).map_err(err)
}

/// Binds the UDP side of a listener (same address rules as `bind`); a blocking
/// socket, read by threads of its own (`Server::spawn_datagram`).
pub fn bind_datagram(spec: &ListenerSpec) -> Result<std::net::UdpSocket, BindError> {
    let err = |source| bind_error(spec, "UDP ", source);
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if spec.addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Room for bursts while the workers are busy (the kernel caps it at rmem_max).
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    if spec.addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.set_read_timeout(Some(DATAGRAM_POLL)).map_err(err)?;
    socket.bind(&spec.addr.into()).map_err(err)?;
    Ok(std::net::UdpSocket::from(socket))
}

/// Shared state of all listeners: limits, TLS, and the shutdown machinery.
pub struct Server {
    limits: Limits,
    tls: Option<Arc<TlsSettings>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    permits: Arc<Semaphore>,
    /// Bounds the tasks that only say "busy", so a flood cannot pile them up.
    busy_permits: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Counted by the network's first address.
    per_network: Arc<Mutex<HashMap<IpAddr, usize>>>,
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    /// Peers that always begin with a PROXY header naming the real client (this
    /// cluster's front-ends), on every listener.
    trusted_proxies: std::sync::RwLock<std::collections::HashSet<IpAddr>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("limits", &self.limits).finish()
    }
}

/// An accepted connection with the address slots it took (none yet behind a PROXY header).
struct Arrival {
    sock: TcpStream,
    peer: SocketAddr,
    slots: Option<(IpSlot, IpSlot)>,
}

/// Releases a per-IP slot when the session ends.
struct IpSlot {
    ip: IpAddr,
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

fn take_ip_slot(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<IpSlot> {
    let mut m = map.lock().ok()?;
    let n = m.entry(ip).or_insert(0);
    if *n >= max {
        return None;
    }
    *n += 1;
    Some(IpSlot { ip, map: Arc::clone(map) })
}

impl Server {
    pub fn new(limits: Limits, tls: Option<Arc<TlsSettings>>) -> Arc<Server> {
        Arc::new(Server {
            limits,
            tls,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            busy_permits: Arc::new(Semaphore::new(64)),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            per_network: Arc::new(Mutex::new(HashMap::new())),
            budgets: Mutex::new(HashMap::new()),
            trusted_proxies: std::sync::RwLock::new(std::collections::HashSet::new()),
        })
    }

    /// The peers (front-ends) whose connections start with a PROXY header on every
    /// listener: their clients' addresses are what sessions see, log and throttle.
    pub fn set_trusted_proxies(&self, peers: impl IntoIterator<Item = IpAddr>) {
        let set = peers.into_iter().map(|a| a.to_canonical()).collect();
        if let Ok(mut t) = self.trusted_proxies.write() {
            *t = set;
        }
    }

    fn via_proxy(&self, spec: &ListenerSpec, peer: IpAddr) -> bool {
        spec.proxy_protocol || self.is_front_end(peer)
    }

    /// Whether `peer` is one of this cluster's front-ends.
    fn is_front_end(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.read().is_ok_and(|t| !t.is_empty() && t.contains(&peer.to_canonical()))
    }

    /// The budget of a service key, made by its first listener.
    fn budget(&self, spec: &ListenerSpec) -> Arc<Budget> {
        let mut b = self.budgets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(b.entry(spec.service.clone()).or_insert_with(|| {
            let a = spec.admission;
            let max = a.max_connections.max(1);
            let a = Admission { max_connections: max, max_unauthenticated: a.max_unauthenticated.clamp(1, max) };
            Arc::new(Budget {
                name: spec.service.clone(),
                all: Arc::new(Semaphore::new(max)),
                preauth: Arc::new(Semaphore::new(a.max_unauthenticated)),
                admission: a,
                stressed: Default::default(),
                waiting: Default::default(),
                next: Default::default(),
                stress_begins: Default::default(),
            })
        }))
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn tls(&self) -> Option<&Arc<TlsSettings>> {
        self.tls.as_ref()
    }

    /// Starts accepting on `listener` until shutdown.
    pub fn spawn_listener(self: &Arc<Self>, listener: TcpListener, spec: ListenerSpec, service: Arc<dyn Service>) {
        let this = Arc::clone(self);
        self.tracker.spawn(async move { this.accept_loop(listener, spec, service).await });
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, spec: ListenerSpec, service: Arc<dyn Service>) {
        let budget = self.budget(&spec);
        let spec = Arc::new(spec);
        let counters = Arc::new(metrics::ListenerMetrics::new(&spec.service));
        loop {
            // accept() is cancellation-safe: a dropped accept future loses no connection.
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (sock, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!("{}: accept failed: {e}", spec.service);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            // A semaphore, not a counter checked then incremented: admission cannot race.
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                counters.refused_limit.increment(1);
                tracing::warn!(
                    "{}: refusing {peer}: connection limit {} reached",
                    spec.service,
                    self.limits.max_connections
                );
                self.refuse(sock, &spec, &service);
                continue;
            };
            // The address's and its network's slots before any place is taken, so a peer
            // past them never closes anyone's session to make room (behind a PROXY
            // header, once the header names the peer).
            let slots = if self.via_proxy(&spec, peer.ip()) {
                None
            } else {
                match self.address_slots(canonical(peer), &spec.service, &counters) {
                    Some(s) => Some(s),
                    None => {
                        self.refuse(sock, &spec, &service);
                        continue;
                    }
                }
            };
            // Then the listener's own budget, and its share for sessions not logged in.
            // When either is full, the oldest session still waiting to log in is closed
            // to make room (never one that logged in); with none to close, busy.
            let own = Arc::clone(&budget.all).try_acquire_owned().ok();
            let preauth = own.as_ref().and_then(|_| Arc::clone(&budget.preauth).try_acquire_owned().ok());
            budget.weigh();
            if preauth.is_none() && !budget.evict_oldest() {
                counters.refused_limit.increment(1);
                tracing::warn!(
                    "{}: refusing {peer}: the listener's {} places ({} before login) are taken",
                    spec.service,
                    budget.admission.max_connections,
                    budget.admission.max_unauthenticated
                );
                self.refuse(sock, &spec, &service);
                continue;
            }
            let this = Arc::clone(&self);
            let service = Arc::clone(&service);
            let spec = Arc::clone(&spec);
            let counters = Arc::clone(&counters);
            let budget = Arc::clone(&budget);
            let task = async move {
                // The closed session says its goodbye first; its places then come back. A
                // place freed may go to a connection that was waiting already: then the
                // next oldest is closed, for up to two seconds.
                let wait = |sem: &Arc<Semaphore>| {
                    let (sem, budget) = (Arc::clone(sem), Arc::clone(&budget));
                    async move {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                        loop {
                            let step = Duration::from_millis(200);
                            if let Ok(Ok(p)) = tokio::time::timeout(step, Arc::clone(&sem).acquire_owned()).await {
                                return Some(p);
                            }
                            if tokio::time::Instant::now() >= deadline || !budget.evict_oldest() {
                                return None;
                            }
                        }
                    }
                };
                let own = match own {
                    Some(o) => Some(o),
                    None => wait(&budget.all).await,
                };
                let preauth = match (&own, preauth) {
                    (_, Some(p)) => Some(p),
                    (Some(_), None) => wait(&budget.preauth).await,
                    (None, None) => None,
                };
                let (Some(own), Some(preauth)) = (own, preauth) else {
                    counters.refused_limit.increment(1);
                    say_busy(sock, service.busy_reply(), this.implicit_tls(&spec, &service)).await;
                    return;
                };
                let _permit = (permit, own);
                let seq = budget.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let token = this.shutdown.child_token();
                budget.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(seq, token.clone());
                let place = PreauthPlace { permit: Some(preauth), seq, budget, session: token };
                this.handle(Arrival { sock, peer, slots }, &spec, service, counters, place).await;
            };
            self.tracker.spawn(task);
        }
        tracing::debug!("{}: stopped accepting on {}", spec.service, spec.addr);
    }

    /// Says "busy" in the protocol's words, on a bounded number of tasks (past them the
    /// connection just closes).
    fn refuse(&self, sock: TcpStream, spec: &ListenerSpec, service: &Arc<dyn Service>) {
        let Ok(p) = Arc::clone(&self.busy_permits).try_acquire_owned() else { return };
        let tls = self.implicit_tls(spec, service);
        let reply = service.busy_reply();
        tokio::spawn(async move {
            let _p = p;
            say_busy(sock, reply, tls).await;
        });
    }

    /// The TLS configuration a refusal on an implicit-TLS listener answers through.
    fn implicit_tls(&self, spec: &ListenerSpec, service: &Arc<dyn Service>) -> Option<Arc<rustls::ServerConfig>> {
        match (spec.tls, &self.tls) {
            (TlsMode::Implicit, Some(t)) if !service.alpn().is_empty() => Some(t.config_with_alpn(service.alpn())),
            (TlsMode::Implicit, Some(t)) => Some(t.config()),
            _ => None,
        }
    }

    /// The per-address and per-network slots of a peer; None (and logged) past either.
    fn address_slots(
        &self,
        peer: SocketAddr,
        service: &str,
        counters: &metrics::ListenerMetrics,
    ) -> Option<(IpSlot, IpSlot)> {
        let Some(slot) = take_ip_slot(&self.per_ip, peer.ip(), self.limits.max_per_ip) else {
            counters.refused_per_ip.increment(1);
            tracing::warn!("{service}: refusing {peer}: more than {} connections from it", self.limits.max_per_ip);
            return None;
        };
        let net = network(peer.ip(), self.limits.network_v4, self.limits.network_v6);
        let Some(net_slot) = take_ip_slot(&self.per_network, net, self.limits.max_per_network) else {
            counters.refused_per_ip.increment(1);
            tracing::warn!(
                "{service}: refusing {peer}: more than {} connections from its network {net}",
                self.limits.max_per_network
            );
            return None;
        };
        Some((slot, net_slot))
    }

    async fn handle(
        &self,
        arrival: Arrival,
        spec: &ListenerSpec,
        service: Arc<dyn Service>,
        counters: Arc<metrics::ListenerMetrics>,
        preauth: PreauthPlace,
    ) {
        let session = preauth.session.clone();
        let (sock, tcp_peer) = (arrival.sock, arrival.peer);
        let local = canonical(sock.local_addr().unwrap_or(spec.addr));
        let mut peer = canonical(tcp_peer);
        let mut leftover = Vec::new();
        let mut sock = sock;
        if self.via_proxy(spec, tcp_peer.ip()) {
            let header = tokio::select! {
                h = Box::pin(read_proxy_header(&mut sock, spec.timeouts.preauth.min(HANDSHAKE))) => h,
                _ = session.cancelled() => return,
            };
            match header {
                Ok((src, rest)) => {
                    if let Some(src) = src {
                        peer = canonical(src);
                    }
                    leftover = rest;
                }
                Err(e) => {
                    tracing::warn!("{}: {tcp_peer}: {e}", spec.service);
                    return;
                }
            }
        }
        // Behind a PROXY header the address is known only now.
        let _slots = match arrival.slots {
            Some(s) => s,
            None => match self.address_slots(peer, &spec.service, &counters) {
                Some(s) => s,
                None => return say_busy(sock, service.busy_reply(), self.implicit_tls(spec, &service)).await,
            },
        };
        counters.accepted.increment(1);
        counters.open.increment(1.0);
        let _open = metrics::OpenSession(counters.open.clone());
        let tls_config = match spec.tls {
            TlsMode::None => None,
            _ if !service.alpn().is_empty() => self.tls.as_ref().map(|t| t.config_with_alpn(service.alpn())),
            _ => self.tls.as_ref().map(|t| t.config()),
        };
        let mut conn = match spec.tls {
            TlsMode::Implicit => {
                let Some(cfg) = tls_config.clone() else {
                    tracing::error!("{}: implicit TLS without a certificate", spec.service);
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                // What came with the PROXY header is the handshake's beginning.
                let sock = conn::Prefixed::new(std::mem::take(&mut leftover), sock);
                // A handshake is before login: shorter under stress, and a session that
                // never finishes one can be closed for room like any other.
                let limit = if preauth.stressed() { HANDSHAKE.min(STRESS_PREAUTH) } else { HANDSHAKE };
                let handshake = tokio::select! {
                    // Boxed: the handshake's state is freed once it is done, not
                    // carried for the whole session in its task.
                    h = tokio::time::timeout(spec.timeouts.preauth.min(limit), Box::pin(acceptor.accept(sock))) => h,
                    _ = session.cancelled() => return,
                };
                counters.handshake(matches!(handshake, Ok(Ok(_))));
                match handshake {
                    Ok(Ok(s)) => {
                        let cert =
                            s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
                        let alpn = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        let cb = tls::channel_binding(s.get_ref().1);
                        let mut c =
                            Conn::new(Box::new(s), peer, local, true, tls_config, spec.timeouts, session.clone());
                        c.set_peer_certificate(cert);
                        c.set_channel_binding(cb);
                        c.set_alpn(alpn);
                        c
                    }
                    Ok(Err(e)) => {
                        tracing::debug!("{}: {peer}: TLS handshake failed: {e}", spec.service);
                        return;
                    }
                    Err(_) => return,
                }
            }
            _ => Conn::new(Box::new(sock), peer, local, false, tls_config, spec.timeouts, session),
        };
        if !leftover.is_empty() {
            conn.prepend_input(&leftover);
        }
        conn.set_from_front_end(self.is_front_end(tcp_peer.ip()));
        conn.set_metrics(counters);
        conn.set_preauth_place(preauth);
        conn.set_server_token(self.shutdown.clone());
        service.serve(conn).await;
    }

    /// Answers datagrams on `socket` until shutdown, on threads of their own (one per
    /// core) that block in the kernel for the next datagram and drive the answer to
    /// completion: no readiness polling or task wakeup per datagram, which is where an
    /// async loop spends most of a small answer's time. A slow answer holds up only its
    /// thread; past all of them, the kernel's buffer drops the excess, as UDP does.
    pub fn spawn_datagram(
        self: &Arc<Self>,
        socket: std::net::UdpSocket,
        spec: ListenerSpec,
        service: Arc<dyn DatagramService>,
    ) {
        let socket = Arc::new(socket);
        // One per core: more only sleep and wake in turn (measured: 2 on 2 cores beat 4 by 20%).
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        let runtime = tokio::runtime::Handle::current();
        // A flag, not the token: checked twice per datagram, it must cost no lock.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (token, flag) = (self.shutdown.clone(), Arc::clone(&stop));
        self.tracker.spawn(async move {
            token.cancelled().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let stopped = move |s: &std::sync::atomic::AtomicBool| s.load(std::sync::atomic::Ordering::Relaxed);
        for i in 0..threads {
            let (socket, service, spec, rt, stop) =
                (Arc::clone(&socket), Arc::clone(&service), spec.clone(), runtime.clone(), Arc::clone(&stop));
            let spawned = std::thread::Builder::new().name(format!("agora-udp-{i}")).spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while !stopped(&stop) {
                    let (n, peer) = match socket.recv_from(&mut buf) {
                        Ok(x) => x,
                        // The poll interval passed, or an ICMP error from an earlier answer.
                        Err(_) => continue,
                    };
                    if stopped(&stop) {
                        break;
                    }
                    let peer2 = canonical(peer);
                    let answer = match service.answer_now(&buf[..n], peer2) {
                        Some(a) => a,
                        None => rt.block_on(service.answer(&buf[..n], peer2)),
                    };
                    if let Some(answer) = answer {
                        let _ = socket.send_to(&answer, peer);
                    }
                }
                tracing::debug!("{}: datagram thread {i} stopped", spec.service);
            });
            if let Err(e) = spawned {
                tracing::error!("starting a datagram thread: {e}");
            }
        }
    }

    /// Stops every listener, tells sessions to finish, and waits for them up to the drain
    /// deadline. Returns false if some sessions were still running at the deadline.
    pub async fn shutdown(&self) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(self.limits.drain, self.tracker.wait()).await.is_ok()
    }
}

/// Writes a refusal and closes, within two seconds; on an implicit-TLS listener after
/// the handshake (never plaintext on a TLS port, which a client would take for a TLS
/// error).
/// Boxed: its TLS handshake would otherwise size every session's task.
fn say_busy(
    sock: TcpStream,
    reply: &'static [u8],
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(say_busy_now(sock, reply, tls))
}

async fn say_busy_now(sock: TcpStream, reply: &'static [u8], tls: Option<Arc<rustls::ServerConfig>>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async move {
        match tls {
            Some(cfg) => {
                if let Ok(mut s) = tokio_rustls::TlsAcceptor::from(cfg).accept(sock).await {
                    let _ = s.write_all(reply).await;
                    let _ = s.shutdown().await;
                }
            }
            None => {
                let mut sock = sock;
                let _ = sock.write_all(reply).await;
                let _ = sock.shutdown().await;
            }
        }
    })
    .await;
}

/// The first address of `ip`'s network: IPv4 /`v4`, IPv6 /`v6`.
fn network(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(v4.min(32))).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(v6.min(128))).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

/// IPv4 peers as IPv4 even when they arrive mapped into IPv6 (`::ffff:192.0.2.1`):
/// per-IP limits, trusted networks, SPF and logs all expect the plain address.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

async fn read_proxy_header(sock: &mut TcpStream, timeout: Duration) -> Result<(Option<SocketAddr>, Vec<u8>), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(256);
    let fut = async {
        loop {
            let mut chunk = [0u8; 256];
            let n = sock.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before PROXY header".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
            match proxy::decode(&buf).map_err(|e| e.to_string())? {
                proxy::Decoded::Incomplete => continue,
                proxy::Decoded::Done { source, consumed } => return Ok((source, buf[consumed..].to_vec())),
            }
        }
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| "PROXY header timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A listener on loopback for a test.
    fn spec_for(name: &str, tls: TlsMode, proxy_protocol: bool, admission: Admission) -> ListenerSpec {
        ListenerSpec {
            service: name.into(),
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
            proxy_protocol,
            timeouts: Timeouts::default(),
            admission,
        }
    }

    /// Binds and serves a listener; its address.
    fn listen(server: &Arc<Server>, spec: ListenerSpec, service: Arc<dyn Service>) -> SocketAddr {
        let l = bind(&spec).unwrap();
        let addr = l.local_addr().unwrap();
        server.spawn_listener(l, spec, service);
        addr
    }

    struct Echo;
    #[async_trait]
    impl Service for Echo {
        fn busy_reply(&self) -> &'static [u8] {
            b"BUSY\r\n"
        }
        async fn serve(&self, mut conn: Conn) {
            let _ = conn.send(format!("HELLO {}\r\n", conn.peer.ip()).as_bytes()).await;
            loop {
                match conn.read_line(100).await {
                    Read::Line(l) => {
                        let _ = conn.send(&l).await;
                    }
                    Read::Shutdown => {
                        let _ = conn.send(b"BYE\r\n").await;
                        return;
                    }
                    _ => return,
                }
            }
        }
    }

    async fn line(r: &mut BufReader<TcpStream>) -> String {
        let mut s = String::new();
        r.read_line(&mut s).await.unwrap();
        s
    }

    #[tokio::test]
    async fn limits_proxy_and_shutdown() {
        let limits = Limits { max_connections: 2, max_per_ip: 1, ..Limits::default() };
        let server = Server::new(limits, None);
        let addr = listen(&server, spec_for("echo", TlsMode::None, false, Admission::default()), Arc::new(Echo));

        let mut a = BufReader::new(TcpStream::connect(addr).await.unwrap());
        assert_eq!(line(&mut a).await, "HELLO 127.0.0.1\r\n");
        // Same IP again: over the per-IP limit of 1.
        let mut b = BufReader::new(TcpStream::connect(addr).await.unwrap());
        assert_eq!(line(&mut b).await, "BUSY\r\n");

        let addr2 = listen(&server, spec_for("proxied", TlsMode::None, true, Admission::default()), Arc::new(Echo));
        let mut p = TcpStream::connect(addr2).await.unwrap();
        p.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 4000 25\r\nping\r\n").await.unwrap();
        let mut p = BufReader::new(p);
        assert_eq!(line(&mut p).await, "HELLO 192.0.2.9\r\n");
        assert_eq!(line(&mut p).await, "ping\r\n");

        assert!(server.shutdown().await, "sessions drain");
        assert_eq!(line(&mut a).await, "BYE\r\n");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed after shutdown");
    }

    /// Echo that takes "LOGIN" as a login.
    struct Login;
    #[async_trait]
    impl Service for Login {
        fn busy_reply(&self) -> &'static [u8] {
            b"BUSY\r\n"
        }
        async fn serve(&self, mut conn: Conn) {
            let _ = conn.send(b"HELLO\r\n").await;
            while let Read::Line(l) = conn.read_line(100).await {
                if l.starts_with(b"LOGIN") {
                    conn.set_authenticated();
                }
                let _ = conn.send(&l).await;
            }
        }
    }

    async fn open(addr: SocketAddr) -> (BufReader<TcpStream>, String) {
        let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let first = line(&mut r).await;
        (r, first)
    }

    async fn say(r: &mut BufReader<TcpStream>, what: &str) -> String {
        r.get_mut().write_all(what.as_bytes()).await.unwrap();
        line(r).await
    }

    /// Each listener has its own places, and sessions that logged in leave the share of
    /// those that did not.
    #[tokio::test]
    async fn listeners_have_their_own_places_and_logins_free_theirs() {
        let server = Server::new(Limits { max_connections: 10, max_per_ip: 10, ..Limits::default() }, None);
        let small = Admission { max_connections: 3, max_unauthenticated: 2 };
        let addr = listen(&server, spec_for("small", TlsMode::None, false, small), Arc::new(Login));
        let other_addr =
            listen(&server, spec_for("other", TlsMode::None, false, Admission::default()), Arc::new(Login));

        // Two log in (their places before login go back), a third waits: three places.
        let (mut a, hello) = open(addr).await;
        assert_eq!(hello, "HELLO\r\n");
        assert_eq!(say(&mut a, "LOGIN\r\n").await, "LOGIN\r\n");
        let (mut b, _) = open(addr).await;
        assert_eq!(say(&mut b, "LOGIN\r\n").await, "LOGIN\r\n");
        let (mut c, hello) = open(addr).await;
        assert_eq!(hello, "HELLO\r\n");
        assert_eq!(say(&mut c, "LOGIN\r\n").await, "LOGIN\r\n");
        assert_eq!(open(addr).await.1, "BUSY\r\n", "three places, all logged in: none to free");
        // Another listener is not touched by this one being full.
        let (mut d, hello) = open(other_addr).await;
        assert_eq!(hello, "HELLO\r\n");
        assert_eq!(say(&mut d, "ping\r\n").await, "ping\r\n");
        // A session's end gives its place back.
        drop(c);
        let mut back = false;
        for _ in 0..50 {
            if open(addr).await.1 == "HELLO\r\n" {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(back, "c's place came back");
        drop((a, b, d));
        assert!(server.shutdown().await);
    }

    /// Says how its session ended: "SHUT" at shutdown, "EVICTED" when closed for room.
    struct Watch;
    #[async_trait]
    impl Service for Watch {
        fn busy_reply(&self) -> &'static [u8] {
            b"BUSY\r\n"
        }
        async fn serve(&self, mut conn: Conn) {
            let _ = conn.send(b"HELLO\r\n").await;
            loop {
                match conn.read_line(100).await {
                    Read::Line(l) if l.starts_with(b"LOGIN") => {
                        conn.set_authenticated();
                        let _ = conn.send(b"IN\r\n").await;
                    }
                    Read::Line(l) => {
                        let _ = conn.send(&l).await;
                    }
                    Read::Shutdown => {
                        let bye: &[u8] = if conn.evicted() { b"EVICTED\r\n" } else { b"SHUT\r\n" };
                        let _ = conn.send(bye).await;
                        return;
                    }
                    _ => return,
                }
            }
        }
    }

    /// When the share before login is full, the oldest session still waiting to log in
    /// is closed (with its own goodbye) to make room; a session that logged in never is.
    #[tokio::test]
    async fn a_full_share_closes_the_oldest_waiting_session() {
        let server = Server::new(Limits { max_connections: 20, max_per_ip: 20, ..Limits::default() }, None);
        let addr = listen(
            &server,
            spec_for("stress", TlsMode::None, false, Admission { max_connections: 10, max_unauthenticated: 2 }),
            Arc::new(Watch),
        );
        let (mut user, hello) = open(addr).await;
        assert_eq!(hello, "HELLO\r\n");
        assert_eq!(say(&mut user, "LOGIN\r\n").await, "IN\r\n");
        let (mut oldest, _) = open(addr).await;
        let (mut second, _) = open(addr).await;
        // Full: the next one gets in, and the oldest waiting session is told and closed.
        let (mut third, hello) = open(addr).await;
        assert_eq!(hello, "HELLO\r\n");
        assert_eq!(line(&mut oldest).await, "EVICTED\r\n");
        assert_eq!(say(&mut second, "ping\r\n").await, "ping\r\n", "the younger one stays");
        assert_eq!(say(&mut third, "ping\r\n").await, "ping\r\n");
        assert_eq!(say(&mut user, "ping\r\n").await, "ping\r\n", "a logged-in session is never taken");
        assert!(server.shutdown().await);
        assert_eq!(line(&mut user).await, "SHUT\r\n");
    }

    /// On an implicit-TLS listener "busy" comes after the handshake, never in plaintext.
    #[tokio::test]
    async fn busy_on_a_tls_port_is_said_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        tls::ensure_self_signed(&cert, &key, &["localhost".to_string()]).unwrap();
        let settings = Arc::new(TlsSettings::load(&cert, &key).unwrap());
        let server = Server::new(Limits { max_connections: 10, max_per_ip: 10, ..Limits::default() }, Some(settings));
        let addr = listen(
            &server,
            spec_for("tls", TlsMode::Implicit, false, Admission { max_connections: 1, max_unauthenticated: 1 }),
            Arc::new(Login),
        );
        let connect = || async {
            let roots = rustls::RootCertStore { roots: Vec::new() };
            let mut cfg =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            cfg.dangerous().set_certificate_verifier(Arc::new(AnyCert));
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let s = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.expect("a TLS handshake");
            let mut r = BufReader::new(s);
            let mut first = String::new();
            r.read_line(&mut first).await.unwrap();
            (r, first)
        };
        let (mut first, hello) = connect().await;
        assert_eq!(hello, "HELLO\r\n");
        // Logged in, so not a session to close for room: the next one hears busy.
        first.get_mut().write_all(b"LOGIN\r\n").await.unwrap();
        let mut echo = String::new();
        first.read_line(&mut echo).await.unwrap();
        assert_eq!(echo, "LOGIN\r\n");
        let (_second, busy) = connect().await;
        assert_eq!(busy, "BUSY\r\n", "said inside TLS");
        assert!(server.shutdown().await);
    }

    /// Accepts any certificate (the test's own self-signed one).
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
        }
    }

    struct Reverse;
    #[async_trait]
    impl DatagramService for Reverse {
        async fn answer(&self, request: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
            if request == b"drop" {
                return None;
            }
            let mut out = request.to_vec();
            out.reverse();
            out.extend_from_slice(peer.ip().to_string().as_bytes());
            Some(out)
        }
    }

    #[tokio::test]
    async fn datagrams_are_answered_until_shutdown() {
        let server = Server::new(Limits::default(), None);
        let spec = spec_for("dns", TlsMode::None, false, Admission::default());
        let sock = bind_datagram(&spec).unwrap();
        let addr = sock.local_addr().unwrap();
        server.spawn_datagram(sock, spec, Arc::new(Reverse));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 100];
        for _ in 0..3 {
            client.send_to(b"abc", addr).await.unwrap();
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf)).await.unwrap().unwrap();
            assert_eq!((&buf[..n], from), (&b"cba127.0.0.1"[..], addr));
        }
        client.send_to(b"drop", addr).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await.is_err());
        assert!(server.shutdown().await);
        client.send_to(b"abc", addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
                .await
                .map_or(true, |r| r.is_err()),
            "no answers after shutdown"
        );
    }

    /// Past the per-network limit a network's next address is refused, another's not.
    #[tokio::test]
    async fn one_network_is_cut_early() {
        let limits = Limits { max_connections: 20, max_per_ip: 10, max_per_network: 2, ..Limits::default() };
        let server = Server::new(limits, None);
        let addr = listen(&server, spec_for("net", TlsMode::None, false, Admission::default()), Arc::new(Echo));
        let from = |src: &str| {
            let src: SocketAddr = format!("{src}:0").parse().unwrap();
            async move {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind(src).unwrap();
                let mut r = BufReader::new(s.connect(addr).await.unwrap());
                let first = line(&mut r).await;
                (r, first)
            }
        };
        let (_a, first) = from("127.0.5.2").await;
        assert!(first.starts_with("HELLO"), "{first}");
        let (_b, first) = from("127.0.5.3").await;
        assert!(first.starts_with("HELLO"), "{first}");
        assert_eq!(from("127.0.5.4").await.1, "BUSY\r\n", "a third address of 127.0.5.0/24");
        assert!(from("127.0.6.4").await.1.starts_with("HELLO"), "another network");
        assert!(server.shutdown().await);
    }

    #[test]
    fn networks_by_prefix() {
        let n = |a: &str, v4, v6| network(a.parse().unwrap(), v4, v6).to_string();
        assert_eq!(n("192.0.2.77", 24, 64), "192.0.2.0");
        assert_eq!(n("192.0.2.77", 16, 64), "192.0.0.0");
        assert_eq!(n("192.0.2.77", 32, 64), "192.0.2.77");
        assert_eq!(n("192.0.2.77", 0, 64), "0.0.0.0");
        assert_eq!(n("2001:db8:1:2:3:4:5:6", 24, 64), "2001:db8:1:2::");
        assert_eq!(n("2001:db8:1:2:3:4:5:6", 24, 48), "2001:db8:1::");
    }

    #[tokio::test]
    async fn bind_error_names_service_and_fix() {
        let spec = spec_for("smtp", TlsMode::None, false, Admission::default());
        let l = bind(&spec).unwrap();
        let taken = ListenerSpec { addr: l.local_addr().unwrap(), ..spec };
        let e = bind(&taken).unwrap_err().to_string();
        assert!(e.contains("smtp") && e.contains("port-offset"), "{e}");
    }
}
