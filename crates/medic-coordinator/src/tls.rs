//! TLS on the gRPC port: the certificate material (loaded with the config,
//! so a reload with a bad certificate is rejected like any bad setting and
//! the running one stays), and the accept loop that performs handshakes and
//! tags each connection with what its client proved ([`Peer`]).
//!
//! Client certificates are optional at the TLS layer (automation may use a
//! bearer token instead) and are verified right after the handshake against
//! `tls.client_ca` and `auth.operator_ca`. A certificate that fails is not
//! dropped at the handshake: the connection is kept so that every call on it
//! can be answered UNAUTHENTICATED with the reason (expired, unknown CA),
//! which tells an operator far more than a reset connection. Proof of
//! possession of the key is still checked by the handshake itself.
//!
//! A connection's TLS session uses the server certificate in force when it
//! was accepted: a reload rotates it for new connections and leaves
//! established ones open. The client's verdict, though, is not fixed for
//! the connection's life: it is cached with the material it was checked
//! against and the certificate's expiry, and checked again on the next call
//! after a reload (a removed CA refuses the connection's calls at once) or
//! once the certificate has expired. Connections are also closed after
//! [`MAX_CONNECTION_AGE`], so every client re-handshakes regularly.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use medic_policy::config::Errors;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::transport::server::Connected;

use std::net::SocketAddr;

use crate::auth::{CertNames, ClientCert, Peer, Transport};
use crate::conn::{Activity, ConnLimits, ConnSlot, IdleTimer, OpenConns};
use crate::metrics::Metrics;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; beyond it new connections are closed
/// (counted as `busy`) so a flood of half-open connections cannot exhaust
/// memory.
pub const MAX_HANDSHAKES: usize = 4096;
/// Handshakes in progress at once from one address, so one machine cannot
/// take every slot (slowloris) and lock agents and operators out.
const MAX_HANDSHAKES_PER_IP: u32 = 64;
/// Connections are closed (gracefully) after this long, so clients
/// re-handshake against the certificates and CAs in force.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
/// Longest certificate name kept (SANs, subjects); longer ones are cut, so
/// a caller cannot make the coordinator log or remember megabytes.
const MAX_NAME_LEN: usize = 256;

fn read(errs: &mut Errors, key: &str, path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (to try medic, `medic-coordinator dev-certs --out DIR --hosts HOST,...` writes \
                 a CA, server, agent and operator certificates)"
            } else {
                ""
            };
            errs.push(key, format!("cannot read {}: {e}{hint}", path.display()));
            None
        }
    }
}

fn certificates(
    errs: &mut Errors,
    key: &str,
    path: &Path,
    bytes: &[u8],
) -> Option<Vec<CertificateDer<'static>>> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            errs.push(
                key,
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            );
            None
        }
        Err(e) => {
            errs.push(key, format!("{}: not valid PEM: {e}", path.display()));
            None
        }
    }
}

/// A config key and the file it names.
pub(crate) type KeyedPath<'a> = (&'a str, &'a Path);

/// Checks the files of a TLS client (this coordinator as etcd's client):
/// the CA must hold certificates, the certificate too, and the key must be
/// private (see `medic_proto::secret_file`) and a PEM private key. Each
/// problem is pushed under the key (first of each pair) naming the file.
pub(crate) fn check_client_files(
    errs: &mut Errors,
    ca: KeyedPath<'_>,
    identity: Option<(KeyedPath<'_>, KeyedPath<'_>)>,
) {
    let _ = roots(errs, ca.0, ca.1);
    if let Some(((cert_key, cert), (key_key, key))) = identity {
        if let Some(b) = read(errs, cert_key, cert) {
            let _ = certificates(errs, cert_key, cert, &b);
        }
        match medic_proto::secret_file::read(key) {
            Err(e) => errs.push(key_key, e),
            Ok(b) => {
                if let Err(e) = PrivateKeyDer::from_pem_slice(&b) {
                    errs.push(
                        key_key,
                        format!("{}: no usable PEM private key: {e}", key.display()),
                    );
                }
            }
        }
    }
}

