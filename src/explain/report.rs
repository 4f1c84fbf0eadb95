//! The answer in the `explain --json` fields, and as a few lines for people.

use super::{Clock, Explanation, Query};
use crate::config::Proto;
use crate::config::matches::{WEEKDAYS, clock};
use crate::plan::Plan;
use serde_json::{Value, json};

impl Explanation {
    /// The `explain --json` object.
    pub fn to_json(&self, plan: &Plan, query: &Query) -> Value {
        let link = self.link.and_then(|l| plan.links.get(l));
        let protocol = query.proto.map(|p| match p {
            Proto::Tcp => json!("tcp"),
            Proto::Udp => json!("udp"),
            Proto::Icmp => json!("icmp"),
            Proto::Number(n) => json!(n.to_string()),
            Proto::All => Value::Null,
        });
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|(member, interface, metric, weight, live)| {
                json!({"member": member, "interface": interface, "metric": metric,
                       "weight": weight, "live": live})
            })
            .collect();
        json!({
            "source": query.src.to_string(),
            "destination": query.dst.to_string(),
            "protocol": protocol,
            "port": query.port,
            "rule": self.rule,
            "policy": self.policy,
            "members": members,
            "decision": self.decision,
            "bucket": self.bucket,
            "interface": link.map(|l| l.name.clone()),
            "device": link.and_then(|l| l.device.clone()),
            "source_address": link.and_then(|l| l.source).map(|a| a.to_string()),
            "source_mac": query.mac.map(|m| m.to_string()),
            "ingress_device": query.dev,
            "time": moment(&self.now.local),
            "time_utc": moment(&self.now.utc),
            "reason": self.reason,
        })
    }

    /// A few lines for people.
    pub fn to_text(&self, plan: &Plan, query: &Query) -> String {
        let value = self.to_json(plan, query);
        let field = |key: &str| match &value[key] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let members: Vec<String> = self
            .members
            .iter()
            .map(|(m, i, metric, weight, live)| {
                format!(
                    "{m} ({i}, metric {metric}, weight {weight}, {})",
                    if *live { "live" } else { "not live" }
                )
            })
            .collect();
        format!(
            "decision: {}\nfrom: {} (device {}, mac {}) at {} ({} UTC)\nrule: {}\npolicy: {}\nmembers: {}\ninterface: {} (device {}, source {})\nbucket: {}\nreason: {}\n",
            self.decision,
            field("source"),
            field("ingress_device"),
            field("source_mac"),
            field("time"),
            field("time_utc"),
            field("rule"),
            field("policy"),
            if members.is_empty() {
                "-".to_string()
            } else {
                members.join(", ")
            },
            field("interface"),
            field("device"),
            field("source_address"),
            field("bucket"),
            self.reason
        )
    }
}

/// `Tuesday 23:10:05`.
fn moment(clock_of: &Clock) -> String {
    format!(
        "{} {}",
        WEEKDAYS[clock_of.weekday as usize % 7],
        clock(clock_of.seconds)
    )
}
