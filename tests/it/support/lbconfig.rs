//! The router's connmark-lb config as the tests describe it, written in either input format the
//! binary reads (`/etc/config` text for `--uci`, uci-get JSON for `--config`).

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::addr::{ROUTER_LAN_DEVICE, SERVICE, link_addr, link_device, link_gateway, v6};
use super::tempdir::TempDir;

/// Which firewall backend the router config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    /// The value of `option backend`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

/// How new connections are spread over the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
}

impl Balance {
    /// The value of `option balance`.
    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::Random => "random",
        }
    }
}

/// The file format a config is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Uci,
    Json,
}

/// One WAN link of the router (link i uses device wanI and gateway 10.0.I.1).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub weight: u32,
    /// SNAT to 10.0.I.2 via `option source`; false leaves `source` out (masquerade).
    pub fixed_source: bool,
}

/// A UCI option value: a string or a list of strings.
#[derive(Debug, Clone)]
enum OptionValue {
    Single(String),
    List(Vec<String>),
}

/// One `config <kind> '<name>'` section.
#[derive(Debug, Clone)]
struct Section {
    kind: &'static str,
    name: String,
    options: Vec<(String, OptionValue)>,
}

/// A whole router config.
#[derive(Debug, Clone)]
pub struct LbConfig {
    pub backend: Backend,
    pub balance: Balance,
    pub links: Vec<Link>,
    /// IPv6 links (`wanI_6` on device wanI, family ipv6, the ISP's /56 as `list prefix`): link
    /// 1's gateway is the ISP's link-local address, the others' its global one.
    pub links6: Vec<Link>,
    pub format: Format,
    /// Write `list lan 'eth0'`; false leaves the default (every device that is not a link).
    pub lan_list: bool,
    /// Options set on top of the generated ones: (section name, option, value).
    pub overrides: Vec<(String, String, String)>,
    /// Further sections (members, policies, rules, sets) in /etc/config text, appended as
    /// written; only for [`Format::Uci`].
    pub sections_text: String,
}

impl LbConfig {
    /// Links with these weights, every one with a fixed SNAT source, as UCI text.
    pub fn new(backend: Backend, balance: Balance, weights: &[u32]) -> Self {
        LbConfig {
            backend,
            balance,
            links: weights
                .iter()
                .map(|&weight| Link {
                    weight,
                    fixed_source: true,
                })
                .collect(),
            links6: Vec::new(),
            format: Format::Uci,
            lan_list: true,
            overrides: Vec::new(),
            sections_text: String::new(),
        }
    }

    /// Adds IPv6 links with these weights, masqueraded (NAT66) unless their source is in their
    /// prefix.
    pub fn with_ipv6(mut self, weights: &[u32]) -> Self {
        self.links6 = weights
            .iter()
            .map(|&weight| Link {
                weight,
                fixed_source: false,
            })
            .collect();
        self
    }

    /// The section name of IPv6 link `link` (1-based).
    pub fn ipv6_section(link: usize) -> String {
        format!("{}_6", link_device(link))
    }

    /// The same config written in `format`.
    pub fn in_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Link `link` (1-based) is masqueraded instead of SNATed to a fixed source.
    pub fn masquerade(mut self, link: usize) -> Self {
        self.links[link - 1].fixed_source = false;
        self
    }

    /// Leaves `list lan` out, so the binary's default picks the LAN devices.
    pub fn default_lan(mut self) -> Self {
        self.lan_list = false;
        self
    }

    /// Sets `option` of section `section` to `value`, replacing a generated value.
    pub fn with_option(mut self, section: &str, option: &str, value: &str) -> Self {
        self.overrides
            .push((section.to_string(), option.to_string(), value.to_string()));
        self
    }

    /// Appends `text` (UCI sections) to the generated config.
    pub fn with_sections(mut self, text: &str) -> Self {
        self.sections_text.push_str(text);
        self
    }

    fn sections(&self) -> Vec<Section> {
        let single = |name: &str, value: String| (name.to_string(), OptionValue::Single(value));
        let mut globals = vec![
            single("backend", self.backend.name().to_string()),
            single("balance", self.balance.name().to_string()),
        ];
        if self.lan_list {
            globals.push((
                "lan".to_string(),
                OptionValue::List(vec![ROUTER_LAN_DEVICE.to_string()]),
            ));
        }
        let mut sections = vec![Section {
            kind: "globals",
            name: "globals".to_string(),
            options: globals,
        }];
        for (i, link) in self.links.iter().enumerate() {
            let number = i + 1;
            let mut options = vec![
                single("device", link_device(number)),
                single("gateway", link_gateway(number).to_string()),
                single("weight", link.weight.to_string()),
            ];
            if link.fixed_source {
                options.push(single("source", link_addr(number).to_string()));
            }
            sections.push(Section {
                kind: "interface",
                name: link_device(number),
                options,
            });
        }
        for (i, link) in self.links6.iter().enumerate() {
            let number = i + 1;
            let gateway = if number == 1 {
                v6::ISP_LINK_LOCAL
            } else {
                v6::link_gateway(number)
            };
            let mut options = vec![
                single("family", "ipv6".to_string()),
                single("device", link_device(number)),
                single("gateway", gateway.to_string()),
                single("weight", link.weight.to_string()),
                (
                    "prefix".to_string(),
                    OptionValue::List(vec![v6::delegated(number)]),
                ),
            ];
            if link.fixed_source {
                options.push(single("source", v6::link_addr(number).to_string()));
            }
            sections.push(Section {
                kind: "interface",
                name: Self::ipv6_section(number),
                options,
            });
        }
        for (section, option, value) in &self.overrides {
            let target = sections
                .iter_mut()
                .find(|s| &s.name == section)
                .unwrap_or_else(|| panic!("override for unknown section {section}"));
            target.options.retain(|(name, _)| name != option);
            target
                .options
                .push((option.clone(), OptionValue::Single(value.clone())));
        }
        sections
    }

