//! The remote management interface every RPC server answers (C706 Appendix Q,
//! afa8bd80-7d8a-11c9-bef4-08002b102989 v1.0): the interfaces an endpoint serves and
//! whether it listens. What it lists, the endpoint mapper shows anyway, so it is open to
//! anonymous callers; stopping the server over RPC is refused.

use crate::assoc::{BoxFuture, Call, Interface, status};
use crate::ndr::Writer;
use crate::pdu::{Syntax, Uuid};

pub fn syntax() -> Syntax {
    Syntax { uuid: Uuid::parse("afa8bd80-7d8a-11c9-bef4-08002b102989").unwrap_or_default(), version: 1 }
}

pub struct Management {
    /// The other interfaces of this endpoint.
    pub interfaces: Vec<Syntax>,
}

impl Interface for Management {
    fn syntax(&self) -> Syntax {
        syntax()
    }
    fn annotation(&self) -> &'static str {
        "Remote management"
    }
    fn anonymous(&self) -> bool {
        true
    }
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Vec<u8>, u32>> {
        Box::pin(async move {
            let mut w = Writer::default();
            match call.opnum {
                // inq_if_ids: a unique pointer to a vector of pointers to interface ids.
                0 => {
                    let n = self.interfaces.len() as u32;
                    w.pointer(true);
                    w.u32(n);
                    w.u32(n);
                    for _ in &self.interfaces {
                        w.pointer(true);
                    }
                    for s in &self.interfaces {
                        w.uuid(&s.uuid);
                        w.u16((s.version & 0xffff) as u16);
                        w.u16((s.version >> 16) as u16);
                    }
                    w.u32(0);
                }
                // is_server_listening: the status, then true.
                2 => {
                    w.u32(0);
                    w.u32(1);
                }
                // stop_server_listening: not over the network.
                3 => w.u32(status::ACCESS_DENIED),
                // inq_stats, inq_princ_name: not offered.
                1 | 4 => return Err(status::ACCESS_DENIED),
                _ => return Err(status::OP_RNG_ERROR),
            }
            Ok(w.into_bytes())
        })
    }
}
