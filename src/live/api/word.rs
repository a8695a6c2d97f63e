//! Words and sentences on the wire: a length prefix of one to five bytes, then
//! the word; a sentence is words ended by an empty word.
//!
//! MikroTik's API manual, "Protocol": "A sentence is a sequence of words
//! terminated by zero-length words. Word is part of a sentence encoded in a
//! certain way - encoded length and data." The parser is incremental (bytes
//! arrive as the socket gives them) and bounded, so a peer cannot make it
//! buffer without limit.

/// Longest word accepted or composed by default (a log message, a comment).
pub const MAX_WORD: usize = 64 * 1024;
/// Most words in one sentence by default.
pub const MAX_WORDS: usize = 1024;
/// Largest sentence by default, length prefixes included.
pub const MAX_SENTENCE: usize = 256 * 1024;

/// A sentence: its words in order, the terminating empty word left out.
pub type Sentence = Vec<String>;

/// Why bytes are not a sentence (or words cannot be composed into one). After
/// a parse error the stream is out of step and the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    #[error("length prefix starts with reserved control byte {0:#04x}")]
    ControlByte(u8),
    #[error("word of {len} bytes is longer than the limit of {max}")]
    WordTooLong { len: u64, max: usize },
    #[error("sentence has more than {max} words")]
    TooManyWords { max: usize },
    #[error("sentence is larger than {max} bytes")]
    SentenceTooLarge { max: usize },
    #[error("an empty word inside a sentence would end it early")]
    EmptyWord,
    #[error("a sentence needs at least one word")]
    NoWords,
}

/// Bounds on what [`Parser`] accepts and [`compose_sentence`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_word: usize,
    pub max_words: usize,
    pub max_sentence: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_word: MAX_WORD,
            max_words: MAX_WORDS,
            max_sentence: MAX_SENTENCE,
        }
    }
}

/// Appends the length prefix of a word of `len` bytes.
pub fn compose_length(len: u32, out: &mut Vec<u8>) {
    match len {
        0..0x80 => out.push(len as u8),
        0x80..0x4000 => out.extend_from_slice(&(len | 0x8000).to_be_bytes()[2..]),
        0x4000..0x20_0000 => out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]),
        0x20_0000..0x1000_0000 => out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes()),
        _ => {
            out.push(0xF0);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// The length at the start of `buf` and the bytes its prefix takes, or `None`
/// when `buf` ends inside the prefix.
pub fn parse_length(buf: &[u8]) -> Result<Option<(u32, usize)>, WordError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (size, high) = match first {
        0x00..=0x7F => (1, u32::from(first)),
        0x80..=0xBF => (2, u32::from(first & 0x3F)),
        0xC0..=0xDF => (3, u32::from(first & 0x1F)),
        0xE0..=0xEF => (4, u32::from(first & 0x0F)),
        0xF0 => (5, 0),
        _ => return Err(WordError::ControlByte(first)),
    };
    let Some(rest) = buf.get(1..size) else {
        return Ok(None);
    };
    let len = rest.iter().fold(high, |acc, &b| (acc << 8) | u32::from(b));
    Ok(Some((len, size)))
}

/// The bytes of `words` as one sentence, the terminating empty word included.
/// Refuses what [`Parser`] would refuse with the same limits, and empty words
/// (which would end the sentence early and start another from the rest).
pub fn compose_sentence<W: AsRef<str>>(words: &[W], limits: &Limits) -> Result<Vec<u8>, WordError> {
    if words.is_empty() {
        return Err(WordError::NoWords);
    }
    if words.len() > limits.max_words {
        return Err(WordError::TooManyWords {
            max: limits.max_words,
        });
    }
    let mut out = Vec::new();
    for word in words {
        let word = word.as_ref().as_bytes();
        if word.is_empty() {
            return Err(WordError::EmptyWord);
        }
        let len = u32::try_from(word.len())
            .ok()
            .filter(|&l| l as usize <= limits.max_word)
            .ok_or(WordError::WordTooLong {
                len: word.len() as u64,
                max: limits.max_word,
            })?;
        compose_length(len, &mut out);
        out.extend_from_slice(word);
        if out.len() >= limits.max_sentence {
            return Err(WordError::SentenceTooLarge {
                max: limits.max_sentence,
            });
        }
    }
    out.push(0);
    Ok(out)
}

