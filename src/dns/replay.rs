//! Replayed answers: what the full path said for names that are not geo
//! names, kept per UDP thread and sent again for the same question.
//!
//! Outside the geo names an answer depends only on the zones, the question
//! (exact bytes: case included, since compression of owner names may follow
//! it), the RD, AD and CD flags, and the presence of EDNS with its DO bit. The
//! ID is patched and the OPT record re-rendered (payload, ECS echo with scope
//! 0), and an answer is kept only when that re-rendering reproduces the full
//! path's bytes exactly. Truncated and SERVFAIL answers are never kept. A
//! reload (a new [`Data::generation`]) empties the cache. A full cache
//! evicts one answer per new one by CLOCK (second chance): an answer replayed
//! since the hand last passed it is kept once more, so a flood of random
//! names — each asked once — evicts its own answers and not the hot ones,
//! and costs memory only up to [`MAX_ENTRIES`].

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

/// A kept answer in the clock, with its key and whether it was replayed
/// since the hand last passed.
struct Slot {
    key: Box<[u8]>,
    kept: Kept,
    used: bool,
}

/// One thread's replayable answers.
#[derive(Default)]
pub struct AnswerCache {
    generation: u64,
    /// Key → its slot in `slots`.
    index: HashMap<Box<[u8]>, usize>,
    slots: Vec<Slot>,
    /// The next slot the clock looks at when one must go.
    hand: usize,
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
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn sync(&mut self, data: &Data) {
        if self.generation != data.generation {
            self.index.clear();
            self.slots.clear();
            self.hand = 0;
            self.generation = data.generation;
        }
    }

    /// The answer kept under `key`, marked as replayed.
    fn hit(&mut self, key: &[u8]) -> Option<&Kept> {
        let &i = self.index.get(key)?;
        let slot = &mut self.slots[i];
        slot.used = true;
        Some(&slot.kept)
    }

    /// Keeps `kept` under `key`: in place of its old answer, in a free
    /// slot, or in the first slot the clock finds not replayed since.
    fn keep(&mut self, key: Box<[u8]>, kept: Kept) {
        if let Some(&i) = self.index.get(&key) {
            self.slots[i].kept = kept;
            return;
        }
        let slot = Slot {
            key: key.clone(),
            kept,
            used: false,
        };
        if self.slots.len() < MAX_ENTRIES {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return;
        }
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let old = &mut self.slots[i];
            if std::mem::take(&mut old.used) {
                continue;
            }
            self.index.remove(&old.key);
            *old = slot;
            self.index.insert(key, i);
            return;
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
        let result = self.hit(&key).map(|k| {
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
        let mut header = [0u8; 12];
        header.copy_from_slice(&answer[..12]);
        header[..2].fill(0);
        let mut key = Vec::new();
        shape.key_into(&mut key);
        let kept = Kept {
            header,
            body: answer[start..answer.len() - opt.len()].into(),
            qtype,
            rcode,
        };
        self.keep(key.into_boxed_slice(), kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> Kept {
        Kept {
            header: [0; 12],
            body: Box::new([]),
            qtype: RecordType::A,
            rcode: ResponseCode::NoError,
        }
    }

    fn key(n: u64) -> Box<[u8]> {
        n.to_be_bytes().into()
    }

    #[test]
    fn a_flood_of_names_asked_once_evicts_its_own_answers_not_the_hot_ones() {
        let mut cache = AnswerCache::default();
        for hot in 0..100 {
            cache.keep(key(hot), kept());
        }
        // Ten full caches' worth of random names, the hot ones asked between.
        for round in 0..40u64 {
            for hot in 0..100 {
                assert!(
                    cache.hit(&key(hot)).is_some(),
                    "hot name {hot} lost in round {round}"
                );
            }
            for n in 0..1_000 {
                cache.keep(key(1_000_000 + round * 1_000 + n), kept());
            }
            assert!(cache.len() <= MAX_ENTRIES);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert_eq!(cache.index.len(), MAX_ENTRIES, "index and slots agree");
        // A name kept again replaces its answer in place.
        cache.keep(key(7), kept());
        assert_eq!(cache.len(), MAX_ENTRIES);
    }
}
