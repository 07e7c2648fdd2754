//! HTTP for Agora: port 80 sends everything to HTTPS (308); port 443 (HTTP/1.1 and
//! HTTP/2 by ALPN) serves what a mail organisation publishes on the web, by host name:
//! Thunderbird's autoconfiguration on `autoconfig.DOMAIN` and the domain's
//! `.well-known` path, and the MTA-STS policy on `mta-sts.DOMAIN` (its mode from the
//! store, the same text whose hash DNS publishes as the policy id).

pub mod acme;
pub mod autodiscover;
pub mod service;

use std::convert::Infallible;
use std::sync::Arc;

use agora_net::{Conn, Service};
use agora_store::Store;
use async_trait::async_trait;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// What the HTTP service answers from.
pub struct Shared {
    pub store: Arc<dyn Store>,
    /// The server's host name (MX, and the servers named in autoconfiguration).
    pub hostname: String,
    /// Listener keys that are on, with their ports.
    pub listening: Vec<(String, u16)>,
    /// The Strict-Transport-Security header on HTTPS answers (none: not sent).
    pub hsts: Option<hyper::header::HeaderValue>,
    /// The served certificates (their expiry is a metric).
    pub tls: Option<Arc<agora_net::TlsSettings>>,
    /// The last `/metrics` page and when it was made: scrapes within a second share
    /// one rendering, so a flood of them costs one a second.
    pub metrics_page: std::sync::RwLock<Option<(std::time::Instant, Bytes)>>,
    /// Held while the page is made, so that one request makes it and the rest wait.
    pub metrics_rendering: tokio::sync::Mutex<()>,
    /// ACME HTTP-01 answers being published (token → key authorization).
    pub acme_tokens: acme::Tokens,
    /// Largest request head (request line and headers) accepted, bytes.
    pub max_header_bytes: usize,
    /// The hosted domains by name with their answers made once, rebuilt when the
    /// directory changes.
    pub domains: agora_service::snapshot::Snapshot<std::collections::HashMap<String, Arc<Hosted>>>,
    /// The webmail, served on the server's host name.
    pub webmail: Arc<agora_webmail::Webmail>,
}

/// A hosted domain and what HTTPS serves for it.
pub struct Hosted {
    pub domain: agora_store::Domain,
    pub policy: Bytes,
    pub autoconfig: Bytes,
}

/// Which of the HTTP listeners a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Port 80: redirects to HTTPS.
    Plain,
    /// Port 443.
    Secure,
    /// The administration listener (loopback by default): health for supervisors.
    Admin,
}

pub struct HttpService {
    shared: Arc<Shared>,
    role: Role,
}

impl HttpService {
    pub fn new(shared: Arc<Shared>, role: Role) -> HttpService {
        HttpService { shared, role }
    }
}

/// An answer's body: bytes known at once, or a stream that another task feeds (the
/// webmail's events), ending when that task lets go.
pub struct Body {
    full: Option<Bytes>,
    stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl Body {
    fn full(bytes: Bytes) -> Body {
        Body { full: (!bytes.is_empty()).then_some(bytes), stream: None }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.full.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b))));
        }
        match self.stream.as_mut() {
            Some(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(hyper::body::Frame::data(b)))),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && self.stream.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.full, &self.stream) {
            (_, Some(_)) => hyper::body::SizeHint::default(),
            (Some(b), None) => hyper::body::SizeHint::with_exact(b.len() as u64),
            (None, None) => hyper::body::SizeHint::with_exact(0),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

fn not_found() -> Response<Body> {
    respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n")
}

/// The host a request is for (lower case, no port): HTTP/2's authority or the Host header.
fn host_of(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => req.headers().get(hyper::header::HOST)?.to_str().ok()?.to_string(),
    };
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default().to_string()
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => raw,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty() && host.len() <= 253).then_some(host)
}

