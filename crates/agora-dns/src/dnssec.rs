//! DNSSEC online signing (RFC 4033–4035): each zone's keys from the store, the DNSKEY
//! set signed by the key-signing keys and every other RRset by the zone-signing key,
//! an NSEC chain for authenticated denial, and signatures reused while their RRset is
//! unchanged and still valid for more than a week. Rollovers follow the zone's TTLs
//! (`rollover`), so validation never has a gap.

use std::collections::HashMap;

use agora_store::{DnssecKey, DnssecKeyState};
pub use hickory_proto::dnssec::DigestType;
use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey, signing_key_from_der};
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, NSEC, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, SigningKey, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::zones::Zone;

/// DNSSEC algorithm numbers offered (RFC 8624 recommends both).
pub const ECDSA_P256: u8 = 13;
pub const ED25519: u8 = 15;

/// A signature's validity from its making.
const VALIDITY: u32 = 14 * 86_400;
/// A cached signature is remade once less than this is left.
pub const RENEW_BEFORE: u32 = 7 * 86_400;
/// Inception back-dated for resolvers whose clocks are behind.
const SKEW: u32 = 3_600;

/// The algorithm number for a `[dns] dnssec_algorithm` name.
pub fn algorithm_number(name: &str) -> Result<u8, String> {
    match name.to_ascii_lowercase().as_str() {
        "ecdsap256sha256" | "ecdsa-p256" | "13" => Ok(ECDSA_P256),
        "ed25519" | "15" => Ok(ED25519),
        other => Err(format!("dnssec_algorithm {other:?}: say ecdsap256sha256 or ed25519")),
    }
}

pub fn algorithm_name(n: u8) -> &'static str {
    match n {
        ECDSA_P256 => "ECDSAP256SHA256",
        ED25519 => "ED25519",
        _ => "unknown",
    }
}

/// A new key for `domain`, active from `now` (a rollover's caller may set it published).
pub fn generate(domain: &str, ksk: bool, algorithm: u8, now: i64) -> Result<DnssecKey, String> {
    let der = match algorithm {
        ECDSA_P256 => EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256),
        ED25519 => Ed25519SigningKey::generate_pkcs8(),
        n => return Err(format!("DNSSEC algorithm {n} is not offered")),
    }
    .map_err(|e| format!("generating a DNSSEC key: {e}"))?;
    Ok(DnssecKey {
        id: 0,
        domain: domain.to_ascii_lowercase(),
        ksk,
        algorithm,
        private_key: der.secret_pkcs8_der().to_vec(),
        created: now,
        state: DnssecKeyState::Active,
        since: now,
    })
}

/// A stored key made ready to sign: its DNSKEY and key tag.
pub struct Key {
    pub stored: DnssecKey,
    signer: Box<dyn SigningKey>,
    pub dnskey: DNSKEY,
    pub tag: u16,
}

impl Key {
    pub fn load(k: &DnssecKey) -> Result<Key, String> {
        let alg = Algorithm::from_u8(k.algorithm);
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.private_key.clone()));
        let signer = signing_key_from_der(&der, alg).map_err(|e| format!("DNSSEC key {}: {e}", k.id))?;
        let public = signer.to_public_key().map_err(|e| format!("DNSSEC key {}: {e}", k.id))?;
        // Zone key always; the secure entry point marks the key-signing key (RFC 4034 §2.1.1).
        let dnskey = DNSKEY::new(true, k.ksk, false, public);
        let tag = dnskey.calculate_key_tag().map_err(|e| format!("DNSSEC key {}: {e}", k.id))?;
        Ok(Key { stored: k.clone(), signer, dnskey, tag })
    }

    /// The DS record the parent zone publishes for this key.
    pub fn ds(&self, apex: &Name, digest: DigestType) -> Result<DS, String> {
        let d = self.dnskey.to_digest(apex, digest).map_err(|e| e.to_string())?;
        Ok(DS::new(self.tag, self.signer.algorithm(), digest, d.as_ref().to_vec()))
    }
}

/// Signatures by key tag and the RRset they cover, with their expiry: a rebuild
/// reuses them while the RRset is unchanged.
pub type SigCache = HashMap<Vec<u8>, (u32, Record)>;

