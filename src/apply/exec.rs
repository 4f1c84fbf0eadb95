//! Spawning the system tools: feed stdin, collect output, turn a failure into an error that
//! carries the tool's own message. Every tool gets a deadline: a hung `nft` or `ip` is killed
//! and reported instead of hanging an apply (or the daemon) forever.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one tool may take: ours finish in milliseconds, a loaded router's in well under a
/// second.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `program args`, writing `input` to its stdin, and returns its stdout on success.
pub fn run(program: &str, args: &[&str], input: &str) -> Result<String> {
    run_within(program, args, input, TIMEOUT)
}

/// [`run`] with the deadline `limit` from now.
pub fn run_within(program: &str, args: &[&str], input: &str, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    let line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(program, e))?;
    let timed_out = |child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
        Error::io(
            &line,
            std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no result within {limit:?}: killed"),
            ),
        )
    };
    let (out, err) = match exchange(&mut child, input.as_bytes(), deadline) {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::TimedOut => return Err(timed_out(&mut child)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::io(program, e));
        }
    };
    let status = loop {
        match child.try_wait().map_err(|e| Error::io(program, e))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => return Err(timed_out(&mut child)),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    if status.success() {
        Ok(String::from_utf8_lossy(&out).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&err).into_owned();
        if stderr.trim().is_empty() {
            stderr = String::from_utf8_lossy(&out).into_owned();
        }
        Err(Error::Exec {
            program: line,
            status: status.code(),
            stderr,
        })
    }
}

/// Writes `input` to the child's stdin while reading its stdout and stderr, all without
/// blocking past `deadline`, until both outputs are closed; returns them.
fn exchange(
    child: &mut Child,
    input: &[u8],
    deadline: Instant,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let file = |fd: OwnedFd| File::from(fd);
    let mut stdin = child
        .stdin
        .take()
        .filter(|_| !input.is_empty())
        .map(|s| file(s.into()));
    let mut outputs = [
        child.stdout.take().map(|o| file(o.into())),
        child.stderr.take().map(|o| file(o.into())),
    ];
    let mut collected = [Vec::new(), Vec::new()];
    for fd in stdin
        .as_ref()
        .map(|s| s.as_fd())
        .into_iter()
        .chain(outputs.iter().flatten().map(|o| o.as_fd()))
    {
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    let mut written = 0;
    let mut buf = [0u8; 16 * 1024];
    while stdin.is_some() || outputs.iter().any(Option::is_some) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        let mut fds: Vec<PollFd> = Vec::with_capacity(3);
        if let Some(s) = &stdin {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
        }
        for o in outputs.iter().flatten() {
            fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
        }
        let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut ready = ready.into_iter();
        if stdin.is_some() && ready.next() == Some(true) {
            match stdin.as_mut().map(|s| s.write(&input[written..])) {
                Some(Ok(n)) => written += n,
                Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {}
                // A tool that exits early closes the pipe; its exit status tells the story.
                _ => written = input.len(),
            }
            if written >= input.len() {
                stdin = None;
            }
        }
        for (output, collected) in outputs.iter_mut().zip(&mut collected) {
            if output.is_none() || ready.next() != Some(true) {
                continue;
            }
            match output.as_mut().map(|o| o.read(&mut buf)) {
                Some(Ok(0)) => *output = None,
                Some(Ok(n)) => collected.extend_from_slice(&buf[..n]),
                Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Some(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                _ => *output = None,
            }
        }
    }
    let [out, err] = collected;
    Ok((out, err))
}

/// Whether `program` is on PATH: lets `backend auto` choose without spawning anything.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_input_and_failures_come_back() {
        let big = "x".repeat(300_000);
        assert_eq!(run("cat", &[], &big).unwrap(), big);
        let e = run("sh", &["-c", "echo oops >&2; exit 3"], "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sh -c echo oops >&2; exit 3 exited with status 3: oops"
        );
        assert!(run("sh", &["-c", "exit 0"], &big).is_ok(), "unread input");
    }

    #[test]
    fn a_hung_tool_is_killed_at_its_deadline() {
        let started = Instant::now();
        let e = run_within("sleep", &["30"], "", Duration::from_millis(300)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            e.to_string().contains("sleep 30: no result within 300ms"),
            "{e}"
        );
        // Also one that never reads its input, and one that closed its output but lives on.
        let big = "x".repeat(1 << 20);
        let e = run_within("sleep", &["30"], &big, Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        let e = run_within(
            "sh",
            &["-c", "exec >&- 2>&-; sleep 30"],
            "",
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
