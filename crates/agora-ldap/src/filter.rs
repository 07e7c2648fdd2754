//! Search filters: compiled once per request (attribute types resolved, assertion
//! values folded), then evaluated per entry with LDAP's three-valued logic (RFC 4511
//! §4.5.1.7): an unknown or unreadable attribute is Undefined, never a leak.

use std::cmp::Ordering;

use ldap3_proto::proto::{LdapFilter, LdapMatchingRuleAssertion};

use crate::matching;
use crate::schema::{self, AttrId, Syntax};
use crate::tree::{Entry, Tree};

/// Deepest filter nesting accepted (and/or/not levels).
pub const MAX_DEPTH: usize = 32;
/// Most filter items in one request.
const MAX_ITEMS: usize = 1024;

/// AD's LDAP_MATCHING_RULE_IN_CHAIN: membership through nested groups.
pub const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

#[derive(Debug, Clone)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Eq(AttrId, Vec<u8>),
    Sub {
        id: AttrId,
        initial: Option<String>,
        any: Vec<String>,
        last: Option<String>,
    },
    Ge(AttrId, Vec<u8>),
    Le(AttrId, Vec<u8>),
    Present(AttrId),
    Approx(AttrId, Vec<u8>),
    /// An extensible match; `id` None means every attribute of the entry.
    Ext {
        id: Option<AttrId>,
        rule: Option<&'static str>,
        value: Vec<u8>,
        dn_attrs: bool,
    },
    /// `attr:1.2.840.113556.1.4.1941:=DN`: the DN is reached through `attr` transitively.
    InChain(AttrId, String),
    Undefined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Undefined,
}

impl Truth {
    fn from(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FilterError {
    TooDeep,
    TooLarge,
    /// An extensible match naming a rule this server does not know (inappropriateMatching).
    UnknownRule(String),
}

pub fn compile(f: &LdapFilter) -> Result<Filter, FilterError> {
    let mut items = 0;
    compile_at(f, 0, &mut items)
}

fn compile_at(f: &LdapFilter, depth: usize, items: &mut usize) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::TooDeep);
    }
    *items += 1;
    if *items > MAX_ITEMS {
        return Err(FilterError::TooLarge);
    }
    let prep = |id: AttrId, v: &str| matching::prepare(schema::attr_type(id).syntax, v.as_bytes());
    Ok(match f {
        LdapFilter::And(v) => Filter::And(v.iter().map(|x| compile_at(x, depth + 1, items)).collect::<Result<_, _>>()?),
        LdapFilter::Or(v) => Filter::Or(v.iter().map(|x| compile_at(x, depth + 1, items)).collect::<Result<_, _>>()?),
        LdapFilter::Not(x) => Filter::Not(Box::new(compile_at(x, depth + 1, items)?)),
        LdapFilter::Equality(a, v) => match schema::attr(a).and_then(|id| Some((id, prep(id, v)?))) {
            Some((id, v)) => Filter::Eq(id, v),
            None => Filter::Undefined,
        },
        LdapFilter::Substring(a, s) => match schema::attr(a) {
            Some(id) if !schema::attr_type(id).syntax.is_binary() => {
                Filter::Sub { id, initial: s.initial.clone(), any: s.any.clone(), last: s.final_.clone() }
            }
            _ => Filter::Undefined,
        },
        LdapFilter::GreaterOrEqual(a, v) => match schema::attr(a).and_then(|id| Some((id, prep(id, v)?))) {
            Some((id, v)) => Filter::Ge(id, v),
            None => Filter::Undefined,
        },
        LdapFilter::LessOrEqual(a, v) => match schema::attr(a).and_then(|id| Some((id, prep(id, v)?))) {
            Some((id, v)) => Filter::Le(id, v),
            None => Filter::Undefined,
        },
        LdapFilter::Present(a) => match schema::attr(a) {
            Some(id) => Filter::Present(id),
            None => Filter::Undefined,
        },
        LdapFilter::Approx(a, v) => match schema::attr(a) {
            Some(id) => Filter::Approx(id, v.as_bytes().to_vec()),
            None => Filter::Undefined,
        },
        LdapFilter::Extensible(m) => extensible(m)?,
    })
}

