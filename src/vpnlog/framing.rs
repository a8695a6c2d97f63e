//! Syslog over TCP framing (RFC 6587): octet counting (`LEN SP MSG`) or
//! newline-delimited, chosen per message as rsyslog and syslog-ng send them.

/// Longest message kept; longer ones are cut there (and still counted).
pub const MAX_FRAME: usize = 64 * 1024;

/// The next complete message in `buf`: (message, bytes consumed), or `None`
/// when more bytes are needed. A message longer than [`MAX_FRAME`] without a
/// newline is returned cut, so a peer cannot make the buffer grow forever.
pub fn next_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && digits <= 6 && buf.get(digits) == Some(&b' ') {
        let len: usize = std::str::from_utf8(&buf[..digits]).ok()?.parse().ok()?;
        let start = digits + 1;
        if len <= MAX_FRAME {
            let end = start.checked_add(len)?;
            return (buf.len() >= end).then(|| (trim_newline(&buf[start..end]), end));
        }
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => Some((trim_newline(&buf[..i]), i + 1)),
        None if buf.len() >= MAX_FRAME => Some((&buf[..MAX_FRAME], MAX_FRAME)),
        None => None,
    }
}

fn trim_newline(m: &[u8]) -> &[u8] {
    let m = m.strip_suffix(b"\n").unwrap_or(m);
    m.strip_suffix(b"\r").unwrap_or(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut buf: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while let Some((m, n)) = next_frame(buf) {
            out.push(m);
            buf = &buf[n..];
        }
        out
    }

    #[test]
    fn newline_and_octet_counted_frames_mix() {
        let buf = b"<29>one line\n11 <29>counted<29>two\r\n";
        assert_eq!(all(buf), [&b"<29>one line"[..], b"<29>counted", b"<29>two"]);
    }

    #[test]
    fn incomplete_frames_wait_for_more() {
        assert_eq!(next_frame(b"20 <29>short"), None);
        assert_eq!(next_frame(b"<29>no newline yet"), None);
        assert_eq!(next_frame(b""), None);
    }

    #[test]
    fn oversize_messages_are_cut_not_buffered_forever() {
        let big = vec![b'x'; MAX_FRAME + 10];
        let (m, n) = next_frame(&big).unwrap();
        assert_eq!((m.len(), n), (MAX_FRAME, MAX_FRAME));
    }

    #[test]
    fn a_leading_number_that_is_not_a_count_is_text() {
        assert_eq!(all(b"2026-11-25 line\n"), [&b"2026-11-25 line"[..]]);
    }
}
