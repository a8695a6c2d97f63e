//! `mgnt site reboot`: a reboot through the live view, in words, times in
//! RFC 3339; with `--wait`, followed until the router confirms it or the
//! server gives up on it.

use std::time::Duration;

use serde_json::Value;

use super::CliError;
use crate::{admin::client::Client, clock::rfc3339};

/// How often `--wait` asks.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Sends the reboot; its state once sent, or once ended with `wait`.
pub fn reboot(client: &Client, uuid: &str, wait: bool) -> Result<String, CliError> {
    let sent = client.post(&format!("/v1/sites/{uuid}/reboot"), None)?;
    let mut reboot = sent["reboot"].clone();
    let id = reboot["id"].as_str().unwrap_or_default().to_owned();
    while wait && matches!(reboot["state"].as_str(), Some("sending" | "sent")) {
        std::thread::sleep(LOOK_EVERY);
        reboot = client.get(&format!("/v1/sites/{uuid}/reboots/{id}"))?["reboot"].clone();
    }
    Ok(line(&reboot))
}

/// One reboot as a line.
fn line(reboot: &Value) -> String {
    let time = |key: &str| reboot[key].as_u64().map(|t| rfc3339(t).to_string());
    let id = reboot["id"].as_str().unwrap_or("?");
    let site = reboot["site"].as_str().unwrap_or("?");
    let state = reboot["state"].as_str().unwrap_or("?");
    let mut text = format!(
        "reboot {id} of {site}: {state} (asked by {} at {})",
        reboot["user"].as_str().unwrap_or("?"),
        time("created").unwrap_or_default()
    );
    if let Some(finished) = time("finished") {
        text += &format!(", ended {finished}");
    }
    if let Some(error) = reboot["error"].as_str() {
        text += &format!(": {error}");
    }
    if state == "sent" {
        text += &format!("\nfollow it: mgnt site reboot-status {site} {id}");
    }
    text
}

/// `mgnt site reboot-status UUID ID`.
pub fn status(client: &Client, uuid: &str, id: &str) -> Result<String, CliError> {
    Ok(line(
        &client.get(&format!("/v1/sites/{uuid}/reboots/{id}"))?["reboot"],
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::line;

    #[test]
    fn a_reboot_reads_as_a_line_with_rfc3339_times() {
        let sent = json!({"id": "r1", "site": "s1", "user": "oncall", "created": 1_795_693_463,
            "state": "sent", "finished": null, "error": null});
        assert_eq!(
            line(&sent),
            "reboot r1 of s1: sent (asked by oncall at 2026-11-26T11:44:23Z)\n\
             follow it: mgnt site reboot-status s1 r1"
        );
        let failed = json!({"id": "r2", "site": "s1", "user": "oncall", "created": 1_795_693_463,
            "state": "failed", "finished": 1_795_693_464, "error": "refused"});
        assert_eq!(
            line(&failed),
            "reboot r2 of s1: failed (asked by oncall at 2026-11-26T11:44:23Z), ended \
             2026-11-26T11:44:24Z: refused"
        );
    }
}