fn extensible(m: &LdapMatchingRuleAssertion) -> Result<Filter, FilterError> {
    let id = match &m.type_ {
        Some(t) => match schema::attr(t) {
            Some(id) => Some(id),
            None => return Ok(Filter::Undefined),
        },
        None => None,
    };
    let rule = match &m.matching_rule {
        Some(r) if r == IN_CHAIN => {
            return Ok(match id {
                Some(id) => Filter::InChain(id, crate::dn::normalize(&m.match_value).unwrap_or_default()),
                None => Filter::Undefined,
            });
        }
        Some(r) => Some(schema::rule(r).ok_or_else(|| FilterError::UnknownRule(r.clone()))?),
        None => None,
    };
    Ok(Filter::Ext { id, rule, value: m.match_value.as_bytes().to_vec(), dn_attrs: m.dn_attributes })
}

impl Filter {
    /// The entries an index says can match: the shortest list among the equalities
    /// this filter requires; None when it requires none (scan everything).
    pub fn candidates<'t>(&self, tree: &'t Tree) -> Option<&'t [u32]> {
        match self {
            Filter::Eq(id, v) => Some(tree.lookup(*id, v)),
            Filter::And(list) => list.iter().filter_map(|f| f.candidates(tree)).min_by_key(|c| c.len()),
            _ => None,
        }
    }

    /// Evaluates against `e`; `visible` says which attributes the requester may match on.
    pub fn eval(&self, tree: &Tree, e: &Entry, visible: &dyn Fn(AttrId) -> bool) -> Truth {
        let attr = |id: AttrId| if visible(id) { e.get(id) } else { None };
        let known = |id: AttrId| visible(id);
        match self {
            Filter::And(list) => {
                let mut out = Truth::True;
                for f in list {
                    match f.eval(tree, e, visible) {
                        Truth::False => return Truth::False,
                        Truth::Undefined => out = Truth::Undefined,
                        Truth::True => {}
                    }
                }
                out
            }
            Filter::Or(list) => {
                let mut out = Truth::False;
                for f in list {
                    match f.eval(tree, e, visible) {
                        Truth::True => return Truth::True,
                        Truth::Undefined => out = Truth::Undefined,
                        Truth::False => {}
                    }
                }
                out
            }
            Filter::Not(f) => match f.eval(tree, e, visible) {
                Truth::True => Truth::False,
                Truth::False => Truth::True,
                Truth::Undefined => Truth::Undefined,
            },
            Filter::Undefined => Truth::Undefined,
            Filter::Present(id) => {
                if *id == schema::known().object_class {
                    return Truth::True;
                }
                Truth::from(attr(*id).is_some())
            }
            Filter::Eq(id, v) => {
                if !known(*id) {
                    return Truth::Undefined;
                }
                Truth::from(attr(*id).is_some_and(|a| a.folded.iter().any(|f| f == v)))
            }
            Filter::Sub { id, initial, any, last } => {
                if !known(*id) {
                    return Truth::Undefined;
                }
                let syntax = schema::attr_type(*id).syntax;
                Truth::from(attr(*id).is_some_and(|a| {
                    a.values.iter().any(|v| matching::substrings(syntax, v, initial.as_deref(), any, last.as_deref()))
                }))
            }
            Filter::Ge(id, v) | Filter::Le(id, v) => {
                if !known(*id) {
                    return Truth::Undefined;
                }
                let syntax = schema::attr_type(*id).syntax;
                let want_ge = matches!(self, Filter::Ge(..));
                let Some(a) = attr(*id) else { return Truth::False };
                let mut undefined = false;
                for f in &a.folded {
                    match ordered(syntax, f, v) {
                        Some(o) if want_ge && o != Ordering::Less => return Truth::True,
                        Some(o) if !want_ge && o != Ordering::Greater => return Truth::True,
                        Some(_) => {}
                        None => undefined = true,
                    }
                }
                if undefined { Truth::Undefined } else { Truth::False }
            }
            Filter::Approx(id, v) => {
                if !known(*id) {
                    return Truth::Undefined;
                }
                let syntax = schema::attr_type(*id).syntax;
                Truth::from(attr(*id).is_some_and(|a| a.values.iter().any(|s| matching::approx(syntax, s, v))))
            }
            Filter::Ext { id, rule, value, dn_attrs } => {
                let test = |aid: AttrId, stored: &[u8]| -> Option<bool> {
                    let syntax = schema::attr_type(aid).syntax;
                    match rule {
                        Some(r) => matching::by_rule(r, syntax, stored, value),
                        None => Some(matching::equal(syntax, stored, value)),
                    }
                };
                let mut hit = false;
                match id {
                    Some(aid) => {
                        if !known(*aid) {
                            return Truth::Undefined;
                        }
                        if let Some(a) = attr(*aid) {
                            hit = a.values.iter().any(|s| test(*aid, s) == Some(true));
                        }
                    }
                    None => {
                        for a in &e.attrs {
                            if visible(a.id) && !schema::attr_type(a.id).syntax.is_binary() {
                                hit |= a.values.iter().any(|s| test(a.id, s) == Some(true));
                            }
                        }
                    }
                }
                if !hit && *dn_attrs {
                    // The entry's own DN components count too (RFC 4511 §4.5.1.7.7).
                    if let Ok(d) = crate::dn::Dn::parse(&e.dn) {
                        for ava in d.rdns.iter().flatten() {
                            if let Some(aid) = schema::attr(&ava.attr)
                                && id.is_none_or(|want| want == aid)
                            {
                                hit |= test(aid, ava.value.as_bytes()) == Some(true);
                            }
                        }
                    }
                }
                Truth::from(hit)
            }
            Filter::InChain(id, target) => {
                if !known(*id) {
                    return Truth::Undefined;
                }
                Truth::from(in_chain(tree, e, *id, target))
            }
        }
    }
}

