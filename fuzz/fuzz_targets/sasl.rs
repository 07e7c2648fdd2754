//! Fuzzes the SASL exchanges every protocol shares: the first byte picks PLAIN, LOGIN or
//! SCRAM-SHA-256, the rest is split at 0xFF into the client's responses (and each also
//! goes through the base64 line decoder). The directory is a real store with one user.
#![no_main]
use std::sync::{Arc, OnceLock};

use agora_directory::Directory;
use agora_directory::sasl::{Exchange, Mechanism, Step, decode_line};
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    dir: Directory,
    _data: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn agora_store::Store> = Arc::new(agora_store::sql::SqlStore::open(data.path()).unwrap());
        let dir = Directory::new(store);
        rt.block_on(async {
            dir.add_domain("example.org").await.unwrap();
            dir.add_user("a@example.org", "A", "pw", 0, agora_store::Role::User).await.unwrap();
        });
        World { rt, dir, _data: data }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    for part in rest.split(|&b| b == 0xff) {
        let _ = decode_line(&String::from_utf8_lossy(part));
    }
    // PLAIN and LOGIN with a real password check cost an argon2 run each: mostly SCRAM.
    let mech = match pick % 8 {
        0 => Mechanism::Plain,
        1 => Mechanism::Login,
        _ => Mechanism::ScramSha256,
    };
    let w = world();
    let dir = &w.dir;
    w.rt.block_on(async {
        let mut ex = Exchange::new(mech);
        for part in rest.split(|&b| b == 0xff).take(4) {
            match ex.step(dir, Some(part)).await {
                Step::Challenge(_) => continue,
                _ => break,
            }
        }
    });
});
