//! Test fixtures shared by the config layer's unit tests: a whole config from uci-get JSON,
//! so each test states only the sections it is about.

use super::model::Config;
use super::raw::RawConfig;
use crate::error::Result;

/// Reads one section of type `kind` with `options` (JSON members, each led by a
/// comma) through `read`.
pub fn read_section<T>(
    kind: &str,
    options: &str,
    read: impl FnOnce(&mut super::value::SectionReader) -> Result<T>,
) -> Result<T> {
    let json =
        format!(r#"{{"values":{{"s":{{".type":"{kind}",".name":"s",".index":1{options}}}}}}}"#);
    let raw = RawConfig::from_json_text(&json).unwrap();
    read(&mut super::value::SectionReader::new(&raw.sections[0]))
}

/// Panics unless `result` is a config error naming `option`.
pub fn assert_names_option<T: std::fmt::Debug>(result: Result<T>, option: &str) {
    match result {
        Err(crate::error::Error::Config { option: o, .. }) => {
            assert_eq!(o.as_deref(), Some(option))
        }
        other => panic!("expected an error naming {option}, got {other:?}"),
    }
}

/// The config of a `ubus call uci get` reply.
pub fn config(json: &str) -> Result<Config> {
    Config::from_raw(&RawConfig::from_json_text(json).unwrap())
}

/// Two fixed WAN links (the second with weight 2) and a LAN device.
pub const TWO_WANS: &str = r#"{"values":{
    "globals":{".type":"globals",".name":"globals",".index":0,"lan":["br-lan"]},
    "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","gateway":"10.0.1.1","source":"10.0.1.2"},
    "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth2","gateway":"10.0.2.1","weight":"2"}
}}"#;

/// A config of one interface `wanb` on eth2, with more options appended to its JSON body
/// (each written `,"name":value`).
pub fn interface(options: &str) -> Result<Config> {
    config(&format!(
        r#"{{"values":{{"wanb":{{".type":"interface",".name":"wanb",".index":1,"device":"eth2"{options}}}}}}}"#
    ))
}
