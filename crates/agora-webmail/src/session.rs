//! Signing in and out: the session cookie (a random token; the store keeps its hash),
//! the per-session CSRF token every form carries, a sign-in form bound to its own
//! cookie, idle and absolute expiry, the shared login throttle, the session list.

use agora_directory::sasl::constant_time_eq;
use agora_store::{Account, WebSession};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::{WebRequest, WebResponse, Webmail, pages};

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
const COOKIE: &str = "__Host-agora";
/// The sign-in form's own cookie, which the form repeats (no sign-in forged elsewhere).
const PRE_COOKIE: &str = "__Host-agora-pre";
/// A session not used for this long is signed out.
pub const IDLE_SECS: i64 = 8 * 3600;
/// And none lives longer than this.
pub const ABSOLUTE_SECS: i64 = 7 * 24 * 3600;
/// `seen` is written at most this often.
const TOUCH_SECS: i64 = 60;

/// A signed-in request.
#[derive(Clone)]
pub(crate) struct User {
    pub account: Account,
    pub session: WebSession,
    /// The language of the pages: the account's choice, else the browser's.
    pub lang: crate::i18n::Lang,
}

impl User {
    /// The form's CSRF token is this session's.
    pub fn csrf_ok(&self, req: &WebRequest) -> bool {
        req.form_field("csrf").is_some_and(|t| constant_time_eq(t.as_bytes(), self.session.csrf.as_bytes()))
    }
}

/// A new random token (256 bits), URL-safe.
fn token() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(URL_SAFE_NO_PAD.encode(b))
}

/// What the store keeps of a token.
fn hash(token: &str) -> String {
    agora_store::blob::hex(&Sha256::digest(token.as_bytes()))
}

fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

