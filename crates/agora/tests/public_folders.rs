//! Public folders from the command line: the hierarchy, newsgroup names from paths,
//! addresses, permissions as roles that subfolders inherit, and what is refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::Agora;

#[test]
fn public_folders_are_managed_from_the_command_line() {
    let a = Agora::start();
    a.cli_ok(&["user", "add", "bob@example.org", "--password-stdin"], Some("pw\n"));
    let out = a.cli_ok(&["public", "add", "Sales"], None);
    assert!(out.contains("public folder Sales added, newsgroup sales"), "{out}");
    a.cli_ok(&["public", "permission", "Sales", "anyone", "reader"], None);
    let out = a.cli_ok(&["public", "add", "Sales/EMEA Team", "--address", "emea@example.org"], None);
    assert!(out.contains("newsgroup sales.emea-team, address emea@example.org"), "{out}");
    a.cli_ok(&["public", "permission", "Sales/EMEA Team", "bob@example.org", "author"], None);
    a.cli_ok(&["public", "add", "Internal", "--no-newsgroup"], None);
    a.cli_ok(&["public", "add", "Announcements", "--newsgroup", "example.announce"], None);

    let list = a.cli_ok(&["public", "list"], None);
    let line = |path: &str| list.lines().find(|l| l.starts_with(&format!("{path}  "))).unwrap().to_string();
    assert_eq!(line("Sales"), "Sales  newsgroup sales  address -  anyone=reader");
    // The subfolder kept what it inherited and got its own.
    let emea = line("Sales/EMEA Team");
    assert!(emea.contains("anyone=reader") && emea.contains("bob@example.org=author"), "{list}");
    assert!(line("Internal").contains("newsgroup -"), "{list}");
    assert!(line("Announcements").contains("newsgroup example.announce"), "{list}");

    // Refused, each with a reason.
    for (args, why) in [
        (vec!["public", "add", "Nowhere/Child"], "not found"),
        (vec!["public", "add", "Other", "--newsgroup", "sales"], "exists"),
        (vec!["public", "add", "Bad", "--newsgroup", "no..dots"], "not a newsgroup name"),
        (vec!["public", "permission", "Sales", "nobody@example.org", "reader"], "no such account"),
        (vec!["public", "permission", "Sales", "anyone", "king"], "say reader"),
        (vec!["public", "remove", "Sales"], "subfolders"),
    ] {
        let out = a.cli(&args, None);
        let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    }
    // A folder's address is taken: no account can have it.
    let out = a.cli(&["user", "add", "emea@example.org", "--password-stdin"], Some("pw\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("public folder"), "{err}");
    // The organisation's own account is not a user.
    assert!(!a.cli_ok(&["user", "list"], None).contains("public-folders"));

    a.cli_ok(&["public", "rename", "Sales", "Marketing"], None);
    a.cli_ok(&["public", "permission", "Marketing", "anyone", "none"], None);
    let list = a.cli_ok(&["public", "list"], None);
    assert!(list.contains("Marketing/EMEA Team  newsgroup sales.emea-team"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("Marketing  ") && l.contains("only administrators")), "{list}");
    a.cli_ok(&["public", "remove", "Marketing/EMEA Team"], None);
    a.cli_ok(&["public", "remove", "Marketing"], None);
    assert!(!a.cli_ok(&["public", "list"], None).contains("Marketing"));
}
