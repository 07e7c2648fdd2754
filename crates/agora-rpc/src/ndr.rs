//! NDR 2.0 transfer syntax (C706 §14): the primitives a hand-written marshaller needs.
//! The reader follows the sender's byte order and refuses counts the buffer cannot
//! hold (so no allocation is larger than the request); the writer is little-endian
//! and numbers pointer referents as Windows does.

use crate::pdu::Uuid;

/// Why a stub could not be read; answered with the fault `nca_s_fault_ndr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad stub data: {0}")]
pub struct NdrError(pub &'static str);

pub type NdrResult<T> = Result<T, NdrError>;

/// Reads NDR from a request's stub.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], little: bool) -> Self {
        Reader { buf, pos: 0, little }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> NdrResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(NdrError("length overflow"))?;
        let s = self.buf.get(self.pos..end).ok_or(NdrError("stub shorter than its fields"))?;
        self.pos = end;
        Ok(s)
    }
    pub fn align(&mut self, n: usize) -> NdrResult<()> {
        let pad = (n - self.pos % n) % n;
        // A stub may end right after its last field, before padding that leads nowhere.
        if self.pos + pad > self.buf.len() {
            self.pos = self.buf.len();
            return Ok(());
        }
        self.take(pad).map(|_| ())
    }
    pub fn u8(&mut self) -> NdrResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> NdrResult<u16> {
        self.align(2)?;
        let b: [u8; 2] = self.take(2)?.try_into().map_err(|_| NdrError("u16"))?;
        Ok(if self.little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }
    pub fn u32(&mut self) -> NdrResult<u32> {
        self.align(4)?;
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| NdrError("u32"))?;
        Ok(if self.little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }
    pub fn i32(&mut self) -> NdrResult<i32> {
        Ok(self.u32()? as i32)
    }
    pub fn u64(&mut self) -> NdrResult<u64> {
        self.align(8)?;
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| NdrError("u64"))?;
        Ok(if self.little { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    }
    /// A GUID: one u32, two u16 in the sender's order, then eight bytes.
    pub fn uuid(&mut self) -> NdrResult<Uuid> {
        self.align(4)?;
        let mut b: [u8; 16] = self.take(16)?.try_into().map_err(|_| NdrError("uuid"))?;
        if !self.little {
            b[0..4].reverse();
            b[4..6].reverse();
            b[6..8].reverse();
        }
        Ok(Uuid(b))
    }
    /// A context handle (attributes, then its UUID): the UUID, all zeros for NULL.
    pub fn context_handle(&mut self) -> NdrResult<[u8; 16]> {
        self.u32()?;
        Ok(self.uuid()?.0)
    }
    /// A unique or full pointer's referent id: `None` for NULL.
    pub fn pointer(&mut self) -> NdrResult<Option<u32>> {
        Ok(Some(self.u32()?).filter(|id| *id != 0))
    }
    /// A conformant array's maximum count, refused when `size` bytes each could not
    /// fit in what is left.
    pub fn count(&mut self, size: usize) -> NdrResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size.max(1)) > self.remaining() {
            return Err(NdrError("array larger than the stub"));
        }
        Ok(n)
    }
    /// A varying array's offset and actual count (the offset must be 0 here).
    pub fn variance(&mut self, size: usize, max: usize) -> NdrResult<usize> {
        let offset = self.u32()? as usize;
        let actual = self.u32()? as usize;
        if offset != 0 || actual > max || actual.saturating_mul(size.max(1)) > self.remaining() {
            return Err(NdrError("varying array out of its bounds"));
        }
        Ok(actual)
    }
    /// A conformant varying string of 8-bit characters (`[string] char *`'s referent),
    /// without its terminating NUL.
    pub fn string8(&mut self) -> NdrResult<Vec<u8>> {
        let max = self.count(1)?;
        let n = self.variance(1, max)?;
        let mut s = self.take(n)?.to_vec();
        if s.last() == Some(&0) {
            s.pop();
        }
        Ok(s)
    }
    /// A conformant varying string of UTF-16 units, decoded (lone surrogates replaced).
    pub fn string16(&mut self) -> NdrResult<String> {
        let max = self.count(2)?;
        let n = self.variance(2, max)?;
        let mut units = Vec::with_capacity(n);
        for _ in 0..n {
            units.push(self.u16()?);
        }
        if units.last() == Some(&0) {
            units.pop();
        }
        Ok(String::from_utf16_lossy(&units))
    }
}

