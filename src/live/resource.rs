//! A router's `/system/resource/print`, as the admin API returns it (pure).

use serde::Serialize;

use super::api::Attrs;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// Seconds since the router booted.
    pub uptime: u64,
    pub version: String,
    /// Percent.
    pub cpu_load: u64,
    /// Bytes.
    pub free_memory: u64,
    pub total_memory: u64,
}

impl Resource {
    /// `None` when the router left out a field or wrote one unreadably.
    pub fn parse(attrs: &Attrs) -> Option<Self> {
        let number = |key: &str| attrs.get(key)?.parse().ok();
        Some(Self {
            uptime: uptime(attrs.get("uptime")?)?,
            version: attrs.get("version")?.clone(),
            cpu_load: number("cpu-load")?,
            free_memory: number("free-memory")?,
            total_memory: number("total-memory")?,
        })
    }
}

/// RouterOS's uptime, `1w2d3h4m5s` (any units left out), or the older
/// `2d03:04:05` / `03:04:05`, in seconds.
pub fn uptime(text: &str) -> Option<u64> {
    if text.contains(':') {
        let (days, clock) = match text.split_once('d') {
            Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
            None => (0, text),
        };
        let parts: Vec<u64> = clock
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [h, m, s] = parts[..] else {
            return None;
        };
        return Some(days * 86_400 + h * 3600 + m * 60 + s);
    }
    let (mut total, mut digits) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let size = match c {
            'w' => 604_800,
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = std::mem::take(&mut digits).parse().ok()?;
        total = total.checked_add(n.checked_mul(size)?)?;
    }
    (digits.is_empty() && !text.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::api::reply::attrs;

    #[test]
    fn uptimes_in_every_form_routeros_writes() {
        assert_eq!(uptime("1w2d3h4m5s"), Some(788_645));
        assert_eq!(uptime("4m"), Some(240));
        assert_eq!(uptime("0s"), Some(0));
        assert_eq!(uptime("2d03:04:05"), Some(183_845));
        assert_eq!(uptime("03:04:05"), Some(11_045));
        for bad in ["", "5", "3x", "1:2", "d1:2:3", "99999999999999999999w"] {
            assert_eq!(uptime(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_resource_row_with_every_field_is_read() {
        let row = attrs(&[
            ("uptime", "3d4h5s"),
            ("version", "7.16 (stable)"),
            ("cpu-load", "3"),
            ("free-memory", "28733440"),
            ("total-memory", "67108864"),
        ]);
        let r = Resource::parse(&row).unwrap();
        assert_eq!((r.uptime, r.cpu_load), (273_605, 3));
        assert_eq!(r.version, "7.16 (stable)");
        let mut partial = row.clone();
        partial.remove("cpu-load");
        assert_eq!(Resource::parse(&partial), None);
    }
}
