//! The bootstrap script: installs a router's poller (a `/system script` run
//! by a `/system scheduler`), then runs the site's install job.
//!
//! The poller, every `poll_interval` at a time of day of its own (the jitter:
//! a fleet spreads over the interval), first reports the outcome of the job
//! imported last (the `mgntJob` and `mgntJobError` globals the job sets), then
//! fetches `GET /router/v1/job?version=V` with its router token and runs what
//! it got with `/import`. It talks to the router endpoint's public name with
//! `/tool fetch` (over HTTPS with `check-certificate=yes` once the job has
//! installed the CA), never through the tunnel: a router whose tunnel is gone
//! can still fetch the job that recreates it. The version it reports is the
//! router's own (`/system resource get version`), so an upgraded router gets
//! the parameters its release accepts.

use std::{fmt::Write as _, time::Duration};

use uuid::Uuid;

use super::{ScriptError, Version, job::TunnelScript, text::quote};

/// The name of the poller's script and scheduler entry.
pub const POLLER: &str = "mgnt-poll";
/// Where the poller saves a fetched job before importing it.
const JOB_FILE: &str = "mgnt-job.rsc";
/// Where the one-liner saves the bootstrap script.
const BOOTSTRAP_FILE: &str = "mgnt-bootstrap.rsc";
/// What the scheduler and script may do: fetch files (`ftp`), read and change
/// the configuration (`read`, `write`, `policy` for the job's commands,
/// `sensitive` for the tunnel password) and run `/tool fetch` (`test`).
const POLICY: &str = "ftp,read,write,policy,test,sensitive";

/// A router's poller.
#[derive(Debug, Clone)]
pub struct Poller<'a> {
    pub site: Uuid,
    /// The router endpoint's public URL (scheme and host).
    pub base: &'a str,
    pub router_token: &'a str,
    pub interval: Duration,
}

impl Poller<'_> {
    /// The poller's own source (what `/system script` runs): report the job
    /// imported last (by the bootstrap, or a run that could not report), poll,
    /// import what came, report it.
    pub fn source(&self) -> String {
        let check = if self.base.starts_with("https://") {
            " check-certificate=yes"
        } else {
            ""
        };
        let job = quote(JOB_FILE);
        let report = [
            ":if ([:len $mgntJob] > 0) do={".to_owned(),
            ":local mgntBody \"{\\\"status\\\":\\\"applied\\\"}\"".to_owned(),
            ":if ([:len $mgntJobError] > 0) do={:set mgntBody (\"{\\\"status\\\":\\\"failed\\\",\\\"error\\\":\\\"stopped while \" . $mgntJobError . \"\\\"}\")}".to_owned(),
            format!(
                ":do {{/tool fetch url=($mgntBase . \"/router/v1/jobs/\" . $mgntJob . \"/result\") http-method=post http-header-field=($mgntAuth . \",Content-Type: application/json\") http-data=$mgntBody output=none{check}; :set mgntJob \"\"}} on-error={{:log warning (\"mgnt: reporting job \" . $mgntJob . \" failed\")}}"
            ),
            "}".to_owned(),
        ];
        // One block, like the jobs: the same text is safe to paste or import.
        let mut lines = vec![
            "{".to_owned(),
            ":global mgntJob".to_owned(),
            ":global mgntJobError".to_owned(),
            format!(":local mgntBase {}", quote(self.base)),
            format!(
                ":local mgntAuth {}",
                quote(&format!("Authorization: Bearer {}", self.router_token))
            ),
        ];
        lines.extend(report.iter().cloned());
        lines.extend([
            ":local mgntVersion [/system resource get version]".to_owned(),
            ":local mgntSpace [:find $mgntVersion \" \"]".to_owned(),
            ":if ([:typeof $mgntSpace] = \"num\") do={:set mgntVersion [:pick $mgntVersion 0 $mgntSpace]}".to_owned(),
            format!("/file remove [find name={job}]"),
            format!(
                ":do {{/tool fetch url=($mgntBase . \"/router/v1/job?version=\" . $mgntVersion) http-header-field=$mgntAuth dst-path={job}{check}}} on-error={{:log warning \"mgnt: polling for a job failed\"}}"
            ),
            format!(":if ([:len [/file find name={job}]] > 0) do={{"),
            format!(
                ":if ([/file get [find name={job}] size] > 0) do={{:do {{/import file-name={job}}} on-error={{:log warning \"mgnt: the job stopped\"}}}}"
            ),
            format!("/file remove [find name={job}]"),
            "}".to_owned(),
        ]);
        lines.extend(report);
        lines.push("}".to_owned());
        let mut s = String::with_capacity(4096);
        for l in lines {
            s.push_str(&l);
            s.push('\n');
        }
        s
    }

    /// A time of day of the site's own within the interval, so a fleet's
    /// polls spread out instead of arriving together.
    fn start_time(&self) -> String {
        let interval = self.interval.as_secs().max(1);
        let offset = (self.site.as_u128() % u128::from(interval)) as u64 % 86_400;
        format!(
            "{:02}:{:02}:{:02}",
            offset / 3600,
            offset / 60 % 60,
            offset % 60
        )
    }

    /// The block installing the poller (replacing an earlier one).
    fn install(&self, s: &mut String) {
        let name = quote(POLLER);
        s.push_str("{\n");
        let _ = writeln!(s, "/system scheduler remove [find name={name}]");
        let _ = writeln!(s, "/system script remove [find name={name}]");
        let _ = writeln!(
            s,
            "/system script add name={name} policy={POLICY} source={}",
            quote(&self.source())
        );
        let _ = writeln!(
            s,
            "/system scheduler add name={name} start-time={} interval={}s policy={POLICY} on-event={}",
            self.start_time(),
            self.interval.as_secs(),
            quote(&format!("/system script run {POLLER}"))
        );
        s.push_str("}\n");
    }
}

/// The bootstrap: the poller first (so a job that stops half-way is still
/// reported), then the install job, then one poll at once to report it.
pub fn bootstrap(
    poller: &Poller<'_>,
    job: &TunnelScript<'_>,
    version: Version,
) -> Result<String, ScriptError> {
    let job = job.render(version)?;
    let mut s = String::with_capacity(job.len() + 4096);
    // The job's id line stays first: it is what identifies the script.
    let (first, rest) = job.split_once('\n').unwrap_or((&job, ""));
    let _ = writeln!(s, "{first}");
    let _ = writeln!(
        s,
        "# mgnt bootstrap of site {}: the poller, the tunnel, then a first poll.",
        poller.site
    );
    poller.install(&mut s);
    s.push_str(rest);
    let _ = writeln!(s, "/system script run {}", quote(POLLER));
    // It holds the router token and the tunnel secret; it has been read.
    let _ = writeln!(s, "/file remove [find name={}]", quote(BOOTSTRAP_FILE));
    Ok(s)
}

/// The one line an operator pastes into the router's terminal.
pub fn one_liner(url: &str) -> String {
    let file = quote(BOOTSTRAP_FILE);
    format!(
        "/tool fetch url={} dst-path={file}; /import file-name={file}",
        quote(url)
    )
}
