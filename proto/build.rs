//! Generates the `drover.v1` Rust types and tonic services from `drover/v1/*.proto`.
//! `protoc` comes from the `protoc-bin-vendored` crate, so a plain `cargo build` needs
//! nothing installed beyond the Rust toolchain.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["drover/v1/agent.proto", "drover/v1/operator.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The agent RPC is named `Connect`, which would clash with the generated
    // `AgentChannelClient::connect` constructor: clients are built from a `Channel`.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
