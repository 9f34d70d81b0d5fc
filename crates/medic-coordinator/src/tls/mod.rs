//! TLS on the gRPC port: the certificate material (loaded with the config,
//! so a reload with a bad certificate is rejected like any bad setting and
//! the running one stays), and the accept loop that performs handshakes and
//! tags each connection with what its client proved
//! ([`Peer`](crate::auth::Peer)).
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

mod accept;
mod conn;
mod files;
mod material;
mod verify;

pub use accept::{
    CurrentTls, HANDSHAKE_TIMEOUT, MAX_CONNECTION_AGE, MAX_HANDSHAKES, accept, accept_memory,
};
pub use conn::{Conn, ConnInfo};
pub(crate) use files::check_client_files;
pub use material::TlsMaterial;
