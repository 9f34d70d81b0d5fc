//! Where a deployment's state lives in etcd and etcd's limits
//! ([`EtcdConfig`]), and TLS to etcd ([`EtcdTls`]).

use std::fmt;
use std::time::Duration;

/// Where the state lives in etcd, and etcd's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix of this medic deployment (`/medic/prod`); a trailing `/`
    /// is ignored. Two deployments on one etcd need two prefixes.
    pub prefix: String,
    /// Time allowed to connect to a member. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for one request. Default 5 s.
    pub request_timeout: Duration,
    /// Most operations in one transaction: etcd's `--max-txn-ops`,
    /// default 128.
    pub max_txn_ops: usize,
    /// Most bytes of one request: etcd's `--max-request-bytes`, default
    /// 1.5 MiB.
    pub max_txn_bytes: usize,
    /// TLS to etcd (`https://` endpoints); `None` for plaintext.
    pub tls: Option<EtcdTls>,
    /// Whether [`EtcdStore::connect`](super::EtcdStore::connect) creates an empty store under a
    /// prefix that holds none (default `true`). Tools that only read or
    /// change settings of an existing deployment set it `false`, so that a
    /// mistyped prefix is an error, not a new, empty deployment.
    pub create: bool,
}

/// TLS to etcd: the CA etcd's server certificates chain to, and the client
/// certificate etcd's `--client-cert-auth` asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA certificate(s) of etcd's server certificates.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate and its PEM private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name etcd's certificate must carry, when it is not the
    /// endpoints' host name.
    pub server_name: Option<String>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl EtcdConfig {
    /// etcd's defaults for `endpoints` and `prefix`.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: prefix.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_txn_ops: 128,
            max_txn_bytes: 1536 * 1024,
            tls: None,
            create: true,
        }
    }
}
