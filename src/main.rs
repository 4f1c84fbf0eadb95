//! Command-line entry point; everything lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: connmark_lb::cli::Args = argh::from_env();
    match connmark_lb::cli::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connmark-lb: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