impl Shared {
    /// The hosted domain a name belongs to, as `(domain, label)`: `mta-sts.example.org`
    /// gives `("example.org", "mta-sts")`, `example.org` gives `("example.org", "")`.
    async fn hosted(&self, host: &str) -> Option<(Arc<Hosted>, &'static str)> {
        let domains = self
            .domains
            .get(&*self.store, || async {
                let all = self.store.domains().await?;
                Ok::<_, agora_store::StoreError>(
                    all.into_iter()
                        .map(|d| {
                            let policy = agora_mail::zone::mta_sts_policy(&self.hostname, &d.mta_sts_mode).into();
                            let autoconfig = self.autoconfig(&d.name).into();
                            (d.name.clone(), Arc::new(Hosted { domain: d, policy, autoconfig }))
                        })
                        .collect(),
                )
            })
            .await
            .ok()?;
        for label in ["", "autoconfig", "autodiscover", "mta-sts"] {
            let domain = if label.is_empty() {
                host
            } else {
                match host.strip_prefix(label).and_then(|r| r.strip_prefix('.')) {
                    Some(d) => d,
                    None => continue,
                }
            };
            if let Some(d) = domains.get(domain) {
                return Some((Arc::clone(d), label));
            }
        }
        None
    }

    /// `https://HOST`, with the HTTPS listener's port when it is not 443.
    fn https_origin(&self, host: &str) -> String {
        match self.port("https") {
            Some(443) | None => format!("https://{host}"),
            Some(p) => format!("https://{host}:{p}"),
        }
    }

    fn port(&self, key: &str) -> Option<u16> {
        self.listening.iter().find(|(k, _)| k == key).map(|(_, p)| *p)
    }

