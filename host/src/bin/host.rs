//! The example XMPP server: `host --config FILE` (see `host --help`).

fn main() -> std::process::ExitCode {
    sasl2_fast_host::cli::main()
}
