//! The `tollgate` binary: parse flags, run one command, map the outcome to
//! an exit code (0 ok, 1 invalid input or failed check, 2 usage error).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tollgate::cli::Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match tollgate::cli::run(cli, &mut out) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!("tollgate: {err:#}");
            ExitCode::from(1)
        }
    }
}
