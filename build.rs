//! Generates the gRPC code from `proto/` (needs `protoc`: Debian's
//! `protobuf-compiler`), with the descriptor set server reflection serves,
//! and the tests' business service from `tests/proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("dtmgimp_descriptor.bin"))
        .compile_protos(&["proto/dtmgimp.proto", "proto/wf.proto"], &["proto"])?;
    // only the integration tests include it
    tonic_prost_build::configure().compile_protos(&["tests/proto/busi.proto"], &["tests/proto"])?;
    Ok(())
}