/// An incremental sentence parser: [`Parser::feed`] what the socket gave,
/// then take sentences with [`Parser::next_sentence`] until it says `None`.
#[derive(Debug, Default)]
pub struct Parser {
    limits: Limits,
    buf: Vec<u8>,
    /// Where the unparsed bytes of `buf` start.
    pos: usize,
    /// The words of the sentence being read, and their encoded size.
    words: Sentence,
    size: usize,
}

impl Parser {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes of an unfinished sentence are held (an end of stream
    /// now cuts a sentence short).
    pub fn is_mid_sentence(&self) -> bool {
        self.pos < self.buf.len() || !self.words.is_empty()
    }

    /// The next complete sentence, or `None` until more bytes are fed. Words
    /// that are not UTF-8 are taken lossily: RouterOS sends names and log
    /// messages in the router's code page, and a viewer must not fail on them.
    pub fn next_sentence(&mut self) -> Result<Option<Sentence>, WordError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some((len, prefix)) = parse_length(rest)? else {
                return Ok(None);
            };
            if len == 0 {
                self.pos += prefix;
                self.size = 0;
                return Ok(Some(std::mem::take(&mut self.words)));
            }
            let len = len as usize;
            if len > self.limits.max_word {
                return Err(WordError::WordTooLong {
                    len: len as u64,
                    max: self.limits.max_word,
                });
            }
            if self.words.len() >= self.limits.max_words {
                return Err(WordError::TooManyWords {
                    max: self.limits.max_words,
                });
            }
            if self.size + prefix + len >= self.limits.max_sentence {
                return Err(WordError::SentenceTooLarge {
                    max: self.limits.max_sentence,
                });
            }
            let Some(word) = rest.get(prefix..prefix + len) else {
                return Ok(None);
            };
            self.words.push(String::from_utf8_lossy(word).into_owned());
            self.pos += prefix + len;
            self.size += prefix + len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length_bytes(len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        compose_length(len, &mut out);
        out
    }

    #[test]
    fn lengths_at_every_boundary_round_trip_with_the_documented_prefixes() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (0x7F, &[0x7F]),
            (0x80, &[0x80, 0x80]),
            (0x3FFF, &[0xBF, 0xFF]),
            (0x4000, &[0xC0, 0x40, 0x00]),
            (0x1F_FFFF, &[0xDF, 0xFF, 0xFF]),
            (0x20_0000, &[0xE0, 0x20, 0x00, 0x00]),
            (0x0FFF_FFFF, &[0xEF, 0xFF, 0xFF, 0xFF]),
            (0x1000_0000, &[0xF0, 0x10, 0x00, 0x00, 0x00]),
            (u32::MAX, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
        ];
        for &(len, bytes) in cases {
            assert_eq!(length_bytes(len), bytes, "{len:#x}");
            assert_eq!(
                parse_length(bytes),
                Ok(Some((len, bytes.len()))),
                "{len:#x}"
            );
            for cut in 0..bytes.len() {
                assert_eq!(parse_length(&bytes[..cut]), Ok(None), "{len:#x} cut {cut}");
            }
        }
    }

    #[test]
    fn reserved_control_bytes_are_refused() {
        for b in 0xF1..=0xFF {
            assert_eq!(
                parse_length(&[b, 0, 0, 0, 0]),
                Err(WordError::ControlByte(b))
            );
        }
    }

    #[test]
    fn words_of_boundary_sizes_survive_a_sentence() {
        let limits = Limits {
            max_word: 0x20_0000,
            max_words: 8,
            max_sentence: 0x40_0000,
        };
        for len in [1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1F_FFFF, 0x20_0000] {
            let words = vec!["/x".to_owned(), "y".repeat(len)];
            let bytes = compose_sentence(&words, &limits).unwrap();
            let mut parser = Parser::new(limits);
            parser.feed(&bytes);
            assert_eq!(parser.next_sentence(), Ok(Some(words)), "{len:#x}");
            assert!(!parser.is_mid_sentence());
        }
    }