    /// The `/etc/config/connmark-lb` text.
    pub fn to_uci(&self) -> String {
        let mut text = String::new();
        for section in self.sections() {
            text.push_str(&format!("config {} '{}'\n", section.kind, section.name));
            for (name, value) in &section.options {
                match value {
                    OptionValue::Single(value) => {
                        text.push_str(&format!("\toption {name} '{value}'\n"));
                    }
                    OptionValue::List(values) => {
                        for value in values {
                            text.push_str(&format!("\tlist {name} '{value}'\n"));
                        }
                    }
                }
            }
            text.push('\n');
        }
        text.push_str(&self.sections_text);
        text
    }

    /// What `ubus call uci get '{"config":"connmark-lb"}'` prints for this config.
    pub fn to_uci_json(&self) -> String {
        assert!(
            self.sections_text.is_empty(),
            "extra sections are written in the UCI text format only"
        );
        let mut values = Map::new();
        for (index, section) in self.sections().into_iter().enumerate() {
            let mut body = Map::new();
            body.insert(".anonymous".into(), json!(false));
            body.insert(".type".into(), json!(section.kind));
            body.insert(".name".into(), json!(section.name));
            body.insert(".index".into(), json!(index));
            for (name, value) in section.options {
                let value = match value {
                    OptionValue::Single(value) => json!(value),
                    OptionValue::List(values) => json!(values),
                };
                body.insert(name, value);
            }
            values.insert(section.name, Value::Object(body));
        }
        serde_json::to_string_pretty(&json!({ "values": values })).expect("JSON of a map")
    }

    /// Writes the config into `dir` as `name` (plus the format's extension).
    pub fn write(&self, dir: &TempDir, name: &str) -> ConfigFile {
        let (file, text) = match self.format {
            Format::Uci => (format!("{name}.uci"), self.to_uci()),
            Format::Json => (format!("{name}.json"), self.to_uci_json()),
        };
        ConfigFile {
            path: dir.write(&file, &text),
            format: self.format,
        }
    }
}

/// A config file on disk and the flag that passes it to connmark-lb.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    format: Format,
}

impl ConfigFile {
    /// `--uci` or `--config`.
    pub fn flag(&self) -> &'static str {
        match self.format {
            Format::Uci => "--uci",
            Format::Json => "--config",
        }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }

    /// The flag, the path and the file's text, for failure messages.
    pub fn describe(&self) -> String {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        format!("{} {}:\n{text}", self.flag(), self.path.display())
    }
}

/// `links` links of weight 1, round-robin, each tracking the server, with `options` on every
/// link: the config of the daemon tests.
pub fn tracked(backend: Backend, links: usize, options: &[(&str, &str)]) -> LbConfig {
    let mut config = LbConfig::new(backend, Balance::RoundRobin, &vec![1; links]);
    for link in 1..=links {
        config = config.with_option(&link_device(link), "track_ip", &SERVICE.to_string());
        for (option, value) in options {
            config = config.with_option(&link_device(link), option, value);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uci_text_names_every_link_option() {
        let config = LbConfig::new(Backend::Iptables, Balance::Random, &[1, 2]).masquerade(2);
        let text = config.to_uci();
        assert!(text.starts_with("config globals 'globals'\n\toption backend 'iptables'\n"));
        assert!(text.contains("\tlist lan 'eth0'\n"));
        assert!(text.contains(
            "config interface 'wan1'\n\toption device 'wan1'\n\toption gateway '10.0.1.1'\n\
             \toption weight '1'\n\toption source '10.0.1.2'\n"
        ));
        assert!(text.contains("config interface 'wan2'\n\toption device 'wan2'\n"));
        assert!(!text.contains("10.0.2.2"), "link 2 masquerades: {text}");
        let text = config.default_lan().to_uci();
        assert!(!text.contains("list lan"), "{text}");
    }

    #[test]
    fn json_has_the_uci_get_shape_and_overrides_apply() {
        let config = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1])
            .with_option("wan2", "weight", "x");
        let value: Value = serde_json::from_str(&config.to_uci_json()).expect("valid JSON");
        let wan2 = &value["values"]["wan2"];
        assert_eq!(wan2[".type"], "interface");
        assert_eq!(wan2[".anonymous"], false);
        assert_eq!(wan2[".index"], 2);
        assert_eq!(wan2["weight"], "x");
        assert_eq!(value["values"]["globals"]["lan"], json!(["eth0"]));
    }
}