fn ordered(syntax: Syntax, stored: &[u8], asserted: &[u8]) -> Option<Ordering> {
    match syntax {
        Syntax::Integer => {
            let p = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<i128>().ok();
            Some(p(stored)?.cmp(&p(asserted)?))
        }
        Syntax::Text | Syntax::PostalAddress | Syntax::Ia5 | Syntax::Time | Syntax::Uuid | Syntax::Phone => {
            Some(stored.cmp(asserted))
        }
        _ => None,
    }
}

/// Follows `id` (a DN-valued attribute such as memberOf or manager) from `e` until
/// `target` is reached; every hop is an entry of the tree.
fn in_chain(tree: &Tree, e: &Entry, id: AttrId, target: &str) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut queue: Vec<&Entry> = vec![e];
    while let Some(cur) = queue.pop() {
        let Some(a) = cur.get(id) else { continue };
        for f in &a.folded {
            let Ok(ndn) = std::str::from_utf8(f) else { continue };
            if ndn == target {
                return true;
            }
            if seen.insert(ndn.to_string())
                && seen.len() < 10_000
                && let Some(&i) = tree.by_ndn.get(ndn)
            {
                queue.push(&tree.entries[i]);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3_proto::parse_ldap_filter_str;

    #[test]
    fn depth_is_limited() {
        let mut f = String::from("(cn=a)");
        for _ in 0..40 {
            f = format!("(!{f})");
        }
        let parsed = parse_ldap_filter_str(&f).unwrap();
        assert_eq!(compile(&parsed).unwrap_err(), FilterError::TooDeep);
    }

    #[test]
    fn unknown_attributes_and_rules() {
        let f = compile(&parse_ldap_filter_str("(nosuch=x)").unwrap()).unwrap();
        assert!(matches!(f, Filter::Undefined));
        let e = compile(&parse_ldap_filter_str("(cn:1.2.3.4.5:=x)").unwrap()).unwrap_err();
        assert_eq!(e, FilterError::UnknownRule("1.2.3.4.5".into()));
        let p = compile(&parse_ldap_filter_str("(&(objectClass=person)(mail=A@X.org))").unwrap()).unwrap();
        assert!(matches!(p, Filter::And(ref l) if matches!(&l[1], Filter::Eq(_, v) if v == b"a@x.org")));
    }
}
