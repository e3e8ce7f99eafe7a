//! [`Partition`]: whose limits a call counts against (everyone's, its agent's, its session's, or
//! a tenant's named in metadata).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::CallContext;

/// How a guard splits its limits.
///
/// Written in configuration as `global`, `agent`, `session` or `metadata:<key>`.
///
/// ```
/// use halt_core::{CallContext, partition::Partition};
/// use serde_json::json;
///
/// let p: Partition = "metadata:tenant".parse()?;
/// let ctx = CallContext::new("f").with_metadata(json!({"tenant": "acme"}))?;
/// assert_eq!(p.key(&ctx), "meta.tenant=acme");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Partition {
    /// One set of limits for every call (the default).
    #[default]
    Global,
    /// Limits per agent id.
    Agent,
    /// Limits per session id.
    Session,
    /// Limits per value of a metadata key set by the host application (a tenant, a customer).
    Metadata(String),
}

/// Why a partition could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown partition `{0}`: expected global, agent, session or metadata:<key>")]
pub struct PartitionError(pub String);

impl Partition {
    /// The key fragment of the [`Partition::Global`] partition, the same for every call.
    pub const GLOBAL_KEY: &'static str = "global";

    /// The partition a call belongs to, as a store-key fragment. A call without the agent,
    /// session or metadata value falls in the partition `-` (shared by all such calls).
    #[must_use]
    pub fn key(&self, ctx: &CallContext) -> Cow<'static, str> {
        let part = |label: &str, v: Option<&str>| {
            Cow::Owned(format!("{label}={}", v.map_or("-".into(), crate::store::key_part)))
        };
        match self {
            Self::Global => Cow::Borrowed(Self::GLOBAL_KEY),
            Self::Agent => part("agent", ctx.agent_id.as_deref()),
            Self::Session => part("session", ctx.session_id.as_deref()),
            Self::Metadata(key) => match ctx.metadata.get(key) {
                Some(Value::String(s)) => part(&format!("meta.{key}"), Some(s)),
                Some(Value::Null) | None => part(&format!("meta.{key}"), None),
                Some(other) => part(&format!("meta.{key}"), Some(&other.to_string())),
            },
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Agent => f.write_str("agent"),
            Self::Session => f.write_str("session"),
            Self::Metadata(k) => write!(f, "metadata:{k}"),
        }
    }
}

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "global" => Ok(Self::Global),
            "agent" => Ok(Self::Agent),
            "session" => Ok(Self::Session),
            _ => match s.strip_prefix("metadata:") {
                Some(key) if !key.is_empty() => Ok(Self::Metadata(key.to_owned())),
                _ => Err(PartitionError(s.to_owned())),
            },
        }
    }
}

impl Serialize for Partition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Partition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Partition {
    fn schema_name() -> Cow<'static, str> {
        "Partition".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Whose limits a call counts against: global, agent, session or metadata:<key>",
            "type": "string",
            "pattern": "^(global|agent|session|metadata:.+)$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_keys() {
        let ctx = CallContext::new("f").with_agent("a1").with_session("s1");
        assert_eq!("global".parse::<Partition>().unwrap().key(&ctx), "global");
        assert_eq!("agent".parse::<Partition>().unwrap().key(&ctx), "agent=a1");
        assert_eq!("session".parse::<Partition>().unwrap().key(&ctx), "session=s1");
        assert_eq!("metadata:tenant".parse::<Partition>().unwrap().key(&ctx), "meta.tenant=-");
        let ctx = ctx.with_metadata(json!({"tenant": 7})).unwrap();
        assert_eq!("metadata:tenant".parse::<Partition>().unwrap().key(&ctx), "meta.tenant=7");
        assert!("metadata:".parse::<Partition>().is_err());
        assert_eq!(
            "tenant".parse::<Partition>().unwrap_err().to_string(),
            "unknown partition `tenant`: expected global, agent, session or metadata:<key>"
        );
        assert_eq!(Partition::Metadata("t".into()).to_string(), "metadata:t");
    }
}
