//! Test certificates made with rcgen at test time (no private key is
//! committed): a CA, SPIFFE leaf certificates signed by it, and the PEM
//! files the agent's config names.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A subject alternative name of a leaf.
pub enum San<'a> {
    Uri(&'a str),
    Dns(&'a str),
    Ip(IpAddr),
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf with these SANs; `expired`: valid only in 2020. Returns
    /// (certificate PEM, key PEM).
    pub fn leaf(&self, sans: &[San<'_>], expired: bool) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tailmesh test");
        for s in sans {
            params.subject_alt_names.push(match s {
                San::Uri(u) => SanType::URI((*u).try_into().unwrap()),
                San::Dns(d) => SanType::DnsName((*d).try_into().unwrap()),
                San::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
        params.use_authority_key_identifier_extension = true;
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A SPIFFE leaf valid from 2020 until tomorrow (UTC), written like
    /// [`Ca::spiffe_files`].
    pub fn spiffe_files_expiring(&self, dir: &Path, name: &str, id: &str) -> Files {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(id.try_into().unwrap()));
        params.use_authority_key_identifier_extension = true;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tomorrow = ringlog::clock::rfc3339((secs + 86_400) * 1_000_000_000);
        let ymd: Vec<i32> = tomorrow[..10]
            .split('-')
            .map(|p| p.parse().unwrap())
            .collect();
        params.not_after = rcgen::date_time_ymd(ymd[0], ymd[1] as u8, ymd[2] as u8);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Files::write(dir, name, &cert.pem(), &key.serialize_pem())
    }

    /// A SPIFFE leaf written to `dir/<name>.crt` and `dir/<name>.key`.
    pub fn spiffe_files(&self, dir: &Path, name: &str, id: &str, expired: bool) -> Files {
        let (cert, key) = self.leaf(&[San::Uri(id)], expired);
        Files::write(dir, name, &cert, &key)
    }

    /// Writes the CA certificate to `dir/<name>.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, &self.pem).unwrap();
        p
    }
}

/// A certificate and key on disk.
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    pub fn write(dir: &Path, name: &str, cert: &str, key: &str) -> Files {
        let f = Files {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&f.cert, cert).unwrap();
        std::fs::write(&f.key, key).unwrap();
        f
    }

    /// The config's `identity` section for these files.
    pub fn identity(&self, bundle: &Path, trust_domain: &str) -> String {
        format!(
            "identity: {{ cert: \"{}\", key: \"{}\", trust_bundle: \"{}\", trust_domain: {trust_domain} }}\n",
            self.cert.display(),
            self.key.display(),
            bundle.display()
        )
    }
}
