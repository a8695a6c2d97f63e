//! [`Command::parse`]: a sentence back to the command that renders it, or
//! the first reason it is not one.

use super::{
    Command, INTERFACE_PROPS, Interfaces, LOG_PROPS, NotAllowed, PATHS, RESOURCE_PROPS,
    TRAFFIC_PROPS,
};

impl Command {
    /// The command and tag of a sentence [`Command::render`] produced; any
    /// other sentence is refused, with the first reason found.
    pub fn parse<W: AsRef<str>>(words: &[W]) -> Result<(Command, u32), NotAllowed> {
        let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        let (&path, rest) = words.split_first().ok_or(NotAllowed::Empty)?;
        if !PATHS.contains(&path) {
            return Err(NotAllowed::Command(path.to_owned()));
        }
        let mut attrs = Attrs::collect(path, rest)?;
        let command = match path {
            "/login" => Command::Login {
                name: attrs.take("name")?,
                password: attrs.take("password")?,
            },
            "/cancel" => Command::Cancel {
                tag: attrs.number("tag")?,
            },
            "/interface/print" => {
                attrs.expect(".proplist", INTERFACE_PROPS)?;
                Command::InterfacePrint
            }
            "/interface/monitor-traffic" => {
                let names = attrs.take("interface")?;
                attrs.expect(".proplist", TRAFFIC_PROPS)?;
                let once = attrs.flag("once")?;
                Command::MonitorTraffic {
                    interfaces: Interfaces::new(names.split(','))?,
                    once,
                }
            }
            "/log/print" => {
                attrs.expect("follow-only", "")?;
                attrs.expect(".proplist", LOG_PROPS)?;
                Command::LogFollow
            }
            "/log/listen" => {
                attrs.expect(".proplist", LOG_PROPS)?;
                Command::LogListen
            }
            "/system/resource/print" => {
                attrs.expect(".proplist", RESOURCE_PROPS)?;
                Command::ResourcePrint
            }
            "/system/reboot" => Command::Reboot,
            _ => return Err(NotAllowed::Command(path.to_owned())),
        };
        attrs.no_leftovers()?;
        let tag = attrs.tag()?;
        // The checks above are per attribute; this one makes "exactly what
        // render produces" literal (order and spelling included).
        let rendered = command.render(tag);
        if rendered != words {
            return Err(NotAllowed::Order {
                command: path.to_owned(),
                words: words.iter().map(|w| (*w).to_owned()).collect(),
            });
        }
        Ok((command, tag))
    }
}

/// A sentence's attributes by name, each taken at most once, so that
/// leftovers can be refused.
struct Attrs<'a> {
    command: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
    taken: Vec<&'a str>,
    tag: Option<&'a str>,
}

impl<'a> Attrs<'a> {
    fn collect(command: &'a str, words: &[&'a str]) -> Result<Self, NotAllowed> {
        let word_error = |word: &str| NotAllowed::Word {
            command: command.to_owned(),
            word: word.to_owned(),
        };
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let mut tag = None;
        for &word in words {
            if word.starts_with('?') {
                return Err(NotAllowed::Query {
                    command: command.to_owned(),
                    word: word.to_owned(),
                });
            } else if let Some(value) = word.strip_prefix(".tag=") {
                if tag.replace(value).is_some() {
                    return Err(NotAllowed::Repeated {
                        command: command.to_owned(),
                        name: ".tag".to_owned(),
                    });
                }
            } else if let Some((name, value)) =
                word.strip_prefix('=').and_then(|w| w.split_once('='))
            {
                if name.is_empty() {
                    return Err(word_error(word));
                }
                if pairs.iter().any(|(n, _)| *n == name) {
                    return Err(NotAllowed::Repeated {
                        command: command.to_owned(),
                        name: name.to_owned(),
                    });
                }
                pairs.push((name, value));
            } else {
                return Err(word_error(word));
            }
        }
        Ok(Self {
            command,
            pairs,
            taken: Vec::new(),
            tag,
        })
    }

    fn get(&mut self, name: &'a str) -> Option<&'a str> {
        let value = self
            .pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)?;
        self.taken.push(name);
        Some(value)
    }

    fn take(&mut self, name: &'a str) -> Result<String, NotAllowed> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| NotAllowed::Missing {
                command: self.command.to_owned(),
                name: name.to_owned(),
            })
    }

    fn expect(&mut self, name: &'a str, expected: &str) -> Result<(), NotAllowed> {
        let got = self.take(name)?;
        if got != expected {
            return Err(NotAllowed::Value {
                command: self.command.to_owned(),
                name: name.to_owned(),
                expected: expected.to_owned(),
                got,
            });
        }
        Ok(())
    }

    /// An attribute that is either absent or present with an empty value.
    fn flag(&mut self, name: &'a str) -> Result<bool, NotAllowed> {
        match self.get(name) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(got) => Err(NotAllowed::Value {
                command: self.command.to_owned(),
                name: name.to_owned(),
                expected: String::new(),
                got: got.to_owned(),
            }),
        }
    }

    fn number(&mut self, name: &'a str) -> Result<u32, NotAllowed> {
        let value = self.take(name)?;
        canonical_number(&value).ok_or(NotAllowed::BadTag {
            command: self.command.to_owned(),
            tag: value,
        })
    }

    fn no_leftovers(&self) -> Result<(), NotAllowed> {
        match self.pairs.iter().find(|(n, _)| !self.taken.contains(n)) {
            Some((name, value)) => Err(NotAllowed::Word {
                command: self.command.to_owned(),
                word: format!("={name}={value}"),
            }),
            None => Ok(()),
        }
    }

    fn tag(&self) -> Result<u32, NotAllowed> {
        let tag = self.tag.ok_or_else(|| NotAllowed::NoTag {
            command: self.command.to_owned(),
        })?;
        canonical_number(tag).ok_or_else(|| NotAllowed::BadTag {
            command: self.command.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

/// A decimal number as `render` writes it (no sign, no leading zeros).
fn canonical_number(s: &str) -> Option<u32> {
    let n: u32 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}
