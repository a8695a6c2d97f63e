//! The entries of a zone file: where each record or directive starts and ends.
//!
//! hickory's zone parser reports no position, so a failing parse is located by
//! parsing prefixes made of whole entries ([`first_bad`]). A prefix cut inside
//! a parenthesised record would fail on the cut rather than on the error, so the
//! cuts must fall exactly where hickory's lexer (hickory-proto 0.26,
//! `serialize/txt/zone_lex.rs`) is at the start of a line. This scan follows
//! that lexer rather than RFC 1035 alone:
//! - `(` opens a list only at the start of a token outside a quoted string,
//!   lists do not nest, and newlines inside a list do not end the entry;
//! - `"` opens a quoted string only at the start of a token outside a list; the
//!   string may span lines, and `\` escapes the character after it;
//! - `;` starts a comment outside quoted strings, also right after a token;
//! - a line ends at `\n`, so CRLF text counts its lines as LF text does.
//!
//! Text the lexer refuses (a stray `)`, a control character) is scanned as
//! blank: hickory stops at it, so no cut after it is ever used.

use std::ops::Range;

/// Longest record text quoted in an error message, in characters.
const MAX_SHOWN: usize = 80;

/// One entry: a line, or the lines joined by a parenthesised list or a quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Number of the entry's first line, from 1.
    pub line: usize,
    /// Bytes of the entry in the text, its final newline included.
    pub span: Range<usize>,
}

/// Where the scan is, as hickory's lexer would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Between tokens outside a list: a newline here ends the entry.
    Line,
    /// `$` and the capital letters of a directive.
    Dollar,
    Word {
        list: bool,
    },
    Quote,
    /// The character after a `\` in a quoted string.
    Escape,
    /// Between tokens inside `( … )`.
    List,
    Comment {
        list: bool,
    },
}

/// Splits `text` into entries, blank and comment-only lines included; an
/// unterminated list or quoted string runs to the end of the text.
pub fn entries(text: &str) -> Vec<Entry> {
    let mut found = Vec::new();
    let (mut state, mut start, mut line, mut first) = (Lex::Line, 0, 1, 1);
    for (i, c) in text.char_indices() {
        let (next, ends) = step(state, c);
        state = next;
        if c == '\n' {
            line += 1;
        }
        if ends {
            found.push(Entry {
                line: first,
                span: start..i + 1,
            });
            (start, first) = (i + 1, line);
        }
    }
    if start < text.len() {
        found.push(Entry {
            line: first,
            span: start..text.len(),
        });
    }
    found
}

/// The state after `c`, and whether `c` ends an entry.
fn step(state: Lex, c: char) -> (Lex, bool) {
    let go = |next| (next, false);
    match state {
        Lex::Line => match c {
            '\n' => (Lex::Line, true),
            '(' => go(Lex::List),
            '"' => go(Lex::Quote),
            ';' => go(Lex::Comment { list: false }),
            '$' => go(Lex::Dollar),
            // `@` is a token of its own: what follows starts another.
            c if c.is_whitespace() || c.is_control() || c == '@' || c == ')' => go(Lex::Line),
            _ => go(Lex::Word { list: false }),
        },
        // The lexer ends a directive at its first non-capital and reads that
        // character afresh, so `$TTL(` opens a list.
        Lex::Dollar if c.is_ascii_uppercase() => go(Lex::Dollar),
        Lex::Dollar => step(Lex::Line, c),
        Lex::Word { list } if c.is_whitespace() || c == ';' || c == ')' => {
            step(if list { Lex::List } else { Lex::Line }, c)
        }
        Lex::Word { .. } => go(state),
        Lex::Quote => match c {
            '\\' => go(Lex::Escape),
            '"' => go(Lex::Line),
            _ => go(Lex::Quote),
        },
        Lex::Escape => go(Lex::Quote),
        Lex::List => match c {
            ')' => go(Lex::Line),
            ';' => go(Lex::Comment { list: true }),
            c if c.is_whitespace() || c.is_control() => go(Lex::List),
            _ => go(Lex::Word { list: true }),
        },
        Lex::Comment { list } if c == '\n' => {
            if list {
                go(Lex::List)
            } else {
                (Lex::Line, true)
            }
        }
        Lex::Comment { .. } => go(state),
    }
}

/// The first entry whose prefix `fails` to parse. A parser that stops at the
/// first bad entry fails on a prefix of whole entries exactly when the prefix
/// holds that entry, so the answer is found by bisection. `None` if even the
/// whole text parses.
pub fn first_bad<'e>(
    text: &str,
    entries: &'e [Entry],
    fails: impl Fn(&str) -> bool,
) -> Option<&'e Entry> {
    let i = entries.partition_point(|e| !fails(&text[..e.span.end]));
    entries.get(i)
}

