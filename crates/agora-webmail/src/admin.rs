//! The admin console at `/admin`, for accounts with the admin role: the last day in
//! charts, domains (with the DNS records to publish and whether resolvers agree), users
//! (quota bars, password reset, role), aliases, groups, contacts, public folders, the
//! outbound queue and message tracking. Every change goes through the same directory
//! and store calls as the `agora` commands.

use std::fmt::Write;

use agora_store::{AccountUpdate, Role};

use crate::pages::{escape, layout, notice, size};
use crate::session::User;
use crate::{WebRequest, WebResponse, Webmail};

/// A page's outcome line: done, or refused with why.
type Said = Option<(bool, String)>;

/// A change's outcome as said on the page: `ok` when it was made, else the store's or
/// directory's reason.
fn done<T, E: std::fmt::Display>(r: Result<T, E>, ok: String) -> (bool, String) {
    match r {
        Ok(_) => (true, ok),
        Err(e) => (false, e.to_string()),
    }
}

fn said_html(said: &Said) -> String {
    match said {
        Some((true, s)) => format!(r#"<p class="done" role="status">{}</p>"#, escape(s)),
        Some((false, s)) => format!(r#"<p class="error" role="alert">{}</p>"#, escape(s)),
        None => String::new(),
    }
}

fn tabs(current: &str) -> String {
    let mut out = String::from(r#"<nav class="tabs" aria-label="Administration"><ul>"#);
    for (path, label) in [
        ("/admin", "Overview"),
        ("/admin/domains", "Domains"),
        ("/admin/users", "Users"),
        ("/admin/directory", "Aliases, groups, contacts"),
        ("/admin/public", "Public folders"),
        ("/admin/queue", "Queue"),
        ("/admin/track", "Tracking"),
    ] {
        let here = if path == current { r#" aria-current="page""# } else { "" };
        let _ = write!(out, r#"<li><a href="{path}"{here}>{label}</a></li>"#);
    }
    out.push_str("</ul></nav>");
    out
}

/// A form that posts `what` (and hidden fields) to `action`, with the session's token.
fn form(user: &User, action: &str, what: &str, hidden: &[(&str, &str)], inner: &str) -> String {
    let mut f = format!(
        r#"<form class="inline" method="post" action="{action}"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="what" value="{what}">"#,
        escape(&user.session.csrf)
    );
    for (n, v) in hidden {
        let _ = write!(f, r#"<input type="hidden" name="{n}" value="{}">"#, escape(v));
    }
    f.push_str(inner);
    f.push_str("</form>");
    f
}

impl Webmail {
    /// Everything under `/admin`: admins only.
    pub(crate) async fn admin(&self, user: &User, req: &WebRequest) -> WebResponse {
        if user.account.role != Role::Admin {
            return WebResponse::html(403, notice("Not allowed", "The console is for administrators."));
        }
        let post = req.method == "POST";
        let said: Said = if post { Some(self.admin_change(user, req).await) } else { None };
        if post {
            let f = |n: &str| req.form_field(n).unwrap_or_default();
            tracing::info!("admin: {} did {} on {}", user.account.login, f("what"), req.path);
        }
        let path = req.path.trim_end_matches('/');
        let (title, main) = match path {
            "/admin" => ("Overview", self.overview().await),
            "/admin/domains" => ("Domains", self.domains_page(user, req).await),
            "/admin/users" => ("Users", self.users_page(user).await),
            "/admin/directory" => ("Aliases, groups, contacts", self.directory_page(user).await),
            "/admin/public" => ("Public folders", self.public_page(user).await),
            "/admin/queue" => ("Queue", self.queue_page(user).await),
            "/admin/track" => ("Tracking", self.track_page(req)),
            _ => return WebResponse::html(404, notice("Not found", "There is nothing here.")),
        };
        let status = if matches!(said, Some((false, _))) { 400 } else { 200 };
        let body = format!(
            r#"<div class="admin">{}<section><h1>{}</h1>{}{main}</section></div>"#,
            tabs(path),
            escape(title),
            said_html(&said)
        );
        WebResponse::html(status, layout(title, Some(user), &body))
    }

    async fn overview(&self) -> String {
        let accounts = self.store.accounts(None).await.unwrap_or_default();
        let domains = self.store.domains().await.unwrap_or_default();
        let queued = self.store.queued().await.unwrap_or_default();
        let held = queued.iter().filter(|q| q.held).count();
        let page = self.metrics.and_then(|render| render());
        format!(
            r#"<ul class="figures"><li><strong>{}</strong> domains</li><li><strong>{}</strong> users</li><li><strong>{}</strong> in the queue ({held} held)</li></ul><h2>The last 24 hours</h2>{}"#,
            domains.len(),
            accounts.len(),
            queued.len(),
            self.history.charts(agora_store::now(), page.as_deref())
        )
    }

    /// POST under /admin: one change, said back on the page it came from.
    async fn admin_change(&self, user: &User, req: &WebRequest) -> (bool, String) {
        let f = |n: &str| req.form_field(n).unwrap_or_default().trim().to_string();
        match (req.path.trim_end_matches('/'), f("what").as_str()) {
            ("/admin/domains", "add") => {
                if let Err(e) = self.dir.add_domain(&f("name")).await {
                    return (false, e.to_string());
                }
                // It signs its mail from the start, as `agora domain add` does.
                let name = f("name").to_lowercase();
                let d = name.clone();
                match tokio::task::spawn_blocking(move || agora_mail::auth::generate_keys(&d)).await {
                    Ok(Ok(keys)) => {
                        let _ = self.store.add_dkim_keys(keys).await;
                    }
                    _ => tracing::warn!("admin: no DKIM keys made for {name}"),
                }
                (true, format!("Domain {name} added; publish its records below."))
            }
            ("/admin/domains", "remove") => {
                let r = self.store.remove_domain(&f("name")).await;
                done(r, format!("Domain {} removed.", f("name")))
            }
            // A check only shows; the domain page runs it when asked.
            ("/admin/domains", "check") => (true, format!("What resolvers see of {}:", f("name"))),
            ("/admin/users", "add") => {
                let quota = f("quota_mb").parse::<u64>().unwrap_or(0) * 1024 * 1024;
                let role = if f("admin") == "1" { Role::Admin } else { Role::User };
                let password = f("password");
                if password.chars().count() < 10 {
                    return (false, "A password needs at least 10 characters.".into());
                }
                let r =
                    self.dir.add_user_with(&f("login"), &f("name"), &password, quota, role, Default::default()).await;
                done(r, format!("User {} added.", f("login")))
            }
            ("/admin/users", "remove") if f("login").eq_ignore_ascii_case(&user.account.login) => {
                (false, "You cannot remove yourself.".into())
            }
            ("/admin/users", "remove") => {
                let r = self.store.remove_account(&f("login")).await;
                done(r, format!("User {} removed.", f("login")))
            }
            ("/admin/users", "password") => {
                let Ok(password) = agora_directory::generate_password() else {
                    return (false, "No randomness; try again.".into());
                };
                match self.dir.set_password(&f("login"), &password).await {
                    Ok(()) => {
                        // Whoever was signed in as them must sign in again.
                        if let Ok(Some(a)) = self.store.account_by_login(&f("login")).await {
                            let _ = self.store.remove_web_sessions(a.id, None).await;
                        }
                        (true, format!("New password of {}: {password} (shown once)", f("login")))
                    }
                    Err(e) => (false, e.to_string()),
                }
            }
            ("/admin/users", "name") => {
                let name: String = f("name").chars().filter(|c| !c.is_control()).take(200).collect();
                let update = AccountUpdate { display_name: Some(name), ..AccountUpdate::default() };
                let r = self.store.update_account(&f("login"), update).await;
                done(r, format!("Name of {} changed.", f("login")))
            }
            ("/admin/users", "quota") => {
                let quota = f("quota_mb").parse::<u64>().unwrap_or(0) * 1024 * 1024;
                let r = self.store.set_quota(&f("login"), quota).await;
                done(r, format!("Quota of {} set.", f("login")))
            }
            ("/admin/users", "role") if f("login").eq_ignore_ascii_case(&user.account.login) => {
                (false, "You cannot change your own role.".into())
            }
            ("/admin/users", "role") => {
                let role = if f("role") == "admin" { Role::Admin } else { Role::User };
                let update = AccountUpdate { role: Some(role), ..AccountUpdate::default() };
                let r = self.store.update_account(&f("login"), update).await;
                done(r, format!("Role of {} changed.", f("login")))
            }
            ("/admin/directory", "alias-add") => {
                let r = self.dir.add_alias(&f("address"), &f("target")).await;
                done(r, format!("Alias {} added.", f("address")))
            }
            ("/admin/directory", "alias-remove") => {
                let r = self.store.remove_alias(&f("address")).await;
                done(r, format!("Alias {} removed.", f("address")))
            }
            ("/admin/directory", "group-add") => {
                let r = self.dir.add_group(&f("address"), &f("name")).await;
                done(r, format!("Group {} added.", f("address")))
            }
            ("/admin/directory", "group-remove") => {
                let r = self.store.remove_group(&f("address")).await;
                done(r, format!("Group {} removed.", f("address")))
            }
            ("/admin/directory", "member-add") => {
                let r = self.dir.add_group_member(&f("address"), &f("member")).await;
                done(r, format!("{} is now in {}.", f("member"), f("address")))
            }
            ("/admin/directory", "member-remove") => {
                let r = self.store.remove_group_member(&f("address"), &f("member")).await;
                done(r, format!("{} left {}.", f("member"), f("address")))
            }
            ("/admin/directory", "contact-add") => {
                let address = match agora_directory::normalize_address(&f("address")) {
                    Ok(a) => a,
                    Err(e) => return (false, e.to_string()),
                };
                let mut profile = agora_store::Profile::default();
                agora_directory::derive_names(&f("name"), &mut profile);
                // In the address book of the domain chosen (the only one, when there is one).
                let domains = self.store.domains().await.unwrap_or_default();
                let domain = match (f("domain"), domains.as_slice()) {
                    (d, _) if !d.is_empty() => d.to_lowercase(),
                    (_, [one]) => one.name.clone(),
                    _ => return (false, "Say whose address book.".into()),
                };
                let contact =
                    agora_store::Contact { address, domain, display_name: f("name"), profile, ..Default::default() };
                let r = self.store.add_contact(contact).await;
                done(r, format!("Contact {} added.", f("address")))
            }
            ("/admin/directory", "contact-remove") => {
                let r = self.store.remove_contact(&f("address")).await;
                done(r, format!("Contact {} removed.", f("address")))
            }
            ("/admin/public", "add") => {
                let path = f("path");
                if path.is_empty() || path.contains(['*', '%']) || path.chars().any(char::is_control) {
                    return (false, "That cannot be a folder's path.".into());
                }
                let folder = agora_store::PublicFolder {
                    newsgroup: agora_store::newsgroup_name(&path),
                    address: Some(f("address")).filter(|a| !a.is_empty()),
                    path: path.clone(),
                    ..Default::default()
                };
                let r = self.store.add_public_folder(folder).await;
                done(r, format!("Public folder {path} added."))
            }
            ("/admin/public", "remove") => {
                let r = self.store.remove_public_folder(&f("path")).await;
                done(r, format!("Public folder {} removed.", f("path")))
            }
            ("/admin/public", "permission") => {
                let Some(rights) = agora_store::role_rights(&f("role")) else {
                    return (false, "That role is not known.".into());
                };
                let who = f("who").to_lowercase();
                let folders = self.store.public_folders().await.unwrap_or_default();
                let Some(folder) = folders.iter().find(|p| p.path == f("path")) else {
                    return (false, "There is no such public folder.".into());
                };
                if who.is_empty() {
                    return (false, "Say who gets the permission.".into());
                }
                let rights = (!rights.is_empty()).then_some(rights);
                let r = self.store.set_acl(folder.mailbox, &who, rights).await;
                done(r, format!("{who} is now {} of {}.", f("role"), f("path")))
            }
            ("/admin/queue", op @ ("retry" | "hold" | "release" | "delete")) => {
                let Ok(id) = f("id").parse::<i64>() else { return (false, "No such entry.".into()) };
                let outcome = match op {
                    "hold" => agora_store::QueueOutcome::Hold(true),
                    "delete" => agora_store::QueueOutcome::Done,
                    _ => agora_store::QueueOutcome::RetryNow,
                };
                let r = self.store.queue_update(id, outcome).await;
                if op != "delete" {
                    self.mail.wake().notify_one();
                }
                done(r, format!("Entry {id}: {op} done."))
            }
            _ => (false, "That is not something the console does.".into()),
        }
    }

    async fn domains_page(&self, user: &User, req: &WebRequest) -> String {
        let domains = self.store.domains().await.unwrap_or_default();
        let checked = (req.method == "POST" && req.form_field("what").as_deref() == Some("check"))
            .then(|| req.form_field("name").unwrap_or_default());
        let mut out = form(
            user,
            "/admin/domains",
            "add",
            &[],
            r#"<label for="dname">New domain</label> <input id="dname" name="name" required placeholder="example.org"> <button type="submit">Add</button>"#,
        );
        for d in &domains {
            let _ = write!(out, "<h2>{}</h2><p>", escape(&d.name));
            out.push_str(&form(
                user,
                "/admin/domains",
                "check",
                &[("name", &d.name)],
                r#"<button type="submit">Check DNS</button>"#,
            ));
            out.push(' ');
            out.push_str(&form(
                user,
                "/admin/domains",
                "remove",
                &[("name", &d.name)],
                r#"<button type="submit">Remove</button>"#,
            ));
            out.push_str("</p>");
            let Some(settings) = &self.zone else { continue };
            let Ok(input) = agora_mail::zone::ZoneInput::read(&*self.store, &d.name, settings, 1).await else {
                continue;
            };
            let records = agora_mail::zone::build(&input);
            let _ = write!(
                out,
                r#"<details><summary>Records to publish</summary><pre class="zone">{}</pre></details>"#,
                escape(&agora_mail::zone::zone_file(&d.name, &records))
            );
            if checked.as_deref() == Some(d.name.as_str())
                && let Some(check) = &self.dns_check
            {
                let findings = check(records).await;
                if findings.is_empty() {
                    out.push_str("<p>No resolver to ask.</p>");
                    continue;
                }
                out.push_str(r#"<table><thead><tr><th scope="col">Name</th><th scope="col">Type</th><th scope="col">DNS</th><th scope="col">Publish</th></tr></thead><tbody>"#);
                for f in findings {
                    let (state, seen) = match &f.seen {
                        _ if f.matches() => ("✓ agrees".to_string(), String::new()),
                        Ok(seen) if seen.is_empty() => ("✗ missing".to_string(), String::new()),
                        Ok(seen) => ("✗ differs".to_string(), format!(" (sees {})", seen.join(" | "))),
                        Err(e) => ("? unknown".to_string(), format!(" ({e})")),
                    };
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                        escape(&f.name),
                        escape(&f.rtype),
                        escape(&state),
                        escape(&seen),
                        escape(&f.expected.join(" | "))
                    );
                }
                out.push_str("</tbody></table>");
            }
        }
        out
    }

    async fn users_page(&self, user: &User) -> String {
        let mut out = form(
            user,
            "/admin/users",
            "add",
            &[],
            r#"<fieldset><legend>New user</legend><label for="ulogin">Address</label> <input id="ulogin" name="login" type="email" required> <label for="uname">Name</label> <input id="uname" name="name"> <label for="upw">Password</label> <input id="upw" name="password" type="password" minlength="10" required autocomplete="new-password"> <label for="uquota">Quota (MB, 0: none)</label> <input id="uquota" name="quota_mb" type="number" min="0" value="0"> <label><input type="checkbox" name="admin" value="1"> Administrator</label> <button type="submit">Add</button></fieldset>"#,
        );
        out.push_str(r#"<table><thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">Mail</th><th scope="col"><span class="hidden">Actions</span></th></tr></thead><tbody>"#);
        for a in self.store.accounts(None).await.unwrap_or_default() {
            let usage = if a.quota > 0 {
                let pct = (a.used as f64 / a.quota as f64 * 100.0).min(100.0);
                format!(
                    r#"<meter min="0" max="{}" value="{}" high="{}" title="{pct:.0}%">{pct:.0}%</meter> {} of {}"#,
                    a.quota,
                    a.used.min(a.quota),
                    a.quota / 10 * 9,
                    size(a.used),
                    size(a.quota)
                )
            } else {
                format!("{} (no quota)", size(a.used))
            };
            let login = a.login.as_str();
            let other_role = if a.role == Role::Admin { ("user", "Make user") } else { ("admin", "Make admin") };
            let actions = [
                form(
                    user,
                    "/admin/users",
                    "name",
                    &[("login", login)],
                    &format!(
                        r#"<label class="hidden" for="n{id}">Name</label><input id="n{id}" name="name" value="{}" maxlength="200"><button type="submit">Rename</button>"#,
                        escape(&a.display_name),
                        id = a.id
                    ),
                ),
                form(
                    user,
                    "/admin/users",
                    "password",
                    &[("login", login)],
                    r#"<button type="submit">Reset password</button>"#,
                ),
                form(
                    user,
                    "/admin/users",
                    "quota",
                    &[("login", login)],
                    &format!(
                        r#"<label class="hidden" for="q{id}">Quota in MB</label><input id="q{id}" name="quota_mb" type="number" min="0" value="{}" class="small"><button type="submit">Set quota</button>"#,
                        a.quota / 1024 / 1024,
                        id = a.id
                    ),
                ),
                form(
                    user,
                    "/admin/users",
                    "role",
                    &[("login", login), ("role", other_role.0)],
                    &format!(r#"<button type="submit">{}</button>"#, other_role.1),
                ),
                form(user, "/admin/users", "remove", &[("login", login)], r#"<button type="submit">Remove</button>"#),
            ];
            let _ = write!(
                out,
                "<tr><td>{}<br><small>{}</small></td><td>{}</td><td>{usage}</td><td>{}</td></tr>",
                escape(login),
                escape(&a.display_name),
                a.role.as_str(),
                actions.join(" ")
            );
        }
        out.push_str("</tbody></table>");
        out
    }

    async fn directory_page(&self, user: &User) -> String {
        let mut out = String::from("<h2>Aliases</h2>");
        out.push_str(&form(
            user,
            "/admin/directory",
            "alias-add",
            &[],
            r#"<label for="aaddr">Alias</label> <input id="aaddr" name="address" type="email" required> <label for="atarget">delivers to</label> <input id="atarget" name="target" type="email" required> <button type="submit">Add</button>"#,
        ));
        out.push_str("<ul>");
        for (alias, targets) in self.store.aliases().await.unwrap_or_default() {
            let _ = write!(
                out,
                "<li>{} → {} {}</li>",
                escape(&alias),
                escape(&targets.join(", ")),
                form(
                    user,
                    "/admin/directory",
                    "alias-remove",
                    &[("address", &alias)],
                    r#"<button type="submit">Remove</button>"#
                )
            );
        }
        out.push_str("</ul><h2>Groups</h2>");
        out.push_str(&form(
            user,
            "/admin/directory",
            "group-add",
            &[],
            r#"<label for="gaddr">Group address</label> <input id="gaddr" name="address" type="email" required> <label for="gname">Name</label> <input id="gname" name="name"> <button type="submit">Add</button>"#,
        ));
        for g in self.store.groups().await.unwrap_or_default() {
            let _ = write!(
                out,
                "<h3>{} <small>{}</small></h3><p>{}</p><ul>",
                escape(&g.address),
                escape(&g.display_name),
                form(
                    user,
                    "/admin/directory",
                    "group-remove",
                    &[("address", &g.address)],
                    r#"<button type="submit">Remove group</button>"#
                )
            );
            for m in &g.members {
                let _ = write!(
                    out,
                    "<li>{} {}</li>",
                    escape(m),
                    form(
                        user,
                        "/admin/directory",
                        "member-remove",
                        &[("address", &g.address), ("member", m)],
                        r#"<button type="submit">Remove</button>"#
                    )
                );
            }
            let _ = write!(
                out,
                "<li>{}</li></ul>",
                form(
                    user,
                    "/admin/directory",
                    "member-add",
                    &[("address", &g.address)],
                    r#"<label class="hidden" for="gm">Member</label><input name="member" type="email" required placeholder="member address"> <button type="submit">Add member</button>"#
                )
            );
        }
        out.push_str("<h2>Contacts</h2>");
        let books: String = self
            .store
            .domains()
            .await
            .unwrap_or_default()
            .iter()
            .map(|d| format!(r#"<option value="{}">{}</option>"#, escape(&d.name), escape(&d.name)))
            .collect();
        out.push_str(&form(
            user,
            "/admin/directory",
            "contact-add",
            &[],
            &format!(
                r#"<label for="caddr">Address</label> <input id="caddr" name="address" type="email" required> <label for="cname">Name</label> <input id="cname" name="name"> <label for="cbook">in the address book of</label> <select id="cbook" name="domain">{books}</select> <button type="submit">Add</button>"#
            ),
        ));
        out.push_str("<ul>");
        for c in self.store.contacts(None).await.unwrap_or_default() {
            let _ = write!(
                out,
                "<li>{} &lt;{}&gt; {}</li>",
                escape(&c.display_name),
                escape(&c.address),
                form(
                    user,
                    "/admin/directory",
                    "contact-remove",
                    &[("address", &c.address)],
                    r#"<button type="submit">Remove</button>"#
                )
            );
        }
        out.push_str("</ul>");
        out
    }

    async fn public_page(&self, user: &User) -> String {
        let mut out = form(
            user,
            "/admin/public",
            "add",
            &[],
            r#"<label for="ppath">New public folder</label> <input id="ppath" name="path" required placeholder="Sales/EMEA"> <label for="paddr">Mail address (optional)</label> <input id="paddr" name="address" type="email"> <button type="submit">Add</button>"#,
        );
        out.push_str(r#"<table><thead><tr><th scope="col">Folder</th><th scope="col">Newsgroup, address</th><th scope="col">Permissions</th><th scope="col"><span class="hidden">Actions</span></th></tr></thead><tbody>"#);
        let roles: String = ["reader", "author", "editor", "moderator", "owner", "none"]
            .iter()
            .map(|r| format!(r#"<option value="{r}">{r}</option>"#))
            .collect();
        for p in self.store.public_folders().await.unwrap_or_default() {
            let acl = self.store.acl(p.mailbox).await.unwrap_or_default();
            let who: Vec<String> =
                acl.iter().map(|(w, r)| format!("{} ({})", escape(w), escape(&agora_store::rights_role(r)))).collect();
            let grant = form(
                user,
                "/admin/public",
                "permission",
                &[("path", &p.path)],
                &format!(
                    r#"<input name="who" required placeholder="anyone, a user or a group" aria-label="Who"> <select name="role" aria-label="Role">{roles}</select> <button type="submit">Set</button>"#
                ),
            );
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}<br>{}</td><td>{}<br>{grant}</td><td>{}</td></tr>",
                escape(&p.path),
                escape(p.newsgroup.as_deref().unwrap_or("-")),
                escape(p.address.as_deref().unwrap_or("-")),
                if who.is_empty() { "administrators only".to_string() } else { who.join(", ") },
                form(user, "/admin/public", "remove", &[("path", &p.path)], r#"<button type="submit">Remove</button>"#)
            );
        }
        out.push_str("</tbody></table>");
        out
    }

    async fn queue_page(&self, user: &User) -> String {
        let queued = self.store.queued().await.unwrap_or_default();
        if queued.is_empty() {
            return "<p>The queue is empty.</p>".into();
        }
        let mut out = String::from(
            r#"<table><thead><tr><th scope="col">Entry</th><th scope="col">From → to</th><th scope="col">Queued</th><th scope="col">Attempts</th><th scope="col">Next</th><th scope="col">Last error</th><th scope="col"><span class="hidden">Actions</span></th></tr></thead><tbody>"#,
        );
        for e in queued.iter().take(1000) {
            let id = e.id.to_string();
            let act = |what: &str, label: &str| {
                form(user, "/admin/queue", what, &[("id", &id)], &format!(r#"<button type="submit">{label}</button>"#))
            };
            let actions = [
                act("retry", "Retry now"),
                if e.held { act("release", "Release") } else { act("hold", "Hold") },
                act("delete", "Delete"),
            ];
            let _ = write!(
                out,
                "<tr><td>{id}{}</td><td>&lt;{}&gt; → &lt;{}&gt;</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if e.held { " (held)" } else { "" },
                escape(&e.mail_from),
                escape(&e.recipient),
                agora_store::time::rfc3339(e.created),
                e.attempts,
                agora_store::time::rfc3339(e.next_attempt),
                escape(&e.last_error),
                actions.join(" ")
            );
        }
        out.push_str("</tbody></table>");
        out
    }

    fn track_page(&self, req: &WebRequest) -> String {
        let q = |n: &str| req.query_field(n).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (sender, recipient, id) = (q("sender"), q("recipient"), q("id"));
        let mut out = format!(
            r#"<form class="tools" method="get" action="/admin/track" role="search"><label for="ts">Sender</label><input id="ts" name="sender" value="{}"><label for="tr">Recipient</label><input id="tr" name="recipient" value="{}"><label for="ti">Queue id</label><input id="ti" name="id" value="{}"><button type="submit">Search</button></form>"#,
            escape(sender.as_deref().unwrap_or("")),
            escape(recipient.as_deref().unwrap_or("")),
            escape(id.as_deref().unwrap_or(""))
        );
        if sender.is_none() && recipient.is_none() && id.is_none() {
            return out;
        }
        let Some(log) = &self.tracking_log else {
            out.push_str("<p>Tracking is off.</p>");
            return out;
        };
        let events = agora_mail::tracking::search(log, sender.as_deref(), recipient.as_deref(), id.as_deref())
            .unwrap_or_default();
        if events.is_empty() {
            out.push_str("<p>No matching events.</p>");
            return out;
        }
        out.push_str(r#"<table><thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Id</th><th scope="col">From → to</th><th scope="col">Where</th></tr></thead><tbody>"#);
        for e in events.iter().rev().take(500) {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>&lt;{}&gt; → {}</td><td>{}{}</td></tr>",
                agora_store::time::rfc3339(e.time),
                escape(&e.event),
                escape(&e.id),
                escape(&e.sender),
                escape(&e.recipients.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(", ")),
                escape(&e.remote),
                if e.reply.is_empty() { String::new() } else { format!(" “{}”", escape(&e.reply)) }
            );
        }
        out.push_str("</tbody></table>");
        out
    }

    /// Takes a sample of the counters now and every five minutes, for the charts.
    pub async fn sample_metrics(self: std::sync::Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let Some(render) = self.metrics else { return };
        loop {
            if let Some(page) = render() {
                self.history.record(agora_store::now(), &page);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(crate::charts::EVERY_SECS)) => {}
            }
        }
    }
}
