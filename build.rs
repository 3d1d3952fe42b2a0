//! Generates the gRPC API from `proto/` (needs `protoc`: Debian's
//! `protobuf-compiler`), with the descriptor set server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("dtmgimp_descriptor.bin"))
        .compile_protos(&["proto/dtmgimp.proto"], &["proto"])?;
    Ok(())
}
