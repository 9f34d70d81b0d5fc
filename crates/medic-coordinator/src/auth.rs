//! Who is calling, and may they?
//!
//! The TLS layer ([`crate::tls`]) verifies a client certificate once per
//! connection and records what it proved in a [`Peer`]. Each call then
//! decides here, against the configuration in force, whether that peer may
//! make it:
//!
//! - **Agents** (`medic.v1.Remediation`) present a certificate signed by
//!   `tls.client_ca`; the host ids it may speak for are its SANs of the kind
//!   `auth.agent_identity` names. A certificate for host A cannot heartbeat,
//!   request, renew or report for host B.
//! - **Operators** (`medic.v1.Admin`) present a certificate whose SAN matches
//!   a pattern in `auth.admin` or `auth.read_only` (signed by
//!   `auth.operator_ca` when that is set), or a bearer token from
//!   `auth.tokens`. Read-only operators may read; only admins may change
//!   anything. A certificate is either an operator's or an agent's, never
//!   both: one that names a host (per `auth.agent_identity`) is an agent's
//!   unless it chains to `auth.operator_ca` and not to `tls.client_ca`, so
//!   an agent's certificate can never call Admin.
//! - **Plaintext** (loopback, or `server.insecure = true`): nothing is
//!   proven. Agents are trusted to name themselves and operators are
//!   recorded as `unverified:NAME@ADDRESS`.
//!
//! Everything here is a pure function of its inputs, so the rules are unit
//! tested without a network.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use medic_policy::HostId;
use subtle::ConstantTimeEq;
use tonic::{Code, Status};

/// What an operator may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Status, hosts, permits, history, explain, watch.
    ReadOnly,
    /// Everything, including pause, resume, revoke, quarantine,
    /// unquarantine, reset-breaker and reload.
    Admin,
}

impl Role {
    /// The name in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an Admin call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads state.
    Read,
    /// Changes state.
    Write,
}

/// Which SAN of an agent's certificate names its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentIdentity {
    /// A DNS name SAN is the host id.
    Dns,
    /// A URI SAN `PREFIX<host id>`, for example
    /// `spiffe://example.org/medic/host/web-17`.
    Spiffe {
        /// Everything before the host id, ending in `/`.
        prefix: String,
    },
}

/// A SAN pattern: `*` matches any run of characters (dots and slashes
/// included); everything else matches itself, case-insensitively for ASCII.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern, or why it is refused.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if text.chars().all(|c| c == '*') {
            return Err(format!(
                "{text:?} would match every certificate, agents' included; name the operators \
                 (for example \"spiffe://example.org/operator/*\" or \"*.sre.example.org\")"
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{text:?} contains whitespace or control characters"
            ));
        }
        Ok(Self(text.to_ascii_lowercase()))
    }

    /// The pattern as written (lowercased).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.to_ascii_lowercase().as_bytes())
    }
}

/// `*`-only glob, iterative with one backtrack point (linear in practice).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A bearer token for automation, read from a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Its name: the audit history's actor is `token:NAME`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Where the secret was read from.
    pub file: PathBuf,
    /// SHA-256 of the secret; presented tokens are hashed and compared in
    /// constant time, so neither content nor length leaks through timing.
    digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A token with `secret` (already read and trimmed).
    pub fn new(name: String, role: Role, file: PathBuf, secret: &[u8]) -> Self {
        Self {
            name,
            role,
            file,
            digest: sha256(secret),
        }
    }
}

