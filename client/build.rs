//! Generates the client side of dtm's gRPC API from the server's
//! `proto/dtmgimp.proto` (needs `protoc`), the services of the gRPC
//! example from `examples/proto/` and those of the tests from
//! `tests/proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/dtmgimp.proto");
    println!("cargo:rerun-if-changed=tests/proto");
    println!("cargo:rerun-if-changed=examples/proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["../proto/dtmgimp.proto"], &["../proto"])?;
    // only the examples and the tests include these
    tonic_prost_build::configure().compile_protos(
        &["examples/proto/user.proto", "examples/proto/score.proto"],
        &["examples/proto"],
    )?;
    tonic_prost_build::configure()
        .compile_protos(&["tests/proto/account.proto"], &["tests/proto"])?;
    Ok(())
}
