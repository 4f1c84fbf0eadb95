//! The record of the last successful apply (`applied.json`): what `stop` and the next apply
//! remove. A hint, never the truth: everything read back is checked before it reaches a tool,
//! and what the kernel holds is always read as well.

use super::{Pending, read};
use crate::config::{Cidr, Family};
use crate::error::{Error, Result};
use crate::names::{APPLIED_FILE, is_kernel_name};
use crate::plan::{Footprint, Routing};
use crate::render::nft::{SetDeclaration, SetKind, StaticElement};
use serde_json::{Value, json};
use std::io::ErrorKind;
use std::path::Path;

/// What the last successful apply installed: lets `stop` and the next apply remove exactly
/// what was ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub backend: String,
    /// Its ip rules and link tables.
    pub routing: Routing,
    /// The firewall chains it defined (nft chains of our table, or iptables chains).
    pub chains: Vec<String>,
    /// The nft sets it declared, so the next apply deletes those it drops.
    pub sets: Vec<SetDeclaration>,
    /// The static set entries it added, so the next apply removes those the config drops and
    /// never the ones others added.
    pub elements: Vec<StaticElement>,
}

/// Reads the last apply's record; a missing or unreadable file means "nothing recorded".
pub fn load_applied(dir: &Path) -> Option<Applied> {
    let text = read(&dir.join(APPLIED_FILE)).ok()??;
    let value: Value = serde_json::from_str(&text).ok()?;
    let number =
        |key: &str| -> Option<u32> { u32::try_from(value["footprint"][key].as_u64()?).ok() };
    let list = |key: &str| value[key].as_array().cloned().unwrap_or_default();
    let ids = |key: &str| -> Vec<u32> {
        list(key)
            .iter()
            .filter_map(|id| u32::try_from(id.as_u64()?).ok())
            .filter(|id| (1..=crate::config::MAX_LINKS).contains(id))
            .collect()
    };
    Some(Applied {
        backend: value["backend"].as_str()?.to_string(),
        routing: Routing {
            footprint: Footprint {
                mask: number("mask")?,
                priority_base: number("priority_base")?,
                table_base: number("table_base")?,
            },
            links: ids("links"),
            links6: ids("links6"),
        },
        // Only names we could have made: they are written into nft and iptables input.
        chains: list("chains")
            .iter()
            .filter_map(Value::as_str)
            .filter(|c| is_kernel_name(c))
            .map(str::to_string)
            .collect(),
        sets: list("sets").iter().filter_map(set_declaration).collect(),
        elements: list("elements").iter().filter_map(static_element).collect(),
    })
}

/// A recorded set, `{"name", "family", "kind"}`, if it is one we could have declared.
fn set_declaration(value: &Value) -> Option<SetDeclaration> {
    let family = value["family"].as_str()?;
    Some(SetDeclaration {
        name: value["name"]
            .as_str()
            .filter(|n| is_kernel_name(n))?
            .to_string(),
        family: Family::ALL.into_iter().find(|f| f.name() == family)?,
        kind: SetKind::from_name(value["kind"].as_str()?)?,
    })
}

/// A recorded static entry, `{"set", "entry"}`, if its set name and prefix are sound.
fn static_element(value: &Value) -> Option<StaticElement> {
    Some(StaticElement {
        set: value["set"]
            .as_str()
            .filter(|n| is_kernel_name(n))?
            .to_string(),
        entry: Cidr::parse(value["entry"].as_str()?)?,
    })
}

/// The record of an apply, written in full before the apply touches the system (so an
/// unwritable state directory changes nothing) and committed once it succeeded.
pub fn stage_applied(dir: &Path, applied: &Applied) -> Result<Pending> {
    let f = &applied.routing.footprint;
    let value = json!({
        "backend": applied.backend,
        "footprint": {
            "mask": f.mask,
            "priority_base": f.priority_base,
            "table_base": f.table_base,
        },
        "links": applied.routing.links,
        "links6": applied.routing.links6,
        "chains": applied.chains,
        "sets": applied.sets.iter().map(|s| json!({
            "name": s.name,
            "family": s.family.name(),
            "kind": s.kind.name(),
        })).collect::<Vec<_>>(),
        "elements": applied.elements.iter().map(|e| json!({
            "set": e.set,
            "entry": e.entry.to_string(),
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| Error::State(format!("encoding {APPLIED_FILE}: {e}")))?;
    Pending::write(&dir.join(APPLIED_FILE), text.as_bytes())
}

/// Forgets the last apply (after stop).
pub fn clear_applied(dir: &Path) -> Result<()> {
    let path = dir.join(APPLIED_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path.display(), e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::prepare_dir;
    use super::super::tests::temp;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn applied() -> Applied {
        Applied {
            backend: "nftables".into(),
            routing: Routing {
                footprint: Footprint {
                    mask: 0x3f00,
                    priority_base: 4000,
                    table_base: 4000,
                },
                links: vec![1, 3],
                links6: vec![4],
            },
            chains: vec!["mark_wan".into(), "prerouting".into()],
            sets: vec![SetDeclaration {
                name: "vpn_v4".into(),
                family: Family::Ipv4,
                kind: SetKind::Addresses,
            }],
            elements: vec![StaticElement {
                set: "vpn_v4".into(),
                entry: Cidr::parse("192.0.2.0/24").unwrap(),
            }],
        }
    }

    #[test]
    fn applied_round_trips_and_clears_with_private_modes() {
        let dir = temp("round");
        prepare_dir(&dir).unwrap();
        stage_applied(&dir, &applied()).unwrap().commit().unwrap();
        assert_eq!(load_applied(&dir), Some(applied()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(APPLIED_FILE)), 0o600);
        clear_applied(&dir).unwrap();
        assert_eq!(load_applied(&dir), None);
        clear_applied(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uncommitted_record_leaves_no_file_and_the_old_record() {
        let dir = temp("pending");
        prepare_dir(&dir).unwrap();
        stage_applied(&dir, &applied()).unwrap().commit().unwrap();
        let mut other = applied();
        other.routing.links = vec![2];
        drop(stage_applied(&dir, &other).unwrap());
        assert_eq!(load_applied(&dir), Some(applied()));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