fn roots(errs: &mut Errors, key: &str, path: &Path) -> Option<Arc<RootCertStore>> {
    let bytes = read(errs, key, path)?;
    let certs = certificates(errs, key, path, &bytes)?;
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 || ignored > 0 {
        errs.push(
            key,
            format!(
                "{}: {ignored} of {} certificates are not usable as CA certificates",
                path.display(),
                added + ignored
            ),
        );
        return None;
    }
    Some(Arc::new(store))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verifier(
    errs: &mut Errors,
    key: &str,
    roots: Arc<RootCertStore>,
) -> Option<Arc<dyn ClientCertVerifier>> {
    match WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
    {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(key, format!("not usable as a client CA: {e}"));
            None
        }
    }
}

/// The TLS settings with their certificates and keys loaded and checked.
#[derive(Clone)]
pub struct TlsMaterial {
    /// `tls.cert`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// `tls.client_ca`.
    pub client_ca: PathBuf,
    /// `auth.operator_ca`.
    pub operator_ca: Option<PathBuf>,
    /// When the serving certificate expires.
    pub not_after: SystemTime,
    server: Arc<ServerConfig>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    operator_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// SHA-256 over every file read: equal material compares equal.
    digest: Vec<u8>,
    /// The first 8 bytes of `digest`: which material a cached client
    /// verdict was reached with.
    id: u64,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .field("operator_ca", &self.operator_ca)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.key == other.key
            && self.client_ca == other.client_ca
            && self.operator_ca == other.operator_ca
            && self.digest == other.digest
    }
}

