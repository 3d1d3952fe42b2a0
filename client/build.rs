//! Generates the client side of dtm's gRPC API from the server's
//! `proto/dtmgimp.proto` (needs `protoc`), and the services of the gRPC
//! scenario tests from `tests/proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/dtmgimp.proto");
    println!("cargo:rerun-if-changed=tests/proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["../proto/dtmgimp.proto"], &["../proto"])?;
    // only the tests include these
    tonic_prost_build::configure().compile_protos(
        &[
            "tests/proto/user.proto",
            "tests/proto/score.proto",
            "tests/proto/account.proto",
        ],
        &["tests/proto"],
    )?;
    Ok(())
}
