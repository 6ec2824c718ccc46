//! The user's side of the keyed process operator: [`KeyedProcessFunction`].

use std::time::Duration;

use eddy_runtime::{Data, OperatorError};
use serde::{de::DeserializeOwned, Serialize};

use super::context::{FiredTimer, ProcessContext};

/// Arbitrary keyed state with timers, in the spirit of Flink's
/// `KeyedProcessFunction` and Spark's `flatMapGroupsWithState`.
///
/// For every record the function gets the value and a
/// [`ProcessContext`] for the record's key: its typed `State` (any serde
/// type; [`ValueState`](super::ValueState), [`ListState`](super::ListState)
/// and [`MapState`](super::MapState) as the state or as its fields), the
/// watermark and processing time, an output, the key's event-time and
/// processing-time timers and its timeout. Timers call
/// [`on_timer`](Self::on_timer), a timeout calls
/// [`on_timeout`](Self::on_timeout); both may emit, update or clear the
/// state. State, timers and timeouts are checkpointed and restored with the
/// operator: after a recovery every timer pending at the checkpoint fires
/// once, and none fired before it fires again.
///
/// Each operator instance runs a clone of the function; keep per-key data
/// in the state, not in the function.
pub trait KeyedProcessFunction<T, K>: Clone + Send + 'static {
    /// The per-key state.
    type State: Serialize + DeserializeOwned + Default + Send + 'static;
    /// What the function emits.
    type Out: Data;

    /// Handles one record of the context's key.
    ///
    /// # Errors
    /// An error fails the query.
    fn process(
        &mut self,
        value: T,
        ctx: &mut ProcessContext<'_, '_, K, Self::State, Self::Out>,
    ) -> Result<(), OperatorError>;

    /// A timer of the context's key fired (the watermark or the clock
    /// reached its time).
    ///
    /// # Errors
    /// An error fails the query.
    fn on_timer(
        &mut self,
        _timer: FiredTimer,
        _ctx: &mut ProcessContext<'_, '_, K, Self::State, Self::Out>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The key's timeout passed ([`ProcessContext::has_timed_out`] is true).
    /// The timeout is gone; set another to be called again.
    ///
    /// # Errors
    /// An error fails the query.
    fn on_timeout(
        &mut self,
        _ctx: &mut ProcessContext<'_, '_, K, Self::State, Self::Out>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// How long a key's state lives after its last write, in processing
    /// time (`None`: until the function clears it).
    fn state_ttl(&self) -> Option<Duration> {
        None
    }

    /// This function with a state TTL: a key's state is dropped `ttl` of
    /// processing time after it was last written (Flink's state TTL,
    /// `OnCreateAndWrite`); expired state is never returned.
    fn with_state_ttl(self, ttl: Duration) -> WithStateTtl<Self>
    where
        Self: Sized,
    {
        WithStateTtl { inner: self, ttl }
    }
}

/// A [`KeyedProcessFunction`] with a state TTL
/// ([`KeyedProcessFunction::with_state_ttl`]).
#[derive(Clone)]
pub struct WithStateTtl<F> {
    inner: F,
    ttl: Duration,
}

impl<T, K, F: KeyedProcessFunction<T, K>> KeyedProcessFunction<T, K> for WithStateTtl<F> {
    type State = F::State;
    type Out = F::Out;

    fn process(
        &mut self,
        value: T,
        ctx: &mut ProcessContext<'_, '_, K, Self::State, Self::Out>,
    ) -> Result<(), OperatorError> {
        self.inner.process(value, ctx)
    }

    fn on_timer(
        &mut self,
        timer: FiredTimer,
        ctx: &mut ProcessContext<'_, '_, K, Self::State, Self::Out>,
    ) -> Result<(), OperatorError> {
        self.inner.on_timer(timer, ctx)
    }

    fn on_timeout(
        &mut self,
        ctx: &mut ProcessContext<'_, '_, K, Self::State, Self::Out>,
    ) -> Result<(), OperatorError> {
        self.inner.on_timeout(ctx)
    }

    fn state_ttl(&self) -> Option<Duration> {
        Some(self.ttl)
    }
}
