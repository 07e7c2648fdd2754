//! The address book referral interface (MS-OXABREF, 1544f5e0-613c-11d1-93df-00c04fd7bd09
//! v1.0): tells a client which server answers NSPI, as Exchange's DSProxy did. Here it
//! is always this server.

use crate::assoc::{BoxFuture, Call, Interface, status};
use crate::ndr::{NdrResult, Reader, Writer};
use crate::pdu::{Syntax, Uuid};

pub fn syntax() -> Syntax {
    Syntax { uuid: Uuid::parse("1544f5e0-613c-11d1-93df-00c04fd7bd09").unwrap_or_default(), version: 1 }
}

/// E_INVALIDARG (MS-OXABREF answers it when a required out parameter is missing).
const INVALID_ARG: u32 = 0x8007_0057;

pub struct Referral {
    /// The host name clients should use for NSPI.
    pub server: String,
}

impl Referral {
    /// RfrGetNewDSA: the server for the address book.
    fn new_dsa(&self, call: &Call<'_>) -> NdrResult<Vec<u8>> {
        let mut r = Reader::new(call.stub, call.little);
        let _flags = r.u32()?;
        let _user_dn = r.string8()?;
        // ppszUnused and ppszServer: unique pointers to unique pointers to strings.
        let mut outer = [false; 2];
        for o in &mut outer {
            if r.pointer()?.is_some() {
                *o = true;
                if r.pointer()?.is_some() {
                    r.string8()?;
                }
            }
        }
        let mut w = Writer::default();
        w.pointer(outer[0]);
        if outer[0] {
            w.pointer(false);
        }
        w.pointer(outer[1]);
        if outer[1] {
            w.pointer(true);
            w.string8(self.server.as_bytes());
        }
        w.u32(if outer[1] { 0 } else { INVALID_ARG });
        Ok(w.into_bytes())
    }

    /// RfrGetFQDNFromServerDN: the host name of the server a DN names (this one).
    fn fqdn(&self, call: &Call<'_>) -> NdrResult<Vec<u8>> {
        let mut r = Reader::new(call.stub, call.little);
        let _flags = r.u32()?;
        let _cb = r.u32()?;
        let _dn = r.string8()?;
        let mut w = Writer::default();
        w.pointer(true);
        w.string8(self.server.as_bytes());
        w.u32(0);
        Ok(w.into_bytes())
    }
}

impl Interface for Referral {
    fn syntax(&self) -> Syntax {
        syntax()
    }
    fn annotation(&self) -> &'static str {
        "Address book referral"
    }
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Vec<u8>, u32>> {
        Box::pin(async move {
            let out = match call.opnum {
                0 => self.new_dsa(&call),
                1 => self.fqdn(&call),
                _ => return Err(status::OP_RNG_ERROR),
            };
            out.map_err(|_| status::BAD_STUB_DATA)
        })
    }
}
