//! The `/etc/config/<package>` text format, read without libuci.
//!
//! `--uci FILE` lets the binary run where there is no ubus (tests, a build host, a broken
//! router), so it must read the same files uci reads and land on the same [`RawConfig`] that
//! `ubus call uci get` would have produced. The parser is strict like uci's default context:
//! anything uci would refuse is an error naming the line.
//!
//! Two stages: `lexer::tokenize` turns text into commands (lists of words, quoting and
//! comments resolved), and `Builder`, here, applies the commands to the section list, naming
//! anonymous sections as libuci does.

mod lexer;
#[cfg(test)]
mod tests;

use super::raw::{RawConfig, RawSection, RawValue};
use crate::error::{Error, Result};
use lexer::{Command, tokenize};

/// Parses the contents of one `/etc/config/<package>` file.
pub fn parse(text: &str) -> Result<RawConfig> {
    let mut builder = Builder::default();
    for command in tokenize(text)? {
        builder.apply(&command)?;
    }
    Ok(builder.finish())
}

/// An error about line `line` of the file.
fn line_error(line: usize, message: impl Into<String>) -> Error {
    Error::config(&format!("line {line}"), None, message)
}

/// Quotes a user-supplied text for an error message, making control characters visible.
fn shown(text: &str) -> String {
    format!("'{}'", text.escape_debug())
}

/// A word uci checks the characters of: what its errors call it and which bytes it allows.
struct WordKind {
    /// With its article, for the error about a missing word.
    a_what: &'static str,
    what: &'static str,
    allowed: &'static str,
    valid: fn(u8) -> bool,
}

/// Section and option names: uci refuses anything but `[A-Za-z0-9_]`.
const SECTION_NAME: WordKind = WordKind {
    a_what: "a section name",
    what: "section name",
    allowed: "letters, digits and '_'",
    valid: |b| b.is_ascii_alphanumeric() || b == b'_',
};
const OPTION_NAME: WordKind = WordKind {
    a_what: "an option name",
    what: "option name",
    ..SECTION_NAME
};
/// Section types: printable ASCII without space.
const SECTION_TYPE: WordKind = WordKind {
    a_what: "a section type",
    what: "section type",
    allowed: "printable ASCII without spaces",
    valid: |b| (33..=126).contains(&b),
};
/// Package names: like section names, plus `-` (as in `connmark-lb`).
const PACKAGE_NAME: WordKind = WordKind {
    a_what: "a package name",
    what: "package name",
    allowed: "letters, digits, '_' and '-'",
    valid: |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
};

impl WordKind {
    /// The word `text` of a `keyword` command on `line`: present and of allowed bytes only.
    fn check(&self, line: usize, keyword: &str, text: &str) -> Result<()> {
        if text.is_empty() {
            return Err(line_error(
                line,
                format!("{keyword}: expected {}, found nothing", self.a_what),
            ));
        }
        if !text.bytes().all(self.valid) {
            return Err(line_error(
                line,
                format!(
                    "{} {} may only contain {}",
                    self.what,
                    shown(text),
                    self.allowed
                ),
            ));
        }
        Ok(())
    }
}

/// Applies commands in order, tracking the section that `option`/`list` lines go to.
#[derive(Default)]
struct Builder {
    sections: Vec<RawSection>,
    /// Index of the section opened by the last `config`.
    current: Option<usize>,
}