impl Token {
    /// Whether two entries hold the same secret.
    pub fn same_secret(&self, other: &Token) -> bool {
        bool::from(self.digest.ct_eq(&other.digest))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `[auth]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// How agents' host ids are read from their certificates.
    pub agent_identity: AgentIdentity,
    /// Certificates whose SAN matches one of these are admins.
    pub admin: Vec<Pattern>,
    /// Certificates whose SAN matches one of these (and no admin pattern)
    /// are read-only operators.
    pub read_only: Vec<Pattern>,
    /// Whether operator certificates must chain to `auth.operator_ca`
    /// (otherwise to `tls.client_ca`).
    pub operator_ca: Option<PathBuf>,
    /// Bearer tokens.
    pub tokens: Vec<Token>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            agent_identity: AgentIdentity::Dns,
            admin: Vec::new(),
            read_only: Vec::new(),
            operator_ca: None,
            tokens: Vec::new(),
        }
    }
}

/// What a verified client certificate says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject, for messages.
    pub subject: String,
    /// DNS name SANs.
    pub dns: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// It chains to `tls.client_ca`.
    pub by_client_ca: bool,
    /// It chains to `auth.operator_ca`.
    pub by_operator_ca: bool,
}

impl CertNames {
    fn all(&self) -> impl Iterator<Item = &str> {
        self.dns
            .iter()
            .chain(&self.uris)
            .chain(&self.emails)
            .map(String::as_str)
    }

    /// The name to show for this certificate: its first SAN, else its
    /// subject.
    pub fn display_name(&self) -> &str {
        self.all().next().unwrap_or(&self.subject)
    }

    /// The host ids this certificate may speak for.
    pub fn hosts<'a>(&'a self, identity: &'a AgentIdentity) -> Vec<&'a str> {
        match identity {
            AgentIdentity::Dns => self.dns.iter().map(String::as_str).collect(),
            AgentIdentity::Spiffe { prefix } => self
                .uris
                .iter()
                .filter_map(|u| u.strip_prefix(prefix.as_str()))
                .filter(|h| !h.is_empty() && !h.contains('/'))
                .collect(),
        }
    }
}

/// What a TLS client proved about itself at the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCert {
    /// It presented none.
    None,
    /// It presented one that no trusted CA vouches for (or that has
    /// expired): why, in words.
    Rejected {
        /// The certificate's subject or first SAN.
        name: String,
        /// Why it was refused.
        why: String,
    },
    /// It presented a valid one.
    Verified(Arc<CertNames>),
}

/// How the connection a call came on was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// No TLS: loopback, or `server.insecure = true`.
    Plaintext,
    /// TLS, with what the client's certificate proved.
    Tls(ClientCert),
}

/// The connection a call came on; a request extension set per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub addr: Option<SocketAddr>,
    /// TLS or not, and the client certificate.
    pub transport: Transport,
}

impl Peer {
    /// A plaintext peer at `addr`.
    pub fn plaintext(addr: Option<SocketAddr>) -> Self {
        Self {
            addr,
            transport: Transport::Plaintext,
        }
    }

    fn ip(&self) -> String {
        self.addr
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
    }

    /// Who this peer is, as far as the transport proves it, for logs,
    /// refusals and the admission limiter.
    pub fn identity(&self) -> String {
        match &self.transport {
            Transport::Plaintext => format!("plaintext@{}", self.ip()),
            Transport::Tls(ClientCert::None) => format!("anonymous@{}", self.ip()),
            Transport::Tls(ClientCert::Rejected { name, .. }) => {
                format!("rejected-cert:{name}@{}", self.ip())
            }
            Transport::Tls(ClientCert::Verified(c)) => format!("cert:{}", c.display_name()),
        }
    }
}

/// A call refused: the status to return, and whether the audit history
/// must record it (an authenticated caller reaching for what is not
/// theirs; unauthenticated noise is only counted and logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// UNAUTHENTICATED or PERMISSION_DENIED.
    pub code: Code,
    /// What was wrong and how to fix it.
    pub message: String,
    /// Who was refused.
    pub identity: String,
}

impl Refusal {
    fn unauthenticated(identity: String, message: impl Into<String>) -> Self {
        Self {
            code: Code::Unauthenticated,
            message: message.into(),
            identity,
        }
    }

    fn denied(identity: String, message: impl Into<String>) -> Self {
        Self {
            code: Code::PermissionDenied,
            message: message.into(),
            identity,
        }
    }

    /// Whether the audit history records it.
    pub fn audited(&self) -> bool {
        self.code == Code::PermissionDenied
    }

    /// The gRPC status.
    pub fn status(&self) -> Status {
        Status::new(self.code, self.message.clone())
    }
}

/// The operator role a verified certificate carries, if any, with the name
/// (SAN) that earned it: an admin pattern's match wins over a read-only one.
fn operator_role<'a>(cert: &'a CertNames, auth: &AuthConfig) -> Option<(Role, &'a str)> {
    let chained = if auth.operator_ca.is_some() {
        cert.by_operator_ca
    } else {
        cert.by_client_ca
    };
    if !chained {
        return None;
    }
    // A certificate that names a host is an agent's. It can only be an
    // operator's when operators have a CA of their own and it chains to
    // that one alone; so no pattern, however broad, makes an agent an
    // operator.
    let names_host = !cert.hosts(&auth.agent_identity).is_empty();
    if names_host && !(auth.operator_ca.is_some() && cert.by_operator_ca && !cert.by_client_ca) {
        return None;
    }
    let matching =
        |patterns: &[Pattern]| cert.all().find(|n| patterns.iter().any(|p| p.matches(n)));
    if let Some(n) = matching(&auth.admin) {
        Some((Role::Admin, n))
    } else {
        matching(&auth.read_only).map(|n| (Role::ReadOnly, n))
    }
}

fn rejected_message(name: &str, why: &str) -> String {
    format!("the client certificate {name:?} was refused: {why}")
}

/// May `peer` speak for `host` on `medic.v1.Remediation`?
pub fn authorize_agent(peer: &Peer, auth: &AuthConfig, host: &HostId) -> Result<(), Refusal> {
    let cert = match &peer.transport {
        Transport::Plaintext => return Ok(()),
        Transport::Tls(ClientCert::None) => {
            return Err(Refusal::unauthenticated(
                peer.identity(),
                "agents must present a client certificate (mutual TLS): set tls.cert and \
                 tls.key in agent.toml",
            ));
        }
        Transport::Tls(ClientCert::Rejected { name, why }) => {
            return Err(Refusal::unauthenticated(
                peer.identity(),
                rejected_message(name, why),
            ));
        }
        Transport::Tls(ClientCert::Verified(c)) => c,
    };
    let who = peer.identity();
    if operator_role(cert, auth).is_some() {
        return Err(Refusal::denied(
            who,
            format!(
                "{:?} is an operator's certificate; operators cannot speak for hosts",
                cert.display_name()
            ),
        ));
    }
    if !cert.by_client_ca {
        return Err(Refusal::denied(
            who,
            format!(
                "{:?} is not signed by tls.client_ca, the CA for agents",
                cert.display_name()
            ),
        ));
    }
    let hosts = cert.hosts(&auth.agent_identity);
    if hosts.iter().any(|h| *h == host.as_str()) {
        return Ok(());
    }
    let kind = match &auth.agent_identity {
        AgentIdentity::Dns => "DNS name SANs".to_owned(),
        AgentIdentity::Spiffe { prefix } => format!("URI SANs under {prefix}"),
    };
    Err(Refusal::denied(
        who,
        if hosts.is_empty() {
            format!(
                "the certificate {:?} names no host (no {kind}, auth.agent_identity); it cannot \
                 speak for {host}",
                cert.display_name()
            )
        } else {
            format!(
                "the certificate for {} cannot speak for host {host}",
                hosts.join(", ")
            )
        },
    ))
}

/// An operator allowed to make a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// The audit history's actor: `cert:NAME`, `token:NAME`, or over
    /// plaintext `unverified:NAME@ADDRESS` / `peer:ADDRESS`.
    pub actor: String,
    /// What it may do.
    pub role: Role,
}

/// What a caller sent besides the message: the `authorization` and
/// `medic-actor` metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// `authorization` metadata, as sent.
    pub authorization: Option<&'a str>,
    /// `medic-actor`: a name the caller claims (recorded only over
    /// plaintext, marked unverified).
    pub claimed: Option<&'a str>,
}

/// May `peer` make Admin call `call`, which needs `access`?
pub fn authorize_operator(
    peer: &Peer,
    auth: &AuthConfig,
    creds: Credentials<'_>,
    call: &str,
    access: Access,
) -> Result<Operator, Refusal> {
    let operator = identify_operator(peer, auth, creds)?;
    if access == Access::Write && operator.role == Role::ReadOnly {
        return Err(Refusal::denied(
            operator.actor.clone(),
            format!(
                "{} is a read-only operator; {call} changes state and needs an admin \
                 (auth.admin, or a token with role = \"admin\")",
                operator.actor
            ),
        ));
    }
    Ok(operator)
}

fn identify_operator(
    peer: &Peer,
    auth: &AuthConfig,
    creds: Credentials<'_>,
) -> Result<Operator, Refusal> {
    if let Some(header) = creds.authorization {
        return bearer(peer, auth, header);
    }
    let cert = match &peer.transport {
        Transport::Plaintext => {
            let actor = match creds
                .claimed
                .filter(|s| !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control))
            {
                Some(name) => format!("unverified:{name}@{}", peer.ip()),
                None => format!("peer:{}", peer.ip()),
            };
            return Ok(Operator {
                actor,
                role: Role::Admin,
            });
        }
        Transport::Tls(ClientCert::None) => {
            return Err(Refusal::unauthenticated(
                peer.identity(),
                "Admin calls need an operator certificate (medicctl --tls-cert/--tls-key) or a \
                 bearer token (medicctl --token-file)",
            ));
        }
        Transport::Tls(ClientCert::Rejected { name, why }) => {
            return Err(Refusal::unauthenticated(
                peer.identity(),
                rejected_message(name, why),
            ));
        }
        Transport::Tls(ClientCert::Verified(c)) => c,
    };
    match operator_role(cert, auth) {
        // The actor is the name that earned the role, not merely the
        // certificate's first.
        Some((role, name)) => Ok(Operator {
            actor: format!("cert:{name}"),
            role,
        }),
        None => Err(Refusal::denied(
            peer.identity(),
            format!(
                "the certificate {:?} is not an operator's: none of its names matches \
                 auth.admin or auth.read_only{}; agents' certificates cannot call Admin",
                cert.display_name(),
                if auth.operator_ca.is_some() && !cert.by_operator_ca {
                    " (and it is not signed by auth.operator_ca)"
                } else {
                    ""
                }
            ),
        )),
    }
}

fn bearer(peer: &Peer, auth: &AuthConfig, header: &str) -> Result<Operator, Refusal> {
    let Some(secret) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Err(Refusal::unauthenticated(
            peer.identity(),
            "the authorization metadata must be \"Bearer <token>\"",
        ));
    };
    let presented = sha256(secret.as_bytes());
    // Compare against every token, without stopping at a match, so the
    // time taken does not tell which one (or whether any) matched.
    let mut found: Option<&Token> = None;
    for t in &auth.tokens {
        if bool::from(t.digest.ct_eq(&presented)) {
            found = Some(t);
        }
    }
    match found {
        Some(t) => Ok(Operator {
            actor: format!("token:{}", t.name),
            role: t.role,
        }),
        None => Err(Refusal::unauthenticated(
            peer.identity(),
            "the bearer token is not valid (auth.tokens)",
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cert(dns: &[&str], uris: &[&str]) -> ClientCert {
        ClientCert::Verified(Arc::new(CertNames {
            subject: "CN=test".to_owned(),
            dns: dns.iter().map(|s| (*s).to_owned()).collect(),
            uris: uris.iter().map(|s| (*s).to_owned()).collect(),
            emails: Vec::new(),
            by_client_ca: true,
            by_operator_ca: false,
        }))
    }

    fn tls(c: ClientCert) -> Peer {
        Peer {
            addr: "192.0.2.7:5000".parse().ok(),
            transport: Transport::Tls(c),
        }
    }

    fn auth() -> AuthConfig {
        AuthConfig {
            admin: vec![Pattern::new("spiffe://medic.dev/operator/admin").unwrap()],
            read_only: vec![Pattern::new("spiffe://example.org/viewer/*").unwrap()],
            tokens: vec![Token::new(
                "ci".to_owned(),
                Role::ReadOnly,
                PathBuf::from("ci.token"),
                b"s3cret-s3cret-s3cret",
            )],
            ..AuthConfig::default()
        }
    }

    fn host(h: &str) -> HostId {
        HostId::new(h).unwrap()
    }

    #[test]
    fn agent_certificate_speaks_for_its_own_host() {
        let p = tls(cert(&["web-1", "web-1.example.org"], &[]));
        assert_eq!(authorize_agent(&p, &auth(), &host("web-1")), Ok(()));
        assert_eq!(
            authorize_agent(&p, &auth(), &host("web-1.example.org")),
            Ok(())
        );
    }

    #[test]
    fn agent_certificate_cannot_speak_for_another_host() {
        let p = tls(cert(&["web-1"], &[]));
        let r = authorize_agent(&p, &auth(), &host("web-2")).unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
        assert!(r.audited());
        assert!(
            r.message.contains("web-1") && r.message.contains("web-2"),
            "{r:?}"
        );
    }

    #[test]
    fn spiffe_identity_reads_the_host_after_the_prefix() {
        let mut a = auth();
        a.agent_identity = AgentIdentity::Spiffe {
            prefix: "spiffe://medic.dev/host/".to_owned(),
        };
        let p = tls(cert(&["web-2"], &["spiffe://medic.dev/host/web-1"]));
        assert_eq!(authorize_agent(&p, &a, &host("web-1")), Ok(()));
        // The DNS SAN does not count in spiffe mode.
        assert_eq!(
            authorize_agent(&p, &a, &host("web-2")).unwrap_err().code,
            Code::PermissionDenied
        );
    }

    #[test]
    fn agents_need_a_certificate_over_tls() {
        let r = authorize_agent(&tls(ClientCert::None), &auth(), &host("web-1")).unwrap_err();
        assert_eq!(r.code, Code::Unauthenticated);
        assert!(!r.audited());
        let r = authorize_agent(
            &tls(ClientCert::Rejected {
                name: "web-1".to_owned(),
                why: "certificate expired".to_owned(),
            }),
            &auth(),
            &host("web-1"),
        )
        .unwrap_err();
        assert_eq!(r.code, Code::Unauthenticated);
        assert!(r.message.contains("expired"), "{r:?}");
    }

    #[test]
    fn plaintext_agents_name_themselves() {
        let p = Peer::plaintext(None);
        assert_eq!(authorize_agent(&p, &auth(), &host("anything")), Ok(()));
    }

    #[test]
    fn operator_certificate_cannot_speak_for_a_host() {
        let p = tls(cert(&[], &["spiffe://medic.dev/operator/admin"]));
        let r = authorize_agent(&p, &auth(), &host("web-1")).unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
        assert!(r.message.contains("operator"), "{r:?}");
    }

    #[test]
    fn a_certificate_naming_a_host_is_never_an_operator_without_a_ca_of_their_own() {
        // A pattern broad enough to match agents' names does not make them
        // operators: the certificate names a host, so it is an agent's.
        let mut a = auth();
        a.admin = vec![Pattern::new("*.example.org").unwrap()];
        let agent = tls(cert(&["web-1.example.org"], &[]));
        let r = authorize_operator(&agent, &a, Credentials::default(), "Pause", Access::Write)
            .unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
        assert_eq!(
            authorize_agent(&agent, &a, &host("web-1.example.org")),
            Ok(())
        );
        // With an operator CA, a certificate chaining only to it may carry
        // DNS names and still be an operator.
        a.operator_ca = Some(PathBuf::from("operators.pem"));
        let ops = tls(ClientCert::Verified(Arc::new(CertNames {
            subject: "CN=alice".to_owned(),
            dns: vec!["alice.example.org".to_owned()],
            by_client_ca: false,
            by_operator_ca: true,
            ..CertNames::default()
        })));
        let op =
            authorize_operator(&ops, &a, Credentials::default(), "Pause", Access::Write).unwrap();
        assert_eq!(op.role, Role::Admin);
        // ...but never when it also chains to the agents' CA.
        let both = tls(ClientCert::Verified(Arc::new(CertNames {
            subject: "CN=web-1".to_owned(),
            dns: vec!["web-1.example.org".to_owned()],
            by_client_ca: true,
            by_operator_ca: true,
            ..CertNames::default()
        })));
        let r = authorize_operator(&both, &a, Credentials::default(), "Pause", Access::Write)
            .unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
    }

    #[test]
    fn agent_certificate_cannot_call_admin() {
        let p = tls(cert(&["web-1"], &["spiffe://medic.dev/host/web-1"]));
        for access in [Access::Read, Access::Write] {
            let r = authorize_operator(&p, &auth(), Credentials::default(), "GetStatus", access)
                .unwrap_err();
            assert_eq!(r.code, Code::PermissionDenied);
        }
    }

    #[test]
    fn read_only_operator_may_read_but_not_pause() {
        let p = tls(cert(&[], &["spiffe://example.org/viewer/alice"]));
        let op = authorize_operator(
            &p,
            &auth(),
            Credentials::default(),
            "GetStatus",
            Access::Read,
        )
        .unwrap();
        assert_eq!(op.role, Role::ReadOnly);
        assert_eq!(op.actor, "cert:spiffe://example.org/viewer/alice");
        let r = authorize_operator(&p, &auth(), Credentials::default(), "Pause", Access::Write)
            .unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
        assert!(r.message.contains("read-only") && r.message.contains("Pause"));
    }

    #[test]
    fn admin_operator_may_change_state() {
        let p = tls(cert(&[], &["spiffe://medic.dev/operator/admin"]));
        let op = authorize_operator(&p, &auth(), Credentials::default(), "Pause", Access::Write)
            .unwrap();
        assert_eq!(op.role, Role::Admin);
        assert_eq!(op.actor, "cert:spiffe://medic.dev/operator/admin");
    }

    #[test]
    fn operator_ca_when_set_is_required_for_operators() {
        let mut a = auth();
        a.operator_ca = Some(PathBuf::from("operators.pem"));
        let p = tls(cert(&[], &["spiffe://medic.dev/operator/admin"]));
        let r =
            authorize_operator(&p, &a, Credentials::default(), "Pause", Access::Write).unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
        assert!(r.message.contains("operator_ca"), "{r:?}");
    }

    #[test]
    fn bearer_token_identifies_automation() {
        let p = tls(ClientCert::None);
        let creds = Credentials {
            authorization: Some("Bearer s3cret-s3cret-s3cret"),
            claimed: None,
        };
        let op = authorize_operator(&p, &auth(), creds, "ListHosts", Access::Read).unwrap();
        assert_eq!(op.actor, "token:ci");
        let r = authorize_operator(&p, &auth(), creds, "Pause", Access::Write).unwrap_err();
        assert_eq!(r.code, Code::PermissionDenied);
    }

    #[test]
    fn wrong_bearer_token_is_unauthenticated_even_over_plaintext() {
        for p in [tls(ClientCert::None), Peer::plaintext(None)] {
            for header in ["Bearer s3cret-s3cret-s3creT", "Basic abc", "Bearer "] {
                let creds = Credentials {
                    authorization: Some(header),
                    claimed: None,
                };
                let r =
                    authorize_operator(&p, &auth(), creds, "GetStatus", Access::Read).unwrap_err();
                assert_eq!(r.code, Code::Unauthenticated, "{header}");
            }
        }
    }

    #[test]
    fn no_credentials_over_tls_is_unauthenticated() {
        let r = authorize_operator(
            &tls(ClientCert::None),
            &auth(),
            Credentials::default(),
            "GetStatus",
            Access::Read,
        )
        .unwrap_err();
        assert_eq!(r.code, Code::Unauthenticated);
    }

    #[test]
    fn plaintext_operator_is_recorded_as_unverified() {
        let p = Peer::plaintext("127.0.0.1:4000".parse().ok());
        let creds = Credentials {
            authorization: None,
            claimed: Some("alice"),
        };
        let op = authorize_operator(&p, &auth(), creds, "Pause", Access::Write).unwrap();
        assert_eq!(op.actor, "unverified:alice@127.0.0.1");
    }

    #[test]
    fn patterns_glob_with_star_only() {
        let p = Pattern::new("*.ops.example.org").unwrap();
        assert!(p.matches("alice.ops.example.org"));
        assert!(p.matches("a.b.ops.example.org"));
        assert!(p.matches("ALICE.ops.example.org"));
        assert!(!p.matches("ops.example.org"));
        assert!(!p.matches("alice.ops.example.org.evil"));
        let q = Pattern::new("spiffe://x/op/*/admin").unwrap();
        assert!(q.matches("spiffe://x/op/team-a/admin"));
        assert!(!q.matches("spiffe://x/op/team-a/viewer"));
        assert!(Pattern::new("*").is_err());
        assert!(Pattern::new("**").is_err());
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("a b").is_err());
    }
}