/// Writes NDR for a response's stub (little-endian).
pub struct Writer {
    pub buf: Vec<u8>,
    next_ref: u32,
}

impl Default for Writer {
    fn default() -> Self {
        Writer { buf: Vec::new(), next_ref: 0x0002_0000 }
    }
}

impl Writer {
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    pub fn align(&mut self, n: usize) {
        let pad = (n - self.buf.len() % n) % n;
        self.buf.extend(std::iter::repeat_n(0, pad));
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.align(2);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.u32(v as u32);
    }
    pub fn u64(&mut self, v: u64) {
        self.align(8);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn uuid(&mut self, u: &Uuid) {
        self.align(4);
        self.buf.extend_from_slice(&u.0);
    }
    /// A context handle; None writes the NULL handle (all zeros).
    pub fn context_handle(&mut self, h: Option<[u8; 16]>) {
        self.u32(0);
        self.uuid(&Uuid(h.unwrap_or_default()));
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// A unique pointer: a fresh referent id, or 0 for NULL. The caller writes the
    /// referent where NDR defers it.
    pub fn pointer(&mut self, present: bool) {
        if present {
            let id = self.next_ref;
            self.next_ref += 4;
            self.u32(id);
        } else {
            self.u32(0);
        }
    }
    /// A conformant varying string of 8-bit characters with its NUL.
    pub fn string8(&mut self, s: &[u8]) {
        let n = s.len() as u32 + 1;
        self.u32(n);
        self.u32(0);
        self.u32(n);
        self.bytes(s);
        self.u8(0);
    }
    /// A conformant varying UTF-16 string with its NUL.
    pub fn string16(&mut self, s: &str) {
        let units: Vec<u16> = s.encode_utf16().chain(std::iter::once(0)).collect();
        let n = units.len() as u32;
        self.u32(n);
        self.u32(0);
        self.u32(n);
        for u in units {
            self.buf.extend_from_slice(&u.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_with_their_nul() {
        let mut w = Writer::default();
        w.u8(1);
        w.string16("Zoë");
        w.string8(b"/o=x");
        let bytes = w.into_bytes();
        assert_eq!(&bytes[4..8], &4u32.to_le_bytes(), "aligned, three units and the NUL");
        let mut r = Reader::new(&bytes, true);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.string16().as_deref(), Ok("Zoë"));
        assert_eq!(r.string8().as_deref(), Ok(&b"/o=x"[..]));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn pointers_are_numbered_and_null_reads_as_none() {
        let mut w = Writer::default();
        w.pointer(true);
        w.pointer(false);
        w.pointer(true);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes, true);
        assert_eq!(r.pointer(), Ok(Some(0x20000)));
        assert_eq!(r.pointer(), Ok(None));
        assert_eq!(r.pointer(), Ok(Some(0x20004)));
    }

    #[test]
    fn big_endian_integers_and_guids() {
        let bytes = [0, 0, 0, 7, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 9, 10, 11, 12, 13, 14, 15, 16];
        let mut r = Reader::new(&bytes, false);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.uuid().map(|u| u.0[..8].to_vec()), Ok(vec![4, 3, 2, 1, 6, 5, 8, 7]));
    }

    #[test]
    fn counts_beyond_the_stub_are_refused() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0], true);
        assert!(r.count(1).is_err(), "no 2 GB allocation for an 8-byte stub");
        let mut r = Reader::new(&[2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, b'a', b'b'], true);
        assert!(r.string8().is_err(), "actual count above the maximum");
        let mut r = Reader::new(&[1, 0, 0], true);
        assert!(r.u32().is_err());
    }
}
