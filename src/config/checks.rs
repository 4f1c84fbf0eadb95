//! Checks across sections: what no single section reader can see, because it needs the
//! globals and every interface at once.

use super::model::{Globals, Interface, MAX_LINKS};
use crate::error::{Error, Result};

/// Cross-section checks: marks must fit in the mask, devices may not repeat, LAN devices may
/// not be WAN devices.
pub(super) fn check_interfaces(globals: &Globals, interfaces: &[Interface]) -> Result<()> {
    let capacity = (globals.mark_mask >> globals.mark_mask.trailing_zeros()).saturating_sub(2);
    let capacity = capacity.min(MAX_LINKS);
    if interfaces.len() as u32 > capacity {
        return Err(Error::config(
            "globals",
            Some("mark_mask"),
            format!(
                "{:#x} can number {capacity} links (2 values are reserved), but {} interface sections are configured",
                globals.mark_mask,
                interfaces.len()
            ),
        ));
    }
    // One device may carry one link per family (wan and wan6 on the same eth1).
    for (i, iface) in interfaces.iter().enumerate() {
        let Some(dev) = &iface.device else { continue };
        if let Some(other) = interfaces[..i]
            .iter()
            .find(|o| o.device.as_ref() == Some(dev) && o.family == iface.family)
        {
            return Err(Error::config(
                &format!("interface '{}'", iface.name),
                Some("device"),
                format!(
                    "device \"{dev}\" is already used by interface '{}'",
                    other.name
                ),
            ));
        }
        if globals.lan.contains(dev) {
            return Err(Error::config(
                "globals",
                Some("lan"),
                format!(
                    "device \"{dev}\" is the WAN device of interface '{}'",
                    iface.name
                ),
            ));
        }
    }
    Ok(())
}

/// With balancing enabled, at least one link must be: otherwise there is nothing to do and
/// the user has almost certainly made a mistake.
pub(super) fn check_something_enabled(globals: &Globals, interfaces: &[Interface]) -> Result<()> {
    if globals.enabled && interfaces.iter().all(|i| !i.enabled) {
        return Err(Error::config(
            "config",
            None,
            "no enabled interface section: nothing to balance",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::{TWO_WANS, config};

    #[test]
    fn mask_too_small_for_links() {
        let e =
            config(&TWO_WANS.replace(r#""lan":["br-lan"]"#, r#""mark_mask":"0x3""#)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "globals option 'mark_mask': 0x3 can number 1 links (2 values are reserved), but 2 interface sections are configured"
        );
    }

    #[test]
    fn duplicate_devices_and_several_errors_reported() {
        let e = config(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":1,"device":"eth1","weight":"0"},
            "wanb":{".type":"interface",".name":"wanb",".index":2,"device":"eth1"},
            "wanc":{".type":"interface",".name":"wanc",".index":3,"device":"eth1"}}}"#,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("interface 'wan' option 'weight'"), "{text}");
        assert!(
            text.contains("interface 'wanc' option 'device': device \"eth1\" is already used by interface 'wanb'"),
            "{text}"
        );
        assert_eq!(e.exit_code(), 2);
    }
}
