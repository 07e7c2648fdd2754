//! Fuzzes what DCE/RPC reads inside its PDUs: the first byte picks NSPI (a call on a
//! handle from a real NspiBind, over a store with people), the endpoint mapper, MAPI
//! restrictions and values, NTLM messages, towers, or a whole association fed the rest
//! fragment by fragment. Anything is answered or refused, never a panic or a hang.
#![no_main]
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use agora_rpc::assoc::{Association, Call, Group, Groups, Interface, Server};
use agora_rpc::ndr::Reader;
use agora_rpc::{epm, mapi, mgmt, nspi, ntlm};
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    book: Arc<nspi::AddressBook>,
    mapper: Arc<epm::Mapper>,
    group: Arc<Group>,
    handle: [u8; 20],
    _data: tempfile::TempDir,
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn call<'a>(opnum: u16, stub: &'a [u8], group: &'a Arc<Group>) -> Call<'a> {
    Call { opnum, stub, little: true, object: None, caller: None, group, peer: LOCAL, local: LOCAL }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn agora_store::Store> = Arc::new(agora_store::sql::SqlStore::open(data.path()).unwrap());
        let dir = agora_directory::Directory::new(Arc::clone(&store));
        rt.block_on(async {
            dir.add_domain("example.org").await.unwrap();
            dir.add_user("ann@example.org", "Ann Lee", "pw", 0, agora_store::Role::User).await.unwrap();
            dir.add_user("bob@example.org", "Bob Stone", "pw", 0, agora_store::Role::User).await.unwrap();
        });
        let book = Arc::new(nspi::AddressBook {
            store,
            organization: "Agora".into(),
            server_guid: [7; 16],
            book: Default::default(),
            mids: Default::default(),
        });
        let mapper = Arc::new(epm::Mapper {
            endpoints: vec![epm::Endpoint { syntax: nspi::syntax(), annotation: "NSPI".into(), port: 6004 }],
        });
        let group = Groups::default().join(0).unwrap();
        // NspiBind: flags, a STAT, no server GUID wanted.
        let bind = [0u8; 4 + 36 + 4];
        let out = rt.block_on(book.call(call(0, &bind, &group))).unwrap();
        let handle: [u8; 20] = out[4..24].try_into().unwrap();
        World { rt, book, mapper, group, handle, _data: data }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let w = world();
    match pick % 8 {
        0 | 1 => {
            // An NSPI call: the opnum, then the stub after the bound handle.
            let Some((&op, stub)) = rest.split_first() else { return };
            let mut full = w.handle.to_vec();
            full.extend_from_slice(stub);
            let opnum = u16::from(op % 22).max(2);
            let _ = w.rt.block_on(w.book.call(call(opnum, &full, &w.group)));
        }
        2 => {
            let Some((&op, stub)) = rest.split_first() else { return };
            let _ = w.rt.block_on(w.mapper.call(call(u16::from(op % 8), stub, &w.group)));
        }
        3 => {
            let _ = mapi::read_restriction_ptr(&mut Reader::new(rest, true));
            let _ = mapi::read_value(&mut Reader::new(rest, false));
            let _ = mapi::read_tags_ptr(&mut Reader::new(rest, true));
            let _ = mapi::read_strings(&mut Reader::new(rest, true), true);
            let _ = mapi::read_strings(&mut Reader::new(rest, true), false);
        }
        4 => {
            if let Some((server, _)) = ntlm::Server::challenge(rest, &ntlm::Names::default()) {
                if let Some(auth) = ntlm::Authenticate::parse(rest) {
                    let _ = server.verify(&auth, &[1; 16]);
                    let _ = server.anonymous(&auth);
                }
            }
            if let Some(auth) = ntlm::Authenticate::parse(rest) {
                let _ = ntlm::Server::is_anonymous(&auth);
            }
        }
        5 => {
            let _ = epm::parse_tower(rest);
        }
        _ => {
            // An association with the mapper and the management interface, fed the
            // input as fragments (by their own lengths, the rest as one).
            let server = Arc::new(Server {
                interfaces: vec![
                    w.mapper.clone() as Arc<dyn Interface>,
                    Arc::new(mgmt::Management { interfaces: vec![epm::syntax()] }),
                ],
                groups: Arc::new(Groups::default()),
                accounts: None,
                port: 135,
                max_request: 64 * 1024,
            });
            let mut a = Association::new(server, LOCAL, LOCAL);
            let mut at = 0;
            w.rt.block_on(async {
                while at < rest.len() && !a.closed {
                    let n = agora_rpc::pdu::fragment_length(&rest[at..]).unwrap_or(rest.len() - at);
                    let n = n.clamp(1, rest.len() - at);
                    let _ = a.fragment(rest[at..at + n].to_vec()).await;
                    at += n;
                }
            });
        }
    }
});
