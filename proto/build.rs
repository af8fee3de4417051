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
    // Messages that carry secret values get a redacting Debug (in `src/lib.rs`) instead of
    // the derived one, so no `{:?}` anywhere can print a secret.
    config.skip_debug([
        ".drover.v1.SecretValue",
        ".drover.v1.SetSecretRequest",
        ".drover.v1.EnrollRequest",
        ".drover.v1.CreateJoinTokenResponse",
        ".drover.v1.CreateApiTokenResponse",
        ".drover.v1.RegistryAuth",
    ]);
    // The agent RPC is named `Connect`, which would clash with the generated
    // `AgentChannelClient::connect` constructor: clients are built from a `Channel`.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
