//! Compiles `proto/medic/v1/*.proto` (at the workspace root) into Rust with
//! tonic-prost-build, using the `protoc` that the `protoc-bin-vendored` crate
//! ships, so building medic needs no system protobuf compiler.
//!
//! Also writes the file descriptor set that `FILE_DESCRIPTOR_SET` embeds
//! (for gRPC server reflection).

use std::env;
use std::error::Error;
use std::path::PathBuf;

/// The files of package `medic.v1`, relative to the proto root.
const PROTOS: [&str; 3] = [
    "medic/v1/types.proto",
    "medic/v1/remediation.proto",
    "medic/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // The directory, so that adding a file also triggers a rebuild.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    // The well-known types (google/protobuf/*.proto) ship with the vendored
    // protoc; their Rust types come from prost-types.
    let includes = [proto_root, protoc_bin_vendored::include_path()?];

    // The protoc path is set on the config rather than through `PROTOC`:
    // setting an environment variable is `unsafe` in edition 2024, and the
    // workspace forbids unsafe code.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Labels and selectors are `BTreeMap`s in medic-policy; the same type
    // here makes conversions moves, and encoding deterministic.
    config.btree_map(["."]);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("medic_v1_descriptor.bin"))
        .compile_with_config(config, &protos, &includes.map(PathBuf::from))?;
    Ok(())
}
