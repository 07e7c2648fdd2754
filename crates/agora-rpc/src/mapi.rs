//! MAPI values as NSPI carries them (MS-OXNSPI §2.2): property tags and values,
//! property rows and row sets written in NDR (embedded pointers deferred depth-first,
//! as the NDR engine lays them out), and the restrictions and targets clients send.

use crate::ndr::{NdrError, NdrResult, Reader, Writer};

pub const PT_SHORT: u32 = 0x0002;
pub const PT_LONG: u32 = 0x0003;
pub const PT_ERROR: u32 = 0x000A;
pub const PT_BOOLEAN: u32 = 0x000B;
pub const PT_STRING8: u32 = 0x001E;
pub const PT_UNICODE: u32 = 0x001F;
pub const PT_SYSTIME: u32 = 0x0040;
pub const PT_CLSID: u32 = 0x0048;
pub const PT_BINARY: u32 = 0x0102;
pub const PT_MV_STRING8: u32 = 0x101E;
pub const PT_MV_UNICODE: u32 = 0x101F;
pub const PT_MV_BINARY: u32 = 0x1102;
pub const PT_MV_LONG: u32 = 0x1003;
pub const PT_NULL: u32 = 0x0001;
pub const PT_UNSPECIFIED: u32 = 0x0000;

/// A value, as the union's arms carry it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Short(u16),
    Long(u32),
    Bool(bool),
    Str(String),
    Bin(Vec<u8>),
    Time(u64),
    Guid([u8; 16]),
    Error(u32),
    MvStr(Vec<String>),
    MvBin(Vec<Vec<u8>>),
    MvLong(Vec<u32>),
    Null,
}

/// One property: its tag (id << 16 | type) and value. Strings follow the tag's type:
/// 8-bit for PT_STRING8 (Windows-1252 here), UTF-16 for PT_UNICODE.
#[derive(Debug, Clone, PartialEq)]
pub struct Prop {
    pub tag: u32,
    pub value: Value,
}

fn string8(s: &str) -> Vec<u8> {
    encoding_rs::WINDOWS_1252.encode(s).0.into_owned()
}

fn write_value_flat(w: &mut Writer, p: &Prop) {
    w.u32(p.tag);
    w.u32(0);
    let ty = p.tag & 0xffff;
    w.u32(ty);
    match &p.value {
        Value::Short(v) => w.u16(*v),
        Value::Long(v) | Value::Error(v) => w.u32(*v),
        Value::Bool(b) => w.u16(u16::from(*b)),
        Value::Str(_) | Value::Guid(_) => w.pointer(true),
        Value::Bin(b) => {
            w.u32(b.len() as u32);
            w.pointer(true);
        }
        Value::Time(t) => {
            w.u32(*t as u32);
            w.u32((*t >> 32) as u32);
        }
        Value::MvStr(v) => {
            w.u32(v.len() as u32);
            w.pointer(true);
        }
        Value::MvBin(v) => {
            w.u32(v.len() as u32);
            w.pointer(true);
        }
        Value::MvLong(v) => {
            w.u32(v.len() as u32);
            w.pointer(true);
        }
        Value::Null => w.u32(0),
    }
}

fn write_value_deferred(w: &mut Writer, p: &Prop) {
    let unicode = p.tag & 0xffff == PT_UNICODE || p.tag & 0xffff == PT_MV_UNICODE;
    match &p.value {
        Value::Str(s) if unicode => w.string16(s),
        Value::Str(s) => w.string8(&string8(s)),
        Value::Guid(g) => w.bytes(g),
        Value::Bin(b) => {
            w.u32(b.len() as u32);
            w.bytes(b);
        }
        Value::MvStr(v) => {
            w.u32(v.len() as u32);
            for _ in v {
                w.pointer(true);
            }
            for s in v {
                if unicode { w.string16(s) } else { w.string8(&string8(s)) }
            }
        }
        Value::MvBin(v) => {
            w.u32(v.len() as u32);
            for b in v {
                w.u32(b.len() as u32);
                w.pointer(true);
            }
            for b in v {
                w.u32(b.len() as u32);
                w.bytes(b);
            }
        }
        Value::MvLong(v) => {
            w.u32(v.len() as u32);
            for x in v {
                w.u32(*x);
            }
        }
        _ => {}
    }
}

/// A PropertyRow_r's flat part; its values follow with `write_row_deferred`.
pub fn write_row_flat(w: &mut Writer, row: &[Prop]) {
    w.u32(0);
    w.u32(row.len() as u32);
    w.pointer(true);
}

pub fn write_row_deferred(w: &mut Writer, row: &[Prop]) {
    w.u32(row.len() as u32);
    for p in row {
        write_value_flat(w, p);
    }
    for p in row {
        write_value_deferred(w, p);
    }
}

