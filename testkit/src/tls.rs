//! A private certificate authority per test: a CA, a certificate for
//! `127.0.0.1` and `localhost` that it signed (servers show it), and one
//! for a client, as PEM files in a directory of their own.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

/// The CA's and the certificates' PEM files; the directory is
/// removed when dropped.
pub struct Certs {
    /// The directory of the files.
    pub dir: PathBuf,
}

impl Certs {
    /// A new CA and certificates it signed: `ca.pem`, `server.pem` and
    /// `server.key`, `client.pem` and `client.key`.
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // each certificate its own subject: a leaf whose subject were its
        // issuer's (rcgen's default name) would look self-signed to OpenSSL
        ca_params.distinguished_name = named("dtx test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let signed = |names: &[&str]| {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params.distinguished_name = named(&names[0]);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = signed(&["127.0.0.1", "localhost"]);
        let (client_cert, client_key) = signed(&["dtx-client"]);
        let dir = crate::scratch_dir("certs");
        for (name, pem) in [
            ("ca.pem", &ca.pem()),
            ("server.pem", &cert),
            ("server.key", &key),
            ("client.pem", &client_cert),
            ("client.key", &client_key),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Self { dir }
    }

    /// The path of one of its files.
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// The arguments that make a `redis-server` (or a sentinel) serve TLS
    /// on `tls_port` with the server certificate, asking clients for a
    /// certificate the CA signed, and speak TLS to the other nodes of its
    /// cluster or replication.
    pub fn redis_args(&self, tls_port: u16) -> Vec<String> {
        let mut args = vec!["--tls-port".to_owned(), tls_port.to_string()];
        for (arg, file) in [
            ("--tls-cert-file", "server.pem"),
            ("--tls-key-file", "server.key"),
            ("--tls-ca-cert-file", "ca.pem"),
        ] {
            args.push(arg.to_owned());
            args.push(self.file(file));
        }
        args.extend(["--tls-auth-clients", "yes", "--tls-replication", "yes"].map(str::to_owned));
        args
    }
}

/// A subject of one common name.
fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl Default for Certs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
