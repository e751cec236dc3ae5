//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler (protox), so a
//! fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/mysticchallenge/v1/gateway.proto"];
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Payloads are passed along without copies.
        .bytes(".mysticchallenge.v1")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