    #[test]
    fn truncated_input_waits_and_completes_byte_by_byte() {
        let words = ["!re", "=name=ether1", "=comment=a=b", ".tag=7"];
        let mut bytes = compose_sentence(&words, &Limits::default()).unwrap();
        bytes.extend(compose_sentence(&["!done"], &Limits::default()).unwrap());
        let mut parser = Parser::default();
        let mut got = Vec::new();
        for b in &bytes {
            parser.feed(std::slice::from_ref(b));
            while let Some(s) = parser.next_sentence().unwrap() {
                got.push(s);
            }
        }
        assert_eq!(
            got,
            [words.map(String::from).to_vec(), vec!["!done".to_owned()]]
        );
        assert!(!parser.is_mid_sentence());
        parser.feed(&bytes[..5]);
        assert_eq!(parser.next_sentence(), Ok(None));
        assert!(parser.is_mid_sentence());
    }

    #[test]
    fn oversized_words_are_refused_from_the_prefix_alone() {
        let mut parser = Parser::default();
        let mut bytes = Vec::new();
        compose_length((MAX_WORD + 1) as u32, &mut bytes);
        parser.feed(&bytes);
        assert_eq!(
            parser.next_sentence(),
            Err(WordError::WordTooLong {
                len: MAX_WORD as u64 + 1,
                max: MAX_WORD
            })
        );
        let mut huge = Parser::default();
        huge.feed(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            huge.next_sentence(),
            Err(WordError::WordTooLong { .. })
        ));
    }

    #[test]
    fn too_many_words_and_too_large_sentences_are_refused() {
        let limits = Limits {
            max_word: 100,
            max_words: 3,
            max_sentence: 200,
        };
        let mut parser = Parser::new(limits);
        parser.feed(&[1, b'a', 1, b'b', 1, b'c', 1, b'd', 0]);
        assert_eq!(
            parser.next_sentence(),
            Err(WordError::TooManyWords { max: 3 })
        );
        let mut parser = Parser::new(limits);
        let word = [b'x'; 99];
        for _ in 0..2 {
            parser.feed(&[99]);
            parser.feed(&word);
        }
        assert_eq!(
            parser.next_sentence(),
            Err(WordError::SentenceTooLarge { max: 200 })
        );
        assert_eq!(
            compose_sentence(&["a", "b", "c", "d"], &limits),
            Err(WordError::TooManyWords { max: 3 })
        );
        let long = "x".repeat(101);
        assert!(matches!(
            compose_sentence(&[long.as_str()], &limits),
            Err(WordError::WordTooLong { len: 101, .. })
        ));
    }

    #[test]
    fn compose_refuses_an_empty_word_that_would_split_the_sentence() {
        let limits = Limits::default();
        assert_eq!(
            compose_sentence(&["/interface/print", "", "/user/add"], &limits),
            Err(WordError::EmptyWord)
        );
        assert_eq!(
            compose_sentence::<&str>(&[], &limits),
            Err(WordError::NoWords)
        );
    }

    #[test]
    fn words_that_are_not_utf8_are_taken_lossily() {
        let mut parser = Parser::default();
        parser.feed(&[
            3, b'!', b'r', b'e', 8, b'=', b'n', b'=', b'c', b'a', b'f', 0xE9, b'x', 0,
        ]);
        assert_eq!(
            parser.next_sentence(),
            Ok(Some(vec!["!re".to_owned(), "=n=caf\u{FFFD}x".to_owned()]))
        );
    }

    /// xorshift64*: deterministic, so a failing input reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[test]
    fn random_input_never_panics_and_buffers_stay_bounded() {
        let limits = Limits {
            max_word: 300,
            max_words: 16,
            max_sentence: 1000,
        };
        let mut rng = Rng(0x6d67_6e74);
        for _ in 0..3000 {
            let mut parser = Parser::new(limits);
            let chunks = rng.next() % 8 + 1;
            'input: for _ in 0..chunks {
                let len = (rng.next() % 64) as usize;
                // Small bytes are likely, so short valid words and ends of
                // sentences appear as well as garbage.
                let bytes: Vec<u8> = (0..len)
                    .map(|_| match rng.next() % 4 {
                        0 => (rng.next() % 256) as u8,
                        _ => (rng.next() % 6) as u8,
                    })
                    .collect();
                parser.feed(&bytes);
                loop {
                    match parser.next_sentence() {
                        Ok(Some(s)) => assert!(s.len() <= limits.max_words),
                        Ok(None) => break,
                        Err(_) => break 'input,
                    }
                }
                assert!(parser.size <= limits.max_sentence);
            }
        }
    }
}