impl TlsMaterial {
    /// Loads and checks everything; each problem is pushed to `errs` under
    /// the key that names the file.
    pub fn load(
        errs: &mut Errors,
        cert: &Path,
        key: &Path,
        client_ca: &Path,
        operator_ca: Option<&Path>,
    ) -> Option<Self> {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let chain = read(errs, "tls.cert", cert).and_then(|b| {
            digest.update(&b);
            certificates(errs, "tls.cert", cert, &b)
        });
        let private = match medic_proto::secret_file::read(key) {
            Err(e) => {
                errs.push("tls.key", e);
                None
            }
            Ok(b) => Some(b).and_then(|b| {
                digest.update(&b);
                match PrivateKeyDer::from_pem_slice(&b) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        errs.push(
                            "tls.key",
                            format!("{}: no usable PEM private key: {e}", key.display()),
                        );
                        None
                    }
                }
            }),
        };
        for path in std::iter::once(client_ca).chain(operator_ca) {
            if let Ok(b) = std::fs::read(path) {
                digest.update(&b);
            }
        }
        let client_verifier = roots(errs, "tls.client_ca", client_ca)
            .and_then(|r| verifier(errs, "tls.client_ca", r));
        let operator_verifier = match operator_ca {
            None => None,
            Some(p) => Some(
                roots(errs, "auth.operator_ca", p)
                    .and_then(|r| verifier(errs, "auth.operator_ca", r))?,
            ),
        };
        let (chain, private, client_verifier) = (chain?, private?, client_verifier?);
        let not_after = match x509_parser::parse_x509_certificate(&chain[0]) {
            Ok((_, c)) => {
                let t = c.validity().not_after.timestamp();
                SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
            }
            Err(e) => {
                errs.push(
                    "tls.cert",
                    format!("{}: cannot parse the certificate: {e}", cert.display()),
                );
                return None;
            }
        };
        if not_after <= SystemTime::now() {
            errs.push(
                "tls.cert",
                format!(
                    "{} expired at {}; clients would refuse it",
                    cert.display(),
                    humantime::format_rfc3339_seconds(not_after)
                ),
            );
            return None;
        }
        let hints = Hints {
            client: client_verifier.clone(),
            subjects: client_verifier
                .root_hint_subjects()
                .iter()
                .chain(
                    operator_verifier
                        .iter()
                        .flat_map(|v| v.root_hint_subjects().iter()),
                )
                .cloned()
                .collect(),
        };
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| errs.push("tls", format!("TLS versions: {e}")))
            .ok()?
            .with_client_cert_verifier(Arc::new(hints))
            .with_single_cert(chain, private);
        let mut server = match server {
            Ok(s) => s,
            Err(e) => {
                errs.push(
                    "tls.key",
                    format!(
                        "{} does not go with the certificate {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                );
                return None;
            }
        };
        server.alpn_protocols = vec![b"h2".to_vec()];
        Some(
            Self {
                cert: cert.to_owned(),
                key: key.to_owned(),
                client_ca: client_ca.to_owned(),
                operator_ca: operator_ca.map(Path::to_owned),
                not_after,
                server: Arc::new(server),
                client_verifier,
                operator_verifier,
                id: 0,
                digest: digest.finish().as_ref().to_vec(),
            }
            .with_id(),
        )
    }

    fn with_id(mut self) -> Self {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.digest[..8]);
        self.id = u64::from_be_bytes(first);
        self
    }

    /// What a client's certificate chain proves, checked against the CAs at
    /// `now`.
    pub fn classify(&self, chain: Option<&[CertificateDer<'_>]>, now: SystemTime) -> ClientCert {
        self.verdict(chain, now).0
    }

    /// [`Self::classify`], and until when the verdict holds (the end-entity
    /// certificate's expiry for a verified one).
    fn verdict(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        now: SystemTime,
    ) -> (ClientCert, SystemTime) {
        let forever = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 4);
        let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return (ClientCert::None, forever);
        };
        let (names, until) = match x509_parser::parse_x509_certificate(end_entity) {
            Ok((_, c)) => {
                let t = c.validity().not_after.timestamp();
                let until =
                    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
                (names_of(&c), until)
            }
            Err(e) => {
                return (
                    ClientCert::Rejected {
                        name: "?".to_owned(),
                        why: format!("it cannot be parsed: {e}"),
                    },
                    forever,
                );
            }
        };
        let at = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let client = self
            .client_verifier
            .verify_client_cert(end_entity, intermediates, at);
        let operator = self
            .operator_verifier
            .as_ref()
            .map(|v| v.verify_client_cert(end_entity, intermediates, at));
        let by_client_ca = client.is_ok();
        let by_operator_ca = matches!(operator, Some(Ok(_)));
        if !by_client_ca && !by_operator_ca {
            let err = match (client, operator) {
                (Err(e), None | Some(Ok(_))) | (_, Some(Err(e))) => e,
                (Ok(_), _) => rustls::Error::General("unreachable".to_owned()),
            };
            return (
                ClientCert::Rejected {
                    name: names.display_name().to_owned(),
                    why: describe(&err, &self.client_ca, self.operator_ca.as_deref()),
                },
                forever,
            );
        }
        (
            ClientCert::Verified(Arc::new(CertNames {
                by_client_ca,
                by_operator_ca,
                ..names
            })),
            until,
        )
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}

fn names_of(c: &x509_parser::certificate::X509Certificate<'_>) -> CertNames {
    use x509_parser::extensions::GeneralName;
    let mut names = CertNames {
        subject: bounded(&c.subject().to_string()),
        ..CertNames::default()
    };
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in san.value.general_names.iter().take(64) {
            match n {
                GeneralName::DNSName(d) => names.dns.push(bounded(d)),
                GeneralName::URI(u) => names.uris.push(bounded(u)),
                GeneralName::RFC822Name(m) => names.emails.push(bounded(m)),
                _ => {}
            }
        }
    }
    names
}