impl Webmail {
    /// Removes expired sessions every quarter of an hour (a session is also refused the
    /// moment it is past its time; this keeps abandoned ones from piling up).
    pub async fn expire_sessions(self: std::sync::Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(900)) => {}
            }
            let now = agora_store::now();
            match self.store.expire_web_sessions(now - IDLE_SECS, now - ABSOLUTE_SECS).await {
                Ok(n) if n > 0 => tracing::info!("webmail: {n} expired sessions removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!("webmail: expiring sessions: {e}"),
            }
        }
    }

    /// The request's session, if it has a live one (expired ones are removed).
    pub(crate) async fn session(&self, req: &WebRequest) -> Option<User> {
        let token = req.cookie(COOKIE)?;
        let id = hash(token);
        let session = self.store.web_session(&id).await.ok()??;
        let now = agora_store::now();
        if now - session.seen > IDLE_SECS || now - session.created > ABSOLUTE_SECS {
            let _ = self.store.remove_web_sessions(session.account, Some(&id)).await;
            return None;
        }
        if now - session.seen >= TOUCH_SECS {
            let _ = self.store.touch_web_session(&id, now).await;
        }
        let account = self.store.account(session.account).await.ok()??;
        let chosen = self.store.account_settings(account.id).await.unwrap_or_default();
        let lang = chosen
            .iter()
            .find(|(n, _)| n == crate::settings::LANGUAGE)
            .and_then(|(_, v)| crate::i18n::Lang::from_tag(v))
            .unwrap_or_else(|| crate::i18n::Lang::negotiate(req.header("accept-language")));
        Some(User { account, session, lang })
    }

    /// The sign-in form, with a fresh form cookie; `error` says why the last try failed.
    pub(crate) fn sign_in_page(&self, req: &WebRequest, error: Option<&str>) -> WebResponse {
        let Some(pre) = token() else {
            return WebResponse::html(503, pages::notice("Unavailable", "No randomness; try again."));
        };
        let status = if error.is_some() { 401 } else { 200 };
        let lang = crate::i18n::Lang::negotiate(req.header("accept-language"));
        WebResponse::html(status, pages::sign_in(lang, &self.hostname, &pre, error))
            .with("set-cookie", set_cookie(PRE_COOKIE, &pre, 3600))
    }

    pub(crate) async fn sign_in(&self, req: &WebRequest) -> WebResponse {
        let form_ok = match (req.cookie(PRE_COOKIE), req.form_field("pre")) {
            (Some(c), Some(f)) => constant_time_eq(c.as_bytes(), f.as_bytes()),
            _ => false,
        };
        if !form_ok {
            return self.sign_in_page(req, Some("The sign-in form expired. Please try again."));
        }
        let login = req.form_field("login").unwrap_or_default().trim().to_string();
        let password = req.form_field("password").unwrap_or_default();
        let peer = req.peer.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let account = if login.is_empty() || password.is_empty() {
            None
        } else {
            self.dir.authenticate(&login, &password).await.ok().flatten()
        };
        let Some(account) = account else {
            let delay = self.throttle.failure(peer, (!login.is_empty()).then_some(login.as_str()));
            metrics::counter!("agora_login_failures_total", "protocol" => "webmail").increment(1);
            tracing::info!("webmail: failed login for {login:?} from {peer}");
            tokio::time::sleep(delay).await;
            return self.sign_in_page(req, Some("Wrong address or password."));
        };
        if let Some(why) = self.second_factor(&account, req).await {
            let delay = self.throttle.failure(peer, Some(account.login.as_str()));
            metrics::counter!("agora_login_failures_total", "protocol" => "webmail").increment(1);
            tracing::info!("webmail: second factor for {} from {peer}: {why}", account.login);
            tokio::time::sleep(delay).await;
            return self.sign_in_page(req, Some(why));
        }
        self.throttle.success(&account.login);
        metrics::counter!("agora_logins_total", "protocol" => "webmail").increment(1);
        tracing::info!("webmail: {} signed in from {peer}", account.login);
        let (Some(tok), Some(csrf)) = (token(), token()) else {
            return WebResponse::html(503, pages::notice("Unavailable", "No randomness; try again."));
        };
        let now = agora_store::now();
        let agent: String = req.header("user-agent").unwrap_or("").chars().take(200).collect();
        let session = WebSession {
            id: hash(&tok),
            account: account.id,
            csrf,
            created: now,
            seen: now,
            address: peer.to_string(),
            agent,
        };
        if let Err(e) = self.store.add_web_session(session).await {
            tracing::warn!("webmail: session not stored: {e}");
            return WebResponse::html(503, pages::notice("Unavailable", "Please try again."));
        }
        WebResponse::redirect("/mail/")
            .with("set-cookie", set_cookie(COOKIE, &tok, ABSOLUTE_SECS))
            .with("set-cookie", set_cookie(PRE_COOKIE, "", 0))
    }

    /// For an account with a second factor, the form's code must be a current one not
    /// used before; None when sign-in may go on, else what to tell the user.
    async fn second_factor(&self, account: &Account, req: &WebRequest) -> Option<&'static str> {
        use agora_directory::totp;
        let (secret, last) = match self.store.totp(account.id).await {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(_) => return Some("Sign-in is not possible now; please try again."),
        };
        let code = req.form_field("code").unwrap_or_default();
        if code.trim().is_empty() {
            return Some("Enter the code from your authenticator app.");
        }
        let step = totp::decode_secret(&secret).and_then(|s| totp::verify(&s, &code, agora_store::now(), last));
        match step {
            Some(step) if self.store.use_totp_step(account.id, step).await.unwrap_or(false) => None,
            _ => Some("Wrong code, or a code that was used already."),
        }
    }

    /// Signs out this session, or every session of the account ("sign out everywhere").
    pub(crate) async fn sign_out(&self, user: &User, req: &WebRequest) -> WebResponse {
        let everywhere = req.form_field("everywhere").is_some();
        let only = (!everywhere).then_some(user.session.id.as_str());
        let _ = self.store.remove_web_sessions(user.account.id, only).await;
        tracing::info!("webmail: {} signed out{}", user.account.login, if everywhere { " everywhere" } else { "" });
        WebResponse::redirect("/mail/").with("set-cookie", set_cookie(COOKIE, "", 0))
    }

    pub(crate) async fn sessions_page(&self, user: &User) -> WebResponse {
        let sessions = self.store.web_sessions(user.account.id).await.unwrap_or_default();
        WebResponse::html(200, pages::sessions(user, &sessions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_tokens() {
        let req = WebRequest {
            headers: vec![("cookie".into(), "a=1; __Host-agora=tok; __Host-agora-pre=p".into())],
            ..WebRequest::default()
        };
        assert_eq!(req.cookie(COOKIE), Some("tok"));
        assert_eq!(req.cookie(PRE_COOKIE), Some("p"));
        assert_eq!(req.cookie("b"), None);
        let (a, b) = (token().unwrap(), token().unwrap());
        assert!(a != b && a.len() == 43);
        assert_eq!(hash("x").len(), 64);
        assert!(set_cookie(COOKIE, "v", 5).contains("Secure; HttpOnly; SameSite=Strict"));
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc")
        );
    }
}
