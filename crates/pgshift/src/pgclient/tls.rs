//! TLS to PostgreSQL (the source, and a `postgres://` warehouse) with libpq's `sslmode` meanings, over rustls:
//!
//! - `disable`: plain TCP;
//! - `prefer` (the default) and `require`: encrypted when the server offers TLS (`require` refuses a server that does
//!   not), the certificate not verified: what libpq does without a root certificate. RDS for PostgreSQL 15+ forces
//!   TLS, so the default connects to it;
//! - `verify-ca`, `verify-full`: the server's chain verified against `sslrootcert` (a PEM file, such as the RDS
//!   global bundle), and for `verify-full` the host name too.
//!
//! `sslrootcert` and the `verify-*` modes are read here (tokio-postgres does not parse them); the rest of the
//! connection string is tokio-postgres'.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    None,
    Chain,
    ChainAndHost,
}

/// A connection string parsed, what libpq's environment adds to it ([`super::libpq`]), the TLS connector its
/// `sslmode` asks for, and where its password came from.
pub(crate) struct Parsed {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
    pub(crate) password: super::libpq::PasswordOrigin,
}

/// A connection string parsed, in this process's environment.
pub(crate) fn config(conn: &str) -> Result<Parsed, String> {
    config_in(conn, &super::libpq::process_vars)
}

/// A connection string parsed in an environment.
pub(crate) fn config_in(conn: &str, vars: super::libpq::Vars) -> Result<Parsed, String> {
    let conn = &super::libpq::with_ssl_env(conn, vars);
    let mut verify = Verify::None;
    let mut root: Option<String> = None;
    let mut take = |k: &str, v: &str| -> Option<String> {
        match (k, v) {
            ("sslmode", "verify-ca") => {
                verify = Verify::Chain;
                Some("require".into())
            }
            ("sslmode", "verify-full") => {
                verify = Verify::ChainAndHost;
                Some("require".into())
            }
            ("sslrootcert", v) => {
                root = Some(crate::contract::url::percent_decode(v));
                None
            }
            _ => Some(v.to_string()),
        }
    };
    let rewritten = if conn.contains("://") {
        match conn.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<String> = query
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .filter_map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        take(k, v).map(|v| format!("{k}={v}"))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => conn.to_string(),
        }
    } else {
        conn.split_whitespace()
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                take(k, v).map(|v| format!("{k}={v}"))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let config: tokio_postgres::Config = rewritten.parse().map_err(|e: tokio_postgres::Error| {
        format!(
            "connection string: {}",
            which_part(conn).unwrap_or_else(|| e.to_string())
        )
    })?;
    let mut config = config;
    let password = super::libpq::fill(&mut config, vars);
    let tls = connector(verify, root.as_deref(), config.get_ssl_mode())?;
    Ok(Parsed { config, tls, password })
}

/// What is wrong with a connection string the driver refused, where that can be told: its scheme, its port, its
/// `sslmode` (libpq's names). The password never appears in the message.
fn which_part(conn: &str) -> Option<String> {
    const MODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
    let query = |q: &str| -> Option<String> {
        q.split(['&', ' ']).find_map(|p| match p.split_once('=') {
            Some(("sslmode", v)) if !MODES.contains(&v) => {
                Some(format!("unknown sslmode {v:?}: use one of {}", MODES.join(", ")))
            }
            _ => None,
        })
    };
    let Some((scheme, rest)) = conn.split_once("://") else {
        return query(conn);
    };
    if scheme != "postgres" && scheme != "postgresql" {
        return Some(format!("scheme {scheme:?}: use postgres:// (or postgresql://)"));
    }
    let (authority, tail) = rest
        .split_once(['/', '?'])
        .map_or((rest, ""), |(a, _)| (a, &rest[a.len()..]));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    for hp in host_port.split(',') {
        if let Some((_, port)) = hp.rsplit_once(':').filter(|_| !hp.ends_with(']')) {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Some(format!("port {port:?} is not a number from 1 to 65535"));
            }
        }
    }
    tail.split_once('?').and_then(|(_, q)| query(q))
}

/// The connector for a config built elsewhere (from a secret): `prefer`/`require` without verification.
pub(crate) fn unverified() -> Result<MakeRustlsConnect, String> {
    connector(Verify::None, None, SslMode::Prefer)
}

fn connector(verify: Verify, root: Option<&str>, mode: SslMode) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match verify {
        Verify::None => {
            if root.is_some() && mode != SslMode::Disable {
                tracing::debug!("sslrootcert is used only with sslmode=verify-ca or verify-full");
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth()
        }
        Verify::Chain | Verify::ChainAndHost => {
            let path = root.ok_or("sslmode=verify-ca and verify-full need sslrootcert=<PEM file of the CA>")?;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path}: no certificate in it"));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `prefer`/`require`: the handshake's signatures are checked, the certificate is not (libpq's behaviour).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root; the name in the certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_string_says_which_part_is_wrong() {
        let part = |c: &str| which_part(c).unwrap_or_default();
        assert!(part("mysql://u@h/db").contains("scheme \"mysql\""));
        assert!(part("postgres://u:secret@h:port/db").contains("port \"port\""));
        assert!(!part("postgres://u:secret@h:port/db").contains("secret"));
        assert!(part("postgres://u@h:0/db").contains("port \"0\""));
        assert!(part("postgres://u@h/db?sslmode=sometimes").contains("unknown sslmode \"sometimes\""));
        assert!(part("host=h sslmode=on").contains("unknown sslmode \"on\""));
        assert_eq!(which_part("postgres://u@h:5432,h2:5433/db?sslmode=verify-full"), None);
        assert_eq!(which_part("postgres://u@[::1]:5432/db"), None);
    }

    #[test]
    fn pgshift_reads_the_verify_modes_and_tokio_postgres_the_rest() {
        let none = |_: &str| None;
        let c = config_in("postgres://u@h:5433/db?sslmode=require&application_name=x", &none)
            .expect("ok")
            .config;
        assert_eq!((c.get_ssl_mode(), c.get_ports()), (SslMode::Require, &[5433][..]));
        let c = config_in("postgres://u@h/db", &none).expect("ok").config;
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);
        let c = config_in("host=h user=u sslmode=disable", &none).expect("ok").config;
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        let env = |k: &str| (k == "PGSSLMODE").then(|| "require".to_string());
        let c = config_in("postgres://u@h/db", &env).expect("ok").config;
        assert_eq!(c.get_ssl_mode(), SslMode::Require, "PGSSLMODE");
        let e = config_in("postgres://u@h/db", &|k: &str| {
            (k == "PGSSLMODE").then(|| "verify-full".into())
        })
        .err()
        .expect("no root");
        assert!(e.contains("sslrootcert"), "{e}");
        let e = config("postgres://u@h/db?sslmode=verify-full").err().expect("no root");
        assert!(e.contains("sslrootcert"), "{e}");
        let e = config("postgres://u@h/db?sslmode=verify-ca&sslrootcert=%2Fnonexistent.pem")
            .err()
            .expect("no file");
        assert!(e.contains("/nonexistent.pem"), "{e}");
        assert!(config("postgres://u@h/db?sslmode=sometimes").is_err());
    }
}
