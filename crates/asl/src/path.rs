//! The JSONPath subset of the Amazon States Language: `$` (the state's data) or `$$` (the context object), then
//! `.name`, `['name']` and `[index]` steps. A path outside this subset (wildcards, filters, slices) is refused when the
//! definition is parsed, naming the state, never evaluated loosely.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Index(usize),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `$$`: the path reads the context object.
    pub context: bool,
    pub steps: Vec<Step>,
    pub text: String,
}

impl Path {
    pub fn parse(text: &str) -> Result<Path, String> {
        let bad = |why: &str| Err(format!("path {text:?}: {why}"));
        let (context, mut rest) = if let Some(r) = text.strip_prefix("$$") {
            (true, r)
        } else if let Some(r) = text.strip_prefix('$') {
            (false, r)
        } else {
            return bad("must start with $ or $$");
        };
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                if name.is_empty() {
                    return bad("empty field name");
                }
                if name.contains(['*', '?', '@', '(', ')', ']', '\'', '"', ' ']) {
                    return bad("only plain field names, ['quoted'] fields and [index] steps are supported");
                }
                steps.push(Step::Field(name.to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let close = match r.find(']') {
                    Some(c) => c,
                    None => return bad("unclosed ["),
                };
                let inner = &r[..close];
                if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    steps.push(Step::Field(q.to_string()));
                } else if let Ok(i) = inner.parse::<usize>() {
                    steps.push(Step::Index(i));
                } else {
                    return bad("only [index] and ['field'] are supported inside brackets");
                }
                rest = &r[close + 1..];
            } else {
                return bad("expected . or [");
            }
        }
        Ok(Path {
            context,
            steps,
            text: text.to_string(),
        })
    }

    /// The value at this path, or `None` when a step does not exist.
    pub fn get<'v>(&self, data: &'v Value, context: &'v Value) -> Option<&'v Value> {
        let mut v = if self.context { context } else { data };
        for s in &self.steps {
            v = match (s, v) {
                (Step::Field(f), Value::Object(m)) => m.get(f)?,
                (Step::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Sets `value` at this path inside `target` (a reference path, as ResultPath uses): missing objects along the way
    /// are created; an existing non-object in the way is an error.
    pub fn set(&self, target: &mut Value, value: Value) -> Result<(), String> {
        if self.context {
            return Err(format!(
                "{}: a result cannot be written to the context object",
                self.text
            ));
        }
        let mut v = target;
        for (i, s) in self.steps.iter().enumerate() {
            let last = i + 1 == self.steps.len();
            match s {
                Step::Field(f) => {
                    if v.is_null() {
                        *v = Value::Object(Map::new());
                    }
                    let Value::Object(m) = v else {
                        return Err(format!("{}: cannot set field {f:?} on a non-object", self.text));
                    };
                    if last {
                        m.insert(f.clone(), value);
                        return Ok(());
                    }
                    v = m.entry(f.clone()).or_insert(Value::Null);
                }
                Step::Index(n) => {
                    let Value::Array(a) = v else {
                        return Err(format!("{}: cannot index a non-array", self.text));
                    };
                    let len = a.len();
                    let slot = a
                        .get_mut(*n)
                        .ok_or_else(|| format!("{}: index {n} is out of bounds ({len} elements)", self.text))?;
                    if last {
                        *slot = value;
                        return Ok(());
                    }
                    v = slot;
                }
            }
        }
        *v = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_reads_the_subset() {
        let data = json!({"a": {"b c": [10, {"d": true}]}, "plan": {"tasks": 3}});
        let ctx = json!({"Map": {"Item": {"Index": 2}}});
        let get = |p: &str| Path::parse(p).expect(p).get(&data, &ctx).cloned();
        assert_eq!(get("$"), Some(data.clone()));
        assert_eq!(get("$.plan.tasks"), Some(json!(3)));
        assert_eq!(get("$.a['b c'][1].d"), Some(json!(true)));
        assert_eq!(get("$.a[\"b c\"][0]"), Some(json!(10)));
        assert_eq!(get("$$.Map.Item.Index"), Some(json!(2)));
        assert_eq!(get("$.missing"), None);
        assert_eq!(get("$.plan.tasks.deeper"), None);
        for bad in ["a.b", "$.a[*]", "$..a", "$.a[?(@.x)]", "$.", "$.a[1:2]", "$.a["] {
            assert!(Path::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn sets_create_objects_and_refuse_non_objects() {
        let mut v = json!({"keep": 1});
        Path::parse("$.x.y").expect("path").set(&mut v, json!(2)).expect("set");
        assert_eq!(v, json!({"keep": 1, "x": {"y": 2}}));
        Path::parse("$").expect("path").set(&mut v, json!("all")).expect("set");
        assert_eq!(v, json!("all"));
        let mut v = json!({"x": 5});
        assert!(Path::parse("$.x.y").expect("path").set(&mut v, json!(1)).is_err());
        assert!(Path::parse("$$.x").expect("path").set(&mut v, json!(1)).is_err());
    }
}