/// Signs one zone: the DNSKEY set, the NSEC chain, then every RRset (the SOA apart:
/// `sign_soa` after the serial is set).
pub struct ZoneSigner<'a> {
    pub keys: &'a [Key],
    pub now: u32,
    pub old: &'a SigCache,
    pub new: &'a mut SigCache,
    /// Whether any signature was made anew (the zone's serial must move).
    pub fresh: bool,
}

/// The keys that sign an RRset of `rtype`: the KSKs the DNSKEY set, the ZSKs the rest.
fn signers(keys: &[Key], rtype: RecordType) -> Vec<&Key> {
    let active = |ksk: bool| -> Vec<&Key> {
        keys.iter().filter(|k| k.stored.ksk == ksk && k.stored.state == DnssecKeyState::Active).collect()
    };
    let ksks = active(true);
    let zsks = active(false);
    match rtype {
        RecordType::DNSKEY if !ksks.is_empty() => ksks,
        // Without an active zone-signing key the key-signing key signs all (as a CSK).
        _ if zsks.is_empty() => ksks,
        _ => zsks,
    }
}

impl ZoneSigner<'_> {
    /// Adds the DNSKEY set and the NSEC chain to the zone and signs everything but the SOA.
    pub fn sign(&mut self, zone: &mut Zone) {
        let apex = zone.apex_name.clone();
        let ttl = zone.soa.ttl;
        // Every key the store holds is in the DNSKEY set, whatever its state.
        for k in self.keys {
            zone.names.entry(zone.apex.clone()).or_default().push(Record::from_rdata(
                apex.clone(),
                ttl,
                RData::DNSSEC(DNSSECRData::DNSKEY(k.dnskey.clone())),
            ));
        }
        // NSEC TTL: the lesser of the SOA's TTL and minimum (RFC 9077).
        let nsec_ttl = match &zone.soa.data {
            RData::SOA(s) => ttl.min(s.minimum),
            _ => ttl,
        };
        // Names below a delegation are glue, not ours: outside the chain and unsigned.
        let glue_names: std::collections::HashSet<String> =
            zone.names.keys().filter(|k| zone.cut_of(k).is_some_and(|c| c != k.as_str())).cloned().collect();
        let glue = |k: &str| glue_names.contains(k);
        let mut owners: Vec<(Name, String)> = zone
            .names
            .keys()
            .filter(|k| !glue(k))
            .filter_map(|k| Some((Name::from_ascii(format!("{k}.")).ok()?, k.clone())))
            .collect();
        owners.sort_by(|a, b| a.0.cmp(&b.0));
        for i in 0..owners.len() {
            let next = owners[(i + 1) % owners.len()].0.clone();
            let key = &owners[i].1;
            let mut types: Vec<RecordType> = zone.names[key].iter().map(Record::record_type).collect();
            types.sort_unstable_by_key(|t| u16::from(*t));
            types.dedup();
            let nsec = NSEC::new_cover_self(next, types);
            let rec = Record::from_rdata(owners[i].0.clone(), nsec_ttl, RData::DNSSEC(DNSSECRData::NSEC(nsec)));
            if let Some(v) = zone.names.get_mut(key) {
                v.push(rec);
            }
        }
        zone.nsec = owners;
        let mut sigs: HashMap<(String, RecordType), Vec<Record>> = HashMap::new();
        for (key, records) in zone.names.iter().filter(|(k, _)| !glue(k)) {
            let cut = zone.cuts.contains(key);
            let mut types: Vec<RecordType> = records.iter().map(Record::record_type).collect();
            types.sort_unstable_by_key(|t| u16::from(*t));
            types.dedup();
            // At a delegation only the NSEC (and a DS) are signed: the NS belong to the child.
            for t in types.into_iter().filter(|t| *t != RecordType::SOA && !(cut && *t == RecordType::NS)) {
                let set: Vec<&Record> = records.iter().filter(|r| r.record_type() == t).collect();
                let made = self.sign_rrset(&apex, &set);
                sigs.insert((key.clone(), t), made);
            }
        }
        zone.sigs = sigs;
        zone.signed = true;
    }

    /// Signs the SOA (after its serial is set).
    pub fn sign_soa(&mut self, zone: &mut Zone) {
        let apex = zone.apex_name.clone();
        let soa = zone.soa.clone();
        let made = self.sign_rrset(&apex, &[&soa]);
        zone.sigs.insert((zone.apex.clone(), RecordType::SOA), made);
    }

    fn sign_rrset(&mut self, apex: &Name, set: &[&Record]) -> Vec<Record> {
        let Some(first) = set.first() else { return Vec::new() };
        let (owner, rtype, ttl) = (first.name.clone(), first.record_type(), first.ttl);
        let mut out = Vec::new();
        for key in signers(self.keys, rtype) {
            let input = |inception: u32, expiration: u32| SigInput {
                type_covered: rtype,
                algorithm: key.signer.algorithm(),
                num_labels: owner.num_labels(),
                original_ttl: ttl,
                sig_expiration: SerialNumber::new(expiration),
                sig_inception: SerialNumber::new(inception),
                key_tag: key.tag,
                signer_name: apex.clone(),
            };
            // The cache key: what is signed, less the times.
            let Ok(plain) = TBS::from_input(&owner, DNSClass::IN, &input(0, 0), set.iter().copied()) else {
                continue;
            };
            let cache_key = plain.as_ref().to_vec();
            if let Some((exp, rec)) = self.old.get(&cache_key)
                && exp.wrapping_sub(self.now) > RENEW_BEFORE
                && exp.wrapping_sub(self.now) < VALIDITY + SKEW
            {
                self.new.insert(cache_key, (*exp, rec.clone()));
                out.push(rec.clone());
                continue;
            }
            let inp = input(self.now.wrapping_sub(SKEW), self.now.wrapping_add(VALIDITY));
            let signed = TBS::from_input(&owner, DNSClass::IN, &inp, set.iter().copied())
                .map_err(|e| e.to_string())
                .and_then(|tbs| key.signer.sign(&tbs).map_err(|e| e.to_string()));
            match signed {
                Ok(sig) => {
                    let rec = Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(inp, sig))),
                    );
                    self.fresh = true;
                    self.new.insert(cache_key, (self.now.wrapping_add(VALIDITY), rec.clone()));
                    out.push(rec);
                }
                Err(e) => tracing::error!("dns: signing {owner} {rtype}: {e}"),
            }
        }
        out
    }
}

