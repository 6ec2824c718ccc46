//! Bounded edges: the output side ([`Router`]) and the input side ([`Inputs`]).
//!
//! # Protocol
//! - One bounded `async_channel` per (upstream instance, downstream instance)
//!   pair, so every edge is FIFO on its own. A full edge suspends the sender:
//!   that is all of backpressure, and memory is bounded by
//!   `edges x capacity x batch size` records whatever the input rate.
//! - Outputs go into a per-edge buffer that is sent when it holds `batch_size`
//!   records, or when the task is about to wait for input
//!   ([`Router::flush`]). Under light load each record travels alone; under
//!   heavy load records travel in full batches. Nothing waits on a timer.
//! - Control messages (watermarks, markers, end) flush the buffers first, so
//!   they never overtake a record on the same edge.
//! - On the input side a task reads its edges fairly. When `Marker(e)` arrives
//!   on one input, that input is not read again until `Marker(e)` arrived on
//!   every live input (alignment); then the task sees one aligned marker. An
//!   input that ended no longer holds alignment or the watermark back.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use async_channel::{Receiver, Sender, TryRecvError};
use futures::Stream;

use crate::keys::{instance_for_key_group, key_group};
use crate::message::{EpochMarker, Message, Watermark};
use crate::record::{Record, Timestamp, NO_TIMESTAMP};

/// A key extractor hashed for routing: returns the stable key hash of a value.
pub type HashFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// How records of one logical edge are spread over the downstream instances.
pub enum Partitioning<T> {
    /// Instance `i` sends to instance `i` (same parallelism on both sides).
    Forward,
    /// By key group of the key hash.
    Hash(HashFn<T>),
    /// Round-robin, record by record.
    Rebalance,
    /// Every record to every instance.
    Broadcast,
}

impl<T> Clone for Partitioning<T> {
    fn clone(&self) -> Self {
        match self {
            Partitioning::Forward => Partitioning::Forward,
            Partitioning::Hash(f) => Partitioning::Hash(f.clone()),
            Partitioning::Rebalance => Partitioning::Rebalance,
            Partitioning::Broadcast => Partitioning::Broadcast,
        }
    }
}

/// The sending end of one edge.
pub struct OutEdge<T> {
    tx: Sender<Message<T>>,
    buf: Vec<Record<T>>,
    queued: Arc<AtomicI64>,
}

/// The receiving end of one edge.
pub struct InEdge<T> {
    rx: Rx<T>,
    queued: Arc<AtomicI64>,
}

/// How an edge is read: straight from its channel, or through a conversion
/// of every message (the inputs of a two-input operator, which reads both
/// of its inputs as one [`Inputs`] of `Either<L, R>`, so alignment and the
/// watermark minimum span both).
enum Rx<T> {
    // Pinned: the receiver's stream state is `!Unpin`, and `Inputs::next`
    // polls several receivers from one future.
    Direct(Pin<Box<Receiver<Message<T>>>>),
    Mapped(Box<dyn MappedRx<T>>),
}

/// A receiver whose messages are converted on the way in.
trait MappedRx<T>: Send {
    fn try_recv(&mut self) -> Result<Message<T>, TryRecvError>;
    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Message<T>>>;
}

struct MapRx<U, T> {
    inner: Rx<U>,
    f: fn(U) -> T,
}

impl<U: Send + 'static, T: 'static> MappedRx<T> for MapRx<U, T> {
    fn try_recv(&mut self) -> Result<Message<T>, TryRecvError> {
        self.inner.try_recv().map(|m| m.map(self.f))
    }

    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Message<T>>> {
        let f = self.f;
        self.inner.poll_recv(cx).map(|m| m.map(|m| m.map(f)))
    }
}

impl<T> Rx<T> {
    #[inline]
    fn try_recv(&mut self) -> Result<Message<T>, TryRecvError> {
        match self {
            Rx::Direct(rx) => rx.try_recv(),
            Rx::Mapped(rx) => rx.try_recv(),
        }
    }

    #[inline]
    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Message<T>>> {
        match self {
            Rx::Direct(rx) => rx.as_mut().poll_next(cx),
            Rx::Mapped(rx) => rx.poll_recv(cx),
        }
    }
}

