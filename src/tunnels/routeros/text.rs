//! RouterOS string quoting.

/// `v` as a quoted RouterOS string: backslash, quote, `$` and `?` are
/// escaped (a `$` would interpolate a variable), line breaks become `\r\n`.
pub fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' | '"' | '$' | '?' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\r\\n"),
            '\r' => {}
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_escape_what_routeros_would_interpret() {
        assert_eq!(quote(r#"s3cr"et$pw"#), r#""s3cr\"et\$pw""#);
        assert_eq!(quote("a\\b?c"), r#""a\\b\?c""#);
        assert_eq!(quote("one\ntwo\r\n"), r#""one\r\ntwo\r\n""#);
    }
}
