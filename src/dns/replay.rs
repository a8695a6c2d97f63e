//! Replayed answers: what the full path said for names that are not geo
//! names, kept per UDP thread and sent again for the same question.
//!
//! Outside the geo names an answer depends only on the zones, the question
//! (exact bytes: case included, since compression of owner names may follow
//! it), the RD, AD and CD flags, and the presence of EDNS with its DO bit. The
//! ID is patched and the OPT record re-rendered (payload, ECS echo with scope
//! 0), and an answer is kept only when that re-rendering reproduces the full
//! path's bytes exactly. Truncated and SERVFAIL answers are never kept. A
//! reload (a new [`Data::generation`]) empties the cache; a full cache is
//! emptied too, so a flood of random names costs memory only up to
//! [`MAX_ENTRIES`].

use std::collections::HashMap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::Data;

/// Answers kept per thread.
pub const MAX_ENTRIES: usize = 4096;

/// One kept answer.
struct Kept {
    /// The header with the ID zeroed.
    header: [u8; 12],
    /// Everything after the question, without the OPT record.
    body: Box<[u8]>,
    qtype: RecordType,
    rcode: ResponseCode,
}

/// One thread's replayable answers.
#[derive(Default)]
pub struct AnswerCache {
    generation: u64,
    kept: HashMap<Box<[u8]>, Kept>,
    /// The key being built; reused so lookups do not allocate.
    scratch: Vec<u8>,
}

/// What the key of a question is made of besides its bytes.
pub struct Shape<'a> {
    pub raw: &'a [u8],
    pub question: &'a [u8],
    pub edns: bool,
    pub dnssec_ok: bool,
}

impl Shape<'_> {
    fn key_into(&self, key: &mut Vec<u8>) {
        key.clear();
        key.push(self.raw[2] & 0x01);
        key.push(self.raw[3] & 0x30);
        key.push(u8::from(self.edns) | u8::from(self.dnssec_ok) << 1);
        key.extend_from_slice(self.question);
    }
}

impl AnswerCache {
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn sync(&mut self, data: &Data) {
        if self.generation != data.generation {
            self.kept.clear();
            self.generation = data.generation;
        }
    }

    /// Writes the kept answer for `shape` into `out` (without OPT); returns
    /// its type and rcode, or `None` if there is none.
    pub fn replay(
        &mut self,
        data: &Data,
        shape: &Shape,
        out: &mut Vec<u8>,
    ) -> Option<(RecordType, ResponseCode)> {
        self.sync(data);
        let mut key = std::mem::take(&mut self.scratch);
        shape.key_into(&mut key);
        let found = self.kept.get(key.as_slice());
        let result = found.map(|k| {
            out.clear();
            out.extend_from_slice(&shape.raw[..2]);
            out.extend_from_slice(&k.header[2..]);
            out.extend_from_slice(shape.question);
            out.extend_from_slice(&k.body);
            (k.qtype, k.rcode)
        });
        self.scratch = key;
        result
    }

    /// Keeps the full path's `answer` to `shape` if it can be replayed:
    /// `opt` is the OPT record the replay would append.
    pub fn learn(
        &mut self,
        data: &Data,
        shape: &Shape,
        qtype: RecordType,
        answer: &[u8],
        opt: &[u8],
    ) {
        self.sync(data);
        let start = 12 + shape.question.len();
        let truncated = answer.get(2).is_none_or(|b| b & 0x02 != 0);
        if truncated
            || answer.len() < start + opt.len()
            || answer.get(12..start) != Some(shape.question)
            || !answer.ends_with(opt)
        {
            return;
        }
        let rcode = ResponseCode::from(0, answer[3] & 0x0F);
        if rcode == ResponseCode::ServFail {
            return;
        }
        if self.kept.len() >= MAX_ENTRIES {
            self.kept.clear();
        }
        let mut header = [0u8; 12];
        header.copy_from_slice(&answer[..12]);
        header[..2].fill(0);
        let mut key = Vec::new();
        shape.key_into(&mut key);
        self.kept.insert(
            key.into_boxed_slice(),
            Kept {
                header,
                body: answer[start..answer.len() - opt.len()].into(),
                qtype,
                rcode,
            },
        );
    }
}
