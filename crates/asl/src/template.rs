//! Payload templates (Parameters, ResultSelector, ItemSelector): literals, `"key.$"` paths and intrinsic calls.

use serde_json::{Map as JsonMap, Value};

use crate::error::{AslError, Failure};
use crate::intrinsics::{self, Call};
use crate::parse::invalid;
use crate::path::Path;

/// A payload template (Parameters, ResultSelector, ItemSelector): literals, and `"key.$"` paths or intrinsic calls.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Template {
    Literal(Value),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
    Path(Path),
    Call(Call),
}

impl Template {
    pub(crate) fn parse(v: &Value, state: &str) -> Result<Template, AslError> {
        let bad = invalid(state);
        Ok(match v {
            Value::Object(m) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    if let Some(key) = k.strip_suffix(".$") {
                        let Value::String(s) = v else {
                            return Err(bad(format!("{k:?} must be a path or an intrinsic function string")));
                        };
                        let t = if intrinsics::is_call(s) {
                            Template::Call(intrinsics::parse(s).map_err(bad)?)
                        } else {
                            Template::Path(Path::parse(s).map_err(bad)?)
                        };
                        out.push((key.to_string(), t));
                    } else {
                        out.push((k.clone(), Template::parse(v, state)?));
                    }
                }
                Template::Object(out)
            }
            Value::Array(a) => Template::Array(a.iter().map(|v| Template::parse(v, state)).collect::<Result<_, _>>()?),
            other => Template::Literal(other.clone()),
        })
    }

    pub(crate) fn eval(&self, data: &Value, context: &Value, state: &str) -> Result<Value, Failure> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Object(fields) => {
                let mut m = JsonMap::new();
                for (k, t) in fields {
                    m.insert(k.clone(), t.eval(data, context, state)?);
                }
                Value::Object(m)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.eval(data, context, state))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Path(p) => p
                .get(data, context)
                .cloned()
                .ok_or_else(|| Failure::runtime(state, format!("the JSONPath {} matches nothing", p.text)))?,
            Template::Call(c) => intrinsics::eval(c, data, context).map_err(|e| Failure::runtime(state, e))?,
        })
    }
}
