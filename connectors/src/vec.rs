//! A source over an in-memory collection.

use std::sync::Arc;

use eddy_runtime::source::DEFAULT_MAX_RECORDS_PER_BATCH;
use eddy_runtime::{OperatorError, Record, Source, SourceContext, SourcePoll};

use crate::decode_offset;

/// Emits the items of a collection in order. With parallelism `p`, instance
/// `i` emits items `i, i + p, i + 2p, ...`. Its offset is the number of items
/// this instance emitted, so it replays exactly.
pub struct VecSource<T> {
    items: Arc<Vec<T>>,
    instance: usize,
    parallelism: usize,
    emitted: u64,
    max_records_per_batch: u64,
}

impl<T> Clone for VecSource<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
            instance: self.instance,
            parallelism: self.parallelism,
            emitted: self.emitted,
            max_records_per_batch: self.max_records_per_batch,
        }
    }
}

impl<T> VecSource<T> {
    /// A source over `items`.
    pub fn new(items: impl IntoIterator<Item = T>) -> Self {
        Self {
            items: Arc::new(items.into_iter().collect()),
            instance: 0,
            parallelism: 1,
            emitted: 0,
            max_records_per_batch: DEFAULT_MAX_RECORDS_PER_BATCH,
        }
    }

    /// Micro-batch mode: the most items one batch takes from this instance
    /// (default [`DEFAULT_MAX_RECORDS_PER_BATCH`]; see
    /// [`Source::max_records_per_batch`]).
    pub fn with_max_records_per_batch(mut self, max: u64) -> Self {
        self.max_records_per_batch = max.max(1);
        self
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for VecSource<T> {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        self.instance = ctx.instance;
        self.parallelism = ctx.parallelism;
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Vec<Record<T>>,
        max: usize,
    ) -> Result<SourcePoll, OperatorError> {
        let mut idx = self.instance + self.emitted as usize * self.parallelism;
        if idx >= self.items.len() {
            return Ok(SourcePoll::Finished);
        }
        let mut n = 0;
        while n < max && idx < self.items.len() {
            out.push(Record::new(self.items[idx].clone()));
            idx += self.parallelism;
            n += 1;
        }
        self.emitted += n as u64;
        Ok(SourcePoll::Ready)
    }

    fn offset(&self) -> Vec<u8> {
        self.emitted.to_le_bytes().to_vec()
    }

    fn seek(&mut self, offset: &[u8]) -> Result<(), OperatorError> {
        self.emitted = decode_offset(offset)?;
        Ok(())
    }

    fn replayable(&self) -> bool {
        true
    }

    fn max_records_per_batch(&self) -> u64 {
        self.max_records_per_batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(src: &mut VecSource<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while src.poll_next(&mut out, 2).unwrap() == SourcePoll::Ready {}
        out.into_iter().map(|r| r.value).collect()
    }

    #[test]
    fn instances_split_and_replay_from_offset() {
        let mut s = VecSource::new(0..7u32);
        s.open(&SourceContext {
            name: "v".into(),
            instance: 1,
            parallelism: 3,
        })
        .unwrap();
        let mut first = Vec::new();
        s.poll_next(&mut first, 1).unwrap();
        let offset = s.offset();
        assert_eq!(drain(&mut s), vec![4]);
        s.seek(&offset).unwrap();
        assert_eq!(drain(&mut s), vec![4]);
        assert_eq!(first[0].value, 1);
        assert!(s.seek(&[1, 2]).is_err());
    }
}