/// `PropertyRowSet_r**` as an out parameter: NULL for None.
pub fn write_rowset_ptr(w: &mut Writer, rows: Option<&[Vec<Prop>]>) {
    let Some(rows) = rows else {
        w.pointer(false);
        return;
    };
    w.pointer(true);
    w.u32(rows.len() as u32);
    w.u32(rows.len() as u32);
    for r in rows {
        write_row_flat(w, r);
    }
    for r in rows {
        write_row_deferred(w, r);
    }
}

/// `PropertyRow_r**` as an out parameter.
pub fn write_row_ptr(w: &mut Writer, row: Option<&[Prop]>) {
    let Some(row) = row else {
        w.pointer(false);
        return;
    };
    w.pointer(true);
    write_row_flat(w, row);
    write_row_deferred(w, row);
}

/// `PropertyTagArray_r**` as an out parameter (tags or Mids).
pub fn write_tags_ptr(w: &mut Writer, tags: Option<&[u32]>) {
    let Some(tags) = tags else {
        w.pointer(false);
        return;
    };
    w.pointer(true);
    // size_is(cValues + 1), length_is(cValues), the conformance first.
    w.u32(tags.len() as u32 + 1);
    w.u32(tags.len() as u32);
    w.u32(0);
    w.u32(tags.len() as u32);
    for t in tags {
        w.u32(*t);
    }
}

/// The most values any array in a request may hold.
pub const MAX_VALUES: usize = 100_000;

/// A PropertyTagArray_r's referent.
pub fn read_tags(r: &mut Reader<'_>) -> NdrResult<Vec<u32>> {
    let max = r.count(4)?;
    // cValues should equal the actual count; the actual count is what travels (some
    // clients send cValues one too many), so that is what is read.
    let _c = r.u32()?;
    let n = r.variance(4, max)?;
    if n > MAX_VALUES {
        return Err(NdrError("tag array too long"));
    }
    (0..n).map(|_| r.u32()).collect()
}

/// A unique pointer to a PropertyTagArray_r.
pub fn read_tags_ptr(r: &mut Reader<'_>) -> NdrResult<Option<Vec<u32>>> {
    match r.pointer()? {
        Some(_) => read_tags(r).map(Some),
        None => Ok(None),
    }
}

/// What a PropertyValue_r's flat part left to read.
enum Pending {
    None,
    Str8,
    Str16,
    Bin,
    Guid,
    MvStr8(usize),
    MvStr16(usize),
    MvBin(usize),
    MvLong(usize),
}

/// Reads a PropertyValue_r's flat part.
fn read_value_flat(r: &mut Reader<'_>) -> NdrResult<(u32, Value, Pending)> {
    let tag = r.u32()?;
    let _reserved = r.u32()?;
    let disc = r.u32()?;
    if disc != tag & 0xffff {
        return Err(NdrError("value's type differs from its tag"));
    }
    let ptr = |r: &mut Reader<'_>, p: Pending| -> NdrResult<Pending> {
        Ok(if r.pointer()?.is_some() { p } else { Pending::None })
    };
    Ok(match disc {
        PT_SHORT => (tag, Value::Short(r.u16()?), Pending::None),
        PT_LONG => (tag, Value::Long(r.u32()?), Pending::None),
        PT_ERROR => (tag, Value::Error(r.u32()?), Pending::None),
        PT_BOOLEAN => (tag, Value::Bool(r.u16()? != 0), Pending::None),
        PT_STRING8 => (tag, Value::Str(String::new()), ptr(r, Pending::Str8)?),
        PT_UNICODE => (tag, Value::Str(String::new()), ptr(r, Pending::Str16)?),
        PT_CLSID => (tag, Value::Guid([0; 16]), ptr(r, Pending::Guid)?),
        PT_SYSTIME => {
            let lo = u64::from(r.u32()?);
            (tag, Value::Time(lo | u64::from(r.u32()?) << 32), Pending::None)
        }
        PT_BINARY => {
            let _n = r.u32()?;
            (tag, Value::Bin(Vec::new()), ptr(r, Pending::Bin)?)
        }
        PT_MV_STRING8 | PT_MV_UNICODE | PT_MV_BINARY | PT_MV_LONG => {
            let n = r.u32()? as usize;
            let p = match disc {
                PT_MV_STRING8 => Pending::MvStr8(n),
                PT_MV_UNICODE => Pending::MvStr16(n),
                PT_MV_BINARY => Pending::MvBin(n),
                _ => Pending::MvLong(n),
            };
            (tag, Value::Null, ptr(r, p)?)
        }
        PT_NULL | PT_UNSPECIFIED | 0x000D => {
            r.u32()?;
            (tag, Value::Null, Pending::None)
        }
        _ => return Err(NdrError("property type not taken")),
    })
}

