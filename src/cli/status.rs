//! `mgnt status` as a table: one row per region, columns aligned, times in
//! RFC 3339, drains with their reason, who and until when.

use serde_json::Value;

use crate::{clock::rfc3339, explain::drain_text, state::DrainRecord};

const HEADER: [&str; 6] = [
    "REGION",
    "SERVING",
    "HEALTH",
    "LAST PROBE",
    "DRAIN",
    "ANSWERS",
];

/// `GET /v1/regions`'s answer as a table.
pub fn table(listed: &Value) -> String {
    let rows: Vec<[String; 6]> = listed["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(row)
        .collect();
    let mut widths = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for cells in std::iter::once(HEADER.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row(region: &Value) -> [String; 6] {
    let serving = if region["serving"] == true {
        "yes"
    } else {
        "no"
    };
    [
        region["name"].as_str().unwrap_or("?").to_owned(),
        serving.to_owned(),
        health(&region["health"]),
        last_probe(&region["health"]),
        drain(&region["drain"]),
        answers(&region["answers"]),
    ]
}

/// up, down or unprobed; "(unconfirmed)" until the anti-flap counters agree.
fn health(h: &Value) -> String {
    if h["probed"] != true {
        return "unprobed".into();
    }
    let status = h["status"].as_str().unwrap_or("?");
    if h["confirmed"] == true {
        status.to_owned()
    } else {
        format!("{status} (unconfirmed)")
    }
}

fn last_probe(h: &Value) -> String {
    let Some(at) = h["last_probe"].as_u64() else {
        return "-".into();
    };
    match h["rtt_ms"].as_f64() {
        Some(rtt) => format!("{} rtt {rtt:.1} ms", rfc3339(at)),
        None => rfc3339(at).to_string(),
    }
}

fn drain(d: &Value) -> String {
    match serde_json::from_value::<DrainRecord>(d.clone()) {
        Ok(record) => drain_text(&record),
        Err(_) => "-".into(),
    }
}

/// The total, then the reasons that counted any.
fn answers(a: &Value) -> String {
    let total = a["total"].as_u64().unwrap_or(0);
    let reasons: Vec<String> = a
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| *k != "total" && v.as_u64().is_some_and(|n| n > 0))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if reasons.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn region(name: &str, serving: bool, health: Value, drain: Value, answers: Value) -> Value {
        json!({"name": name, "serving": serving, "health": health, "drain": drain, "answers": answers})
    }

    #[test]
    fn one_aligned_row_per_region_with_rfc3339_times_and_drains() {
        let zero = json!({"total": 0, "nearest": 0, "failover": 0});
        let listed = json!({"regions": [
            region("asia1", true,
                json!({"probed": false, "status": "up", "confirmed": false, "last_probe": null, "rtt_ms": null}),
                Value::Null, zero.clone()),
            region("europe1", false,
                json!({"probed": true, "status": "up", "confirmed": true, "last_probe": 1_750_000_000u64, "rtt_ms": 12.34}),
                json!({"reason": "maintenance", "by": "admin", "since": 1_749_990_000u64, "until": 1_750_003_600u64}),
                json!({"total": 12, "nearest": 10, "failover": 2})),
            region("us1", false,
                json!({"probed": true, "status": "down", "confirmed": false, "last_probe": 1_750_000_000u64, "rtt_ms": null}),
                json!({"reason": "fibre cut", "by": "ops", "since": 1_749_990_000u64, "until": null}),
                zero),
        ]});
        assert_eq!(
            table(&listed),
            "\
REGION   SERVING  HEALTH              LAST PROBE                        DRAIN                                              ANSWERS
asia1    yes      unprobed            -                                 -                                                  0
europe1  no       up                  2025-06-15T15:06:40Z rtt 12.3 ms  \"maintenance\" by admin until 2025-06-15T16:06:40Z  12 (failover 2, nearest 10)
us1      no       down (unconfirmed)  2025-06-15T15:06:40Z              \"fibre cut\" by ops, no end                         0
"
        );
    }
}