impl Builder {
    fn apply(&mut self, command: &Command) -> Result<()> {
        let line = command.line;
        let Some((keyword, args)) = command.words.split_first() else {
            return Ok(());
        };
        let (name, max_args) = match keyword.as_str() {
            "config" | "c" => ("config", 2),
            "option" | "o" => ("option", 2),
            "list" | "l" => ("list", 2),
            "package" | "p" => ("package", 1),
            other => {
                return Err(line_error(
                    line,
                    format!(
                        "expected config, option, list or package, found {}",
                        shown(other)
                    ),
                ));
            }
        };
        if let Some(extra) = args.get(max_args) {
            return Err(line_error(
                line,
                format!(
                    "too many arguments: {name} takes at most {max_args}, found extra {}",
                    shown(extra)
                ),
            ));
        }
        let first = args.first().map(String::as_str).unwrap_or("");
        let second = args.get(1).map(String::as_str).unwrap_or("");
        match name {
            "config" => self.open_section(line, first, second),
            // Only checked, since the package is the file being read.
            "package" => PACKAGE_NAME.check(line, "package", first),
            _ => self.set_option(line, name == "list", first, second),
        }
    }

    /// `config <type> [name]`: a new section, or more options for an existing named one.
    fn open_section(&mut self, line: usize, kind: &str, name: &str) -> Result<()> {
        SECTION_TYPE.check(line, "config", kind)?;
        if !name.is_empty() {
            SECTION_NAME.check(line, "config", name)?;
        }
        let existing = (!name.is_empty())
            .then(|| self.sections.iter().position(|s| s.name == name))
            .flatten();
        match existing {
            Some(index) if self.sections[index].kind != kind => Err(line_error(
                line,
                format!(
                    "section {} was declared with type {}, found type {}",
                    shown(name),
                    shown(&self.sections[index].kind),
                    shown(kind)
                ),
            )),
            Some(index) => {
                self.current = Some(index);
                Ok(())
            }
            None => {
                let anonymous = name.is_empty();
                let name = if anonymous {
                    anonymous_name(self.sections.len() + 1, kind)
                } else {
                    name.to_string()
                };
                self.sections.push(RawSection {
                    kind: kind.to_string(),
                    anonymous,
                    name,
                    options: Vec::new(),
                    type_index: 0,
                });
                self.current = Some(self.sections.len() - 1);
                Ok(())
            }
        }
    }

    /// `option`/`list`: an empty option value deletes (uci treats it as unset), an empty list
    /// item is kept.
    fn set_option(&mut self, line: usize, list: bool, option: &str, value: &str) -> Result<()> {
        let keyword = if list { "list" } else { "option" };
        OPTION_NAME.check(line, keyword, option)?;
        let Some(current) = self.current else {
            return Err(line_error(
                line,
                format!(
                    "{keyword} {} before the first config section",
                    shown(option)
                ),
            ));
        };
        let options = &mut self.sections[current].options;
        let slot = options.iter().position(|(name, _)| name == option);
        let value = value.to_string();
        match (list, slot) {
            (false, Some(i)) if value.is_empty() => {
                options.remove(i);
            }
            (false, None) if value.is_empty() => {}
            (false, Some(i)) => options[i].1 = RawValue::Single(value),
            (true, Some(i)) => match &mut options[i].1 {
                RawValue::List(items) => items.push(value),
                RawValue::Single(old) => {
                    options[i].1 = RawValue::List(vec![std::mem::take(old), value]);
                }
            },
            (false, None) => options.push((option.to_string(), RawValue::Single(value))),
            (true, None) => options.push((option.to_string(), RawValue::List(vec![value]))),
        }
        Ok(())
    }

    fn finish(self) -> RawConfig {
        let mut config = RawConfig {
            sections: self.sections,
        };
        config.number_types();
        config
    }
}

/// The name libuci gives an anonymous section when it is declared (`uci_add_section`):
/// `cfg`, the package's section count including this one, and the low 16 bits of a djb hash
/// of the type (its options are not there yet). rpcd's `uci get` shows these names, so a file
/// read with `--uci` must use the same ones.
fn anonymous_name(count: usize, kind: &str) -> String {
    let hash = kind.bytes().fold(5381u32, |hash, byte| {
        // libuci adds `char`s, which are signed on most targets.
        let byte = byte as i8 as u32;
        hash.wrapping_mul(33).wrapping_add(byte)
    }) & 0x7fff_ffff;
    format!("cfg{count:02x}{:04x}", hash & 0xffff)
}
