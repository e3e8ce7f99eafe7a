//! `${NAME}` in a policy's values, replaced from the environment once the YAML is read.

use serde_yaml::Value;

use crate::Seg;

/// Replaces `${NAME}` in every string of `value` (keys too) with the variable's value. A
/// string that is one variable alone takes the value's YAML type when it is a plain scalar
/// (`max_daily_spend: ${LIMIT}` is a number); anything else stays text. Returns the path and
/// message of the first problem.
pub(crate) fn substitute(
    value: &mut Value,
    path: &mut Vec<Seg>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (Vec<Seg>, String)> {
    match value {
        Value::String(s) if s.contains('$') => {
            let text = interpolate(s, env).map_err(|(_, message)| (path.clone(), message))?;
            let whole = s.trim().strip_prefix("${").and_then(|r| r.strip_suffix('}')).is_some_and(|n| !n.contains('}'));
            *value = match serde_yaml::from_str::<Value>(&text) {
                Ok(scalar @ (Value::Number(_) | Value::Bool(_) | Value::Null)) if whole => scalar,
                _ => Value::String(text),
            };
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                substitute(item, path, env)?;
                path.pop();
            }
        }
        Value::Mapping(map) => {
            let entries = std::mem::take(map);
            for (mut key, mut item) in entries {
                if let Value::String(k) = &key
                    && k.contains('$')
                {
                    let text = interpolate(k, env).map_err(|(_, message)| (path.clone(), message))?;
                    key = Value::String(text);
                }
                path.push(Seg::Key(key.as_str().unwrap_or_default().to_owned()));
                substitute(&mut item, path, env)?;
                path.pop();
                if map.insert(key, item).is_some() {
                    return Err((path.clone(), "two keys are the same once variables are replaced".into()));
                }
            }
        }
        Value::Tagged(tagged) => substitute(&mut tagged.value, path, env)?,
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`. Returns the
/// byte offset and message of the first problem.
fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            offset += i + 3;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                return Err((offset + i, "unterminated `${`".to_owned()));
            };
            let name = &body[..end];
            let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err((offset + i, format!("invalid variable name `{name}`")));
            }
            let Some(value) = env(name) else {
                return Err((offset + i, format!("environment variable `{name}` is not set")));
            };
            out.push_str(&value);
            rest = &body[end + 1..];
            offset += i + 3 + end;
        } else {
            out.push('$');
            rest = &after[1..];
            offset += i + 1;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation() {
        let env = |k: &str| (k == "LIMIT").then(|| "7.5".to_owned());
        assert_eq!(interpolate("a: ${LIMIT}", &env).unwrap(), "a: 7.5");
        assert_eq!(interpolate("a: $${LIMIT} $5", &env).unwrap(), "a: ${LIMIT} $5");
        assert_eq!(
            interpolate("x\na: ${NOPE}", &env).unwrap_err(),
            (5, "environment variable `NOPE` is not set".into())
        );
        assert!(interpolate("a: ${", &env).unwrap_err().1.contains("unterminated"));
        assert!(interpolate("a: ${A-B}", &env).unwrap_err().1.contains("invalid variable name"));
    }
}
