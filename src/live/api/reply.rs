//! Replies: the sentences a router sends back, by their first word.
//!
//! `!re` carries one item, `!done` ends a command (with attributes of its
//! own, such as `=ret=`), `!trap` reports a failed or interrupted command and
//! is followed by `!done`, `!fatal` precedes the router closing the
//! connection. Since RouterOS 7.18 a query that matches nothing answers
//! `!empty` before its `!done`.

use std::collections::BTreeMap;

/// A reply's `=name=value` attributes.
pub type Attrs = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Re(Attrs),
    Done(Attrs),
    Trap {
        category: Option<u32>,
        message: String,
    },
    Fatal(String),
    Empty,
}

/// A reply and the `.tag` of the command it answers (none on untagged
/// commands, and on `!fatal`, which ends the whole connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub reply: Reply,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("empty sentence")]
    NoWords,
    #[error("unknown reply word {0:?}")]
    Unknown(String),
}

impl Reply {
    /// Parses a sentence. Attributes the caller did not ask for, API
    /// attributes other than `.tag` and words that are not attributes are
    /// tolerated: routers add properties between versions.
    pub fn parse<W: AsRef<str>>(words: &[W]) -> Result<Tagged, ReplyError> {
        let (first, rest) = words.split_first().ok_or(ReplyError::NoWords)?;
        let mut attrs = Attrs::new();
        let mut tag = None;
        let mut plain = Vec::new();
        for word in rest.iter().map(AsRef::as_ref) {
            if let Some(value) = word.strip_prefix(".tag=") {
                tag = Some(value.to_owned());
            } else if let Some((name, value)) =
                word.strip_prefix('=').and_then(|w| w.split_once('='))
            {
                attrs.insert(name.to_owned(), value.to_owned());
            } else if !word.starts_with('.') {
                plain.push(word);
            }
        }
        let reply = match first.as_ref() {
            "!re" => Reply::Re(attrs),
            "!done" => Reply::Done(attrs),
            "!trap" => Reply::Trap {
                category: attrs.get("category").and_then(|c| c.parse().ok()),
                message: attrs.remove("message").unwrap_or_default(),
            },
            // The reason comes as a bare word ("!fatal", "not logged in").
            "!fatal" => Reply::Fatal(attrs.remove("message").unwrap_or_else(|| plain.join(" "))),
            "!empty" => Reply::Empty,
            other => return Err(ReplyError::Unknown(other.to_owned())),
        };
        Ok(Tagged { reply, tag })
    }
}

/// Attributes from pairs, for tests.
#[cfg(test)]
pub(crate) fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Tagged, ReplyError> {
        Reply::parse(words)
    }

    #[test]
    fn items_and_ends_keep_their_attributes_and_tag() {
        let t = parse(&["!re", "=name=ether1", "=comment=a=b=c", "=x=", ".tag=12"]).unwrap();
        assert_eq!(
            t,
            Tagged {
                reply: Reply::Re(attrs(&[
                    ("name", "ether1"),
                    ("comment", "a=b=c"),
                    ("x", "")
                ])),
                tag: Some("12".into())
            }
        );
        let t = parse(&["!done", "=ret=*1"]).unwrap();
        assert_eq!(t.reply, Reply::Done(attrs(&[("ret", "*1")])));
        assert_eq!(t.tag, None);
    }

    #[test]
    fn the_tag_may_come_anywhere() {
        let t = parse(&["!re", ".tag=3", "=name=ether1"]).unwrap();
        assert_eq!(t.tag.as_deref(), Some("3"));
        assert_eq!(t.reply, Reply::Re(attrs(&[("name", "ether1")])));
    }

    #[test]
    fn traps_carry_category_and_message() {
        let t = parse(&["!trap", "=category=2", "=message=interrupted", ".tag=4"]).unwrap();
        assert_eq!(
            t.reply,
            Reply::Trap {
                category: Some(2),
                message: "interrupted".into()
            }
        );
        let t = parse(&["!trap", "=message=not enough permissions (9)"]).unwrap();
        assert_eq!(
            t.reply,
            Reply::Trap {
                category: None,
                message: "not enough permissions (9)".into()
            }
        );
        let t = parse(&["!trap", "=category=x"]).unwrap();
        assert_eq!(
            t.reply,
            Reply::Trap {
                category: None,
                message: String::new()
            }
        );
    }

    #[test]
    fn fatal_takes_its_bare_reason() {
        assert_eq!(
            parse(&["!fatal", "session terminated on request"])
                .unwrap()
                .reply,
            Reply::Fatal("session terminated on request".into())
        );
        assert_eq!(
            parse(&["!fatal", "=message=not logged in"]).unwrap().reply,
            Reply::Fatal("not logged in".into())
        );
        assert_eq!(
            parse(&["!fatal"]).unwrap().reply,
            Reply::Fatal(String::new())
        );
    }

    #[test]
    fn empty_is_accepted_with_its_tag() {
        let t = parse(&["!empty", ".tag=9"]).unwrap();
        assert_eq!(t.reply, Reply::Empty);
        assert_eq!(t.tag.as_deref(), Some("9"));
    }

    #[test]
    fn unknown_words_and_api_attributes_are_tolerated() {
        let t = parse(&["!re", ".section=1", ".id=*3", "stray", "=name=x"]).unwrap();
        assert_eq!(t.reply, Reply::Re(attrs(&[("name", "x")])));
    }

    #[test]
    fn unknown_replies_and_empty_sentences_are_errors() {
        assert_eq!(
            parse(&["!fancy"]),
            Err(ReplyError::Unknown("!fancy".into()))
        );
        assert_eq!(
            parse(&["/login"]),
            Err(ReplyError::Unknown("/login".into()))
        );
        assert_eq!(parse(&[]), Err(ReplyError::NoWords));
    }
}
