//! The example XMPP server, as the README runs it:
//! `cargo run --release --example host -- --config examples/host.toml`.
//! The server itself is the `sasl2-fast-host` crate (`host/`), which tests link.

fn main() -> std::process::ExitCode {
    sasl2_fast_host::cli::main()
}
