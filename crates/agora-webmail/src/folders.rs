//! The reader's folders: create (subscribed, so IMAP clients show it too), rename,
//! delete, and emptying Trash or Junk. INBOX and the special-use folders stay.

use std::fmt::Write;

use agora_store::{Mailbox, SpecialUse};

use crate::pages::{escape, layout, notice};
use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// Longest folder name, characters.
const MAX_NAME: usize = 200;

/// A folder name as typed, checked: `/` separates levels; no empty level, no control
/// characters, no wildcards that IMAP LIST would read as patterns.
fn valid_name(name: &str) -> Option<String> {
    let name = name.trim().trim_matches('/').to_string();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
        && name.split('/').all(|level| !level.trim().is_empty())
        && !name.eq_ignore_ascii_case("INBOX");
    ok.then_some(name)
}

/// Folders the reader may rename or delete.
fn own(m: &Mailbox) -> bool {
    m.special_use.is_none() && !m.name.eq_ignore_ascii_case("INBOX")
}

impl Webmail {
    /// GET /mail/folders.
    pub(crate) async fn folders_page(&self, user: &User, said: Option<(bool, &str)>) -> WebResponse {
        let Ok(mut boxes) = self.store.mailboxes(user.account.id).await else {
            return WebResponse::html(503, notice("Unavailable", "The folders cannot be read now."));
        };
        boxes.sort_by_key(|m| m.name.to_lowercase());
        let csrf = escape(&user.session.csrf);
        let lang = user.lang;
        let t = |en| lang.t(en);
        let form = |what: &str, id: i64, inner: &str| {
            format!(
                r#"<form class="inline" method="post" action="/mail/folders"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="what" value="{what}"><input type="hidden" name="f" value="{id}">{inner}</form>"#
            )
        };
        let mut rows = String::new();
        for m in &boxes {
            let mut acts = String::new();
            if own(m) {
                acts.push_str(&form(
                    "rename",
                    m.id,
                    &format!(
                        r#"<label class="hidden" for="n{id}">{}</label><input id="n{id}" name="name" value="{}" maxlength="{MAX_NAME}" required><button type="submit">{}</button>"#,
                        t("Rename"),
                        escape(&m.name),
                        t("Rename"),
                        id = m.id
                    ),
                ));
                acts.push_str(&form("delete", m.id, &format!(r#"<button type="submit">{}</button>"#, t("Delete"))));
            }
            if matches!(m.special_use, Some(SpecialUse::Trash | SpecialUse::Junk)) && m.messages > 0 {
                acts.push_str(&form("empty", m.id, &format!(r#"<button type="submit">{}</button>"#, t("Empty"))));
            }
            let _ = write!(
                rows,
                r#"<tr><td><a href="/mail/?f={}">{}</a></td><td>{}</td><td>{acts}</td></tr>"#,
                m.id,
                escape(&m.name),
                m.messages
            );
        }
        let status = if matches!(said, Some((false, _))) { 400 } else { 200 };
        let said = match said {
            Some((true, s)) => format!(r#"<p class="done" role="status">{}</p>"#, escape(t(s))),
            Some((false, s)) => format!(r#"<p class="error" role="alert">{}</p>"#, escape(t(s))),
            None => String::new(),
        };
        let main = format!(
            r#"<h1>{}</h1>{said}<form class="tools" method="post" action="/mail/folders"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="what" value="create"><label for="new">{}</label><input id="new" name="name" maxlength="{MAX_NAME}" required placeholder="Projects/2027"><button type="submit">{}</button></form><table><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col"><span class="hidden">…</span></th></tr></thead><tbody>{rows}</tbody></table>"#,
            t("Folders"),
            t("New folder"),
            t("Create"),
            t("Folder"),
            t("Messages")
        );
        WebResponse::html(status, layout(t("Folders"), Some(user), &main))
    }

    /// POST /mail/folders: create, rename, delete or empty (`what`).
    pub(crate) async fn change_folders(&self, user: &User, req: &WebRequest) -> WebResponse {
        let account = user.account.id;
        let what = req.form_field("what").unwrap_or_default();
        let name = req.form_field("name").unwrap_or_default();
        let chosen = self.folder(user, req.form_field("f")).await.map(|(_, m)| m.mb).filter(|m| m.account == account);
        let result: Result<&str, String> = match (what.as_str(), chosen) {
            ("create", _) => match valid_name(&name) {
                None => Err("That name cannot be a folder's.".into()),
                Some(n) => match self.store.create_mailbox(account, &n, None).await {
                    Ok(_) => {
                        let _ = self.store.set_subscribed(account, &n, true).await;
                        Ok("Folder created.")
                    }
                    Err(agora_store::StoreError::Exists(_)) => Err("A folder of that name exists.".into()),
                    Err(e) => Err(format!("Not created: {e}")),
                },
            },
            ("rename", Some(m)) if own(&m) => match valid_name(&name) {
                None => Err("That name cannot be a folder's.".into()),
                Some(n) if n == m.name => Ok("Nothing to change."),
                Some(n) => match self.store.rename_mailbox(account, &m.name, &n).await {
                    Ok(()) => {
                        let _ = self.store.set_subscribed(account, &m.name, false).await;
                        let _ = self.store.set_subscribed(account, &n, true).await;
                        Ok("Folder renamed.")
                    }
                    Err(agora_store::StoreError::Exists(_)) => Err("A folder of that name exists.".into()),
                    Err(e) => Err(format!("Not renamed: {e}")),
                },
            },
            ("delete", Some(m)) if own(&m) => match self.store.delete_mailbox(account, &m.name).await {
                Ok(()) => {
                    let _ = self.store.set_subscribed(account, &m.name, false).await;
                    Ok("Folder deleted.")
                }
                Err(e) => Err(format!("Not deleted: {e}")),
            },
            ("empty", Some(m)) if matches!(m.special_use, Some(SpecialUse::Trash | SpecialUse::Junk)) => {
                let uids: Vec<u32> =
                    self.store.message_list(m.id).await.unwrap_or_default().iter().map(|r| r.uid).collect();
                match self.store.expunge(m.id, &uids).await {
                    Ok(_) => Ok("Emptied."),
                    Err(e) => Err(format!("Not emptied: {e}")),
                }
            }
            _ => Err("That cannot be done to this folder.".into()),
        };
        match result {
            Ok(said) => self.folders_page(user, Some((true, said))).await,
            Err(why) => {
                tracing::info!("webmail: folder {what} for {}: {why}", user.account.login);
                self.folders_page(user, Some((false, &why))).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn folder_names() {
        assert_eq!(valid_name(" Projects/2027/ ").as_deref(), Some("Projects/2027"));
        for bad in ["", "/", "a//b", "in*box", "a%", "inbox", "x\ny", &"x".repeat(201)] {
            assert_eq!(valid_name(bad), None, "{bad:?}");
        }
    }
}
