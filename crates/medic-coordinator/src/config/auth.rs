//! `[auth]`: how agents are identified, which operator identities are
//! admins or read-only, and bearer tokens.

use std::path::PathBuf;

use medic_policy::config::Errors;
use serde::Deserialize;

use crate::auth::{AgentIdentity, AuthConfig, Pattern, Role, Token};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAuth {
    agent_identity: Option<String>,
    agent_spiffe_prefix: Option<String>,
    pub(super) operator_ca: Option<String>,
    admin: Vec<String>,
    read_only: Vec<String>,
    tokens: Vec<RawToken>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawToken {
    name: Option<String>,
    file: Option<String>,
    role: Option<String>,
}

impl RawAuth {
    pub(super) fn validate(&self, errs: &mut Errors) -> AuthConfig {
        let agent_identity = match (
            self.agent_identity.as_deref(),
            self.agent_spiffe_prefix.as_deref(),
        ) {
            (None | Some("dns"), None) => AgentIdentity::Dns,
            (None | Some("dns"), Some(_)) => {
                errs.push(
                    "auth.agent_spiffe_prefix",
                    "is only used with agent_identity = \"spiffe\"",
                );
                AgentIdentity::Dns
            }
            (Some("spiffe"), prefix) => match prefix {
                Some(p) if p.starts_with("spiffe://") && p.ends_with('/') && p.len() > 10 => {
                    AgentIdentity::Spiffe {
                        prefix: p.to_owned(),
                    }
                }
                Some(p) => {
                    errs.push(
                        "auth.agent_spiffe_prefix",
                        format!(
                            "must be spiffe://TRUST-DOMAIN/PATH/ ending in \"/\" (the host id \
                             follows it), got {p:?}"
                        ),
                    );
                    AgentIdentity::Dns
                }
                None => {
                    errs.push(
                        "auth.agent_spiffe_prefix",
                        "is required with agent_identity = \"spiffe\", for example \
                         \"spiffe://example.org/medic/host/\"",
                    );
                    AgentIdentity::Dns
                }
            },
            (Some(other), _) => {
                errs.push(
                    "auth.agent_identity",
                    format!("must be \"dns\" or \"spiffe\", got {other:?}"),
                );
                AgentIdentity::Dns
            }
        };
        let mut patterns = |key: &str, raw: &[String]| -> Vec<Pattern> {
            raw.iter()
                .enumerate()
                .filter_map(|(i, p)| match Pattern::new(p) {
                    Ok(p) => {
                        let dns_only = !p.as_str().contains("://") && !p.as_str().contains('@');
                        if agent_identity == AgentIdentity::Dns && self.operator_ca.is_none() && dns_only {
                            errs.push(
                                format!("auth.{key}[{i}]"),
                                format!(
                                    "{:?} can only match DNS names, and with agent_identity = \"dns\" \
                                     a certificate with a DNS name is an agent's; match operators' URI \
                                     or email SANs (\"spiffe://example.org/operator/*\", \
                                     \"*@sre.example.org\"), or give operators a CA of their own \
                                     (auth.operator_ca)",
                                    p.as_str()
                                ),
                            );
                        }
                        if let AgentIdentity::Spiffe { prefix } = &agent_identity
                            && p.matches(&format!("{prefix}any-host"))
                        {
                            errs.push(
                                format!("auth.{key}[{i}]"),
                                format!(
                                    "{:?} also matches agents' identities ({prefix}...); an \
                                     agent's certificate must never be an operator's",
                                    p.as_str()
                                ),
                            );
                        }
                        Some(p)
                    }
                    Err(e) => {
                        errs.push(format!("auth.{key}[{i}]"), e);
                        None
                    }
                })
                .collect()
        };
        let admin = patterns("admin", &self.admin);
        let read_only = patterns("read_only", &self.read_only);
        let operator_ca = match self.operator_ca.as_deref() {
            None => None,
            Some("") => {
                errs.push(
                    "auth.operator_ca",
                    "must not be empty (leave it out instead)",
                );
                None
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let mut tokens: Vec<Token> = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = |k: &str| format!("auth.tokens[{i}].{k}");
            let name = match t.name.as_deref() {
                Some(n)
                    if !n.is_empty()
                        && n.len() <= 64
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    if tokens.iter().any(|o| o.name == n) {
                        errs.push(at("name"), format!("{n:?} is used by another token"));
                    }
                    Some(n.to_owned())
                }
                Some(n) => {
                    errs.push(
                        at("name"),
                        format!("must be 1-64 characters of A-Z a-z 0-9 - _ ., got {n:?}"),
                    );
                    None
                }
                None => {
                    errs.push(
                        at("name"),
                        "is required (the audit history's actor is token:NAME)",
                    );
                    None
                }
            };
            let role = match t.role.as_deref() {
                Some("admin") => Some(Role::Admin),
                Some("read-only") => Some(Role::ReadOnly),
                Some(r) => {
                    errs.push(
                        at("role"),
                        format!("must be \"admin\" or \"read-only\", got {r:?}"),
                    );
                    None
                }
                None => {
                    errs.push(at("role"), "is required: \"admin\" or \"read-only\"");
                    None
                }
            };
            let secret = match t.file.as_deref() {
                None | Some("") => {
                    errs.push(
                        at("file"),
                        "is required (a file holding the token, mode 0600)",
                    );
                    None
                }
                Some(f) => {
                    let path = PathBuf::from(f);
                    match medic_proto::secret_file::read(&path).and_then(|b| {
                        String::from_utf8(b).map_err(|_| format!("{f} is not UTF-8 text"))
                    }) {
                        Err(e) => {
                            errs.push(at("file"), e);
                            None
                        }
                        Ok(text) => {
                            let secret = text.trim().to_owned();
                            if secret.len() < 32 || secret.chars().any(char::is_whitespace) {
                                errs.push(
                                    at("file"),
                                    format!(
                                        "{f}: a token must be at least 32 characters without \
                                         spaces (for example `openssl rand -hex 32`)"
                                    ),
                                );
                                None
                            } else {
                                Some((path, secret))
                            }
                        }
                    }
                }
            };
            if let (Some(name), Some(role), Some((file, secret))) = (name, role, secret) {
                let token = Token::new(name, role, file, secret.as_bytes());
                if tokens.iter().any(|o| o.same_secret(&token)) {
                    errs.push(at("file"), "holds the same token as another entry");
                }
                tokens.push(token);
            }
        }
        AuthConfig {
            agent_identity,
            admin,
            read_only,
            operator_ca,
            tokens,
        }
    }
}
