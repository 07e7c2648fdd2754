//! The reader's own settings: display name, signature, password, and the senders whose
//! remote images are always shown. Kept in the store with the account, so every node
//! and every session sees the same.

use std::fmt::Write;

use agora_store::AccountUpdate;

use crate::pages::{escape, layout, notice};
use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// Settings' names in the store.
pub(crate) const SIGNATURE: &str = "webmail.signature";
/// The pages' language (a tag); none: the browser's.
pub(crate) const LANGUAGE: &str = "webmail.language";
const IMAGE_SENDERS: &str = "webmail.image_senders";
/// Longest display name and signature, characters; most senders trusted with images.
const MAX_NAME: usize = 200;
const MAX_SIGNATURE: usize = 2000;
const MAX_IMAGE_SENDERS: usize = 500;
/// Shortest new password.
const MIN_PASSWORD: usize = 10;

impl Webmail {
    async fn setting(&self, user: &User, name: &str) -> Option<String> {
        let all = self.store.account_settings(user.account.id).await.ok()?;
        all.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub(crate) async fn signature(&self, user: &User) -> String {
        self.setting(user, SIGNATURE).await.unwrap_or_default()
    }

    /// Senders (lower-case addresses) whose remote images the reader always allows.
    pub(crate) async fn image_senders(&self, user: &User) -> Vec<String> {
        let list = self.setting(user, IMAGE_SENDERS).await.unwrap_or_default();
        list.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    async fn set_image_senders(&self, user: &User, list: &[String]) -> bool {
        let value = list.join("\n");
        let value = (!value.is_empty()).then_some(value.as_str());
        self.store.set_account_setting(user.account.id, IMAGE_SENDERS, value).await.is_ok()
    }

    /// GET /mail/settings.
    pub(crate) async fn settings_page(&self, user: &User, said: Option<(bool, &str)>) -> WebResponse {
        let csrf = escape(&user.session.csrf);
        let lang = user.lang;
        let t = |en| lang.t(en);
        let status = if matches!(said, Some((false, _))) { 400 } else { 200 };
        let said = match said {
            Some((true, s)) => format!(r#"<p class="done" role="status">{}</p>"#, escape(t(s))),
            Some((false, s)) => format!(r#"<p class="error" role="alert">{}</p>"#, escape(t(s))),
            None => String::new(),
        };
        let signature = self.signature(user).await;
        let mut senders = String::new();
        for s in self.image_senders(user).await {
            let _ = write!(
                senders,
                r#"<li>{} <form class="inline" method="post" action="/mail/settings"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="what" value="unimage"><input type="hidden" name="sender" value="{}"><button type="submit">{}</button></form></li>"#,
                escape(&s),
                escape(&s),
                t("Remove")
            );
        }
        let senders = if senders.is_empty() {
            format!("<p>{}</p>", t("None: remote images are shown only when you ask, message by message."))
        } else {
            format!("<ul>{senders}</ul>")
        };
        let automatic = self.automatic_forms(user).await;
        let chosen = self.setting(user, LANGUAGE).await.unwrap_or_default();
        let mut languages = format!(
            r#"<option value=""{}>{}</option>"#,
            if chosen.is_empty() { " selected" } else { "" },
            t("As the browser asks")
        );
        for (tag, name) in crate::i18n::OFFERED {
            let _ = write!(
                languages,
                r#"<option value="{tag}" lang="{tag}"{}>{name}</option>"#,
                if chosen == *tag { " selected" } else { "" }
            );
        }
        let main = format!(
            r#"<h1>{}</h1>{said}
<form class="settings" method="post" action="/mail/settings"><h2>{}</h2><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="what" value="profile"><label for="name">{}</label><input id="name" name="name" value="{}" maxlength="{MAX_NAME}" autocomplete="name"><label for="signature">{}</label><textarea id="signature" name="signature" rows="4" maxlength="{MAX_SIGNATURE}">{}</textarea><label for="language">{}</label><select id="language" name="language">{languages}</select><button type="submit">{save}</button></form>
<form class="settings" method="post" action="/mail/settings"><h2>{}</h2><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="what" value="password"><input type="hidden" name="username" value="{}" autocomplete="username"><label for="current">{}</label><input id="current" name="current" type="password" autocomplete="current-password" required><label for="new">{}</label><input id="new" name="new" type="password" autocomplete="new-password" minlength="{MIN_PASSWORD}" required><label for="again">{}</label><input id="again" name="again" type="password" autocomplete="new-password" minlength="{MIN_PASSWORD}" required><button type="submit">{}</button></form>
{automatic}<section class="settings" aria-label="{images}"><h2>{images}</h2>{senders}</section>"#,
            t("Settings"),
            t("You"),
            t("Display name"),
            escape(&user.account.display_name),
            t("Signature (added to new messages)"),
            escape(&signature),
            t("Language"),
            t("Password"),
            escape(&user.account.login),
            t("Current password"),
            lang.f("New password (at least {} characters)", MIN_PASSWORD),
            t("New password again"),
            t("Change password"),
            save = t("Save"),
            images = t("Remote images always shown from"),
        );
        WebResponse::html(status, layout(t("Settings"), Some(user), &main))
    }

    /// POST /mail/settings: one of the forms of the settings page (`what`).
    pub(crate) async fn save_settings(&self, user: &User, req: &WebRequest) -> WebResponse {
        let field = |n: &str| req.form_field(n).unwrap_or_default();
        match field("what").as_str() {
            "profile" => {
                let name: String = field("name").chars().filter(|c| !c.is_control()).take(MAX_NAME).collect();
                let signature: String = field("signature").replace("\r\n", "\n").chars().take(MAX_SIGNATURE).collect();
                let update = AccountUpdate { display_name: Some(name.trim().to_string()), ..AccountUpdate::default() };
                let language = field("language");
                let language = crate::i18n::Lang::from_tag(&language).map(crate::i18n::Lang::tag);
                let saved = self.store.update_account(&user.account.login, update).await.is_ok()
                    && self.store.set_account_setting(user.account.id, LANGUAGE, language).await.is_ok()
                    && self
                        .store
                        .set_account_setting(
                            user.account.id,
                            SIGNATURE,
                            (!signature.trim().is_empty()).then_some(signature.as_str()),
                        )
                        .await
                        .is_ok();
                let mut user = user.clone();
                user.account.display_name = name.trim().to_string();
                if let Some(l) = language.and_then(crate::i18n::Lang::from_tag) {
                    user.lang = l;
                }
                self.settings_page(&user, Some(if saved { (true, "Saved.") } else { (false, "Not saved; try again.") }))
                    .await
            }
            "password" => self.change_password(user, req).await,
            "vacation" | "forward" => {
                let said = self.save_automatic(user, req).await;
                self.settings_page(user, Some(said)).await
            }
            "unimage" => {
                let sender = field("sender").to_lowercase();
                let mut list = self.image_senders(user).await;
                list.retain(|s| *s != sender);
                let saved = self.set_image_senders(user, &list).await;
                self.settings_page(
                    user,
                    Some(if saved { (true, "Removed.") } else { (false, "Not saved; try again.") }),
                )
                .await
            }
            _ => WebResponse::html(400, notice("Not understood", "That setting is not known.")),
        }
    }

    /// The vacation reply and forwarding forms, filled in from the settings.
    async fn automatic_forms(&self, user: &User) -> String {
        use agora_mail::automatic::{FORWARD, Forward, VACATION, Vacation};
        let csrf = escape(&user.session.csrf);
        let t = |en| user.lang.t(en);
        let v: Option<Vacation> = self.setting(user, VACATION).await.and_then(|j| serde_json::from_str(&j).ok());
        let f: Option<Forward> = self.setting(user, FORWARD).await.and_then(|j| serde_json::from_str(&j).ok());
        let on = |b: bool| if b { " checked" } else { "" };
        let day = |t: i64| {
            if t == 0 {
                return String::new();
            }
            let (y, m, d, ..) = agora_store::time::split(t);
            format!("{y:04}-{m:02}-{d:02}")
        };
        let vd = v.clone().unwrap_or(Vacation { days: 7, ..Vacation::default() });
        let fd = f.clone().unwrap_or(Forward { to: String::new(), keep: true });
        format!(
            r#"<form class="settings" method="post" action="/mail/settings"><h2>{}</h2><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="what" value="vacation"><label><input type="checkbox" name="on" value="1"{}> {}</label><label for="vsubject">{}</label><input id="vsubject" name="subject" value="{}" maxlength="200"><label for="vtext">{}</label><textarea id="vtext" name="text" rows="4" maxlength="{MAX_SIGNATURE}">{}</textarea><label for="vfrom">{}</label><input id="vfrom" name="from" type="date" value="{}"><label for="vuntil">{}</label><input id="vuntil" name="until" type="date" value="{}"><label for="vdays">{}</label><input id="vdays" name="days" type="number" min="1" max="30" value="{}"><p>{}</p><button type="submit">{save}</button></form>
<form class="settings" method="post" action="/mail/settings"><h2>{}</h2><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="what" value="forward"><label for="fto">{}</label><input id="fto" name="to" type="email" value="{}" maxlength="254"><label><input type="checkbox" name="keep" value="1"{}> {}</label><button type="submit">{save}</button></form>"#,
            t("Vacation reply"),
            on(v.is_some()),
            t("Answer mail automatically"),
            t("Subject (empty: \"Auto: \" and theirs)"),
            escape(&vd.subject),
            t("Reply text"),
            escape(&vd.text),
            t("From (optional)"),
            day(vd.from),
            t("Until (optional, not included)"),
            day(vd.until),
            t("Answer each sender once in this many days"),
            vd.days.max(1),
            t("Lists, bulk mail and automatic messages are never answered."),
            t("Forwarding"),
            t("Forward all mail to (empty: off)"),
            escape(&fd.to),
            on(fd.keep),
            t("Keep a copy here"),
            save = t("Save"),
        )
    }

    /// Saves the vacation reply or forwarding; the mail core reads them again.
    async fn save_automatic(&self, user: &User, req: &WebRequest) -> (bool, &'static str) {
        use agora_mail::automatic::{FORWARD, Forward, VACATION, Vacation};
        let field = |n: &str| req.form_field(n).unwrap_or_default();
        let id = user.account.id;
        let saved = if field("what") == "vacation" {
            let value = if field("on") == "1" {
                let date = |n: &str| crate::pages::parse_day(&field(n)).unwrap_or(0);
                let v = Vacation {
                    subject: field("subject").chars().filter(|c| !c.is_control()).take(200).collect(),
                    text: field("text").chars().take(MAX_SIGNATURE).collect(),
                    days: field("days").parse::<u32>().unwrap_or(7).clamp(1, 30),
                    from: date("from"),
                    until: date("until"),
                };
                if v.text.trim().is_empty() {
                    return (false, "Write the reply first.");
                }
                Some(serde_json::to_string(&v).unwrap_or_default())
            } else {
                None
            };
            self.store.set_account_setting(id, VACATION, value.as_deref()).await
        } else {
            let to = field("to").trim().to_lowercase();
            let value = if to.is_empty() {
                None
            } else {
                let valid = matches!(to.rsplit_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.'))
                    && !to.contains([' ', ',', '<', '>']);
                if !valid || to == user.account.login.to_lowercase() {
                    return (false, "That is not an address to forward to.");
                }
                if matches!(self.dir.resolve(&to).await, Ok(agora_directory::Recipient::Unknown)) {
                    return (false, "There is no such address here.");
                }
                Some(serde_json::to_string(&Forward { to, keep: field("keep") == "1" }).unwrap_or_default())
            };
            self.store.set_account_setting(id, FORWARD, value.as_deref()).await
        };
        if saved.is_err() {
            return (false, "Not saved; try again.");
        }
        self.mail.automatic_changed();
        tracing::info!("webmail: {} changed their {}", user.account.login, field("what"));
        (true, "Saved.")
    }

    async fn change_password(&self, user: &User, req: &WebRequest) -> WebResponse {
        let field = |n: &str| req.form_field(n).unwrap_or_default();
        let (current, new, again) = (field("current"), field("new"), field("again"));
        if new != again {
            return self.settings_page(user, Some((false, "The new passwords differ."))).await;
        }
        if new.chars().count() < MIN_PASSWORD {
            return self.settings_page(user, Some((false, "The new password is too short."))).await;
        }
        let peer = req.peer.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        match self.dir.authenticate(&user.account.login, &current).await {
            Ok(Some(a)) if a.id == user.account.id => self.throttle.success(&user.account.login),
            _ => {
                // The same throttle as sign-in: guessing the current password here is as slow.
                let delay = self.throttle.failure(peer, Some(user.account.login.as_str()));
                metrics::counter!("agora_login_failures_total", "protocol" => "webmail").increment(1);
                tokio::time::sleep(delay).await;
                return self.settings_page(user, Some((false, "The current password is wrong."))).await;
            }
        }
        if let Err(e) = self.dir.set_password(&user.account.login, &new).await {
            tracing::warn!("webmail: password change for {}: {e}", user.account.login);
            return self.settings_page(user, Some((false, "The password could not be changed."))).await;
        }
        // Other sessions end: whoever else was signed in must know the new password.
        for s in self.store.web_sessions(user.account.id).await.unwrap_or_default() {
            if s.id != user.session.id {
                let _ = self.store.remove_web_sessions(user.account.id, Some(&s.id)).await;
            }
        }
        tracing::info!("webmail: {} changed their password", user.account.login);
        self.settings_page(user, Some((true, "Password changed; your other sessions were signed out."))).await
    }

    /// POST /mail/images: always show remote images from this message's sender.
    pub(crate) async fn allow_images(&self, user: &User, req: &WebRequest) -> WebResponse {
        let query =
            format!("f={}&u={}", req.form_field("f").unwrap_or_default(), req.form_field("u").unwrap_or_default());
        let probe = WebRequest { query, ..WebRequest::default() };
        let Some(opened) = self.own_message(user, &probe).await else {
            return WebResponse::html(404, notice("Not found", "There is no such message."));
        };
        let from = opened.meta.summary.envelope.from.as_deref().unwrap_or("");
        let Some(sender) = agora_store::address::display(from).into_iter().next().map(|a| a.address.to_lowercase())
        else {
            return WebResponse::html(400, notice("No sender", "This message names no sender."));
        };
        let mut list = self.image_senders(user).await;
        if !list.contains(&sender) {
            if list.len() >= MAX_IMAGE_SENDERS {
                list.remove(0);
            }
            list.push(sender);
            self.set_image_senders(user, &list).await;
        }
        WebResponse::redirect(&format!("/mail/message?f={}&u={}", opened.mb.id, opened.meta.uid))
    }
}
