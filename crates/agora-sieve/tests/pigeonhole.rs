//! The public Sieve test suite (Pigeonhole's `.svtest` files, fetched by the test
//! dependencies into target/sieve-suite) run through this crate's interpreter with the
//! suite's own extension. Files needing an extension or suite command this server does
//! not have are skipped and named; every test of the rest must pass, except those
//! listed with their reason in known-failures.txt (so a regression fails, and a fix
//! shows up as an entry to remove).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn suite_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/sieve-suite");
    let dir = std::env::var_os("AGORA_SIEVE_SUITE").map(PathBuf::from).unwrap_or(root);
    dir.join("tests").is_dir().then(|| dir.join("tests"))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "svtest") {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn pigeonhole_test_suite() {
    let Some(dir) = suite_dir() else {
        assert!(std::env::var_os("AGORA_REQUIRE_PEERS").is_none(), "the Sieve test suite is not installed");
        eprintln!("skipped: the Sieve test suite is not in target/sieve-suite");
        return;
    };
    let known = include_str!("known-failures.txt");
    let known: Vec<&str> = known
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(" # ").next().unwrap().trim())
        .collect();
    let mut all = Vec::new();
    files(&dir, &mut all);
    let (mut passed, mut failed, mut skipped, mut known_failed) = (0, 0, 0, 0);
    let mut unexpected = Vec::new();
    for f in &all {
        let rel = f.strip_prefix(&dir).unwrap().display().to_string();
        match agora_sieve::testsuite::run_file(f).await {
            Err(e) => {
                let m = e.message.as_str();
                if m.contains("unknown extension") || m.contains("not supported by this runner") {
                    skipped += 1;
                    println!("sieve-suite: skip {rel}: {e}");
                } else if known.contains(&rel.as_str()) {
                    known_failed += 1;
                    println!("sieve-suite: known {rel}: {e}");
                } else {
                    failed += 1;
                    unexpected.push(format!("{rel} -- does not compile: {e}"));
                }
            }
            Ok(r) => {
                passed += r.passed.len();
                for (name, why) in r.failed {
                    let id = format!("{rel}: {}", name.trim());
                    if known.contains(&id.as_str()) {
                        known_failed += 1;
                        println!("sieve-suite: known {id}: {why}");
                    } else {
                        failed += 1;
                        unexpected.push(format!("{id} -- {why}"));
                    }
                }
            }
        }
    }
    for u in &unexpected {
        println!("sieve-suite: FAIL {u}");
    }
    println!(
        "sieve-suite: {} files, {passed} tests passed, {failed} failed, {known_failed} known failures, {skipped} files skipped",
        all.len()
    );
    assert!(all.len() > 100, "the suite looks incomplete");
    assert!(unexpected.is_empty(), "{} unexpected failures", unexpected.len());
}