/// A certificate name as it may be kept, logged and compared: control
/// characters become `?` and it is cut at [`MAX_NAME_LEN`] bytes (marked
/// `…`). A changed name can never equal a host id (those have no control
/// characters and at most 253 bytes).
fn bounded(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

fn describe(e: &rustls::Error, client_ca: &Path, operator_ca: Option<&Path>) -> String {
    use rustls::CertificateError as C;
    let cas = match operator_ca {
        None => format!("tls.client_ca {}", client_ca.display()),
        Some(o) => format!(
            "tls.client_ca {} or auth.operator_ca {}",
            client_ca.display(),
            o.display()
        ),
    };
    match e {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("it has expired ({e})")
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("it is not valid yet; check the clocks ({e})")
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            format!("it is not signed by a CA this coordinator trusts ({cas})")
        }
        rustls::Error::InvalidCertificate(C::BadSignature) => format!(
            "it is not signed by a CA this coordinator trusts: a CA with the same name but \
             another key signed it ({cas})"
        ),
        rustls::Error::InvalidCertificate(C::Revoked) => "it has been revoked".to_owned(),
        _ => format!("{e} (trusted CAs: {cas})"),
    }
}

/// The handshake-time verifier: asks for a client certificate, checks the
/// handshake signature (proof of the key), and leaves the chain to
/// [`TlsMaterial::classify`], which runs right after.
#[derive(Debug)]
struct Hints {
    /// Checks handshake signatures (which do not depend on the roots).
    client: Arc<dyn ClientCertVerifier>,
    subjects: Vec<DistinguishedName>,
}

impl ClientCertVerifier for Hints {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.client.supported_verify_schemes()
    }
}

// === Connections ===

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    idle: IdleTimer,
    _slot: ConnSlot,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("info", &self.info).finish()
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// What a connection carries into every call on it (a request extension):
/// the client's address and, over TLS, its certificate chain with the
/// verdict cached.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    addr: Option<SocketAddr>,
    tls: Option<Arc<TlsClient>>,
    activity: Option<Arc<Activity>>,
}

#[derive(Debug)]
struct TlsClient {
    chain: Vec<CertificateDer<'static>>,
    cached: std::sync::Mutex<Verdict>,
}

#[derive(Clone, Debug)]
struct Verdict {
    /// [`TlsMaterial::id`] it was reached with.
    material: u64,
    /// When it lapses (the certificate's expiry).
    until: SystemTime,
    cert: ClientCert,
}

impl ConnInfo {
    /// A plaintext connection from `addr`.
    pub fn plaintext(addr: Option<SocketAddr>) -> Self {
        Self {
            addr,
            tls: None,
            activity: None,
        }
    }

    /// The connection's activity record: handlers touch it, streams hold
    /// it busy.
    pub fn activity(&self) -> Option<&Arc<Activity>> {
        self.activity.as_ref()
    }

    /// Who is calling on this connection, as of `now` and the TLS material
    /// in force: the cached verdict while it holds, else the chain checked
    /// again (after a reload, or once the certificate has expired).
    pub fn peer(&self, current: Option<&TlsMaterial>, now: SystemTime) -> Peer {
        let Some(tls) = &self.tls else {
            return Peer::plaintext(self.addr);
        };
        let mut cached = tls
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = current
            && (cached.material != m.id || now >= cached.until)
        {
            let chain = (!tls.chain.is_empty()).then_some(tls.chain.as_slice());
            let (cert, until) = m.verdict(chain, now);
            *cached = Verdict {
                material: m.id,
                until,
                cert,
            };
        }
        Peer {
            addr: self.addr,
            transport: Transport::Tls(cached.cert.clone()),
        }
    }
}

/// Counts handshakes in progress per address; the guard gives the slot back.
#[derive(Debug, Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>);