impl<T> InEdge<T> {
    /// The records queued on this edge counter (for metrics).
    pub fn queued(&self) -> Arc<AtomicI64> {
        self.queued.clone()
    }
}

impl<U: Send + 'static> InEdge<U> {
    /// This edge read as an edge of `T`: every record's value goes through
    /// `f` as it is received (metadata and control messages unchanged).
    pub fn map<T: 'static>(self, f: fn(U) -> T) -> InEdge<T> {
        InEdge {
            rx: Rx::Mapped(Box::new(MapRx { inner: self.rx, f })),
            queued: self.queued,
        }
    }
}

/// A new edge holding at most `capacity` messages.
pub fn edge<T>(capacity: usize, batch_size: usize) -> (OutEdge<T>, InEdge<T>) {
    let (tx, rx) = async_channel::bounded(capacity.max(1));
    let queued = Arc::new(AtomicI64::new(0));
    (
        OutEdge {
            tx,
            buf: Vec::with_capacity(batch_size),
            queued: queued.clone(),
        },
        InEdge {
            rx: Rx::Direct(Box::pin(rx)),
            queued,
        },
    )
}

/// The downstream has gone away (it failed or was cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

/// The outgoing edges of one instance towards one downstream operator.
pub struct OutputGroup<T> {
    edges: Vec<OutEdge<T>>,
    partitioning: Partitioning<T>,
    max_key_groups: u32,
    next: usize,
}

impl<T> OutputGroup<T> {
    /// A group over `edges` (one per downstream instance; one for `Forward`).
    pub fn new(edges: Vec<OutEdge<T>>, partitioning: Partitioning<T>, max_key_groups: u32) -> Self {
        Self {
            edges,
            partitioning,
            max_key_groups,
            next: 0,
        }
    }
}

/// Routes one instance's output to all its outgoing edges.
pub struct Router<T> {
    groups: Vec<OutputGroup<T>>,
    batch_size: usize,
}

async fn send_buf<T>(e: &mut OutEdge<T>, batch_size: usize) -> Result<(), Disconnected> {
    if e.buf.is_empty() {
        return Ok(());
    }
    let batch = std::mem::replace(&mut e.buf, Vec::with_capacity(batch_size));
    e.queued.fetch_add(batch.len() as i64, Ordering::Relaxed);
    e.tx.send(Message::Records(batch))
        .await
        .map_err(|_| Disconnected)
}

impl<T: Clone> Router<T> {
    /// A router over `groups`.
    pub fn new(groups: Vec<OutputGroup<T>>, batch_size: usize) -> Self {
        Self {
            groups,
            batch_size: batch_size.max(1),
        }
    }

    /// Whether this router has no outgoing edge (a sink's).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Routes every record of `records` (draining it). Sends each edge's
    /// buffer as soon as it is full; may wait on a full edge (backpressure).
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled call may lose the records it was routing.
    pub async fn push(&mut self, records: &mut Vec<Record<T>>) -> Result<(), Disconnected> {
        let batch_size = self.batch_size;
        let n_groups = self.groups.len();
        for (gi, g) in self.groups.iter_mut().enumerate() {
            let last = gi + 1 == n_groups;
            // Only the last group may take the records; the others clone.
            let mut owned = if last {
                std::mem::take(records)
            } else {
                records.clone()
            };
            match &g.partitioning {
                Partitioning::Forward => {
                    let e = &mut g.edges[0];
                    for r in owned.drain(..) {
                        e.buf.push(r);
                        if e.buf.len() >= batch_size {
                            send_buf(e, batch_size).await?;
                        }
                    }
                }
                Partitioning::Hash(f) => {
                    let n = g.edges.len();
                    for r in owned.drain(..) {
                        let kg = key_group(f(&r.value), g.max_key_groups);
                        let e = &mut g.edges[instance_for_key_group(kg, g.max_key_groups, n)];
                        e.buf.push(r);
                        if e.buf.len() >= batch_size {
                            send_buf(e, batch_size).await?;
                        }
                    }
                }
                Partitioning::Rebalance => {
                    let n = g.edges.len();
                    for r in owned.drain(..) {
                        let e = &mut g.edges[g.next];
                        g.next = (g.next + 1) % n;
                        e.buf.push(r);
                        if e.buf.len() >= batch_size {
                            send_buf(e, batch_size).await?;
                        }
                    }
                }
                Partitioning::Broadcast => {
                    for r in owned.drain(..) {
                        for e in g.edges.iter_mut() {
                            e.buf.push(r.clone());
                            if e.buf.len() >= batch_size {
                                send_buf(e, batch_size).await?;
                            }
                        }
                    }
                }
            }
            if last {
                // Empty, with its capacity: the caller's next batch of
                // outputs does not grow a new vector from nothing.
                *records = owned;
            }
        }
        records.clear();
        Ok(())
    }