    /// Thunderbird's clientConfig (v1.1) for a domain: the IMAP, POP3 and submission
    /// servers that are on, with their ports and TLS, passwords only over TLS.
    fn autoconfig(&self, domain: &str) -> String {
        let host = xml_escape(&self.hostname);
        let dom = xml_escape(domain);
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{dom}\">\n    <domain>{dom}</domain>\n    <displayName>{dom}</displayName>\n    <displayShortName>{dom}</displayShortName>\n"
        );
        let server = |kind: &str, tag: &str, port: u16, socket: &str| {
            format!(
                "    <{tag} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      <port>{port}</port>\n      <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </{tag}>\n"
            )
        };
        // Implicit TLS first: clients try the servers in the order given.
        for (key, kind, tag, socket) in [
            ("imaps", "imap", "incomingServer", "SSL"),
            ("imap", "imap", "incomingServer", "STARTTLS"),
            ("pop3s", "pop3", "incomingServer", "SSL"),
            ("pop3", "pop3", "incomingServer", "STARTTLS"),
            ("submissions", "smtp", "outgoingServer", "SSL"),
            ("submission", "smtp", "outgoingServer", "STARTTLS"),
        ] {
            if let Some(port) = self.port(key) {
                out.push_str(&server(kind, tag, port, socket));
            }
        }
        out.push_str("  </emailProvider>\n</clientConfig>\n");
        out
    }

    /// `/healthz`: the process answers; `/readyz`: it can read its store and is not
    /// shutting down (503 otherwise, so a supervisor or balancer stops sending).
    async fn admin(&self, req: Request<Incoming>, stopping: bool) -> Response<Body> {
        let text = "text/plain; charset=utf-8";
        match req.uri().path() {
            "/healthz" => respond(StatusCode::OK, text, "ok\n"),
            "/readyz" if stopping => respond(StatusCode::SERVICE_UNAVAILABLE, text, "shutting down\n"),
            "/readyz" => match self.store.domains().await {
                Ok(_) => respond(StatusCode::OK, text, "ready\n"),
                Err(e) => respond(StatusCode::SERVICE_UNAVAILABLE, text, format!("store: {e}\n")),
            },
            "/metrics" => match self.metrics().await {
                Some(page) => respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", page),
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    /// The Prometheus page: what is counted as it happens, and what is read when asked
    /// (the queue, the certificates' expiry); at most a second old.
    async fn metrics(&self) -> Option<Bytes> {
        let fresh = || {
            let page = self.metrics_page.read().ok()?;
            page.as_ref().filter(|(made, _)| made.elapsed() < std::time::Duration::from_secs(1)).map(|p| p.1.clone())
        };
        if let Some(page) = fresh() {
            return Some(page);
        }
        let _making = self.metrics_rendering.lock().await;
        if let Some(page) = fresh() {
            return Some(page);
        }
        let page = Bytes::from(self.render_metrics().await?);
        if let Ok(mut slot) = self.metrics_page.write() {
            *slot = Some((std::time::Instant::now(), page.clone()));
        }
        Some(page)
    }

    async fn render_metrics(&self) -> Option<String> {
        if let Ok((count, oldest)) = self.store.queue_stats().await {
            metrics::gauge!("agora_queue_messages").set(count as f64);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let age = oldest.map_or(0, |t| (now as i64).saturating_sub(t).max(0));
            metrics::gauge!("agora_queue_oldest_age_seconds").set(age as f64);
        }
        for cert in self.tls.iter().flat_map(|t| t.certificates()) {
            for name in cert.names {
                metrics::gauge!("agora_tls_certificate_expiry_timestamp_seconds", "name" => name)
                    .set(cert.not_after as f64);
            }
        }
        agora_service::metrics::render()
    }

    async fn handle(&self, secure: bool, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<Body> {
        let Some(host) = host_of(&req) else {
            return respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", "no host\n");
        };
        let hosted = self.hosted(&host).await;
        let known = hosted.is_some() || host.eq_ignore_ascii_case(&self.hostname);
        if !known {
            // Names this server does not serve get nothing (no redirect elsewhere).
            return respond(StatusCode::MISDIRECTED_REQUEST, "text/plain; charset=utf-8", "not served here\n");
        }
        if !secure {
            if let Some(token) = req.uri().path().strip_prefix("/.well-known/acme-challenge/") {
                let answer = self.acme_tokens.read().ok().and_then(|t| t.get(token).cloned());
                return match answer {
                    Some(a) => respond(StatusCode::OK, "application/octet-stream", a),
                    None => not_found(),
                };
            }
            // Everything else moves to HTTPS, method and body kept (308).
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let target = format!("{}{path}", self.https_origin(&host));
            let mut r = respond(StatusCode::PERMANENT_REDIRECT, "text/plain; charset=utf-8", "");
            if let Ok(v) = target.parse() {
                r.headers_mut().insert(hyper::header::LOCATION, v);
            }
            return r;
        }
        let path = req.uri().path().to_ascii_lowercase();
        let mut r = if path.starts_with("/autodiscover/") {
            self.autodiscover(&host, req).await
        } else if host.eq_ignore_ascii_case(&self.hostname) && agora_webmail::Webmail::serves(req.uri().path()) {
            self.webmail(req, peer).await
        } else {
            self.route(hosted, &req)
        };
        if let Some(v) = &self.hsts {
            r.headers_mut().insert(hyper::header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
        r
    }

    fn route(&self, hosted: Option<(Arc<Hosted>, &'static str)>, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "GET or HEAD\n");
            if let Ok(v) = "GET, HEAD".parse() {
                r.headers_mut().insert(hyper::header::ALLOW, v);
            }
            return r;
        }
        let Some((hosted, label)) = hosted else { return not_found() };
        let path = req.uri().path();
        let body = match (label, path) {
            ("mta-sts", "/.well-known/mta-sts.txt") => {
                respond(StatusCode::OK, "text/plain; charset=utf-8", hosted.policy.clone())
            }
            ("autoconfig", "/mail/config-v1.1.xml") | ("", "/.well-known/autoconfig/mail/config-v1.1.xml") => {
                respond(StatusCode::OK, "application/xml; charset=utf-8", hosted.autoconfig.clone())
            }
            _ => not_found(),
        };
        if req.method() == Method::HEAD {
            let (parts, _) = body.into_parts();
            return Response::from_parts(parts, Body::full(Bytes::new()));
        }
        body
    }
}

impl Shared {
    /// The webmail: the request handed over as a `WebRequest` (bodies up to the
    /// webmail's limit for the path), its answer turned back into HTTP (a stream for events).
    async fn webmail(&self, req: Request<Incoming>, peer: std::net::IpAddr) -> Response<Body> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let head = parts.method == Method::HEAD;
        let limit = self.webmail.body_limit(parts.uri.path());
        let body = match http_body_util::Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain; charset=utf-8",
                    "What was sent is larger than this server takes.\n",
                );
            }
        };
        let web = agora_webmail::WebRequest {
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
                // HTTP/2 names the host in :authority, not in a Host field.
                .chain(
                    parts
                        .uri
                        .authority()
                        .filter(|_| !parts.headers.contains_key(hyper::header::HOST))
                        .map(|a| ("host".to_string(), a.as_str().to_string())),
                )
                .collect(),
            body,
            peer: Some(peer),
            form: Default::default(),
        };
        let answer = self.webmail.handle(&web).await;
        let mut r = Response::new(match answer.stream {
            Some(rx) if !head => Body { full: None, stream: Some(rx) },
            _ => Body::full(if head { Bytes::new() } else { answer.body }),
        });
        *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (n, v) in answer.headers {
            if let (Ok(n), Ok(v)) =
                (hyper::header::HeaderName::from_bytes(n.as_bytes()), hyper::header::HeaderValue::from_str(&v))
            {
                r.headers_mut().append(n, v);
            }
        }
        r
    }

    /// Outlook's Autodiscover: POX v1 (`POST /autodiscover/autodiscover.xml`) answered
    /// with IMAP, POP3 and SMTP settings, and the v2 JSON lookup that points there.
    /// Every address of a hosted domain gets the same shape of answer, existing or not.
    async fn autodiscover(&self, host: &str, req: Request<Incoming>) -> Response<Body> {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_ascii_lowercase();
        if path.starts_with("/autodiscover/autodiscover.json") {
            let email = autodiscover::json_email(req.uri().path(), req.uri().query().unwrap_or(""));
            let protocol = autodiscover::query_param(req.uri().query().unwrap_or(""), "protocol").unwrap_or_default();
            let hosted = match email.as_deref() {
                Some(e) => self.hosted_address(e).await,
                None => false,
            };
            let (status, body) = match hosted {
                true if protocol.eq_ignore_ascii_case("autodiscoverv1") => (
                    StatusCode::OK,
                    format!(
                        "{{\"Protocol\":\"AutodiscoverV1\",\"Url\":\"{}/autodiscover/autodiscover.xml\"}}",
                        self.https_origin(host)
                    ),
                ),
                _ => (
                    StatusCode::BAD_REQUEST,
                    "{\"ErrorCode\":\"InvalidProtocol\",\"ErrorMessage\":\"only AutodiscoverV1 for hosted addresses\"}"
                        .to_string(),
                ),
            };
            return respond(status, "application/json", body);
        }
        if path != "/autodiscover/autodiscover.xml" {
            return not_found();
        }
        if req.method() != Method::POST {
            let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "POST\n");
            if let Ok(v) = "POST".parse() {
                r.headers_mut().insert(hyper::header::ALLOW, v);
            }
            return r;
        }
        let limited = http_body_util::Limited::new(req.into_body(), autodiscover::MAX_REQUEST);
        let body = match limited.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return respond(StatusCode::PAYLOAD_TOO_LARGE, "text/plain; charset=utf-8", "too large\n"),
        };
        let email = autodiscover::pox_email(&body);
        let xml = match email {
            Some(e) if self.hosted_address(&e).await => autodiscover::pox_settings(&e, &self.hostname, &self.listening),
            _ => autodiscover::pox_error(),
        };
        respond(StatusCode::OK, "application/xml; charset=utf-8", xml)
    }

    /// Whether an address is of a hosted domain (whether the mailbox exists is not told).
    async fn hosted_address(&self, email: &str) -> bool {
        let Some((_, domain)) = email.rsplit_once('@') else { return false };
        matches!(self.hosted(domain).await, Some((_, "")))
    }
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[async_trait]
impl Service for HttpService {
    fn busy_reply(&self) -> &'static [u8] {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    }

