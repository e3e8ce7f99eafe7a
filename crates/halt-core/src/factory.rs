//! Building guards by name from configuration: [`GuardFactory`] and [`GuardRegistry`].
//!
//! YAML (through `halt-config`), the server and tests all build guards this way, so a third
//! party's guard crate that registers a factory is configured exactly like a built-in one.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::guard::Guard;

/// Why a factory could not build a guard from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FactoryError {
    /// The configuration does not deserialize (unknown field, wrong type); serde's message.
    #[error("{0}")]
    Deserialize(String),
    /// A value deserialized but is impossible (a negative limit, an invalid pattern).
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field, as written in the configuration.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FactoryError {
    /// An impossible value for `field`.
    #[must_use]
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }
}

/// A configured number of seconds as a duration: finite, not negative, and no more than a
/// duration holds (about 584 billion years).
///
/// ```
/// use halt_core::factory::seconds;
///
/// assert_eq!(seconds("cooldown_seconds", 1.5)?, std::time::Duration::from_millis(1_500));
/// assert!(seconds("cooldown_seconds", -1.0).is_err());
/// assert!(seconds("cooldown_seconds", 1e300).is_err());
/// # Ok::<(), halt_core::FactoryError>(())
/// ```
///
/// # Errors
/// [`FactoryError::Invalid`] naming `field`.
pub fn seconds(field: &str, v: f64) -> Result<std::time::Duration, FactoryError> {
    std::time::Duration::try_from_secs_f64(v).map_err(|_| {
        let reason = if v.is_finite() && v > 0.0 {
            format!("{v:e} seconds is longer than a duration can be")
        } else {
            format!("{v} is not a non-negative number of seconds")
        };
        FactoryError::invalid(field, reason)
    })
}

/// Why the registry could not build a guard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No factory is registered under this type name.
    #[error("unknown guard type `{kind}` (known: {})", known.join(", "))]
    UnknownKind {
        /// The type asked for.
        kind: String,
        /// The registered types.
        known: Vec<String>,
    },
    /// A factory with this type name is already registered.
    #[error("a guard factory for `{0}` is already registered")]
    DuplicateKind(String),
    /// The factory refused the configuration.
    #[error(transparent)]
    Factory(#[from] FactoryError),
}

/// Builds guards of one type from configuration.
pub trait GuardFactory: Send + Sync + fmt::Debug + 'static {
    /// The type's name in YAML (`budget`, `rate_limit`, `acme_business_hours`).
    fn kind(&self) -> &str;

    /// The JSON Schema of the type's configuration.
    fn schema(&self) -> schemars::Schema;

    /// Builds a guard named `name` from its configuration.
    ///
    /// # Errors
    /// A configuration that does not deserialize or holds an impossible value.
    fn build(
        &self,
        name: &str,
        config: &mut dyn erased_serde::Deserializer<'_>,
    ) -> Result<Arc<dyn Guard>, FactoryError>;
}

/// A [`GuardFactory`] from a configuration type `C` and a function building the guard.
///
/// ```
/// use halt_core::factory::{GuardRegistry, TypedFactory};
/// use halt_core::{async_trait, Call, Decision, Guard, GuardError};
/// use serde::Deserialize;
///
/// #[derive(Debug, Deserialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct QuietConfig { start_hour: u8 }
///
/// #[derive(Debug)]
/// struct QuietHours { name: String, start_hour: u8 }
///
/// #[async_trait]
/// impl Guard for QuietHours {
///     fn name(&self) -> &str { &self.name }
///     async fn evaluate(&self, _: &Call<'_>) -> Result<Decision, GuardError> {
///         Ok(Decision::allow("quiet hours not implemented in this example"))
///     }
/// }
///
/// let mut registry = GuardRegistry::new();
/// registry.register(TypedFactory::new("quiet_hours", |name: &str, c: QuietConfig| {
///     Ok(QuietHours { name: name.to_owned(), start_hour: c.start_hour })
/// }))?;
/// let guard = registry.build_json("quiet_hours", "quiet", serde_json::json!({"start_hour": 22}))?;
/// assert_eq!(guard.name(), "quiet");
/// assert!(registry.build_json("quiet_hours", "q", serde_json::json!({"start": 1})).is_err());
/// # Ok::<(), halt_core::factory::BuildError>(())
/// ```
pub struct TypedFactory<C, F> {
    kind: &'static str,
    build: F,
    config: PhantomData<fn() -> C>,
}

impl<C, F> fmt::Debug for TypedFactory<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedFactory").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl<C, F> TypedFactory<C, F> {
    /// A factory for type `kind`.
    pub fn new<G>(kind: &'static str, build: F) -> Self
    where
        F: Fn(&str, C) -> Result<G, FactoryError>,
        G: Guard,
    {
        Self { kind, build, config: PhantomData }
    }
}

impl<C, F, G> GuardFactory for TypedFactory<C, F>
where
    C: DeserializeOwned + JsonSchema + 'static,
    F: Fn(&str, C) -> Result<G, FactoryError> + Send + Sync + 'static,
    G: Guard,
{
    fn kind(&self) -> &str {
        self.kind
    }

    fn schema(&self) -> schemars::Schema {
        schemars::schema_for!(C)
    }

    fn build(
        &self,
        name: &str,
        config: &mut dyn erased_serde::Deserializer<'_>,
    ) -> Result<Arc<dyn Guard>, FactoryError> {
        let config: C = erased_serde::deserialize(config).map_err(|e| FactoryError::Deserialize(e.to_string()))?;
        Ok(Arc::new((self.build)(name, config)?))
    }
}

/// The guard types known by name.
#[derive(Debug, Default, Clone)]
pub struct GuardRegistry {
    factories: BTreeMap<String, Arc<dyn GuardFactory>>,
}

impl GuardRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a factory under its [`GuardFactory::kind`].
    ///
    /// # Errors
    /// [`BuildError::DuplicateKind`].
    pub fn register(&mut self, factory: impl GuardFactory) -> Result<(), BuildError> {
        self.register_arc(Arc::new(factory))
    }

    /// Registers a shared factory.
    ///
    /// # Errors
    /// [`BuildError::DuplicateKind`].
    pub fn register_arc(&mut self, factory: Arc<dyn GuardFactory>) -> Result<(), BuildError> {
        let kind = factory.kind().to_owned();
        if self.factories.contains_key(&kind) {
            return Err(BuildError::DuplicateKind(kind));
        }
        self.factories.insert(kind, factory);
        Ok(())
    }

    /// The factory for a type.
    #[must_use]
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn GuardFactory>> {
        self.factories.get(kind)
    }

    /// The registered type names, sorted.
    #[must_use]
    pub fn kinds(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// Builds a guard of type `kind` named `name`.
    ///
    /// # Errors
    /// An unknown type, or the factory's error.
    pub fn build(
        &self,
        kind: &str,
        name: &str,
        config: &mut dyn erased_serde::Deserializer<'_>,
    ) -> Result<Arc<dyn Guard>, BuildError> {
        let factory = self
            .factories
            .get(kind)
            .ok_or_else(|| BuildError::UnknownKind { kind: kind.to_owned(), known: self.kinds() })?;
        Ok(factory.build(name, config)?)
    }

    /// Builds a guard from a JSON configuration value.
    ///
    /// # Errors
    /// As [`GuardRegistry::build`].
    pub fn build_json(&self, kind: &str, name: &str, config: serde_json::Value) -> Result<Arc<dyn Guard>, BuildError> {
        let mut de = <dyn erased_serde::Deserializer<'_>>::erase(config);
        self.build(kind, name, &mut de)
    }
}