struct PerIpSlot {
    table: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn take(table: &Arc<PerIp>, ip: std::net::IpAddr) -> Option<PerIpSlot> {
        let mut t = table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = t.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut t = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if read.is_pending()
            && let Poll::Ready(e) = this.idle.poll_idle(cx)
        {
            return Poll::Ready(Err(e));
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS material in force, read for each new connection (`None`:
/// plaintext).
pub type CurrentTls = Arc<dyn Fn() -> Option<Arc<TlsMaterial>> + Send + Sync>;

/// Accepts connections until `stop`, performing TLS handshakes (each in its
/// own task, with a timeout) when the material in force says so. The
/// returned channel feeds the gRPC server.
pub fn accept(
    listener: TcpListener,
    current: CurrentTls,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    limits: ConnLimits,
) -> mpsc::Receiver<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_ip = Arc::new(PerIp::default());
    let open = Arc::new(OpenConns::default());
    let mut accept_errors = LogEvery::new(Duration::from_secs(10));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
                () = tx.closed() => return,
            };
            let (stream, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning,
                    // and say so once in a while, not 20 times a second.
                    if let Some(suppressed) = accept_errors.due() {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            "accept failed (server.max_connections bounds what clients can hold)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match open.take(addr.ip(), limits, &metrics) {
                Ok(slot) => slot,
                Err(reason) => {
                    metrics
                        .connections_refused
                        .get_or_create(&crate::metrics::ReasonLabel {
                            reason: reason.to_owned(),
                        })
                        .inc();
                    continue;
                }
            };
            let activity = Activity::new();
            let idle = IdleTimer::new(activity.clone(), limits.idle, metrics.clone());
            let _ = stream.set_nodelay(true);
            match current() {
                None => {
                    let conn = Conn {
                        io: Io::Plain(stream),
                        info: ConnInfo {
                            addr: Some(addr),
                            tls: None,
                            activity: Some(activity),
                        },
                        idle,
                        _slot: slot,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(material) => {
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        metrics.handshake("busy");
                        continue;
                    };
                    let Some(handshaking) = PerIp::take(&per_ip, addr.ip()) else {
                        metrics.handshake("busy");
                        continue;
                    };
                    let tx = tx.clone();
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let _handshaking = handshaking;
                        let tls = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            material.acceptor().accept(stream),
                        )
                        .await;
                        let tls = match tls {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                metrics.handshake("failed");
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed (a plaintext client?)");
                                return;
                            }
                            Err(_) => {
                                metrics.handshake("timeout");
                                tracing::debug!(peer = %addr, "TLS handshake timed out");
                                return;
                            }
                        };
                        metrics.handshake("ok");
                        let chain: Vec<CertificateDer<'static>> = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let now = SystemTime::now();
                        let (cert, until) =
                            material.verdict((!chain.is_empty()).then_some(chain.as_slice()), now);
                        let info = ConnInfo {
                            addr: Some(addr),
                            tls: Some(Arc::new(TlsClient {
                                chain,
                                cached: std::sync::Mutex::new(Verdict {
                                    material: material.id,
                                    until,
                                    cert,
                                }),
                            })),
                            activity: Some(activity),
                        };
                        let _ = tx
                            .send(Ok(Conn {
                                io: Io::Tls(Box::new(tls)),
                                info,
                                idle,
                                _slot: slot,
                            }))
                            .await;
                    });
                }
            }
        }
    });
    rx
}

/// Lets a repeated message through once per period, counting the rest.
#[derive(Debug)]
struct LogEvery {
    period: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogEvery {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last one)` when the message is due.
    fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.period)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod log_every_tests {
    use super::*;

    /// EMFILE at the accept loop, retried every 50 ms, logged 20 lines a
    /// second: now once per period, with the count of the rest.
    #[test]
    fn a_repeated_accept_error_is_logged_once_per_period_with_a_count() {
        let mut log = LogEvery::new(Duration::from_millis(200));
        assert_eq!(log.due(), Some(0));
        let logged: Vec<Option<u64>> = (0..5).map(|_| log.due()).collect();
        assert_eq!(logged, vec![None; 5]);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(log.due(), Some(5));
    }
}
