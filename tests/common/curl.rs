//! curl as a router or a portal would run it.

use std::process::Command;

/// What curl got: status, headers (lower-case names) and body.
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl (the router's side) and parses its `-i` output; the error is
/// curl's own message when no HTTP answer came (TLS refused, say).
pub fn try_curl(args: &[&str]) -> Result<Got, String> {
    try_curl_in(None, args)
}

/// Like [`try_curl`], inside network namespace `ns` when given.
pub fn try_curl_in(ns: Option<&str>, args: &[&str]) -> Result<Got, String> {
    let mut cmd = match ns {
        None => Command::new("curl"),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
    };
    let out = cmd
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is required (Debian package curl; scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Got {
        status,
        headers,
        body: body.to_owned(),
    })
}

pub fn curl(args: &[&str]) -> Got {
    try_curl(args).unwrap_or_else(|e| panic!("curl {args:?}: {e}"))
}

/// curl inside network namespace `ns`.
pub fn curl_in(ns: &str, args: &[&str]) -> Got {
    try_curl_in(Some(ns), args).unwrap_or_else(|e| panic!("curl in {ns} {args:?}: {e}"))
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}