    fn alpn(&self) -> &'static [&'static [u8]] {
        if self.role == Role::Secure { &[b"h2", b"http/1.1", agora_net::tls::ACME_TLS_ALPN] } else { &[] }
    }

    async fn serve(&self, conn: Conn) {
        if conn.alpn() == Some(agora_net::tls::ACME_TLS_ALPN) {
            // A TLS-ALPN-01 validation: the handshake was the answer (RFC 8737 §3).
            return;
        }
        use hyper_util::rt::{TokioIo, TokioTimer};
        let shutdown = conn.shutdown_token();
        let timeouts = conn.timeouts();
        let peer = conn.peer.ip();
        let io = TokioIo::new(conn.into_stream());
        let (shared, role) = (Arc::clone(&self.shared), self.role);
        let stop = shutdown.clone();
        let svc = hyper::service::service_fn(move |req| {
            let (shared, stopping) = (Arc::clone(&shared), stop.is_cancelled());
            async move {
                Ok::<_, Infallible>(match role {
                    Role::Admin => shared.admin(req, stopping).await,
                    _ => shared.handle(role == Role::Secure, req, peer).await,
                })
            }
        });
        // HTTP/2 streams run on this connection's own task (`Streams`), not as tasks of
        // their own: no spawn per request, and no other thread contending for the
        // connection's shared state.
        let (exec, mut spawned) = Streams::new();
        let mut builder = hyper_util::server::conn::auto::Builder::new(exec);
        builder
            .http1()
            .timer(TokioTimer::new())
            // A request head must arrive within the session's first timeout (no slowloris).
            .header_read_timeout(timeouts.preauth)
            .max_buf_size(self.shared.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.shared.max_header_bytes as u32)
            .max_concurrent_streams(100)
            .keep_alive_interval(Some(timeouts.idle))
            .keep_alive_timeout(std::time::Duration::from_secs(20));
        let served = builder.serve_connection(io, svc);
        tokio::pin!(served);
        let mut streams = futures_util::stream::FuturesUnordered::new();
        let mut stop_by: Option<tokio::time::Instant> = None;
        loop {
            use futures_util::StreamExt;
            tokio::select! {
                biased;
                Some(stream) = spawned.recv() => streams.push(stream),
                Some(()) = streams.next(), if !streams.is_empty() => {}
                r = served.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("http: {e}");
                    }
                    break;
                }
                () = shutdown.cancelled(), if stop_by.is_none() => {
                    // Requests in flight finish; no new ones start.
                    served.as_mut().graceful_shutdown();
                    stop_by = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(10));
                }
                () = tokio::time::sleep_until(stop_by.unwrap_or_else(tokio::time::Instant::now)), if stop_by.is_some() => break,
            }
        }
        // Streams still answering finish (their connection is gone: quickly).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            use futures_util::StreamExt;
            while streams.next().await.is_some() {}
        })
        .await;
    }
}

/// The executor hyper hands HTTP/2 streams to: they go to the connection's task, which
/// polls them beside the connection.
#[derive(Clone)]
struct Streams(tokio::sync::mpsc::UnboundedSender<StreamTask>);

/// One HTTP/2 stream's work, as hyper hands it over.
type StreamTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Streams {
    fn new() -> (Streams, tokio::sync::mpsc::UnboundedReceiver<StreamTask>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Streams(tx), rx)
    }
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: std::future::Future + Send + 'static,
{
    fn execute(&self, fut: F) {
        let _ = self.0.send(Box::pin(async move {
            fut.await;
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
