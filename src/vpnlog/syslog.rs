//! The syslog header of a received line and the time it carries: RFC 5424,
//! RFC 3164 and rsyslog's forward format (RFC 3164 with an RFC 3339 time),
//! read by `syslog_loose` (the parser Vector ships), plus OpenVPN's own
//! timestamp at the start of a message.
//!
//! RFC 3164 times and OpenVPN's carry no zone and 3164's no year: like
//! rsyslog, we read them in our own local time zone and take the year that
//! puts them nearest to now. Every function takes the zone, so tests pin it.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone};
use syslog_loose::{Variant, parse_message_with_year_exact_tz};

/// What a syslog header said, and the message after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub host: Option<&'a str>,
    /// Seconds since 1970; `None` when the header had no usable time.
    pub time: Option<i64>,
    pub msg: &'a str,
}

/// Reads the syslog header of `line`, if it has one; zone-less times are
/// read in `zone`.
pub fn header<Tz: TimeZone + Copy>(line: &str, zone: Tz) -> Header<'_> {
    let none = Header {
        host: None,
        time: None,
        msg: line,
    };
    // A line without a PRI is a syslog line only if it starts like 3164's
    // "Mmm dd hh:mm:ss"; anything else is OpenVPN's own text.
    if !line.starts_with('<') && !starts_like_3164(line) {
        return none;
    }
    let year = move |(month, ..): (u32, u32, u32, u32, u32)| year_of(month, today(&zone));
    match parse_message_with_year_exact_tz(line, year, Some(zone), Variant::Either) {
        Ok(m) => Header {
            host: m.hostname.filter(|h| *h != "-"),
            time: m.timestamp.map(|t| t.timestamp()),
            msg: m.msg.strip_prefix('\u{feff}').unwrap_or(m.msg),
        },
        Err(_) => none,
    }
}

/// The year of a 3164 date in `month` received on `today`: this year,
/// except across New Year (rsyslog's rule).
pub fn year_of(month: u32, today: NaiveDate) -> i32 {
    match (month, today.month()) {
        (12, 1) => today.year() - 1,
        (1, 12) => today.year() + 1,
        _ => today.year(),
    }
}

fn starts_like_3164(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 16 && b[..3].iter().all(u8::is_ascii_alphabetic) && b[3] == b' ' && b[9] == b':'
}

/// Removes OpenVPN's own timestamp (`2026-11-25 18:08:05 ` or
/// `Wed Nov 25 18:08:05 2026 `); returns its time (zone-less: see
/// [`in_zone`], called only when no better time is known) and the rest.
pub fn openvpn_time(s: &str) -> (Option<NaiveDateTime>, &str) {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let at = |date: Option<NaiveDate>, hms: usize| -> Option<NaiveDateTime> {
        date?.and_hms_opt(
            digits(hms..hms + 2)?,
            digits(hms + 3..hms + 5)?,
            digits(hms + 6..hms + 8)?,
        )
    };
    if b.len() > 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[19] == b' '
    {
        let date =
            (|| NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?))();
        return (at(date, 11), &s[20..]);
    }
    if b.len() > 25
        && b[3] == b' '
        && b[7] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[24] == b' '
    {
        let month = month(&s[4..7]);
        let day = s.get(8..10).and_then(|d| d.trim_start().parse().ok());
        let year = digits(20..24).map(|y| y as i32);
        let date = month
            .zip(day)
            .zip(year)
            .and_then(|((m, d), y)| NaiveDate::from_ymd_opt(y, m, d));
        return (at(date, 11), &s[25..]);
    }
    (None, s)
}

/// A zone-less time read in `zone` (seconds since 1970).
pub fn in_zone<Tz: TimeZone>(naive: NaiveDateTime, zone: &Tz) -> Option<i64> {
    Some(zone.from_local_datetime(&naive).earliest()?.timestamp())
}

fn month(name: &str) -> Option<u32> {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u32 + 1)
}

/// The time an event happened: `claimed` when it is plausible, else when
/// it arrived. A sender's clock ahead of ours, or a time older than a day
/// (a replay, a wrong year or zone), cannot move records out of place.
pub fn event_time(claimed: Option<i64>, arrived: u64) -> u64 {
    const AHEAD: i64 = 300;
    const BEHIND: i64 = 86_400;
    let now = arrived as i64;
    match claimed {
        Some(t) if t <= now + AHEAD && t >= now - BEHIND => t.min(now) as u64,
        _ => arrived,
    }
}

