//! Fuzzes the Sieve parser and interpreter: any text compiles or names a line, and a
//! script that compiles runs over a message to an outcome (no panic, no hang).
#![no_main]
use libfuzzer_sys::fuzz_target;

struct Env;

#[async_trait::async_trait]
impl agora_sieve::Environment for Env {
    async fn mailbox_exists(&self, name: &str) -> bool {
        name.len() % 2 == 0
    }
    async fn duplicate(&self, key: &str, _seconds: u64) -> bool {
        key.len() % 2 == 1
    }
    async fn script(&self, name: &str, _global: bool) -> Option<String> {
        (name == "self").then(|| "require \"include\"; include \"self\";".to_string())
    }
}

const MESSAGE: &[u8] = b"From: A <a@example.org>\r\nTo: b+x@example.com\r\nSubject: =?UTF-8?Q?hi?= [l]\r\n\
Date: Tue, 2 Jan 2024 09:30:00 +0100\r\nMessage-ID: <1@x>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nbody text\r\n--b--\r\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match agora_sieve::compile(text) {
        Err(e) => assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}"),
        Ok(script) => {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let input = agora_sieve::Input {
                message: MESSAGE,
                from: "a@example.org",
                to: "b+x@example.com",
                auth: None,
                now: 1_704_189_600,
            };
            let o = rt.block_on(agora_sieve::run(&script, &input, &Env, &agora_sieve::Limits::default()));
            assert!(o.actions.len() <= 33);
            if o.error.is_some() {
                assert_eq!(o.actions, [agora_sieve::Action::Keep { flags: vec![] }]);
            }
        }
    }
});