fn read_value_deferred(r: &mut Reader<'_>, value: Value, p: Pending) -> NdrResult<Value> {
    let s8 = |b: Vec<u8>| encoding_rs::WINDOWS_1252.decode(&b).0.into_owned();
    Ok(match p {
        Pending::None => value,
        Pending::Str8 => Value::Str(s8(r.string8()?)),
        Pending::Str16 => Value::Str(r.string16()?),
        Pending::Guid => Value::Guid(r.uuid()?.0),
        Pending::Bin => {
            let n = r.count(1)?;
            Value::Bin(r.take(n)?.to_vec())
        }
        Pending::MvStr8(n) | Pending::MvStr16(n) => {
            let max = r.count(4)?;
            if max != n {
                return Err(NdrError("array count"));
            }
            let ids: Vec<bool> = (0..n).map(|_| r.pointer().map(|p| p.is_some())).collect::<NdrResult<_>>()?;
            let mut out = Vec::with_capacity(n);
            for present in ids {
                if present {
                    out.push(if matches!(p, Pending::MvStr8(_)) { s8(r.string8()?) } else { r.string16()? });
                }
            }
            Value::MvStr(out)
        }
        Pending::MvBin(n) => {
            let max = r.count(8)?;
            if max != n {
                return Err(NdrError("array count"));
            }
            let flat: Vec<bool> =
                (0..n).map(|_| r.u32().and_then(|_| r.pointer()).map(|p| p.is_some())).collect::<NdrResult<_>>()?;
            let mut out = Vec::with_capacity(n);
            for present in flat {
                if present {
                    let c = r.count(1)?;
                    out.push(r.take(c)?.to_vec());
                }
            }
            Value::MvBin(out)
        }
        Pending::MvLong(n) => {
            let max = r.count(4)?;
            if max != n {
                return Err(NdrError("array count"));
            }
            Value::MvLong((0..n).map(|_| r.u32()).collect::<NdrResult<_>>()?)
        }
    })
}

/// A PropertyValue_r inline (SeekEntries' target): its flat part, then its referents.
pub fn read_value(r: &mut Reader<'_>) -> NdrResult<Prop> {
    let (tag, v, p) = read_value_flat(r)?;
    Ok(Prop { tag, value: read_value_deferred(r, v, p)? })
}

/// A restriction (MS-OXNSPI §2.2.5).
#[derive(Debug, Clone, PartialEq)]
pub enum Restriction {
    And(Vec<Restriction>),
    Or(Vec<Restriction>),
    Not(Box<Restriction>),
    /// Fuzzy level (FL_*), the property, the value sought.
    Content(u32, u32, Option<Prop>),
    /// Relational operator (RELOP_*), the property, the value.
    Property(u32, u32, Option<Prop>),
    Exist(u32),
    /// What we do not evaluate (comparisons between properties, bit masks, sizes,
    /// sub-objects): matches nothing.
    Unsupported,
}

/// A restriction's flat part, with what its pointers lead to still unread.
enum Flat {
    List(bool, usize, bool),
    Not(bool),
    Value(bool, u32, u32, bool),
    Exist(u32),
    Other,
}

/// The deepest restriction taken, and how many nodes in all.
const MAX_DEPTH: usize = 16;
const MAX_NODES: usize = 64;

fn restriction_flat(r: &mut Reader<'_>) -> NdrResult<Flat> {
    let rt = r.u32()?;
    let disc = r.u32()?;
    if rt != disc {
        return Err(NdrError("restriction type differs from its union's"));
    }
    Ok(match rt {
        0 | 1 => {
            let n = r.u32()? as usize;
            Flat::List(rt == 0, n, r.pointer()?.is_some())
        }
        2 => Flat::Not(r.pointer()?.is_some()),
        3 | 4 => {
            let (a, tag) = (r.u32()?, r.u32()?);
            Flat::Value(rt == 3, a, tag, r.pointer()?.is_some())
        }
        5..=8 => {
            let (_, tag, _) = (r.u32()?, r.u32()?, r.u32()?);
            if rt == 8 { Flat::Exist(tag) } else { Flat::Other }
        }
        9 => {
            r.u32()?;
            r.pointer()?;
            // A sub-object restriction's referent would follow; we refuse the whole.
            return Err(NdrError("sub-object restrictions are not taken"));
        }
        _ => return Err(NdrError("unknown restriction type")),
    })
}

