//! `update_state_by_key`: the DStreams convenience as a keyed process
//! function.

use std::marker::PhantomData;
use std::sync::Arc;

use eddy_runtime::{Data, OperatorError};
use serde::{de::DeserializeOwned, Serialize};

use super::context::ProcessContext;
use super::function::KeyedProcessFunction;
use super::handles::ValueState;

/// Runs `f(key, value, &mut state)` for every record and emits
/// `(key, state)` after each call that leaves a state (`None` removes the
/// key's state and emits nothing).
pub struct UpdateStateByKey<F, S> {
    f: Arc<F>,
    _s: PhantomData<fn() -> S>,
}

impl<F, S> Clone for UpdateStateByKey<F, S> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _s: PhantomData,
        }
    }
}

impl<F, S> UpdateStateByKey<F, S> {
    /// The function `f` as a keyed process function.
    pub fn new(f: F) -> Self {
        Self {
            f: Arc::new(f),
            _s: PhantomData,
        }
    }
}

impl<T, K, S, F> KeyedProcessFunction<T, K> for UpdateStateByKey<F, S>
where
    K: Data + Serialize,
    S: Data + Serialize + DeserializeOwned,
    F: Fn(&K, T, &mut Option<S>) + Send + Sync + 'static,
{
    type State = ValueState<S>;
    type Out = (K, S);

    fn process(
        &mut self,
        value: T,
        ctx: &mut ProcessContext<'_, '_, K, ValueState<S>, (K, S)>,
    ) -> Result<(), OperatorError> {
        let key = ctx.key().clone();
        let mut state = ctx.clear_state().and_then(|mut v| v.take());
        (self.f)(&key, value, &mut state);
        if let Some(s) = state {
            ctx.emit((key, s.clone()));
            ctx.state_mut().set(s);
        }
        Ok(())
    }
}
