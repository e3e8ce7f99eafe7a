//! What the code `#[guarded]` generates calls. Not a public API: it may change at any release.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use halt_core::{CallContext, JsonObject};
pub use halt_engine::{Blocked, Engine};

use halt_core::Outcome;

/// The call of `function` with `arguments`.
#[must_use]
pub fn context(function: &str, arguments: JsonObject) -> CallContext {
    let mut ctx = CallContext::new(function);
    ctx.arguments = arguments;
    ctx
}

/// Adds a parameter to the call's arguments.
///
/// # Errors
/// It cannot be serialised (a map with keys that are not strings, say).
pub fn insert_argument<T: Serialize + ?Sized>(
    arguments: &mut JsonObject,
    key: &str,
    value: &T,
    function: &str,
) -> Result<(), Blocked> {
    let value = serde_json::to_value(value)
        .map_err(|_| Blocked::refused(function, &format!("argument `{key}` could not be serialised")))?;
    arguments.insert(key.to_owned(), value);
    Ok(())
}

/// Whether the call may run.
///
/// # Errors
/// It may not: the outcome says why.
pub fn allowed(outcome: &Outcome) -> Result<(), Blocked> {
    if outcome.is_allowed() { Ok(()) } else { Err(Blocked::new(outcome.clone())) }
}

/// Puts a guard's change of a parameter into it.
///
/// # Errors
/// A guard removed the parameter, or changed it into a value its type cannot hold.
pub fn take_argument<T: DeserializeOwned>(
    outcome: &Outcome,
    key: &str,
    slot: &mut T,
    function: &str,
) -> Result<(), Blocked> {
    let Some(modified) = outcome.modified_arguments() else { return Ok(()) };
    let Some(value) = modified.get(key) else {
        return Err(Blocked::refused(function, &format!("a guard removed argument `{key}`")));
    };
    *slot = serde_json::from_value(value.clone()).map_err(|_| {
        Blocked::refused(function, &format!("a guard changed argument `{key}` into a value of another type"))
    })?;
    Ok(())
}

/// A parameter passed by reference cannot take a guard's change: the call is refused if a guard
/// changed it.
///
/// # Errors
/// A guard changed it.
pub fn unchanged_reference(outcome: &Outcome, sent: &JsonObject, key: &str, function: &str) -> Result<(), Blocked> {
    match outcome.modified_arguments() {
        Some(modified) if modified.get(key) != sent.get(key) => Err(Blocked::refused(
            function,
            &format!("a guard changed argument `{key}`, which is passed by reference and cannot take the change"),
        )),
        _ => Ok(()),
    }
}
