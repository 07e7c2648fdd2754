//! Routing groups and connectors through `agora routing`: the topology kept in the
//! store, the table's versions and digest, the routes it gives, refusals.
#![allow(clippy::unwrap_used)]

mod common;

use common::Agora;

#[test]
fn topology_from_the_command_line() {
    let a = Agora::start();
    let ok = |args: &[&str]| a.cli_ok(&[&["routing"], args].concat(), None);
    ok(&["org", "acme"]);
    ok(&["group", "add", "A", "--domain", "a.example"]);
    ok(&["group", "add", "B"]);
    ok(&["group", "add", "C", "--domain", "c.example"]);
    ok(&["group", "member", "A", "a1", "--host", "127.0.0.11"]);
    ok(&["group", "member", "A", "a2", "--host", "127.0.0.12", "--smtp-port", "10025"]);
    ok(&["group", "member", "B", "b1", "--host", "127.0.0.13"]);
    ok(&["group", "member", "C", "c1", "--host", "127.0.0.14"]);
    ok(&["connector", "add", "ab", "--from", "A", "--to", "B", "--cost", "1", "--bridgeheads-from", "a1"]);
    ok(&["connector", "add", "bc", "--from", "B", "--to", "C", "--cost", "1"]);
    let said = ok(&["connector", "add", "ac", "--from", "A", "--to", "C", "--cost", "5"]);
    assert!(said.contains("routing table version 11.0"), "{said}");
    let show = ok(&["show"]);
    assert!(show.contains("route A -> C: A -[ab]-> B -[bc]-> C (cost 2)"), "{show}");
    assert!(show.contains("group A  master a1"), "{show}");
    assert!(show.contains("member a2  127.0.0.12  smtp 10025  routing 691"), "{show}");
    // A cheaper direct connector changes the route; a costlier one does not.
    ok(&["connector", "set", "ac", "--cost", "1"]);
    let show = ok(&["show"]);
    assert!(show.contains("route A -> C: A -[ac]-> C (cost 1)"), "{show}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["show", "--json"])).unwrap();
    assert_eq!(json["version"]["major"], 12);
    assert_eq!(json["digest"].as_str().unwrap().len(), 64);
    assert_eq!(json["connectors"].as_array().unwrap().len(), 3);
    // Refusals, each in one line.
    for (args, says) in [
        (&["connector", "add", "aa", "--from", "A", "--to", "A"][..], "two different groups"),
        (&["connector", "add", "x", "--from", "A", "--to", "B", "--bridgeheads-to", "a1"][..], "not a member of B"),
        (&["connector", "add", "out", "--from", "A"][..], "needs --spaces"),
        (&["group", "member", "B", "a1", "--host", "h"][..], "is a member of A"),
        (&["group", "add", "bad name"][..], "letters, digits"),
        (&["group", "domain", "B", "c.example"][..], "is in C already"),
    ] {
        let out = a.cli(&[&["routing"], args].concat(), None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }
    // Removing a group takes its connectors with it.
    ok(&["group", "remove", "B"]);
    let show = ok(&["show"]);
    assert!(
        !show.contains("connector ab") && !show.contains("connector bc") && show.contains("connector ac"),
        "{show}"
    );
}
