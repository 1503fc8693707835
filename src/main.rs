//! The `tollgate` binary: parse flags, run one command, map the outcome to
//! an exit code (0 ok, 1 invalid input or failed check, 2 usage error).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Libraries (the Rego parser) build errors while backtracking; with
    // RUST_BACKTRACE set each would capture a backtrace and slow every plan.
    // Panics keep theirs (RUST_BACKTRACE still governs them).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: single-threaded here, before anything reads the environment.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
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
