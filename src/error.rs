//! One error type for the whole program, so every failure carries its context and its exit code.

use std::fmt;

/// Everything that can go wrong; the variant decides the exit code (2 = bad input, 1 = runtime).
#[derive(Debug)]
pub enum Error {
    /// A config value is wrong: the user must fix `section`/`option`, nothing was changed.
    Config {
        section: String,
        option: Option<String>,
        message: String,
    },
    /// The command line itself is wrong.
    Usage(String),
    /// A spawned tool exited non-zero; its stderr is the most useful thing to show.
    Exec {
        program: String,
        status: Option<i32>,
        stderr: String,
    },
    /// A file or socket operation failed; the path says where.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A ubus peer (ubusd, rpcd, netifd, a caller of our object) sent something we cannot
    /// use, or refused a call.
    Ubus(String),
    /// A kernel netlink socket (rtnetlink, ctnetlink, nfnetlink) answered unexpectedly or
    /// dropped data.
    Netlink(String),
    /// A tool we ran printed output we could not read (`ip -j`, `nft -j`).
    ToolOutput(String),
    /// A state file (`applied.json`, `status.json`) could not be encoded or read back, or
    /// names no live daemon.
    State(String),
    /// The links cannot all be used as configured right now (two interfaces on one device).
    Links(String),
    /// The hook script cannot be started now: too many runs are still busy.
    HookBusy(String),
    /// A layer's explanation wrapped around the error it got from below.
    Context { context: String, source: Box<Error> },
    /// Several independent failures (stop keeps going and reports them all).
    Many(Vec<Error>),
}

/// The longest config error message shown: a value can be as long as the input.
pub const MAX_MESSAGE: usize = 300;

/// Cuts `text` to [`MAX_MESSAGE`] bytes (on a character boundary), saying how much was left out.
fn clip(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = text.len() - end;
        text.truncate(end);
        text.push_str(&format!("... ({cut} more bytes)"));
    }
    text
}

/// `text` with control characters other than newline and tab escaped (`\0`, `\u{1b}`), so
/// input echoed in a message cannot hide in or drive the terminal or log.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A config error for `section`, `option`: the shape every validation message takes.
    /// Values from the config are echoed in it, so it is cut to [`MAX_MESSAGE`] bytes.
    pub fn config(section: &str, option: Option<&str>, message: impl Into<String>) -> Self {
        Error::Config {
            section: clip(section.to_string()),
            option: option.map(|o| clip(o.to_string())),
            message: clip(message.into()),
        }
    }

    /// An I/O error tied to the path (or socket, or program) it happened on.
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Wraps this error with an explanation of what was being done.
    pub fn wrap(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The process exit code: 2 when the input is at fault (nothing changed), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. } | Error::Usage(_) => 2,
            Error::Context { source, .. } => source.exit_code(),
            Error::Many(errors)
                if !errors.is_empty() && errors.iter().all(|e| e.exit_code() == 2) =>
            {
                2
            }
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config {
                section,
                option: Some(option),
                message,
            } => write!(f, "{section} option '{option}': {message}"),
            Error::Config {
                section,
                option: None,
                message,
            } => write!(f, "{section}: {message}"),
            Error::Usage(message)
            | Error::Ubus(message)
            | Error::Netlink(message)
            | Error::ToolOutput(message)
            | Error::State(message)
            | Error::Links(message)
            | Error::HookBusy(message) => f.write_str(message),
            Error::Exec {
                program,
                status,
                stderr,
            } => {
                match status {
                    Some(code) => write!(f, "{program} exited with status {code}")?,
                    None => write!(f, "{program} was killed by a signal")?,
                }
                let stderr = stderr.trim();
                if !stderr.is_empty() {
                    write!(f, ": {stderr}")?;
                }
                Ok(())
            }
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Context { context, source } => write!(f, "{context}: {source}"),
            Error::Many(errors) => {
                for (i, error) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// Adds a "while doing X" layer to any fallible result.
pub trait Context<T> {
    /// Wraps the error with a fixed explanation.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Wraps the error with an explanation built only on failure.
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.wrap(context))
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.wrap(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_names_section_and_option() {
        let e = Error::config(
            "interface 'wanb'",
            Some("weight"),
            "expected an integer 1..1000, got \"x\"",
        );
        assert_eq!(
            e.to_string(),
            "interface 'wanb' option 'weight': expected an integer 1..1000, got \"x\""
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn long_values_are_cut_and_control_characters_escaped() {
        let value = "x".repeat(10_000);
        let e = Error::config(
            "interface 'wan'",
            Some("weight"),
            format!("got \"{value}\""),
        );
        let text = e.to_string();
        assert!(text.len() < MAX_MESSAGE + 100, "{}", text.len());
        assert!(text.ends_with("... (9706 more bytes)"), "{text}");
        assert_eq!(printable("a\0b\x1b[2J\tc\n"), "a\\0b\\u{1b}[2J\tc\n");
    }

    #[test]
    fn context_keeps_exit_code_and_chains_text() {
        let r: Result<()> = Err(Error::Exec {
            program: "nft".into(),
            status: Some(1),
            stderr: "Error: syntax error\n".into(),
        });
        let e = r.context("loading the ruleset").unwrap_err();
        assert_eq!(
            e.to_string(),
            "loading the ruleset: nft exited with status 1: Error: syntax error"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
