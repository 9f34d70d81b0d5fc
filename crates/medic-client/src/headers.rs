//! What an operator's client sends besides the message: the name it claims
//! ([`medic-actor`](medic_proto::metadata::ACTOR)) and a bearer token
//! ([`authorization`](medic_proto::metadata::AUTHORIZATION)). The agent
//! sends neither: its certificate is its identity.

use medic_proto::metadata::{self, MAX_ACTOR_LEN};
use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;

/// Why a header value cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The actor is longer than the coordinator records.
    #[error("at most {MAX_ACTOR_LEN} bytes, got {0}")]
    ActorTooLong(usize),
    /// The actor is not printable ASCII.
    #[error("{0:?}: only printable ASCII can be sent as the caller's name")]
    ActorNotAscii(String),
    /// The token is empty.
    #[error("the token is empty")]
    EmptyToken,
    /// The token is not printable ASCII.
    #[error("a token must be printable ASCII")]
    TokenNotAscii,
}

/// The headers added to every request (an interceptor).
#[derive(Clone, Default)]
pub struct Headers {
    actor: Option<AsciiMetadataValue>,
    bearer: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Headers")
            .field("actor", &self.actor)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Headers {
    /// No headers (the agent's).
    pub fn none() -> Self {
        Self::default()
    }

    /// Sends `name` as the actor: at most [`MAX_ACTOR_LEN`] bytes of
    /// printable ASCII.
    pub fn with_actor(mut self, name: &str) -> Result<Self, HeaderError> {
        if name.len() > MAX_ACTOR_LEN {
            return Err(HeaderError::ActorTooLong(name.len()));
        }
        let not_ascii = || HeaderError::ActorNotAscii(name.to_owned());
        if !printable_ascii(name) {
            return Err(not_ascii());
        }
        self.actor = Some(MetadataValue::try_from(name).map_err(|_| not_ascii())?);
        Ok(self)
    }

    /// Sends `Bearer TOKEN` (trimmed), marked sensitive so it is never
    /// logged.
    pub fn with_bearer(mut self, token: &str) -> Result<Self, HeaderError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(HeaderError::EmptyToken);
        }
        if !printable_ascii(token) {
            return Err(HeaderError::TokenNotAscii);
        }
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| HeaderError::TokenNotAscii)?;
        value.set_sensitive(true);
        self.bearer = Some(value);
        Ok(self)
    }

    /// Whether a bearer token is sent.
    pub fn has_bearer(&self) -> bool {
        self.bearer.is_some()
    }
}

/// Whether `s` is printable ASCII (spaces included): what the coordinator
/// reads from metadata (it ignores other bytes).
fn printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(a) = &self.actor {
            req.metadata_mut().insert(metadata::ACTOR, a.clone());
        }
        if let Some(b) = &self.bearer {
            req.metadata_mut()
                .insert(metadata::AUTHORIZATION, b.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_and_token_are_added_to_every_request() {
        let mut h = Headers::none()
            .with_actor("alice")
            .unwrap()
            .with_bearer(" s3cret \n")
            .unwrap();
        let req = h.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get(metadata::ACTOR).unwrap(), "alice");
        assert_eq!(
            req.metadata().get(metadata::AUTHORIZATION).unwrap(),
            "Bearer s3cret"
        );
        assert!(!format!("{h:?}").contains("s3cret"));
    }

    #[test]
    fn unsendable_values_are_refused() {
        assert_eq!(
            Headers::none().with_actor(&"a".repeat(129)).unwrap_err(),
            HeaderError::ActorTooLong(129)
        );
        assert!(matches!(
            Headers::none().with_actor("zoë"),
            Err(HeaderError::ActorNotAscii(_))
        ));
        assert_eq!(
            Headers::none().with_bearer("  ").unwrap_err(),
            HeaderError::EmptyToken
        );
        assert_eq!(
            Headers::none().with_bearer("tök").unwrap_err(),
            HeaderError::TokenNotAscii
        );
    }
}
