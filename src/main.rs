//! Command-line entry point; everything lives in the library.

use argh::FromArgs;
use connmark_lb::error::printable;
use std::process::ExitCode;

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = words.iter().map(String::as_str).collect();
    let name = strs.first().map_or("connmark-lb", |p| {
        p.rsplit('/').next().unwrap_or("connmark-lb")
    });
    let args = match connmark_lb::cli::Args::from_args(&[name], strs.get(1..).unwrap_or(&[])) {
        Ok(args) => args,
        // --help is a success; anything else is a bad command line: exit 2, as documented.
        Err(early) if early.status.is_ok() => {
            print!("{}", early.output);
            return ExitCode::SUCCESS;
        }
        Err(early) => {
            eprint!("{}", printable(&early.output));
            return ExitCode::from(2);
        }
    };
    match connmark_lb::cli::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connmark-lb: {}", printable(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}