    /// Sends every non-empty buffer. Called when the task is about to wait.
    pub async fn flush(&mut self) -> Result<(), Disconnected> {
        let batch_size = self.batch_size;
        for g in self.groups.iter_mut() {
            for e in g.edges.iter_mut() {
                send_buf(e, batch_size).await?;
            }
        }
        Ok(())
    }

    /// Flushes, then sends `msg` (a watermark, marker or end) on every edge.
    pub async fn broadcast(&mut self, msg: Message<T>) -> Result<(), Disconnected> {
        self.flush().await?;
        for g in self.groups.iter_mut() {
            for e in g.edges.iter_mut() {
                e.tx.send(msg.clone()).await.map_err(|_| Disconnected)?;
            }
        }
        Ok(())
    }
}

/// What a task reads next from its inputs.
#[derive(Debug)]
pub enum InputEvent<T> {
    /// A batch of records from one input.
    Records(Vec<Record<T>>),
    /// The minimum watermark over live, active inputs advanced to this value.
    Watermark(Watermark),
    /// Every live input is idle: downstream should not wait for this
    /// task's watermark until it emits again.
    Idle,
    /// Every live input delivered this marker (aligned).
    Marker(EpochMarker),
    /// Every input ended.
    End,
    /// An upstream instance went away without ending its stream (it failed or
    /// was cancelled). The query monitor reports the root cause.
    Disconnected,
}

/// The incoming edges of one instance, with marker alignment and watermark
/// tracking.
pub struct Inputs<T> {
    edges: Vec<InEdge<T>>,
    ended: Vec<bool>,
    blocked: Vec<bool>,
    watermarks: Vec<Timestamp>,
    /// Inputs that declared themselves idle ([`Message::Idle`]) and sent
    /// nothing since.
    idle: Vec<bool>,
    /// Whether `Idle` was reported for the current all-idle spell.
    reported_idle: bool,
    current_watermark: Timestamp,
    pending_marker: Option<EpochMarker>,
    /// When the first input delivered the pending marker.
    pending_since: Option<std::time::Instant>,
    last_alignment: std::time::Duration,
    /// A watermark advance due right after the event just returned.
    queued_watermark: Option<Watermark>,
    next: usize,
}

impl<T> Inputs<T> {
    /// Inputs over `edges`.
    pub fn new(edges: Vec<InEdge<T>>) -> Self {
        let n = edges.len();
        Self {
            edges,
            ended: vec![false; n],
            blocked: vec![false; n],
            watermarks: vec![NO_TIMESTAMP; n],
            idle: vec![false; n],
            reported_idle: false,
            current_watermark: NO_TIMESTAMP,
            pending_marker: None,
            pending_since: None,
            last_alignment: std::time::Duration::ZERO,
            queued_watermark: None,
            next: 0,
        }
    }

    /// Starts from a restored watermark (recovery): it never goes below
    /// what the checkpointed task had already seen, so records late then
    /// are late again in the replay.
    pub fn restore_watermark(&mut self, watermark: Timestamp) {
        self.current_watermark = watermark;
        self.watermarks.iter_mut().for_each(|w| *w = watermark);
    }

    /// The current input watermark ([`NO_TIMESTAMP`] before the first).
    pub fn current_watermark(&self) -> Timestamp {
        self.current_watermark
    }

