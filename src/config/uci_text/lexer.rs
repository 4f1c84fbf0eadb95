//! The first stage of reading `/etc/config` text: characters into commands, with uci's
//! quoting, backslash escapes, line continuations, `;` separators and `#` comments resolved,
//! so the second stage sees only words.

use super::line_error;
use crate::error::Result;

/// The tokenizer's input: characters with one of lookahead (for `\` CR LF).
type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// One command: its words (quoting resolved; `''` is an empty word) up to a line end, a `;`
/// or a comment.
#[derive(Debug)]
pub(super) struct Command {
    /// The line its first word is on, for error messages.
    pub line: usize,
    pub words: Vec<String>,
}

/// Splits the file into commands, resolving quotes, escapes, continuations and comments.
pub(super) fn tokenize(text: &str) -> Result<Vec<Command>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut line = 1;
    let mut command_line = 1;
    let mut chars = text.chars().peekable();

    let end_word = |word: &mut Option<String>, words: &mut Vec<String>| words.extend(word.take());
    let end_command = |words: &mut Vec<String>, commands: &mut Vec<Command>, line: usize| {
        if !words.is_empty() {
            commands.push(Command {
                line,
                words: std::mem::take(words),
            });
        }
    };

    while let Some(c) = chars.next() {
        // Until its first word starts, a command is on the line being read.
        if word.is_none() && words.is_empty() {
            command_line = line;
        }
        match c {
            '\n' => {
                end_word(&mut word, &mut words);
                end_command(&mut words, &mut commands, command_line);
                line += 1;
            }
            ';' => {
                end_word(&mut word, &mut words);
                end_command(&mut words, &mut commands, command_line);
            }
            '#' => {
                end_word(&mut word, &mut words);
                while chars.next_if(|&c| c != '\n').is_some() {}
            }
            ' ' | '\t' | '\r' | '\x0b' | '\x0c' => end_word(&mut word, &mut words),
            quote @ ('\'' | '"') => {
                let piece = quoted(&mut chars, &mut line, quote)?;
                word.get_or_insert_with(String::new).push_str(&piece);
            }
            '\\' => match escaped(&mut chars, &mut line) {
                Escaped::Char(c) => word.get_or_insert_with(String::new).push(c),
                Escaped::Continuation | Escaped::EndOfInput => {}
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut words);
    end_command(&mut words, &mut commands, command_line);
    Ok(commands)
}

/// Reads a quoted piece after its opening quote: `'...'` is literal, `"..."` honours
/// backslashes; both may span lines.
fn quoted(chars: &mut Chars<'_>, line: &mut usize, quote: char) -> Result<String> {
    let opened = *line;
    let unterminated = || {
        let kind = if quote == '"' { "double" } else { "single" };
        line_error(opened, format!("unterminated {kind} quote"))
    };
    let mut text = String::new();
    loop {
        match chars.next() {
            Some(c) if c == quote => return Ok(text),
            Some('\\') if quote == '"' => match escaped(chars, line) {
                Escaped::Char(c) => text.push(c),
                Escaped::Continuation => {}
                Escaped::EndOfInput => return Err(unterminated()),
            },
            Some(c) => {
                if c == '\n' {
                    *line += 1;
                }
                text.push(c);
            }
            None => return Err(unterminated()),
        }
    }
}

/// What a backslash stands for.
enum Escaped {
    /// The next character, taken literally (there is no `\n`-style translation).
    Char(char),
    /// Backslash at the end of a line: the line goes on with the next one.
    Continuation,
    EndOfInput,
}

/// Reads what follows a backslash; `\` CR LF counts as a continuation too.
fn escaped(chars: &mut Chars<'_>, line: &mut usize) -> Escaped {
    match chars.next() {
        Some('\n') => {
            *line += 1;
            Escaped::Continuation
        }
        Some('\r') if chars.next_if_eq(&'\n').is_some() => {
            *line += 1;
            Escaped::Continuation
        }
        Some(c) => Escaped::Char(c),
        None => Escaped::EndOfInput,
    }
}
