//! SPIFFE identities: parsing `spiffe://<trust-domain>/<path>` IDs,
//! reading them from a certificate's URI SAN, and matching them against
//! what a config names (an exact ID, a trust domain, or anyone).

use std::fmt;

/// Why a SPIFFE ID or a certificate's identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeError {
    /// The text is not a SPIFFE ID.
    #[error("`{0}` is not a SPIFFE ID (spiffe://<trust-domain>/<path>)")]
    Syntax(String),
    /// The certificate does not parse.
    #[error("certificate does not parse: {0}")]
    Certificate(String),
    /// The certificate carries no `spiffe://` URI SAN, or more than one.
    #[error("certificate has {0} spiffe:// URI SANs (exactly one is needed)")]
    SanCount(usize),
}

/// A parsed SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    path: String,
}

impl SpiffeId {
    /// Parses `spiffe://td/path` (the path may be empty: a trust domain).
    /// Trust domains are lower-case letters, digits, `.`, `-` and `_`;
    /// path segments are non-empty and printable.
    pub fn parse(s: &str) -> Result<SpiffeId, SpiffeError> {
        let bad = || SpiffeError::Syntax(s.chars().take(200).collect());
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (td, path) = match rest.find('/') {
            Some(k) => (&rest[..k], &rest[k..]),
            None => (rest, ""),
        };
        let td_ok = !td.is_empty()
            && td.len() <= 255
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        let path_ok = path.is_empty()
            || path.split('/').skip(1).all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
            });
        if !td_ok || !path_ok || s.len() > 2048 {
            return Err(bad());
        }
        Ok(SpiffeId {
            trust_domain: td.to_string(),
            path: path.to_string(),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path (`/ns/x/sa/y`; empty for a bare trust domain).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

/// Which peers a rule or a cluster accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdMatch {
    /// Anyone (`*`), authenticated or not.
    Any,
    /// Any ID in this trust domain (`spiffe://td` or `spiffe://td/*`).
    TrustDomain(String),
    /// Exactly this ID.
    Exact(SpiffeId),
}

impl IdMatch {
    /// Parses `*`, `spiffe://td`, `spiffe://td/*` or an exact ID.
    pub fn parse(s: &str) -> Result<IdMatch, SpiffeError> {
        if s == "*" {
            return Ok(IdMatch::Any);
        }
        let trimmed = s.strip_suffix("/*").unwrap_or(s);
        let id = SpiffeId::parse(trimmed)?;
        if id.path.is_empty() {
            Ok(IdMatch::TrustDomain(id.trust_domain))
        } else if trimmed.len() != s.len() {
            // A wildcard below a path (`spiffe://td/ns/*`) is not offered.
            Err(SpiffeError::Syntax(s.to_string()))
        } else {
            Ok(IdMatch::Exact(id))
        }
    }

    /// Whether `peer` (None: no authenticated identity) matches.
    pub fn matches(&self, peer: Option<&SpiffeId>) -> bool {
        match (self, peer) {
            (IdMatch::Any, _) => true,
            (IdMatch::TrustDomain(td), Some(p)) => p.trust_domain == *td,
            (IdMatch::Exact(id), Some(p)) => id == p,
            (_, None) => false,
        }
    }
}

/// The one `spiffe://` URI SAN of a DER certificate.
pub fn id_of_cert(der: &[u8]) -> Result<SpiffeId, SpiffeError> {
    let ids: Vec<SpiffeId> = uri_sans(der)?
        .iter()
        .filter(|u| u.starts_with("spiffe://"))
        .map(|u| SpiffeId::parse(u))
        .collect::<Result<_, _>>()?;
    match <[SpiffeId; 1]>::try_from(ids) {
        Ok([id]) => Ok(id),
        Err(v) => Err(SpiffeError::SanCount(v.len())),
    }
}

/// The URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>, SpiffeError> {
    sans(der, |g| match g {
        x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
        _ => None,
    })
}

/// The DNS SANs of a DER certificate.
pub fn dns_sans(der: &[u8]) -> Result<Vec<String>, SpiffeError> {
    sans(der, |g| match g {
        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_string()),
        _ => None,
    })
}

/// The SANs of a DER certificate that `pick` keeps.
fn sans(
    der: &[u8],
    pick: impl Fn(&x509_parser::extensions::GeneralName<'_>) -> Option<String>,
) -> Result<Vec<String>, SpiffeError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| SpiffeError::Certificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SpiffeError::Certificate(e.to_string()))?;
    Ok(san
        .map(|s| s.value.general_names.iter().filter_map(&pick).collect())
        .unwrap_or_default())
}

/// When a DER certificate becomes valid and expires, Unix seconds.
pub fn validity(der: &[u8]) -> Result<(i64, i64), SpiffeError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| SpiffeError::Certificate(e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_bad_ones_are_refused() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/shop/sa/orders");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/orders");
        for bad in [
            "http://x/y",
            "spiffe://",
            "spiffe://UPPER/x",
            "spiffe://td//x",
            "spiffe://td/x/",
            "spiffe://td/../x",
            "spiffe://td/a b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matches_exact_ids_trust_domains_and_anyone() {
        let a = SpiffeId::parse("spiffe://td/ns/a/sa/x").unwrap();
        let b = SpiffeId::parse("spiffe://other/ns/a/sa/x").unwrap();
        let td = IdMatch::parse("spiffe://td/*").unwrap();
        assert_eq!(td, IdMatch::parse("spiffe://td").unwrap());
        assert!(td.matches(Some(&a)));
        assert!(!td.matches(Some(&b)));
        assert!(!td.matches(None));
        let exact = IdMatch::parse("spiffe://td/ns/a/sa/x").unwrap();
        assert!(exact.matches(Some(&a)) && !exact.matches(Some(&b)));
        assert!(IdMatch::parse("*").unwrap().matches(None));
        assert!(IdMatch::parse("spiffe://td/ns/*").is_err());
    }
}
