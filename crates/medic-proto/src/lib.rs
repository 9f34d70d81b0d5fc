//! medic's wire protocol, `medic.v1`.
#![forbid(unsafe_code)]

/// Generated code.
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

/// The encoded file descriptor set of `medic.v1` and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("medic_v1_descriptor");
