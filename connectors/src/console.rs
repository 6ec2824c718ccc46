//! A sink that prints records.

use std::fmt::Debug;
use std::io::Write;

use eddy_runtime::{OperatorError, Record, Sink, SinkContext};

/// Prints `name[instance] value` per record on standard output.
#[derive(Clone, Debug, Default)]
pub struct ConsoleSink {
    prefix: String,
}

impl ConsoleSink {
    /// A console sink.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T: Debug + Send + 'static> Sink<T> for ConsoleSink {
    fn open(&mut self, ctx: &SinkContext) -> Result<(), OperatorError> {
        self.prefix = format!("{}[{}]", ctx.name, ctx.instance);
        Ok(())
    }

    fn write(&mut self, records: Vec<Record<T>>) -> Result<(), OperatorError> {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        for r in records {
            writeln!(lock, "{} {:?}", self.prefix, r.value)
                .map_err(|e| OperatorError::new(format!("console: {e}")))?;
        }
        Ok(())
    }
}
