//! [`Engine::evaluate_stream`]: many calls, evaluated in order, with the work that may run
//! ahead of each call's turn done on another thread.

use std::ops::ControlFlow;

use halt_core::{CallContext, Outcome};

use crate::engine::Engine;
use crate::prepare::Prepared;

/// Calls travel from the preparing thread in batches, so that handing them over costs little
/// (each hand-over may wake a thread); the first batches are smaller, growing twofold, so that
/// evaluation starts soon.
const BATCH: usize = 1024;
const FIRST_BATCH: usize = 64;

/// Why a stream of calls could not be evaluated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The runtime that evaluates the calls could not start.
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    /// The thread that reads and prepares the calls could not start, or panicked.
    #[error("the thread reading the calls failed: {0}")]
    Reader(String),
}

impl Engine {
    /// Evaluates a stream of calls, one at a time and in order, each seeing the effects of the
    /// ones before, as [`Engine::evaluate`] would one after another; `each` receives every
    /// outcome in input order. Items that are not calls (`Err`, a line that did not parse, say)
    /// come back in their place. `each` may stop the stream by returning
    /// [`ControlFlow::Break`].
    ///
    /// For throughput: the calls are read, and what may be done ahead of a call's turn is done
    /// (pre-hooks, which guards apply, and the decisions of guards that decide from the call
    /// alone, [`Guard::is_pure`](halt_core::Guard::is_pure)), on a thread of its own, while
    /// this one evaluates. `agenthalt eval` runs on this.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use halt_core::CallContext;
    /// use halt_engine::Engine;
    ///
    /// let engine = Engine::new();
    /// let calls = ["search", "fetch"].map(|f| Ok::<_, String>(CallContext::new(f)));
    /// let mut allowed = 0;
    /// engine.evaluate_stream(calls, |outcome| {
    ///     allowed += usize::from(outcome.is_ok_and(|o| o.is_allowed()));
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(allowed, 2);
    /// # Ok::<(), halt_engine::StreamError>(())
    /// ```
    ///
    /// # Errors
    /// The runtime or the reading thread could not start, or the reading thread (the `calls`
    /// iterator) panicked.
    pub fn evaluate_stream<I, E>(
        &self,
        calls: I,
        mut each: impl FnMut(Result<Outcome, E>) -> ControlFlow<()>,
    ) -> Result<(), StreamError>
    where
        I: IntoIterator<Item = Result<CallContext, E>>,
        I::IntoIter: Send,
        E: Send,
    {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(StreamError::Runtime)?;
        let calls = calls.into_iter();
        let (prepared_tx, prepared_rx) = std::sync::mpsc::sync_channel::<Vec<Result<Prepared, E>>>(4);
        std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("halt-prepare".into())
                .spawn_scoped(scope, move || {
                    let mut preparer = self.preparer();
                    let mut size = FIRST_BATCH;
                    let mut batch = Vec::with_capacity(size);
                    for item in calls {
                        batch.push(item.map(|ctx| preparer.prepare(ctx)));
                        if batch.len() == size {
                            size = (size * 2).min(BATCH);
                            if prepared_tx.send(std::mem::replace(&mut batch, Vec::with_capacity(size))).is_err() {
                                return;
                            }
                        }
                    }
                    if !batch.is_empty() {
                        let _ = prepared_tx.send(batch);
                    }
                })
                .map_err(|e| StreamError::Reader(e.to_string()))?;
            // Nothing else runs on this runtime, so waiting for the next batch may block it.
            runtime.block_on(async {
                for batch in prepared_rx {
                    for item in batch {
                        let answer = match item {
                            Ok(prepared) => Ok(self.evaluate_prepared(prepared).await),
                            Err(e) => Err(e),
                        };
                        if each(answer).is_break() {
                            // Dropping the receiver stops the reader at its next batch.
                            return;
                        }
                    }
                }
            });
            reader.join().map_err(|p| StreamError::Reader(crate::join::panic_message(p.as_ref())))
        })
    }
}
