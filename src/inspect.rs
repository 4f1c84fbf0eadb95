//! The daemon's ubus `explain`, for the LuCI app's Explain page: what `connmark-lb explain
//! --json` prints, for a question given as the call's arguments, as one reply (so the page
//! needs no ACL beyond the `connmark-lb` object).

use serde_json::{Map, Value, json};

use crate::cli::{Args, explain_now};
use crate::error::Error;
use crate::explain::Query;

/// `explain` of `{"source", "destination", "protocol", "port"}` (the last two may be missing or
/// null): the object `connmark-lb explain --json` prints for the same words, or
/// `{"error": why}` for a question it refuses.
pub fn explain(args: &Args, params: &Map<String, Value>) -> Map<String, Value> {
    let word = |key: &str| match params.get(key) {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let words: Vec<Option<String>> = ["source", "destination", "protocol", "port"]
        .iter()
        .map(|key| word(key))
        .collect();
    let given = words
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |last| last + 1);
    let words: Option<Vec<String>> = words[..given.max(2)].iter().cloned().collect();
    let answer = match words {
        None => Err(Error::Usage(
            "explain: source and destination are needed, and protocol before port".into(),
        )),
        Some(words) => Query::parse(&words)
            .and_then(|query| explain_now(args, &query).map(|(a, plan)| a.to_json(&plan, &query))),
    };
    // Both are JSON objects.
    answer
        .unwrap_or_else(|error| json!({ "error": error.to_string() }))
        .as_object()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Verb;
    use std::path::PathBuf;

    fn args(uci: PathBuf) -> Args {
        Args {
            verb: Verb::Check,
            config: None,
            uci: Some(uci),
            ubus_socket: Some(PathBuf::from("/nonexistent/ubus.sock")),
            operands: Vec::new(),
            json: false,
            state_dir: PathBuf::from("/nonexistent"),
            hook: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn explain_refuses_incomplete_or_bad_questions_with_a_message() {
        let args = args(PathBuf::from("/nonexistent.uci"));
        for (params, expected) in [
            (
                json!({"source": "192.168.1.2"}),
                "source and destination are needed",
            ),
            (
                json!({"source": "192.168.1.2", "destination": "10.0.0.1", "port": 80}),
                "protocol before port",
            ),
            (
                json!({"source": "192.168.1.2", "destination": "x"}),
                "DST \"x\" is not an IP address",
            ),
            (
                json!({"source": "192.168.1.2", "destination": "10.0.0.1", "protocol": "icmp", "port": 80}),
                "DPORT needs PROTO tcp or udp",
            ),
        ] {
            let reply = explain(&args, params.as_object().unwrap());
            let error = reply["error"].as_str().unwrap_or_default();
            assert!(error.contains(expected), "{params}: {reply:?}");
        }
    }
}