fn restriction_deferred(r: &mut Reader<'_>, f: Flat, depth: usize, nodes: &mut usize) -> NdrResult<Restriction> {
    *nodes += 1;
    if depth > MAX_DEPTH || *nodes > MAX_NODES {
        return Err(NdrError("restriction too complex"));
    }
    Ok(match f {
        Flat::List(and, n, present) => {
            let mut list = Vec::new();
            if present {
                let max = r.count(8)?;
                if max != n {
                    return Err(NdrError("restriction count"));
                }
                let flats: Vec<Flat> = (0..n).map(|_| restriction_flat(r)).collect::<NdrResult<_>>()?;
                for f in flats {
                    list.push(restriction_deferred(r, f, depth + 1, nodes)?);
                }
            }
            if and { Restriction::And(list) } else { Restriction::Or(list) }
        }
        Flat::Not(present) => {
            if !present {
                return Err(NdrError("NOT without a restriction"));
            }
            let f = restriction_flat(r)?;
            Restriction::Not(Box::new(restriction_deferred(r, f, depth + 1, nodes)?))
        }
        Flat::Value(content, a, tag, present) => {
            let v = if present { Some(read_value(r)?) } else { None };
            if content { Restriction::Content(a, tag, v) } else { Restriction::Property(a, tag, v) }
        }
        Flat::Exist(tag) => Restriction::Exist(tag),
        Flat::Other => Restriction::Unsupported,
    })
}

/// A unique pointer to a Restriction_r.
pub fn read_restriction_ptr(r: &mut Reader<'_>) -> NdrResult<Option<Restriction>> {
    if r.pointer()?.is_none() {
        return Ok(None);
    }
    let f = restriction_flat(r)?;
    let mut nodes = 0;
    restriction_deferred(r, f, 0, &mut nodes).map(Some)
}

/// StringsArray_r or WStringsArray_r inline (a conformant struct of string pointers).
pub fn read_strings(r: &mut Reader<'_>, wide: bool) -> NdrResult<Vec<String>> {
    let max = r.count(4)?;
    let n = r.u32()? as usize;
    if n != max || n > MAX_VALUES {
        return Err(NdrError("string array counts disagree"));
    }
    let present: Vec<bool> = (0..n).map(|_| r.pointer().map(|p| p.is_some())).collect::<NdrResult<_>>()?;
    let mut out = Vec::with_capacity(n);
    for p in present {
        out.push(if !p {
            String::new()
        } else if wide {
            r.string16()?
        } else {
            encoding_rs::WINDOWS_1252.decode(&r.string8()?).0.into_owned()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back() {
        for p in [
            Prop { tag: 0x3001_001F, value: Value::Str("Ann Émile".into()) },
            Prop { tag: 0x3001_001E, value: Value::Str("Ann".into()) },
            Prop { tag: 0x0FFF_0102, value: Value::Bin(vec![1, 2, 3]) },
            Prop { tag: 0x3900_0003, value: Value::Long(6) },
        ] {
            let mut w = Writer::default();
            write_value_flat(&mut w, &p);
            write_value_deferred(&mut w, &p);
            let bytes = w.into_bytes();
            let back = read_value(&mut Reader::new(&bytes, true)).expect("reads");
            assert_eq!(back, p);
        }
    }

    #[test]
    fn restrictions_read_depth_first() {
        // AND( content(prefix, display name, "an"), exist(smtp) )
        let mut w = Writer::default();
        w.pointer(true);
        w.u32(0);
        w.u32(0);
        w.u32(2);
        w.pointer(true);
        w.u32(2);
        // flat parts of both
        w.u32(3);
        w.u32(3);
        w.u32(2);
        w.u32(0x3001_001F);
        w.pointer(true);
        w.u32(8);
        w.u32(8);
        w.u32(0);
        w.u32(0x39FE_001F);
        w.u32(0);
        // the content restriction's value
        let v = Prop { tag: 0x3001_001F, value: Value::Str("an".into()) };
        write_value_flat(&mut w, &v);
        write_value_deferred(&mut w, &v);
        let bytes = w.into_bytes();
        let got = read_restriction_ptr(&mut Reader::new(&bytes, true)).expect("reads");
        assert_eq!(
            got,
            Some(Restriction::And(vec![
                Restriction::Content(2, 0x3001_001F, Some(v)),
                Restriction::Exist(0x39FE_001F)
            ]))
        );
    }

    #[test]
    fn deep_restrictions_are_refused() {
        let mut w = Writer::default();
        w.pointer(true);
        for _ in 0..40 {
            w.u32(2);
            w.u32(2);
            w.pointer(true);
        }
        w.u32(8);
        w.u32(8);
        w.u32(0);
        w.u32(0);
        w.u32(0);
        let bytes = w.into_bytes();
        assert!(read_restriction_ptr(&mut Reader::new(&bytes, true)).is_err());
    }
}