/// An entry's text on one line for an error message: comments dropped, blanks
/// (newlines included) squeezed to one space, long records cut short.
pub fn shown(entry: &str) -> String {
    let mut kept = String::with_capacity(entry.len());
    let mut state = Lex::Line;
    for c in entry.chars() {
        state = step(state, c).0;
        if !matches!(state, Lex::Comment { .. }) {
            kept.push(c);
        }
    }
    let one_line = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (first line, text) of every entry.
    fn split(text: &str) -> Vec<(usize, &str)> {
        entries(text)
            .into_iter()
            .map(|e| (e.line, &text[e.span]))
            .collect()
    }

    const SOA: &str = "@ IN SOA ns1 hostmaster (\n  1 ; serial\n  7200 900\n  1209600 60 )\n";

    #[test]
    fn a_parenthesised_record_is_one_entry() {
        let text = format!("$TTL 300\n{SOA}@ NS ns1\n");
        assert_eq!(
            split(&text),
            [(1, "$TTL 300\n"), (2, SOA), (6, "@ NS ns1\n")]
        );
    }

    #[test]
    fn blank_and_comment_lines_are_entries_and_the_last_needs_no_newline() {
        assert_eq!(
            split("\n; only a comment\n  \nns1 A 192.0.2.1"),
            [
                (1, "\n"),
                (2, "; only a comment\n"),
                (3, "  \n"),
                (4, "ns1 A 192.0.2.1")
            ]
        );
        assert_eq!(split(""), []);
    }

    #[test]
    fn parentheses_in_comments_and_quoted_strings_do_not_join_lines() {
        let text =
            "; a remark (unclosed\nt TXT \"(\" \"a;b\" \"\\\"(\"\nu TXT x(y ; )\nv A 192.0.2.1\n";
        assert_eq!(
            split(text),
            [
                (1, "; a remark (unclosed\n"),
                (2, "t TXT \"(\" \"a;b\" \"\\\"(\"\n"),
                (3, "u TXT x(y ; )\n"),
                (4, "v A 192.0.2.1\n"),
            ]
        );
    }

    #[test]
    fn a_quoted_string_joins_lines_outside_a_list_only() {
        let text = "t TXT \"one\ntwo\"\nu TXT ( \"a\n b\" )\nv A 192.0.2.1\n";
        assert_eq!(
            split(text),
            [
                (1, "t TXT \"one\ntwo\"\n"),
                // Inside a list hickory reads `"` as a letter, not as a quote.
                (3, "u TXT ( \"a\n b\" )\n"),
                (5, "v A 192.0.2.1\n"),
            ]
        );
    }

    #[test]
    fn a_comment_inside_a_list_ends_at_its_line() {
        let text = "@ SOA a b ( 1 ; ) not closed here\n 2 3 4 5 )\nx A 192.0.2.1\n";
        assert_eq!(
            split(text),
            [
                (1, "@ SOA a b ( 1 ; ) not closed here\n 2 3 4 5 )\n"),
                (3, "x A 192.0.2.1\n")
            ]
        );
    }

    #[test]
    fn directives_are_entries_and_may_open_a_list() {
        let text = "$ORIGIN example.\n$TTL(\n300 )\n$INCLUDE other.zone\n";
        assert_eq!(
            split(text),
            [
                (1, "$ORIGIN example.\n"),
                (2, "$TTL(\n300 )\n"),
                (4, "$INCLUDE other.zone\n")
            ]
        );
    }

    #[test]
    fn crlf_lines_count_as_lf_lines() {
        let lf = format!("$TTL 300\n{SOA}; note\n\nns1 A 192.0.2.1\n");
        let crlf = lf.replace('\n', "\r\n");
        let lines = |t: &str| entries(t).iter().map(|e| e.line).collect::<Vec<_>>();
        assert_eq!(lines(&crlf), lines(&lf));
        assert_eq!(lines(&lf), [1, 2, 6, 7, 8]);
    }

    #[test]
    fn an_unclosed_list_or_string_runs_to_the_end() {
        assert_eq!(
            split("a A 1\n@ SOA ( 1 2\nb A 2\n"),
            [(1, "a A 1\n"), (2, "@ SOA ( 1 2\nb A 2\n")]
        );
        assert_eq!(
            split("t TXT \"open\nb A 2\n"),
            [(1, "t TXT \"open\nb A 2\n")]
        );
    }

    #[test]
    fn the_first_bad_entry_is_found_by_whole_entries() {
        let text = format!("{SOA}a A 1\nb A bad\nc A bad\n");
        let all = entries(&text);
        // A stand-in parser: fails on an open list (as a cut would) or on `bad`.
        let fails = |t: &str| t.contains("bad") || t.matches('(').count() > t.matches(')').count();
        let bad = first_bad(&text, &all, fails).unwrap();
        assert_eq!((bad.line, &text[bad.span.clone()]), (6, "b A bad\n"));
        assert_eq!(first_bad(&text, &all, |_| false), None);
        assert_eq!(first_bad(&text, &all, |_| true).unwrap().line, 1);
    }

    #[test]
    fn shown_drops_comments_and_joins_lines() {
        assert_eq!(
            shown(SOA),
            "@ IN SOA ns1 hostmaster ( 1 7200 900 1209600 60 )"
        );
        assert_eq!(
            shown("t TXT \"a;b\" ; why\r\n"),
            "t TXT \"a;b\"",
            "a `;` inside quotes is text"
        );
        let long = format!("t TXT {}\n", "x".repeat(200));
        let cut = shown(&long);
        assert_eq!(cut.chars().count(), MAX_SHOWN + 1);
        assert!(cut.ends_with('…'));
    }
}