/// The date in `zone` now.
pub fn today<Tz: TimeZone>(zone: &Tz) -> NaiveDate {
    chrono::Utc::now().with_timezone(zone).date_naive()
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, Utc};

    use super::*;

    const T: i64 = 1_795_630_085; // 2026-11-25T18:08:05Z

    #[test]
    fn rfc5424_gives_host_exact_time_and_the_message_after_structured_data() {
        let h = header(
            "<29>1 2026-11-25T19:08:05.123+01:00 vpn-sgp-1 openvpn 812 - [meta x=\"a\\]b\"] u/1.2.3.4:5 MULTI: Learn",
            Utc,
        );
        assert_eq!(
            h,
            Header {
                host: Some("vpn-sgp-1"),
                time: Some(T),
                msg: "u/1.2.3.4:5 MULTI: Learn"
            }
        );
        let h = header(
            "<29>1 2026-11-25T18:08:05Z - openvpn - - - \u{feff}Connection reset",
            Utc,
        );
        assert_eq!((h.host, h.time, h.msg), (None, Some(T), "Connection reset"));
        let h = header("<29>1 - - - - - - no time", Utc);
        assert_eq!((h.time, h.msg), (None, "no time"));
    }

    #[test]
    fn rfc3164_is_read_in_the_given_zone_and_rsyslog_forward_format_exactly() {
        let plus2 = FixedOffset::east_opt(7200).unwrap();
        let year = today(&plus2).year();
        let h = header(
            "<29>Nov 25 20:08:05 vpn-fra-2 openvpn[812]: 1.2.3.4:5 TLS: x",
            plus2,
        );
        let want = plus2
            .with_ymd_and_hms(year, 11, 25, 20, 8, 5)
            .unwrap()
            .timestamp();
        assert_eq!(
            (h.host, h.time, h.msg),
            (Some("vpn-fra-2"), Some(want), "1.2.3.4:5 TLS: x")
        );
        // Without a PRI (a file forwarded as is), and a one-digit day.
        let h = header(
            "Nov  5 08:00:01 vpn-fra-2 ovpn-server: 1.2.3.4:5 TLS: y",
            Utc,
        );
        assert_eq!((h.host, h.msg), (Some("vpn-fra-2"), "1.2.3.4:5 TLS: y"));
        // rsyslog's RSYSLOG_ForwardFormat: an RFC 3339 time with its zone.
        let h = header(
            "<29>2026-11-25T18:08:05.381932+00:00 vpn-fra-2 openvpn[812]: 1.2.3.4:5 TLS: z",
            plus2,
        );
        assert_eq!(
            (h.host, h.time, h.msg),
            (Some("vpn-fra-2"), Some(T), "1.2.3.4:5 TLS: z")
        );
    }

    #[test]
    fn openvpn_lines_are_not_mistaken_for_syslog() {
        for line in [
            "2026-11-25 18:08:05 169.254.89.2:56700 TLS: Initial packet",
            "Wed Nov 25 18:08:05 2026 u/1.2.3.4:5 SIGTERM[soft,remote-exit] received",
            "something else",
            "",
            "<",
            "<999>",
        ] {
            let h = header(line, Utc);
            assert_eq!((h.host, h.time, h.msg), (None, None, line), "{line}");
        }
    }

    #[test]
    fn openvpn_timestamps_in_both_formats() {
        let utc = |s| {
            let (t, rest) = openvpn_time(s);
            (t.and_then(|t| in_zone(t, &Utc)), rest)
        };
        assert_eq!(
            utc("2026-11-25 18:08:05 1.2.3.4:5 x"),
            (Some(T), "1.2.3.4:5 x")
        );
        assert_eq!(
            utc("Wed Nov 25 18:08:05 2026 1.2.3.4:5 x"),
            (Some(T), "1.2.3.4:5 x")
        );
        let plus1 = FixedOffset::east_opt(3600).unwrap();
        let naive = openvpn_time("2026-11-25 19:08:05 x y").0.unwrap();
        assert_eq!(in_zone(naive, &plus1), Some(T));
        // The shape without a valid date still loses its prefix, with no time.
        assert_eq!(utc("2026-13-45 18:08:05 x y"), (None, "x y"));
        assert_eq!(utc("no time here at all, none").0, None);
    }

    #[test]
    fn the_year_of_a_3164_date_across_new_year() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(year_of(12, d(2027, 1, 1)), 2026);
        assert_eq!(year_of(1, d(2026, 12, 31)), 2027);
        assert_eq!(year_of(6, d(2026, 11, 26)), 2026);
    }

    #[test]
    fn implausible_claimed_times_give_way_to_the_arrival() {
        let now = T as u64;
        assert_eq!(event_time(Some(T - 30), now), now - 30);
        assert_eq!(event_time(Some(T + 60), now), now, "a little ahead: now");
        assert_eq!(event_time(Some(T + 3600), now), now, "far ahead");
        assert_eq!(event_time(Some(T - 2 * 86_400), now), now, "too old");
        assert_eq!(event_time(None, now), now);
    }
}
