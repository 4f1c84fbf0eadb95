//! Spawning the system tools: feed stdin, collect output, turn a failure into an error that
//! carries the tool's own message.

use crate::error::{Error, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `program args`, writing `input` to its stdin, and returns its stdout on success.
pub fn run(program: &str, args: &[&str], input: &str) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(program, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that exits early closes the pipe; its exit status tells the real story.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(program, e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.trim().is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        Err(Error::Exec {
            program: format!("{program} {}", args.join(" ")),
            status: out.status.code(),
            stderr,
        })
    }
}

/// Whether `program` is on PATH: lets `backend auto` choose without spawning anything.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    })
}
