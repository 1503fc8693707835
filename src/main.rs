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
        // `tollgate plan ... | head` closing the pipe is not a failure.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("tollgate: {err:#}");
            ExitCode::from(1)
        }
    }
}
