//! The read-only questions the LuCI app asks the daemon over its ubus object, each answered
//! with one JSON reply so the web pages need no ACL beyond the `connmark-lb` object: `check`
//! (is the saved config valid, and what would apply load: what `connmark-lb check` prints) and
//! `explain` (which way a new connection would go: what `connmark-lb explain --json` prints).

use serde_json::{Map, Value, json};

use crate::apply::Backend;
use crate::cli::{Args, check_text_for, explain_now};
use crate::daemon::Question;
use crate::error::Error;
use crate::explain::Query;
use crate::source::resolve_links;

/// The reply to one of the daemon's read-only ubus methods.
pub fn answer(args: &Args, question: Question, params: &Map<String, Value>) -> Map<String, Value> {
    let reply = match question {
        Question::Check => check(args),
        Question::Explain => explain(args, params),
    };
    match reply {
        Value::Object(members) => members,
        _ => Map::new(),
    }
}

/// `check`: `{"valid", "errors", "warnings", "output"}`. Errors are one message each (a config
/// with several mistakes lists them all); `output` is what `connmark-lb check` prints, null
/// when the config is invalid.
pub fn check(args: &Args) -> Value {
    let config = match args.source().and_then(|source| source.load()) {
        Ok(config) => config,
        Err(error) => {
            return json!({
                "valid": false,
                "errors": messages(&error),
                "warnings": [],
                "output": null,
            });
        }
    };
    let (states, link_warnings) = resolve_links(&config, &args.ubus_socket());
    let backend = Backend::resolve(config.globals.backend);
    let warnings: Vec<&String> = config.warnings.iter().chain(&link_warnings).collect();
    json!({
        "valid": true,
        "errors": [],
        "warnings": warnings,
        "output": check_text_for(&config, backend, &states),
    })
}

/// `explain` of `{"source", "destination", "protocol", "port"}` (the last two may be missing or
/// null): the object `connmark-lb explain --json` prints for the same words, or
/// `{"error": why}` for a question it refuses.
pub fn explain(args: &Args, params: &Map<String, Value>) -> Value {
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
    answer.unwrap_or_else(|error| json!({ "error": error.to_string() }))
}

/// One message per independent failure.
fn messages(error: &Error) -> Vec<String> {
    match error {
        Error::Many(errors) => errors.iter().flat_map(messages).collect(),
        other => vec![other.to_string()],
    }
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

    fn with_config(name: &str, text: &str) -> Value {
        let path = std::env::temp_dir().join(format!("cmlb-inspect-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let reply = check(&args(path.clone()));
        std::fs::remove_file(path).unwrap();
        reply
    }

    #[test]
    fn a_valid_config_answers_what_check_prints_and_its_warnings() {
        let reply = with_config(
            "valid",
            "config globals 'globals'\n\toption backend 'nftables'\n\n\
             config interface 'wan'\n\toption device 'eth1'\n\toption wieght '2'\n",
        );
        assert_eq!(reply["valid"], true);
        assert_eq!(reply["errors"], json!([]));
        assert_eq!(
            reply["warnings"],
            json!(["interface 'wan' option 'wieght': unknown option, ignored"])
        );
        let output = reply["output"].as_str().unwrap();
        assert!(output.starts_with("# nftables rules\n"), "{output}");
        assert!(output.contains("table inet connmark_lb {"), "{output}");
    }

    #[test]
    fn an_invalid_config_lists_every_error() {
        let reply = with_config(
            "invalid",
            "config interface 'wan'\n\toption device 'eth1'\n\toption weight '0'\n\
             \toption metric 'x'\n\nconfig interface 'wanb'\n\toption device 'eth2'\n\
             \toption gateway '1.2.3.999'\n",
        );
        assert_eq!(reply["valid"], false);
        assert_eq!(reply["output"], Value::Null);
        let errors: Vec<&str> = reply["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("interface 'wan' option 'weight'"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("interface 'wanb' option 'gateway'"),
            "{errors:?}"
        );
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
            assert!(error.contains(expected), "{params}: {reply}");
        }
    }
}