    /// Number of input edges.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether there are no input edges.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    fn readable(&self, i: usize) -> bool {
        !self.ended[i] && !self.blocked[i]
    }

    /// Handles one message from input `i`; returns an event when one is due.
    fn on_message(&mut self, i: usize, msg: Message<T>) -> Option<InputEvent<T>> {
        match msg {
            Message::Records(batch) => {
                self.edges[i]
                    .queued
                    .fetch_sub(batch.len() as i64, Ordering::Relaxed);
                self.set_active(i);
                Some(InputEvent::Records(batch))
            }
            Message::Watermark(w) => {
                self.set_active(i);
                if w.time > self.watermarks[i] {
                    self.watermarks[i] = w.time;
                }
                self.advance_watermark(w.created_ns)
            }
            Message::Idle => {
                self.idle[i] = true;
                // Without this input the others may already be ahead.
                if let Some(ev) = self.advance_watermark(0) {
                    return Some(ev);
                }
                let all_idle = (0..self.edges.len()).all(|j| self.ended[j] || self.idle[j]);
                if all_idle && !self.reported_idle {
                    self.reported_idle = true;
                    return Some(InputEvent::Idle);
                }
                None
            }
            Message::Marker(m) => {
                self.blocked[i] = true;
                if self.pending_marker.is_none() {
                    self.pending_since = Some(std::time::Instant::now());
                }
                self.pending_marker = Some(m);
                self.try_align()
            }
            Message::End => {
                self.ended[i] = true;
                self.blocked[i] = false;
                if self.ended.iter().all(|&e| e) {
                    if let Some(m) = self.pending_marker.take() {
                        // Cannot happen with FIFO edges (a marker precedes End on
                        // the edge that sent it), kept for robustness.
                        return Some(InputEvent::Marker(m));
                    }
                    return Some(InputEvent::End);
                }
                // An ended input may both complete an alignment and release
                // the watermark: the marker goes first, the watermark next.
                let aligned = self.try_align();
                let watermark = self.advance_watermark(0);
                match (aligned, watermark) {
                    (Some(m), Some(InputEvent::Watermark(w))) => {
                        self.queued_watermark = Some(w);
                        Some(m)
                    }
                    (Some(m), _) => Some(m),
                    (None, w) => w,
                }
            }
        }
    }

    fn try_align(&mut self) -> Option<InputEvent<T>> {
        let m = self.pending_marker?;
        let all = (0..self.edges.len()).all(|i| self.ended[i] || self.blocked[i]);
        if !all {
            return None;
        }
        self.pending_marker = None;
        self.last_alignment = self
            .pending_since
            .take()
            .map_or(std::time::Duration::ZERO, |t| t.elapsed());
        self.blocked.iter_mut().for_each(|b| *b = false);
        Some(InputEvent::Marker(m))
    }

    fn set_active(&mut self, i: usize) {
        if self.idle[i] {
            self.idle[i] = false;
            self.reported_idle = false;
        }
    }

    /// The minimum over live, active inputs, if it passed the current
    /// watermark (which never goes back: an input that was idle and
    /// returns behind it sends late records, it does not rewind).
    fn advance_watermark(&mut self, created_ns: u64) -> Option<InputEvent<T>> {
        let min = (0..self.edges.len())
            .filter(|&i| !self.ended[i] && !self.idle[i])
            .map(|i| self.watermarks[i])
            .min()?;
        if min > self.current_watermark {
            self.current_watermark = min;
            Some(InputEvent::Watermark(Watermark {
                time: min,
                created_ns,
            }))
        } else {
            None
        }
    }

    /// How long the last aligned marker held inputs back (from its first
    /// arrival to its last).
    pub fn last_alignment(&self) -> std::time::Duration {
        self.last_alignment
    }

    /// Reads without waiting; `None` when no readable input has a message.
    pub fn try_next(&mut self) -> Option<InputEvent<T>> {
        if let Some(w) = self.queued_watermark.take() {
            return Some(InputEvent::Watermark(w));
        }
        let n = self.edges.len();
        let mut tried = 0;
        while tried < n {
            let i = self.next;
            self.next = (self.next + 1) % n;
            tried += 1;
            if !self.readable(i) {
                continue;
            }
            match self.edges[i].rx.try_recv() {
                Ok(msg) => {
                    if let Some(ev) = self.on_message(i, msg) {
                        return Some(ev);
                    }
                    tried = 0; // state changed; scan again
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Closed) => return Some(InputEvent::Disconnected),
            }
        }
        None
    }

    /// Waits for the next event.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken from a channel only when it is returned
    /// or recorded in the alignment/watermark state.
    pub async fn next(&mut self) -> InputEvent<T> {
        loop {
            if let Some(ev) = self.try_next() {
                return ev;
            }
            let (i, msg) = futures::future::poll_fn(|cx| {
                let n = self.edges.len();
                for k in 0..n {
                    let i = (self.next + k) % n;
                    if !self.readable(i) {
                        continue;
                    }
                    if let Poll::Ready(m) = self.edges[i].rx.poll_recv(cx) {
                        return Poll::Ready((i, m));
                    }
                }
                Poll::Pending
            })
            .await;
            let Some(msg) = msg else {
                return InputEvent::Disconnected;
            };
            if let Some(ev) = self.on_message(i, msg) {
                return ev;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MarkerKind;

    fn marker(e: u64) -> Message<u32> {
        Message::Marker(EpochMarker {
            epoch: e,
            kind: MarkerKind::Checkpoint,
        })
    }

    fn recs(v: &[u32]) -> Message<u32> {
        Message::Records(v.iter().map(|&x| Record::new(x)).collect())
    }

    fn values(ev: InputEvent<u32>) -> Vec<u32> {
        match ev {
            InputEvent::Records(b) => b.into_iter().map(|r| r.value).collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn alignment_blocks_an_input_until_all_delivered_the_marker() {
        let (a_tx, a_rx) = edge::<u32>(16, 4);
        let (b_tx, b_rx) = edge::<u32>(16, 4);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        a_tx.tx.send(recs(&[1])).await.unwrap();
        a_tx.tx.send(marker(1)).await.unwrap();
        a_tx.tx.send(recs(&[2])).await.unwrap(); // epoch 2 on input a
        b_tx.tx.send(recs(&[10])).await.unwrap();
        // Read everything readable: a's post-marker record must not appear.
        let mut seen = Vec::new();
        while let Some(ev) = inputs.try_next() {
            seen.extend(values(ev));
        }
        seen.sort();
        assert_eq!(seen, vec![1, 10]);
        b_tx.tx.send(recs(&[11])).await.unwrap();
        b_tx.tx.send(marker(1)).await.unwrap();
        assert_eq!(values(inputs.next().await), vec![11]);
        match inputs.next().await {
            InputEvent::Marker(m) => assert_eq!(m.epoch, 1),
            other => panic!("expected marker, got {other:?}"),
        }
        assert_eq!(values(inputs.next().await), vec![2]);
    }

    #[tokio::test]
    async fn ended_input_releases_alignment_and_watermark() {
        let (a_tx, a_rx) = edge::<u32>(16, 4);
        let (b_tx, b_rx) = edge::<u32>(16, 4);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        a_tx.tx.send(wm(100)).await.unwrap();
        b_tx.tx.send(wm(50)).await.unwrap();
        let wms = watermarks(&mut inputs);
        assert_eq!(wms, vec![50]);
        a_tx.tx.send(marker(3)).await.unwrap();
        assert!(inputs.try_next().is_none());
        b_tx.tx.send(Message::End).await.unwrap();
        match inputs.next().await {
            InputEvent::Marker(m) => assert_eq!(m.epoch, 3),
            other => panic!("expected marker, got {other:?}"),
        }
        match inputs.next().await {
            InputEvent::Watermark(w) => assert_eq!(w.time, 100),
            other => panic!("expected watermark, got {other:?}"),
        }
        a_tx.tx.send(Message::End).await.unwrap();
        assert!(matches!(inputs.next().await, InputEvent::End));
    }

    fn wm(t: Timestamp) -> Message<u32> {
        Message::Watermark(Watermark {
            time: t,
            created_ns: 0,
        })
    }

    fn watermarks(inputs: &mut Inputs<u32>) -> Vec<Timestamp> {
        let mut wms = Vec::new();
        while let Some(ev) = inputs.try_next() {
            if let InputEvent::Watermark(w) = ev {
                wms.push(w.time)
            }
        }
        wms
    }

    #[tokio::test]
    async fn an_idle_input_stops_holding_the_watermark_and_rejoins_without_rewinding() {
        let (a_tx, a_rx) = edge::<u32>(16, 4);
        let (b_tx, b_rx) = edge::<u32>(16, 4);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        a_tx.tx.send(wm(100)).await.unwrap();
        assert!(watermarks(&mut inputs).is_empty(), "b holds it back");
        b_tx.tx.send(Message::Idle).await.unwrap();
        assert_eq!(watermarks(&mut inputs), vec![100]);
        a_tx.tx.send(wm(200)).await.unwrap();
        assert_eq!(watermarks(&mut inputs), vec![200]);
        // b returns behind: it holds the watermark again, which stays put.
        b_tx.tx.send(recs(&[7])).await.unwrap();
        b_tx.tx.send(wm(150)).await.unwrap();
        a_tx.tx.send(wm(300)).await.unwrap();
        assert!(watermarks(&mut inputs).is_empty());
        assert_eq!(inputs.current_watermark(), 200);
        b_tx.tx.send(wm(250)).await.unwrap();
        assert_eq!(watermarks(&mut inputs), vec![250]);
    }

    #[tokio::test]
    async fn all_inputs_idle_is_reported_once() {
        let (a_tx, a_rx) = edge::<u32>(16, 4);
        let (b_tx, b_rx) = edge::<u32>(16, 4);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        a_tx.tx.send(Message::Idle).await.unwrap();
        assert!(inputs.try_next().is_none());
        b_tx.tx.send(Message::Idle).await.unwrap();
        assert!(matches!(inputs.try_next(), Some(InputEvent::Idle)));
        a_tx.tx.send(Message::Idle).await.unwrap();
        assert!(inputs.try_next().is_none());
    }

    /// Two inputs of different types read as one `Inputs<Either<L, R>>`
    /// (a two-input operator): records convert on receipt, a marker aligns
    /// across both and the watermark is the minimum of both.
    #[tokio::test]
    async fn mapped_edges_of_two_types_align_and_share_the_watermark() {
        use crate::two_input::Either;
        let (l_tx, l_rx) = edge::<u32>(16, 4);
        let (r_tx, r_rx) = edge::<String>(16, 4);
        let mut inputs: Inputs<Either<u32, String>> = Inputs::new(vec![
            l_rx.map(Either::Left as fn(u32) -> Either<u32, String>),
            r_rx.map(Either::Right as fn(String) -> Either<u32, String>),
        ]);
        l_tx.tx.send(recs(&[1])).await.unwrap();
        l_tx.tx.send(marker(1)).await.unwrap();
        l_tx.tx.send(recs(&[2])).await.unwrap();
        l_tx.tx.send(wm(100)).await.unwrap();
        let r = |s: &str| Message::Records(vec![Record::new(s.to_string())]);
        r_tx.tx.send(r("a")).await.unwrap();
        let mut seen = Vec::new();
        while let Some(ev) = inputs.try_next() {
            match ev {
                InputEvent::Records(b) => seen.extend(b.into_iter().map(|r| r.value)),
                other => panic!("nothing else before alignment: {other:?}"),
            }
        }
        assert_eq!(seen, vec![Either::Left(1), Either::Right("a".into())]);
        r_tx.tx
            .send(Message::Marker(EpochMarker {
                epoch: 1,
                kind: MarkerKind::Checkpoint,
            }))
            .await
            .unwrap();
        assert!(matches!(inputs.next().await, InputEvent::Marker(m) if m.epoch == 1));
        assert!(
            matches!(inputs.next().await, InputEvent::Records(b) if b[0].value == Either::Left(2))
        );
        assert!(
            inputs.try_next().is_none(),
            "the right input holds the watermark"
        );
        r_tx.tx
            .send(Message::Watermark(Watermark {
                time: 60,
                created_ns: 0,
            }))
            .await
            .unwrap();
        assert!(matches!(inputs.next().await, InputEvent::Watermark(w) if w.time == 60));
    }

    #[tokio::test]
    async fn router_batches_until_full_and_flushes_on_demand() {
        let (out, inp) = edge::<u32>(16, 3);
        let mut router = Router::new(
            vec![OutputGroup::new(vec![out], Partitioning::Forward, 128)],
            3,
        );
        let mut inputs = Inputs::new(vec![inp]);
        let mut batch: Vec<Record<u32>> = (0..4).map(Record::new).collect();
        router.push(&mut batch).await.unwrap();
        assert_eq!(values(inputs.try_next().unwrap()), vec![0, 1, 2]);
        assert!(inputs.try_next().is_none(), "partial batch waits for flush");
        router.flush().await.unwrap();
        assert_eq!(values(inputs.try_next().unwrap()), vec![3]);
    }
}
