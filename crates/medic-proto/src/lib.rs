//! medic's wire protocol, `medic.v1`: the generated gRPC code and the
//! conversions between its messages and medic-policy's domain types.
//!
//! - [`pb::v1`]: messages, the `Remediation` (agent) and `Admin` (operator)
//!   services, their clients and servers, generated from `proto/medic/v1`.
//! - [`convert`]: `From` domain → wire, `TryFrom` wire → domain (validating,
//!   with errors that name the field).
//! - [`request`]: validated forms of the requests that have no domain type.
//! - [`limits`]: bounds on label counts, string and list lengths in requests.
//! - [`logs`]: the daemons' log setup (text or JSON lines on stderr).
//! - [`error`]: medic's errors as gRPC statuses.
//! - [`metadata`]: the metadata keys both ends use (`medic-leader`,
//!   `medic-actor`, `retry-after-ms`, `authorization`).
//! - [`FILE_DESCRIPTOR_SET`]: for gRPC server reflection.
#![forbid(unsafe_code)]

pub mod clidocs;
pub mod convert;
pub mod error;
pub mod exposition;
pub mod limits;
pub mod logs;
pub mod metadata;
pub mod request;
pub mod secret_file;
pub mod summary;

/// Code generated from `proto/medic/v1` by tonic-prost-build.
///
/// Its documentation is the `.proto` files' comments. The workspace lints do
/// not apply to it.
pub mod pb {
    /// Package `medic.v1`.
    #[allow(
        missing_docs,
        unreachable_pub,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic
    )]
    pub mod v1 {
        tonic::include_proto!("medic.v1");
    }
}

/// The encoded `FileDescriptorSet` of `medic.v1` and everything it imports,
/// for gRPC server reflection (`tonic-reflection`'s
/// `register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("medic_v1_descriptor");
