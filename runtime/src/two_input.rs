//! Operators with two typed inputs (joins, broadcast state, enrichment).
//!
//! The runtime reads both inputs of such an operator as one
//! [`Inputs`](crate::edge::Inputs) of [`Either<L, R>`]: each incoming edge
//! converts its records on receipt ([`InEdge::map`](crate::edge::InEdge::map)),
//! so the protocols are the ones every operator has, written once:
//! - a marker is aligned across the edges of *both* inputs before the
//!   operator sees it (a consistent cut spans both sides);
//! - the input watermark is the minimum over the live, active edges of both
//!   inputs, and timers fire against it;
//! - the operator's tables and timers are flushed at markers and restored
//!   on recovery like a one-input operator's.
//!
//! A [`TwoInputOperator`] runs as an [`Operator`] of `Either<L, R>` through
//! [`TwoInput`], which only dispatches each record to its side.

use eddy_checkpoint::ManagedState;

use crate::error::OperatorError;
use crate::operator::{Collector, Operator, OperatorContext};
use crate::record::{Record, Timestamp};
use crate::timers::Timer;

/// A record of the first (`Left`) or the second (`Right`) input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Either<L, R> {
    /// From the first input.
    Left(L),
    /// From the second input.
    Right(R),
}

/// An operator with two typed inputs, `L` and `R`, an output `O` and an
/// optional side output `S`. The hooks mean what they mean on [`Operator`];
/// the watermark they see is the minimum of both inputs.
pub trait TwoInputOperator<L, R, O, S = ()>: Send + 'static {
    /// Handles one record of the first input.
    ///
    /// # Errors
    /// An error fails the query, naming this operator and instance.
    fn process_left(
        &mut self,
        record: Record<L>,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError>;

    /// Handles one record of the second input.
    ///
    /// # Errors
    /// An error fails the query, naming this operator and instance.
    fn process_right(
        &mut self,
        record: Record<R>,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError>;

    /// See [`Operator::open`].
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// See [`Operator::tables`].
    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        Vec::new()
    }

    /// See [`Operator::on_timer`].
    fn on_timer(
        &mut self,
        _timer: &Timer,
        _out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// See [`Operator::on_watermark`]: the minimum of both inputs advanced.
    fn on_watermark(
        &mut self,
        _watermark: Timestamp,
        _out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// See [`Operator::on_marker`].
    fn on_marker(
        &mut self,
        _epoch: u64,
        _out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// See [`Operator::on_end`]: both inputs ended.
    fn on_end(&mut self, _out: &mut Collector<'_, O, S>) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// A [`TwoInputOperator`] run as an [`Operator`] of `Either<L, R>`.
#[derive(Clone)]
pub struct TwoInput<Op>(pub Op);

impl<L, R, O, S, Op> Operator<Either<L, R>, O, S> for TwoInput<Op>
where
    Op: TwoInputOperator<L, R, O, S>,
{
    #[inline]
    fn process(
        &mut self,
        record: Record<Either<L, R>>,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        let (timestamp, created_ns) = (record.timestamp, record.created_ns);
        match record.value {
            Either::Left(value) => self.0.process_left(
                Record {
                    value,
                    timestamp,
                    created_ns,
                },
                out,
            ),
            Either::Right(value) => self.0.process_right(
                Record {
                    value,
                    timestamp,
                    created_ns,
                },
                out,
            ),
        }
    }

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.0.open(ctx)
    }

    fn tables(&mut self) -> Vec<&mut dyn ManagedState> {
        self.0.tables()
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        self.0.on_timer(timer, out)
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        self.0.on_watermark(watermark, out)
    }

    fn on_marker(
        &mut self,
        epoch: u64,
        out: &mut Collector<'_, O, S>,
    ) -> Result<(), OperatorError> {
        self.0.on_marker(epoch, out)
    }

    fn on_end(&mut self, out: &mut Collector<'_, O, S>) -> Result<(), OperatorError> {
        self.0.on_end(out)
    }
}