/// What a zone's keys should become now: keys to make and state changes (id, new
/// state, None to delete). ZSKs roll by pre-publication (RFC 6781 §4.1.1.1): a new
/// key is published, signs once `wait` has passed (resolvers have its DNSKEY), and the
/// key it replaces stays published for another `wait` (for signatures in caches).
/// A KSK rollover is double-KSK: both sign the DNSKEY set until the old one is retired.
pub struct Plan {
    pub create: Vec<DnssecKey>,
    pub changes: Vec<(i64, Option<DnssecKeyState>)>,
}

pub fn rollover(
    domain: &str,
    keys: &[DnssecKey],
    algorithm: u8,
    wait: i64,
    zsk_lifetime: i64,
    now: i64,
) -> Result<Plan, String> {
    let mut plan = Plan { create: Vec::new(), changes: Vec::new() };
    let is = |k: &DnssecKey, ksk: bool, st: DnssecKeyState| k.ksk == ksk && k.state == st;
    if keys.is_empty() {
        // A new zone: nothing cached anywhere, so both keys sign at once.
        plan.create.push(generate(domain, true, algorithm, now)?);
        plan.create.push(generate(domain, false, algorithm, now)?);
        return Ok(plan);
    }
    if !keys.iter().any(|k| is(k, true, DnssecKeyState::Active)) {
        plan.create.push(generate(domain, true, keys[0].algorithm, now)?);
    }
    let zsk_algorithm = keys.iter().find(|k| !k.ksk).map_or(algorithm, |k| k.algorithm);
    let published: Vec<&DnssecKey> = keys.iter().filter(|k| is(k, false, DnssecKeyState::Published)).collect();
    let active: Vec<&DnssecKey> = keys.iter().filter(|k| is(k, false, DnssecKeyState::Active)).collect();
    if let Some(next) = published.iter().find(|k| now - k.since >= wait) {
        plan.changes.push((next.id, Some(DnssecKeyState::Active)));
        for a in &active {
            plan.changes.push((a.id, Some(DnssecKeyState::Retired)));
        }
    } else if published.is_empty() {
        let old = active.iter().all(|a| zsk_lifetime > 0 && now - a.since >= zsk_lifetime);
        if active.is_empty() {
            plan.create.push(generate(domain, false, zsk_algorithm, now)?);
        } else if old {
            let mut k = generate(domain, false, zsk_algorithm, now)?;
            k.state = DnssecKeyState::Published;
            plan.create.push(k);
        }
    }
    for k in keys.iter().filter(|k| k.state == DnssecKeyState::Retired && now - k.since >= wait) {
        plan.changes.push((k.id, None));
    }
    Ok(plan)
}

