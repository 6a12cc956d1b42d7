//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh
//! `cargo build` needs nothing installed by hand.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("firn/catalog/v1/catalog.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("firn_descriptor.bin"))
        .compile_protos(&[&proto], &[&root])?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
