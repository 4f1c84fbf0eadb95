//! The UCI data model as the user wrote it: sections of string options, nothing interpreted yet.
//!
//! Both inputs (`ubus call uci get` JSON and the `/etc/config` text format) land here, so the
//! typed layer has one source shape to validate.

use crate::error::{Error, Result};
use serde_json::Value;

/// One option value: UCI has only strings and lists of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    Single(String),
    List(Vec<String>),
}

/// One `config <type> [name]` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSection {
    /// The section type (`interface`, `member`, ...).
    pub kind: String,
    /// The section name; anonymous sections carry a generated `cfgXXXXXX` name.
    pub name: String,
    pub anonymous: bool,
    /// Options; consumers must not rely on their order (JSON objects do not keep it).
    pub options: Vec<(String, RawValue)>,
    /// Position among sections of the same type, for `@type[N]` labels.
    pub type_index: usize,
}

/// A whole UCI package, sections in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawConfig {
    pub sections: Vec<RawSection>,
}

impl RawSection {
    /// How error messages name this section: `interface 'wanb'`, or `@rule[2]` when anonymous
    /// (the generated name means nothing to the user).
    pub fn label(&self) -> String {
        if self.anonymous {
            format!("@{}[{}]", self.kind, self.type_index)
        } else {
            format!("{} '{}'", self.kind, self.name)
        }
    }

    /// The last value given for `option`, if any.
    pub fn get(&self, option: &str) -> Option<&RawValue> {
        self.options
            .iter()
            .rev()
            .find(|(name, _)| name == option)
            .map(|(_, value)| value)
    }
}

impl RawConfig {
    /// Parses the reply of `ubus call uci get '{"config":"connmark-lb"}'` (or a file holding it).
    pub fn from_json_text(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::config("config", None, format!("invalid JSON: {e}")))?;
        Self::from_json(&value)
    }

    /// Interprets the uci-get JSON shape; sections are ordered by `.index`, since JSON object
    /// order is not reliable.
    pub fn from_json(value: &Value) -> Result<Self> {
        let values = value
            .get("values")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                Error::config("config", None, "expected an object with a \"values\" table")
            })?;
        let mut indexed = Vec::with_capacity(values.len());
        for (key, body) in values {
            let label = format!("section '{key}'");
            let body = body
                .as_object()
                .ok_or_else(|| Error::config(&label, None, "expected a JSON object"))?;
            let text = |field: &str| -> Result<String> {
                match body.get(field) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    None if field == ".name" => Ok(key.clone()),
                    _ => Err(Error::config(&label, Some(field), "expected a string")),
                }
            };
            let kind = text(".type")?;
            let name = text(".name")?;
            let anonymous = match body.get(".anonymous") {
                Some(Value::Bool(b)) => *b,
                None => false,
                Some(_) => {
                    return Err(Error::config(&label, Some(".anonymous"), "expected a bool"));
                }
            };
            let index = match body.get(".index") {
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| Error::config(&label, Some(".index"), "expected a number"))?,
                None => u64::MAX,
            };
            let mut options = Vec::new();
            for (option, v) in body {
                if option.starts_with('.') {
                    continue;
                }
                let value = match v {
                    Value::String(s) => RawValue::Single(s.clone()),
                    Value::Array(items) => RawValue::List(
                        items
                            .iter()
                            .map(|item| {
                                item.as_str().map(str::to_string).ok_or_else(|| {
                                    Error::config(
                                        &label,
                                        Some(option),
                                        "expected a list of strings",
                                    )
                                })
                            })
                            .collect::<Result<_>>()?,
                    ),
                    _ => {
                        return Err(Error::config(
                            &label,
                            Some(option),
                            "expected a string or a list of strings",
                        ));
                    }
                };
                options.push((option.clone(), value));
            }
            indexed.push((
                index,
                RawSection {
                    kind,
                    name,
                    anonymous,
                    options,
                    type_index: 0,
                },
            ));
        }
        indexed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let mut config = RawConfig {
            sections: indexed.into_iter().map(|(_, s)| s).collect(),
        };
        config.number_types();
        Ok(config)
    }

    /// Fills `type_index` from the section order; both parsers call it once at the end.
    pub fn number_types(&mut self) {
        let mut seen: Vec<(String, usize)> = Vec::new();
        for section in &mut self.sections {
            match seen.iter_mut().find(|(kind, _)| *kind == section.kind) {
                Some((_, n)) => {
                    section.type_index = *n;
                    *n += 1;
                }
                None => {
                    section.type_index = 0;
                    seen.push((section.kind.clone(), 1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_sections_are_ordered_by_index_and_lists_kept() {
        let raw = RawConfig::from_json_text(
            r#"{"values":{
                "b":{".anonymous":false,".type":"interface",".name":"b",".index":1,"weight":"2"},
                "cfg0aabcd":{".anonymous":true,".type":"rule",".name":"cfg0aabcd",".index":2,"use_policy":"x"},
                "a":{".anonymous":false,".type":"interface",".name":"a",".index":0,"track_ip":["10.0.0.1","10.0.0.2"]}
            }}"#,
        )
        .unwrap();
        let names: Vec<_> = raw.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "cfg0aabcd"]);
        assert_eq!(
            raw.sections[0].get("track_ip"),
            Some(&RawValue::List(vec!["10.0.0.1".into(), "10.0.0.2".into()]))
        );
        assert_eq!(raw.sections[1].label(), "interface 'b'");
        assert_eq!(raw.sections[2].label(), "@rule[0]");
    }

    #[test]
    fn json_with_wrong_types_names_the_place() {
        let e = RawConfig::from_json_text(
            r#"{"values":{"a":{".type":"interface",".name":"a",".index":0,"weight":3}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "section 'a' option 'weight': expected a string or a list of strings"
        );
    }
}