/// The key an administrator's rollover adds: a ZSK published ahead of signing (the
/// maintenance moves it on), or a second KSK that signs the DNSKEY set at once (its DS
/// goes to the parent before the old KSK is retired).
pub fn rotate(domain: &str, keys: &[DnssecKey], ksk: bool, now: i64) -> Result<DnssecKey, String> {
    let current = keys.iter().rev().find(|k| k.ksk == ksk && k.state == DnssecKeyState::Active).ok_or_else(|| {
        format!("{domain} has no active {} key to replace", if ksk { "key-signing" } else { "zone-signing" })
    })?;
    if !ksk && keys.iter().any(|k| !k.ksk && k.state == DnssecKeyState::Published) {
        return Err(format!("{domain} already has a zone-signing key waiting to sign"));
    }
    let mut k = generate(domain, ksk, current.algorithm, now)?;
    if !ksk {
        k.state = DnssecKeyState::Published;
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, ksk: bool, state: DnssecKeyState, since: i64) -> DnssecKey {
        DnssecKey { id, state, since, ..generate("example.org", ksk, ECDSA_P256, since).expect("key") }
    }

    #[test]
    fn zsk_rollover_publishes_first_and_retires_after() {
        let ksk = key(1, true, DnssecKeyState::Active, 0);
        let zsk = key(2, false, DnssecKeyState::Active, 0);
        // A fresh zone gets a KSK and a ZSK, both signing.
        let p = rollover("example.org", &[], ECDSA_P256, 100, 0, 0).expect("plan");
        assert_eq!(
            p.create.iter().map(|k| (k.ksk, k.state)).collect::<Vec<_>>(),
            [(true, DnssecKeyState::Active), (false, DnssecKeyState::Active)]
        );
        // Old enough: a successor is published, not yet signing.
        let p = rollover("example.org", &[ksk.clone(), zsk.clone()], ECDSA_P256, 100, 1000, 1000).expect("plan");
        assert_eq!((p.create.len(), p.create[0].state, p.changes.len()), (1, DnssecKeyState::Published, 0));
        let next = DnssecKey { id: 3, ..p.create[0].clone() };
        // Before `wait` nothing moves; after it the successor signs and the old key retires.
        let keys = [ksk.clone(), zsk.clone(), next.clone()];
        assert!(rollover("example.org", &keys, ECDSA_P256, 100, 1000, 1050).expect("plan").changes.is_empty());
        let p = rollover("example.org", &keys, ECDSA_P256, 100, 1000, 1100).expect("plan");
        assert_eq!(p.changes, [(3, Some(DnssecKeyState::Active)), (2, Some(DnssecKeyState::Retired))]);
        // The retired key goes after another `wait`.
        let keys = [
            ksk,
            key(2, false, DnssecKeyState::Retired, 1100),
            DnssecKey { state: DnssecKeyState::Active, since: 1100, ..next },
        ];
        assert!(rollover("example.org", &keys, ECDSA_P256, 100, 1000, 1150).expect("plan").changes.is_empty());
        assert_eq!(rollover("example.org", &keys, ECDSA_P256, 100, 1000, 1200).expect("plan").changes, [(2, None)]);
    }

    #[test]
    fn keys_load_and_give_a_ds() {
        let apex = Name::from_ascii("example.org.").expect("name");
        for alg in [ECDSA_P256, ED25519] {
            let k = Key::load(&generate("example.org", true, alg, 0).expect("key")).expect("load");
            assert!(k.dnskey.secure_entry_point() && k.dnskey.zone_key());
            let ds = k.ds(&apex, DigestType::SHA256).expect("ds");
            assert_eq!((ds.key_tag(), ds.digest().len()), (k.tag, 32));
        }
    }
}
