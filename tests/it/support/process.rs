//! Running host commands: with optional stdin and no time bound ([`run_command`]), or with a
//! time bound for tools that might hang ([`run`]); `_ok` and [`expect_success`] turn a failure
//! into a panic that shows the command's output.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `command`, feeding `stdin` if given, and returns its output whatever the status.
pub fn run_command(command: &mut Command, stdin: Option<&str>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("writing stdin of {command:?}: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {command:?}: {e}"))
}

/// Panics with the command's output unless it succeeded; returns its stdout.
pub fn expect_success(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// No external command run through [`run`] should come close to this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a command to completion within [`COMMAND_TIMEOUT`], killing it if it hangs.
pub fn run(cmd: &mut Command) -> Output {
    let description = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {COMMAND_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Runs a command that must succeed (within [`COMMAND_TIMEOUT`]); returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let description = format!("{cmd:?}");
    let out = run(cmd);
    expect_success(&description, out)
}
