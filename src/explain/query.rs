//! The connection `explain` is asked about, as the command line gives it.

use crate::config::{Mac, Proto};
use crate::error::{Error, Result};
use std::net::IpAddr;

/// The connection asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// None: any protocol (rules that name one do not match).
    pub proto: Option<Proto>,
    pub port: Option<u16>,
    /// The source's hardware address (`--mac`, else the router's neighbour entry): rules with
    /// `src_mac` match only a known one.
    pub mac: Option<Mac>,
    /// The device the connection comes in on (`--dev`, else the neighbour entry's): rules
    /// with `src_dev` match only a known one.
    pub dev: Option<String>,
}

impl Query {
    /// `SRC DST [PROTO [DPORT]]` as given on the command line, with the source's MAC and
    /// ingress device when given (`--mac`, `--dev`).
    pub fn with_origin(words: &[String], mac: Option<&str>, dev: Option<&str>) -> Result<Query> {
        let mut query = Query::parse(words)?;
        if let Some(text) = mac {
            query.mac = Some(Mac::parse(text).ok_or_else(|| {
                Error::Usage(format!(
                    "explain --mac: \"{text}\" is not a hardware address like 02:00:5e:10:00:01"
                ))
            })?);
        }
        if let Some(name) = dev {
            crate::config::value::check_device(name)
                .map_err(|why| Error::Usage(format!("explain --dev: {why}, got \"{name}\"")))?;
            query.dev = Some(name.to_string());
        }
        Ok(query)
    }

    /// `SRC DST [PROTO [DPORT]]` as given on the command line.
    pub fn parse(words: &[String]) -> Result<Query> {
        let usage = |why: String| Error::Usage(format!("explain SRC DST [PROTO [DPORT]]: {why}"));
        let addr = |word: Option<&String>, what: &str| -> Result<IpAddr> {
            let word = word.ok_or_else(|| usage(format!("missing {what}")))?;
            word.parse()
                .map_err(|_| usage(format!("{what} \"{word}\" is not an IP address")))
        };
        if words.len() > 4 {
            return Err(usage(format!("unexpected \"{}\"", words[4])));
        }
        let src = addr(words.first(), "SRC")?;
        let dst = addr(words.get(1), "DST")?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(usage("SRC and DST are of different families".into()));
        }
        let proto = match words.get(2).map(String::as_str) {
            None => None,
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some("icmp") => Some(Proto::Icmp),
            Some(other) => Some(Proto::Number(other.parse().map_err(|_| {
                usage(format!(
                    "PROTO \"{other}\": expected tcp, udp, icmp or a number"
                ))
            })?)),
        };
        let port = match words.get(3) {
            None => None,
            Some(word) => Some(
                word.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| usage(format!("DPORT \"{word}\" is not a port")))?,
            ),
        };
        if port.is_some() && !matches!(proto, Some(Proto::Tcp | Proto::Udp)) {
            return Err(usage("DPORT needs PROTO tcp or udp".into()));
        }
        Ok(Query {
            src,
            dst,
            proto,
            port,
            mac: None,
            dev: None,
        })
    }
}
